"""No process of the app that holds a secret runs as root.

Two halves. The Dockerfile and fly.toml are read (there is no Docker engine here): every
command Fly starts goes through the entrypoint with `--user fmugw`, and only the worker
asks for the root sandbox daemon. Then the entrypoint itself runs on this machine, as
root, exactly as Fly would run the worker group (the image's ENTRYPOINT, then the
worker's options from fly.toml), with temporary paths and `nobody` for fmugw, and a
probe in place of Celery that reports what it was given.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path

import psutil
import pytest
from django.conf import settings

from fmuengine.sandbox.entrypoint import parse_arguments

BASE_DIR = settings.BASE_DIR
APP_USER = "fmugw"
TEST_USER = "nobody"  # any unprivileged account stands in for fmugw on this machine
# The probe must be runnable by TEST_USER: this venv's interpreter lies under /root.
PROBE_PYTHON = "/usr/bin/python3"
SECRET = "a-secret-the-worker-needs"


# ---- the Dockerfile and fly.toml, read ----------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for line in (BASE_DIR / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, rest = pending.strip().partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    return instructions


def dockerfile(keyword: str) -> list[str]:
    return [rest for name, rest in dockerfile_instructions() if name == keyword]


def image_entrypoint() -> list[str]:
    (entrypoint,) = dockerfile("ENTRYPOINT")
    return json.loads(entrypoint)


def fly_config() -> dict:
    return tomllib.loads((BASE_DIR / "fly.toml").read_text())


def fly_argv(command: str) -> list[str]:
    """What a Fly machine executes: the image's ENTRYPOINT, then the group's command
    (which stands in for CMD; Fly splits it like a shell would, without running one)."""
    return image_entrypoint() + shlex.split(command)


def fly_entrypoint_arguments(command: str):
    argv = fly_argv(command)
    assert argv[:3] == ["python", "-m", "fmuengine.sandbox.entrypoint"]
    return parse_arguments(argv[3:])


def test_nothing_is_installed_that_the_image_does_not_use():
    (install,) = [rest for rest in dockerfile("RUN") if "apt-get install" in rest]
    packages = install.split("--no-install-recommends")[1].split("&&")[0].split()
    assert packages == ["libpq5"]
    instructions = " ".join(rest for _name, rest in dockerfile_instructions())
    assert "bubblewrap" not in instructions
    assert "bwrap" not in instructions


def test_the_app_user_is_a_fixed_unprivileged_system_account():
    (useradd,) = [rest for rest in dockerfile("RUN") if "useradd" in rest]
    assert "--uid 10001" in useradd
    assert "--gid fmugw" in useradd
    assert useradd.split()[-1] == APP_USER
    assert "groupadd --system --gid 10001 fmugw" in useradd


def test_every_command_of_the_image_drops_to_the_app_user():
    # The image's user must be root (Fly has no per-group user and the worker needs a
    # root daemon), so the ENTRYPOINT is what keeps every command off root.
    assert dockerfile("USER")[-1] == "root"
    assert image_entrypoint() == [
        "python",
        "-m",
        "fmuengine.sandbox.entrypoint",
        "--user",
        APP_USER,
    ]
    default = parse_arguments(image_entrypoint()[3:] + json.loads(dockerfile("CMD")[-1]))
    assert default.user == APP_USER
    assert not default.sandbox
    assert default.command[0] == "gunicorn"


def test_code_is_root_s_and_only_var_dir_is_the_app_user_s():
    (build,) = [rest for rest in dockerfile("RUN") if "collectstatic" in rest]
    assert "chown -R root:root /app" in build
    assert "go-w" in build
    assert 'chown fmugw:fmugw "$VAR_DIR"' in build
    environment = " ".join(dockerfile("ENV"))
    assert "VAR_DIR=/app/var" in environment
    # Served files outside the one writable dir: fmugw cannot swap them.
    assert "STATIC_ROOT=/app/staticfiles" in environment


def test_fly_runs_every_group_and_the_release_command_as_the_app_user():
    config = fly_config()
    commands = {**config["processes"], "release": config["deploy"]["release_command"]}
    assert set(commands) == {"web", "worker", "billing", "release"}
    for group, command in commands.items():
        arguments = fly_entrypoint_arguments(command)
        assert arguments.user == APP_USER, group
        assert arguments.sandbox == (group == "worker"), group
    release = fly_entrypoint_arguments(config["deploy"]["release_command"])
    assert release.command[:2] == ["sh", "-c"]
    assert "migrate" in release.command[2]


def test_the_worker_holds_no_stripe_key_and_runs_no_billing_task():
    config = fly_config()
    worker = fly_entrypoint_arguments(config["processes"]["worker"])
    assert "STRIPE_*" in worker.unset_env
    assert worker.command[:4] == ["celery", "-A", "fmugateway", "worker"]
    # Runs (the default queue) and study chunks, runs first; never the billing queue,
    # which is the billing group's.
    assert worker.command[worker.command.index("-Q") + 1] == "celery,studies"
    assert "billing" not in " ".join(worker.command)
    # Beat's schedule file in VAR_DIR, the one dir fmugw may write.
    assert worker.command[worker.command.index("-s") + 1].startswith("/app/var/")
    billing = fly_entrypoint_arguments(config["processes"]["billing"])
    assert billing.command[billing.command.index("-Q") + 1] == "billing"
    assert "-B" not in billing.command  # one beat per worker machine is enough


def test_fly_lets_the_worker_finish_its_runs_on_a_deploy():
    config = fly_config()
    assert config["kill_signal"] == "SIGTERM"  # Fly's default, SIGINT, is gunicorn's fast stop
    assert config["kill_timeout"] >= 120


# ---- the entrypoint, run for real ---------------------------------------------------------


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


_root_and_probe = pytest.mark.skipif(
    os.geteuid() != 0 or not _has_user(TEST_USER) or not os.access(PROBE_PYTHON, os.X_OK),
    reason=f"starts a root sandbox daemon, runs {PROBE_PYTHON} as {TEST_USER}",
)


def needs_root(test):
    return pytest.mark.sandbox(_root_and_probe(test))


PROBE = r"""
import json, os, signal, socket, sys, time
from pathlib import Path

