"""How every process of the container image starts: `python -m fmuengine.sandbox.entrypoint`.

The image's ENTRYPOINT is `python -m fmuengine.sandbox.entrypoint --user fmugw` and it
runs as root: Fly.io starts every process group with the image's user and has no
per-group user, and the simulation worker's machine needs root for one thing only, the
sandbox daemon (namespaces, cgroups, slot uids). So root is where everything starts, and
this module makes sure that nothing holding the app's secrets keeps it:

- Default (web, the billing worker, the release command): drop to `--user` and exec the
  command. The command replaces this process, so it receives the platform's signals
  itself (gunicorn's graceful stop on SIGTERM works as without an entrypoint).
- `--sandbox` (the simulation worker): start `python -m fmuengine.sandbox --listen` as
  root with an EMPTY environment (the only root process near untrusted code holds no
  secret and speaks only the run protocol, to the uid it is told to trust), wait for its
  socket, then fork a child that drops to `--user` and execs the command with
  SANDBOX_SOCKET and SANDBOX_RUN_ROOT added. This process stays as a small root
  supervisor: it forwards signals to the command and ends the container when either of
  the two ends.

Why a supervisor rather than exec'ing the worker over this process: the worker would
then be the daemon's parent, could not stop a root daemon (it is not root), and nothing
would notice the daemon dying: the worker would go on taking runs and fail every one as
`sandbox_failed`. The supervisor is the only process that can both signal the root
daemon and see both exits, so a dead daemon ends the container and the platform
restarts the machine. It reads nothing from anyone, and it keeps no file or socket of
either child open. It does keep the container's environment (it must hand it on);
/proc/<pid>/environ of a root process is not readable by the worker's uid.

Signals: the supervisor forwards SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1 and SIGUSR2 to
the command only, once each. The command runs in a process group of its own and the
daemon in a session of its own, so a Ctrl-C on a terminal is not delivered twice (Celery
takes a second SIGINT as a cold shutdown) and does not stop the daemon while the worker
finishes its runs (warm shutdown). The daemon is stopped after the command has exited.

Dropping privileges (both modes): the capability bounding set is emptied, supplementary
groups are cleared, real/effective/saved gid and uid become the user's, inheritable
capabilities are cleared, and no_new_privs is set (no setuid binary or file capability
can give anything back). Then /proc/self/status is read back: any uid, gid, group or
capability left over stops the start (fail closed) instead of running the command.

Django-free, standard library only: it runs before anything of the app is imported.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import fnmatch
import os
import pwd
import signal
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import NoReturn

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SOCKET = "/run/fmugw/sandbox.sock"
DEFAULT_RUN_ROOT = "/var/lib/fmugw/runs"
DEFAULT_STATE_DIR = "/var/lib/fmugw-sandbox"

FORWARDED_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
# Python ignores these at start-up; an ignored signal stays ignored across exec.
PYTHON_IGNORED_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)

EXIT_CONFIGURATION = 2  # bad user, unsafe directory, not root when root is needed
EXIT_DAEMON = 1  # the daemon did not start, or died
EXIT_EXEC = 127  # the command could not be executed

PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(None, use_errno=True)


class EntrypointError(Exception):
    """A reason not to start; printed, and the container exits."""

    def __init__(self, message: str, code: int = EXIT_CONFIGURATION) -> None:
        super().__init__(message)
        self.code = code


def _log(message: str) -> None:
    print(f"entrypoint: {message}", file=sys.stderr, flush=True)


# ---- arguments ---------------------------------------------------------------------------


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    """Options, then the command, with or without `--` between them.

    Without `--` works too because Fly.io appends a process group's command (and the
    release command) to the image's ENTRYPOINT as they are.
    """
    parser = argparse.ArgumentParser(
        prog="python -m fmuengine.sandbox.entrypoint",
        description="Start a command as an unprivileged user, optionally beside the "
        "root sandbox daemon.",
    )
    parser.add_argument("--user", required=True, help="the account the command runs as")
    parser.add_argument(
        "--sandbox",
        action="store_true",
        help="start the sandbox daemon as root first (the simulation worker)",
    )
    parser.add_argument("--socket", default=DEFAULT_SOCKET, help="the daemon's unix socket")
    parser.add_argument(
        "--run-root", default=DEFAULT_RUN_ROOT, help="where the command makes run dirs"
    )
    parser.add_argument(
        "--state-dir", default=DEFAULT_STATE_DIR, help="the daemon's own (root-only) state"
    )
    parser.add_argument(
        "--unset-env",
        action="append",
        default=[],
        metavar="PATTERN",
        help="leave variables matching this shell pattern (e.g. 'STRIPE_*') out of the "
        "command's environment; repeatable",
    )
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=60.0,
        help="seconds to wait for the daemon's socket",
    )
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=30.0,
        help="seconds a child is given to exit after SIGTERM before SIGKILL",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER)
    arguments = parser.parse_args(argv)
    if arguments.command[:1] == ["--"]:
        arguments.command = arguments.command[1:]
    if not arguments.command:
        parser.error("no command given")
    return arguments


def _user(name: str) -> pwd.struct_passwd:
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        raise EntrypointError(f"no such user {name!r}") from None
    if user.pw_uid == 0 or user.pw_gid == 0:
        raise EntrypointError(f"user {name!r} is root or in root's group; pick another")
    return user


def command_environment(
    base: dict[str, str], user: pwd.struct_passwd, unset: list[str], extra: dict[str, str]
) -> dict[str, str]:
    """The container's environment minus what the command must not hold, plus its own."""
    environment = {
        name: value
        for name, value in base.items()
        if not any(fnmatch.fnmatchcase(name, pattern) for pattern in unset)
    }
    environment.update(HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name)
    environment.update(extra)
    return environment


# ---- privileges --------------------------------------------------------------------------


def _prctl(option: int, argument: int) -> None:
    zero = ctypes.c_ulong(0)
    if _libc.prctl(ctypes.c_int(option), ctypes.c_ulong(argument), zero, zero, zero) != 0:
        number = ctypes.get_errno()
        raise OSError(number, f"prctl({option}, {argument}): {os.strerror(number)}")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _clear_capabilities() -> None:
    """Effective, permitted and inheritable sets all empty (setresuid leaves inheritable)."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if _libc.capset(ctypes.byref(header), data) != 0:
        number = ctypes.get_errno()
        raise OSError(number, f"capset: {os.strerror(number)}")


def _last_capability() -> int:
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        return 63  # drop everything the kernel might know; EINVAL past the end is ignored


def process_status(path: str = "/proc/self/status") -> dict[str, str]:
    status = {}
    for line in Path(path).read_text().splitlines():
        name, _, value = line.partition(":")
        status[name] = value.strip()
    return status


def _check_dropped(uid: int, gid: int, *, bounding_set: bool = True) -> None:
    """Read back what the kernel says this process is; refuse anything left over.

    `bounding_set=False` when started unprivileged: emptying it needs CAP_SETPCAP, and
    with no_new_privs set nothing can be gained from it anyway."""
    status = process_status()
    problems = []
    if status.get("Uid", "").split() != [str(uid)] * 4:
        problems.append(f"uids {status.get('Uid')}")
    if status.get("Gid", "").split() != [str(gid)] * 4:
        problems.append(f"gids {status.get('Gid')}")
    if status.get("Groups", ""):
        problems.append(f"groups {status.get('Groups')}")
    names = ("CapInh", "CapPrm", "CapEff", "CapAmb") + (("CapBnd",) if bounding_set else ())
    for name in names:
        if int(status.get(name, "1"), 16) != 0:
            problems.append(f"{name} {status.get(name)}")
    if status.get("NoNewPrivs") != "1":
        problems.append("no_new_privs is not set")
    if problems:
        raise EntrypointError("privileges were not dropped: " + ", ".join(problems))


def drop_privileges(user: pwd.struct_passwd) -> None:
    """Become `user` for good: no root uid, group or capability left, no way back."""
    uid, gid = user.pw_uid, user.pw_gid
    if os.geteuid() != 0:
        if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
            raise EntrypointError(
                f"running as uid {os.geteuid()}: start as root or as {user.pw_name}"
            )
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
        _check_dropped(uid, gid, bounding_set=False)
        return
    for capability in range(_last_capability() + 1):
        try:
            _prctl(PR_CAPBSET_DROP, capability)
        except OSError as error:
            if error.errno != errno.EINVAL:  # EINVAL: not a capability of this kernel
                raise EntrypointError(
                    f"cannot empty the capability bounding set: {error}"
                ) from error
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    _clear_capabilities()
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    _check_dropped(uid, gid)


def _reset_signals() -> None:
    """A forked child starts with the default dispositions and nothing blocked."""
    for number in (*FORWARDED_SIGNALS, *PYTHON_IGNORED_SIGNALS, signal.SIGCHLD):
        signal.signal(number, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


# ---- directories -------------------------------------------------------------------------


def _check_root_path(path: Path) -> None:
    """Every directory from / to `path` is root's and nobody else can swap its entries.

    A world-writable directory is accepted only with the sticky bit (/tmp): there only
    root can remove or rename what root made. This keeps an unprivileged process (the
    worker, on an earlier start) from redirecting a path this root process creates or
    chowns.
    """
    current = Path("/")
    for part in path.resolve().parts[1:]:
        current = current / part
        try:
            info = os.lstat(current)
        except FileNotFoundError:
            return  # created below, by root
        if not stat.S_ISDIR(info.st_mode):
            raise EntrypointError(f"{current} is not a directory")
        writable_by_others = info.st_mode & 0o022
        if info.st_uid != 0 or (writable_by_others and not info.st_mode & stat.S_ISVTX):
            raise EntrypointError(f"{current} must belong to root and be writable only by it")


def _root_dir(path: Path, mode: int) -> None:
    """A directory of root's with `mode`, created if absent."""
    _check_root_path(path)
    os.makedirs(path, mode=0o755, exist_ok=True)
    _check_root_path(path)
    os.chmod(path, mode, follow_symlinks=False)