status = dict(line.split(":\t", 1) for line in Path("/proc/self/status").read_text().splitlines()
              if ":\t" in line)
try:
    os.setuid(0)
    regained = True
except PermissionError:
    regained = False
daemon = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
daemon.settimeout(60)
daemon.connect(os.environ["SANDBOX_SOCKET"])
ready = json.loads(daemon.makefile().readline())
daemon.close()
run_dir = Path(os.environ["SANDBOX_RUN_ROOT"]) / "probe"
run_dir.mkdir()

def stop(number, _frame):
    print(json.dumps({"signal": number}), flush=True)
    sys.exit(0)

signal.signal(signal.SIGTERM, stop)
print(json.dumps({
    "pid": os.getpid(),
    "ppid": os.getppid(),
    "uids": os.getresuid(),
    "gids": os.getresgid(),
    "groups": os.getgroups(),
    "status": {name: status[name].strip() for name in
               ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs")},
    "regained_root": regained,
    "environment": dict(os.environ),
    "daemon_ready": ready.get("event"),
    "run_dir_owner": run_dir.stat().st_uid,
}), flush=True)
while True:
    time.sleep(1)
"""


class Lines:
    """A process's output lines, read by a thread, so a test can wait with a timeout."""

    def __init__(self, stream) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.put(line)

    def next_json(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(line)
            if line.startswith("{"):
                return json.loads(line)
        raise AssertionError(f"no JSON line within {timeout} s; output: {self.seen}")

    def rest(self) -> str:
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return "".join(self.seen)


@pytest.fixture
def place():
    """Paths like the image's, in a root-owned dir that `nobody` can traverse (pytest's
    own temp dirs are private to root)."""
    base = Path(tempfile.mkdtemp(prefix="fmugw-entrypoint-"))
    base.chmod(0o755)  # nobody must reach the socket and the run root
    probe = base / "probe.py"
    probe.write_text(PROBE)
    probe.chmod(0o644)
    paths = {
        "base": base,
        "probe": probe,
        "socket": base / "run" / "fmugw" / "sandbox.sock",
        "run_root": base / "lib" / "fmugw" / "runs",
        "state_dir": base / "lib" / "fmugw-sandbox",
    }
    yield paths
    shutil.rmtree(base, ignore_errors=True)


def place_options(place) -> list[str]:
    return [
        "--socket",
        str(place["socket"]),
        "--run-root",
        str(place["run_root"]),
        "--state-dir",
        str(place["state_dir"]),
    ]


def worker_argv(place, *, extra: tuple[str, ...] = ()) -> list[str]:
    """fly.toml's worker as Fly starts it, with this machine's stand-ins: our interpreter
    for the image's `python`, TEST_USER for fmugw, temporary paths, the probe for Celery."""
    argv = fly_argv(fly_config()["processes"]["worker"])
    argv[0] = sys.executable
    argv[argv.index("--user") + 1] = TEST_USER
    separator = argv.index("--")
    return [
        *argv[:5],
        *place_options(place),
        *extra,
        *argv[5:separator],
        "--",
        PROBE_PYTHON,
        str(place["probe"]),
    ]


def container_environment() -> dict[str, str]:
    """What Fly gives every machine: all the app's secrets."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "FMUGW_TEST_SECRET": SECRET,
        "DATABASE_URL": "postgres://app:password@db.internal/fmugateway",
        "STRIPE_SECRET_KEY": "sk_test_not_for_the_worker",
        "STRIPE_PUBLISHABLE_KEY": "pk_test_not_for_the_worker",
        "API_KEY_PEPPER": "not-for-the-worker",
    }


def start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        argv,
        cwd=BASE_DIR,
        env=container_environment(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def daemon_of(socket_path: Path) -> psutil.Process | None:
    """The sandbox daemon listening on this socket path, found by its command line."""
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "--listen" in cmdline and str(socket_path) in cmdline:
            return process
    return None


def end(process: subprocess.Popen, *pids: int) -> None:
    """Stop what a failed test may have left: the entrypoint, then the children it had."""
    if process.poll() is None:
        process.kill()
        process.wait(timeout=10)
    for pid in pids:
        if pid > 0:  # 0 would be this test's own process group
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@needs_root
def test_the_worker_runs_unprivileged_beside_a_root_daemon_that_holds_no_secret(place):
    entrypoint = start(worker_argv(place))
    out, err = Lines(entrypoint.stdout), Lines(entrypoint.stderr)
    daemon_pid = probe_pid = 0
    try:
        probe = out.next_json(timeout=90)
        probe_pid = probe["pid"]
        daemon = daemon_of(place["socket"])
        assert daemon is not None, err.rest()
        daemon_pid = daemon.pid

        nobody = [65534, 65534, 65534]
        assert probe["uids"] == nobody
        assert probe["gids"] == nobody
        assert probe["groups"] == []
        assert probe["status"] == {
            "CapInh": "0000000000000000",
            "CapPrm": "0000000000000000",
            "CapEff": "0000000000000000",
            "CapBnd": "0000000000000000",
            "CapAmb": "0000000000000000",
            "NoNewPrivs": "1",
        }
        assert probe["regained_root"] is False
        environment = probe["environment"]
        assert environment["SANDBOX_SOCKET"] == str(place["socket"])
        assert environment["SANDBOX_RUN_ROOT"] == str(place["run_root"])
        assert environment["FMUGW_TEST_SECRET"] == SECRET
        assert environment["DATABASE_URL"] == container_environment()["DATABASE_URL"]
        assert not [name for name in environment if name.startswith("STRIPE_")]
        assert "API_KEY_PEPPER" not in environment
        assert environment["HOME"] == "/nonexistent"  # nobody's; fmugw's is /home/fmugw
        # The daemon serves the worker's uid, and the worker owns its run root.
        assert probe["daemon_ready"] == "ready"
        assert probe["run_dir_owner"] == 65534
        assert place["run_root"].stat().st_uid == 65534
        assert oct(place["run_root"].stat().st_mode & 0o777) == "0o711"

        # The daemon: root, the entrypoint's child, with an empty environment.
        assert daemon.uids().real == 0
        assert daemon.uids().effective == 0
        assert daemon.ppid() == entrypoint.pid
        assert Path(f"/proc/{daemon_pid}/environ").read_bytes() == b""
        # The command is the entrypoint's child too; the entrypoint stays root.
        assert probe["ppid"] == entrypoint.pid
        assert psutil.Process(entrypoint.pid).uids().effective == 0

        # Fly's SIGTERM (a deploy) reaches the command; once it has exited, the daemon
        # is stopped and the container exits with the command's status.
        entrypoint.send_signal(signal.SIGTERM)
        assert out.next_json(timeout=10) == {"signal": signal.SIGTERM}
        assert entrypoint.wait(timeout=60) == 0
        assert not psutil.pid_exists(daemon_pid)
        assert not place["socket"].exists()
    finally:
        end(entrypoint, daemon_pid, probe_pid)


@needs_root
def test_the_container_ends_when_the_daemon_dies(place):
    entrypoint = start(worker_argv(place))
    out, err = Lines(entrypoint.stdout), Lines(entrypoint.stderr)
    probe_pid = 0
    try:
        probe_pid = out.next_json(timeout=90)["pid"]
        daemon = daemon_of(place["socket"])
        assert daemon is not None, err.rest()

        daemon.kill()

        assert out.next_json(timeout=30) == {"signal": signal.SIGTERM}  # a warm shutdown
        assert entrypoint.wait(timeout=60) == 1
        assert "the sandbox daemon exited" in err.rest()
    finally:
        end(entrypoint, probe_pid)


@needs_root
def test_a_daemon_that_does_not_listen_in_time_is_a_clear_error(place):
    entrypoint = start(worker_argv(place, extra=("--start-timeout", "0.01")))
    try:
        _out, err = entrypoint.communicate(timeout=60)
        assert entrypoint.returncode == 1
        assert "did not create its socket" in err
        assert daemon_of(place["socket"]) is None
    finally:
        end(entrypoint)


@needs_root
def test_a_run_root_others_could_redirect_is_refused(place):
    shared = place["base"] / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # world-writable without the sticky bit: the point
    argv = worker_argv(place)
    argv[argv.index("--run-root") + 1] = str(shared / "runs")
    entrypoint = start(argv)
    try:
        _out, err = entrypoint.communicate(timeout=60)
        assert entrypoint.returncode == 2
        assert "must belong to root" in err
        assert daemon_of(place["socket"]) is None
    finally:
        end(entrypoint)


@needs_root
def test_without_sandbox_the_command_becomes_the_process_fly_started():
    """web, billing and the release command: no daemon, no supervisor in between, so
    gunicorn gets Fly's SIGTERM itself."""
    config = fly_config()
    argv = fly_argv(config["deploy"]["release_command"])
    argv[0] = sys.executable
    argv[argv.index("--user") + 1] = TEST_USER
    # The release command's form (`sh -c '...'`, no `--`), with a harmless script.
    argv[argv.index("-c") + 1] = (
        "echo $$ $(id -u) $(id -G); grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs)' "
        "/proc/self/status; echo stripe=${STRIPE_SECRET_KEY:-unset} socket=${SANDBOX_SOCKET:-unset}"
    )
    entrypoint = start(argv)
    try:
        out, err = entrypoint.communicate(timeout=60)
    finally:
        end(entrypoint)
    assert entrypoint.returncode == 0, err
    lines = out.splitlines()
    assert lines[0] == f"{entrypoint.pid} 65534 65534"  # the same process, exec'd
    assert "CapEff:\t0000000000000000" in lines
    assert "CapPrm:\t0000000000000000" in lines
    assert "CapBnd:\t0000000000000000" in lines
    assert "NoNewPrivs:\t1" in lines
    # web and billing keep every secret of the container (they use Stripe), no socket.
    assert "stripe=sk_test_not_for_the_worker socket=unset" in lines


@needs_root
def test_root_is_refused_as_the_user():
    argv = [sys.executable, "-m", "fmuengine.sandbox.entrypoint", "--user", "root", "true"]
    entrypoint = start(argv)
    try:
        _out, err = entrypoint.communicate(timeout=60)
    finally:
        end(entrypoint)
    assert entrypoint.returncode == 2
    assert "is root" in err