def prepare_directories(arguments: argparse.Namespace, user: pwd.struct_passwd) -> None:
    """The socket's dir (root's, 0755), the run root (the user's, 0711, in a dir of
    root's) and the daemon's state dir (root's, 0700 until the daemon opens it to 0711)."""
    socket_path = Path(arguments.socket)
    _root_dir(socket_path.parent, 0o755)
    if socket_path.is_dir() and not socket_path.is_symlink():
        raise EntrypointError(f"{socket_path} is a directory, not a socket path")
    if os.path.lexists(socket_path):
        os.unlink(socket_path)  # a stale socket would look like a ready daemon

    run_root = Path(arguments.run_root)
    _root_dir(run_root.parent, 0o755)
    with contextlib.suppress(FileExistsError):
        os.mkdir(run_root, 0o711)
    try:
        fd = os.open(run_root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as error:
        raise EntrypointError(f"{run_root} is not a directory: {error}") from error
    try:
        os.fchown(fd, user.pw_uid, user.pw_gid)
        os.fchmod(fd, 0o711)
    finally:
        os.close(fd)

    state_dir = Path(arguments.state_dir)
    _root_dir(state_dir.parent, 0o755)
    if not state_dir.exists():
        os.mkdir(state_dir, 0o700)
    _check_root_path(state_dir)


# ---- the two modes -----------------------------------------------------------------------


def _exec(command: list[str], environment: dict[str, str]) -> NoReturn:
    try:
        os.execvpe(command[0], command, environment)  # noqa: S606 - argv as given, no shell
    except OSError as error:
        _log(f"cannot execute {command[0]!r}: {error}")
    os._exit(EXIT_EXEC)


def run_directly(arguments: argparse.Namespace, user: pwd.struct_passwd) -> NoReturn:
    """Drop privileges and become the command (no daemon)."""
    environment = command_environment(dict(os.environ), user, arguments.unset_env, {})
    drop_privileges(user)
    for number in PYTHON_IGNORED_SIGNALS:
        signal.signal(number, signal.SIG_DFL)
    _exec(arguments.command, environment)


def _send(pid: int, number: int, *, group: bool = False) -> None:
    """Signal a child (or its whole group); one that is already gone is not an error."""
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(pid, number)
        else:
            os.kill(pid, number)


@dataclass
class _Supervisor:
    """The root parent of the daemon and the command (see the module docstring)."""

    arguments: argparse.Namespace
    user: pwd.struct_passwd
    daemon_pid: int = 0
    command_pid: int = 0
    received: list[int] = field(default_factory=list)

    def on_signal(self, number: int, _frame: FrameType | None) -> None:
        self.received.append(number)
        if self.command_pid:
            _send(self.command_pid, number)

    def start_daemon(self) -> None:
        arguments = self.arguments
        argv = [
            sys.executable,
            "-s",
            "-m",
            "fmuengine.sandbox",
            "--listen",
            str(arguments.socket),
            "--allow-uid",
            str(self.user.pw_uid),
            "--run-root",
            str(arguments.run_root),
            "--state-dir",
            str(arguments.state_dir),
        ]
        supervisor = os.getpid()
        pid = os.fork()
        if pid == 0:
            try:
                _reset_signals()
                os.setsid()  # a session of its own: no terminal signal reaches it
                _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
                if os.getppid() != supervisor:
                    os._exit(EXIT_DAEMON)
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                os.close(null)
                os.chdir(PROJECT_ROOT)
                os.execve(sys.executable, argv, {})  # noqa: S606 - empty env: no secret
            except BaseException as error:  # a forked child must never return
                _log(f"cannot start the sandbox daemon: {error}")
            os._exit(EXIT_DAEMON)
        self.daemon_pid = pid
        _log(f"sandbox daemon started (pid {pid}, socket {arguments.socket})")

    def wait_for_socket(self) -> None:
        deadline = time.monotonic() + self.arguments.start_timeout
        path = self.arguments.socket
        while True:
            if self.received:
                self.stop_daemon()
                raise EntrypointError(
                    f"stopped by signal {self.received[0]} before the command started",
                    128 + self.received[0],
                )
            pid, status = os.waitpid(self.daemon_pid, os.WNOHANG)
            if pid:
                self.daemon_pid = 0
                raise EntrypointError(
                    "the sandbox daemon exited before it listened (exit status "
                    f"{os.waitstatus_to_exitcode(status)}; its log is above)",
                    EXIT_DAEMON,
                )
            try:
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    return
            except FileNotFoundError:
                pass
            if time.monotonic() > deadline:
                self.stop_daemon()
                raise EntrypointError(
                    f"the sandbox daemon did not create its socket {path} within "
                    f"{self.arguments.start_timeout:g} s",
                    EXIT_DAEMON,
                )
            time.sleep(0.05)

    def start_command(self) -> None:
        arguments = self.arguments
        environment = command_environment(
            dict(os.environ),
            self.user,
            arguments.unset_env,
            {"SANDBOX_SOCKET": str(arguments.socket), "SANDBOX_RUN_ROOT": str(arguments.run_root)},
        )
        supervisor = os.getpid()
        # Blocked across the fork: a signal now is forwarded once the pid is known.
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
        pid = os.fork()
        if pid == 0:
            try:
                os.setpgid(0, 0)
                _reset_signals()
                drop_privileges(self.user)
                # After the uid change, which clears it.
                _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
                if os.getppid() != supervisor:
                    os._exit(EXIT_DAEMON)
            except BaseException as error:  # a forked child must never return
                _log(f"cannot start {arguments.command[0]!r}: {error}")
                os._exit(EXIT_CONFIGURATION)
            _exec(arguments.command, environment)
        with contextlib.suppress(OSError):  # the child did it first (or has exec'd)
            os.setpgid(pid, pid)
        self.command_pid = pid
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)

    def _wait(self, pid: int, timeout: float) -> int | None:
        """Reap `pid` within `timeout` s (reaping any orphan on the way); its status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                reaped, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return None
            if reaped == pid:
                return status
            if reaped == 0:
                time.sleep(0.05)
        return None

    def stop_daemon(self) -> None:
        if not self.daemon_pid:
            return
        # Its group (its servers too) and itself: just after the fork it may not have
        # made its own session yet.
        for number in (signal.SIGTERM, signal.SIGKILL):
            _send(self.daemon_pid, number, group=True)
            _send(self.daemon_pid, number)
            timeout = self.arguments.stop_timeout if number == signal.SIGTERM else 5.0
            if self._wait(self.daemon_pid, timeout) is not None:
                break
        self.daemon_pid = 0
        # No socket without a daemon behind it (its dir is root's: nobody else made it).
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(self.arguments.socket).st_mode):
                os.unlink(self.arguments.socket)

    def stop_command(self) -> None:
        _send(self.command_pid, signal.SIGTERM)
        if self._wait(self.command_pid, self.arguments.stop_timeout) is None:
            _log(f"the command did not exit {self.arguments.stop_timeout:g} s after SIGTERM")
            _send(self.command_pid, signal.SIGKILL, group=True)
            self._wait(self.command_pid, 5.0)
        self.command_pid = 0

    def supervise(self) -> int:
        """Wait for either child; the container's exit status."""
        while True:
            pid, status = os.waitpid(-1, 0)  # a signal's handler runs, then it waits on
            if pid == self.command_pid:
                self.command_pid = 0
                code = os.waitstatus_to_exitcode(status)
                _log(f"the command exited ({code}); stopping the sandbox daemon")
                self.stop_daemon()
                return code if code >= 0 else 128 - code
            if pid == self.daemon_pid:
                self.daemon_pid = 0
                code = os.waitstatus_to_exitcode(status)
                _log(f"the sandbox daemon exited ({code}); stopping the command")
                self.stop_command()
                return EXIT_DAEMON
            # Anything else is an orphan handed to us (we may be PID 1): reaped, ignored.


def run_with_sandbox(arguments: argparse.Namespace, user: pwd.struct_passwd) -> int:
    if os.geteuid() != 0:
        raise EntrypointError("--sandbox needs root: the daemon runs as root")
    prepare_directories(arguments, user)
    supervisor = _Supervisor(arguments, user)
    for number in FORWARDED_SIGNALS:
        signal.signal(number, supervisor.on_signal)
    try:
        supervisor.start_daemon()
        supervisor.wait_for_socket()
        supervisor.start_command()
        return supervisor.supervise()
    except BaseException:
        if supervisor.command_pid:
            supervisor.stop_command()
        supervisor.stop_daemon()
        raise


def main(argv: list[str] | None = None) -> None:
    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    try:
        user = _user(arguments.user)
        if not arguments.sandbox:
            run_directly(arguments, user)
        sys.exit(run_with_sandbox(arguments, user))
    except EntrypointError as error:
        _log(str(error))
        sys.exit(error.code)


if __name__ == "__main__":
    main()
