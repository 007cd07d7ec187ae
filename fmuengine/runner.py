"""Run one simulation in the sandbox and judge how it ended (called by the Celery worker).

Each worker process keeps its own long-lived sandbox server (`python -m
fmuengine.sandbox`, see that module for the isolation it sets up), started on
first use with an empty environment in a new session, and reuses it for every
run; a thread that finds it busy starts another. A run:

1. gets a private dir under the run root (the FMU copied in, parameters in
   params.json) and a slot, whose number gives the run its own uid/gid so that
   concurrent runs (also from other worker processes, via flock) never share a
   uid and so never share an RLIMIT_NPROC count or can signal each other;
2. is sent to the server, which forks the sandboxed model process and enforces
   the wall-clock timeout; progress events are relayed to `on_progress`,
   `should_cancel` is polled;
3. is judged from the server's report (exit status and rusage from wait4,
   measured outside the sandbox) plus validating result.npy. Words written by
   the model process itself (error.json) only label a failure, never make one
   a success.

Runs live under `DEFAULT_RUN_ROOT` and slot n runs as uid/gid
`DEFAULT_SLOT_UID_BASE + n`; the Django settings may change both with
`configure()` (nothing here reads the environment).

If the server dies, stops answering or breaks the protocol, this process kills
its whole process group (the run dies with it: every process below has
PR_SET_PDEATHSIG), reports the run as `platform_error` and starts a fresh
server for the next run. Nothing a model does can end or hang the caller.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import math
import os
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fmuengine.sandbox.server import (
    ERROR_FILE,
    LOG_FILE,
    MODEL_FILE,
    PARAMS_FILE,
    REPORTED_FAILURE_EXIT_CODE,
    RESULT_FILE,
)

logger = logging.getLogger(__name__)

SUCCEEDED = "succeeded"
FAILED = "failed"
TIMED_OUT = "timed_out"
CANCELLED = "cancelled"
PLATFORM_ERROR = "platform_error"

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RUN_ROOT = Path("/tmp/fmu-gateway-sandbox")  # noqa: S108  (checked: ours, 0711)
# Slot n runs as uid/gid SLOT_UID_BASE + n: systemd documents 1879048192-2147483647
# as unused, so no system account or container uid range collides with these.
DEFAULT_SLOT_UID_BASE = 1_879_048_192
DEFAULT_SLOT_COUNT = 256

SERVER_START_TIMEOUT = 30.0
POLL_INTERVAL = 0.2
PROGRESS_CALLBACK_INTERVAL = 0.25
# How long past the wall-clock limit (or a cancel) the server gets to report a kill.
SERVER_GRACE_SECONDS = 3.0
LOG_TAIL_LINES = 50
LOG_TAIL_BYTES = 64 * 1024
ERROR_FILE_BYTES = 4096
MAX_EVENT_LINE_BYTES = 64 * 1024

SIMULATION_PARAMETERS = frozenset(
    {
        "start_time",
        "stop_time",
        "output_interval",
        "step_size",
        "relative_tolerance",
        "fmi_type",
        "solver",
        "start_values",
        "input",
        "output",
    }
)
REPORTED_ERROR_CODES = frozenset(
    {"model_error", "out_of_memory", "invalid_fmu", "invalid_parameters", "file_size_exceeded"}
)
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one run."""

    cpu_seconds: float
    memory_bytes: int  # address space (RLIMIT_AS) of the model process
    file_size_bytes: int
    max_processes: int
    wall_timeout_seconds: float


@dataclass(frozen=True)
class SandboxOutcome:
    """How a run ended. Call `cleanup()` once done with `result_path`."""

    status: str  # "succeeded" | "failed" | "timed_out" | "cancelled" | "platform_error"
    result_path: Path | None
    error_code: str | None
    message: str | None
    log_tail: str
    cpu_seconds: float
    wall_seconds: float
    run_dir: Path | None = field(default=None, repr=False)
    # Whether the server had this FMU extracted already ("hit"), did it now ("miss"),
    # or left it to the run ("off", "bad_key", "unprepared"); see sandbox.ModelCache.
    model_cache: str = "off"

    def cleanup(self) -> None:
        """Delete the run's dir (result and log); safe to call more than once."""
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)


@dataclass
class _Settings:
    run_root: Path = DEFAULT_RUN_ROOT
    slot_uid_base: int = DEFAULT_SLOT_UID_BASE
    slot_count: int = DEFAULT_SLOT_COUNT
    python_executable: str = sys.executable


_settings = _Settings()


def configure(
    *,
    run_root: Path | None = None,
    slot_uid_base: int | None = None,
    slot_count: int | None = None,
    python_executable: str | None = None,
) -> None:
    """Override where runs live, the slot uids and the interpreter (from Django settings)."""
    if run_root is not None:
        _settings.run_root = Path(run_root)
    if slot_uid_base is not None:
        _settings.slot_uid_base = slot_uid_base
    if slot_count is not None:
        _settings.slot_count = slot_count
    if python_executable is not None:
        _settings.python_executable = python_executable


class SandboxUnavailable(Exception):
    """The sandbox server could not be started or broke down (the platform's fault)."""


# ---- the sandbox server process ------------------------------------------------------


class SandboxServerProcess:
    """One `python -m fmuengine.sandbox` child of this process and its JSON-line pipes."""

    def __init__(self, python_executable: str, model_cache_root: Path) -> None:
        try:
            self.process = subprocess.Popen(
                [python_executable, "-s", "-m", "fmuengine.sandbox", str(model_cache_root)],
                cwd=PROJECT_ROOT,
                env={},  # no secret of the worker reaches the sandbox
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as error:
            raise SandboxUnavailable(f"cannot start the sandbox server: {error}") from error
        assert self.process.stdin is not None and self.process.stdout is not None
        self.command_fd = self.process.stdin.fileno()
        self.event_fd = self.process.stdout.fileno()
        os.set_blocking(self.command_fd, False)
        os.set_blocking(self.event_fd, False)
        # poll, not select: a busy worker may hold descriptors above FD_SETSIZE.
        self.poller = select.poll()
        self.poller.register(self.event_fd, select.POLLIN)
        self.buffer = b""
        self.isolation = "unknown"
        try:
            ready = self.read_event(SERVER_START_TIMEOUT)
        except SandboxUnavailable:
            self.kill()
            raise
        if ready is None or ready.get("event") != "ready":
            self.kill()
            raise SandboxUnavailable("the sandbox server did not become ready")
        self.isolation = str(ready.get("isolation"))

    def alive(self) -> bool:
        return self.process.poll() is None

    def send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message) + "\n").encode()
        try:
            # Commands are small and the server always reads: a full pipe means it is stuck.
            written = os.write(self.command_fd, data)
        except OSError as error:
            raise SandboxUnavailable(f"cannot talk to the sandbox server: {error}") from error
        if written != len(data):
            raise SandboxUnavailable("the sandbox server does not read its commands")

    def read_event(self, timeout: float) -> dict[str, Any] | None:
        """The next event, or None if none came within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if not self.poller.poll(remaining * 1000):
                return None
            try:
                chunk = os.read(self.event_fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                raise SandboxUnavailable("the sandbox server exited")
            self.buffer += chunk
            if len(self.buffer) > MAX_EVENT_LINE_BYTES and b"\n" not in self.buffer:
                raise SandboxUnavailable("the sandbox server sent an overlong line")
        line, self.buffer = self.buffer.split(b"\n", 1)
        try:
            event = json.loads(line)
        except ValueError as error:
            raise SandboxUnavailable("the sandbox server sent an unreadable event") from error
        if not isinstance(event, dict):
            raise SandboxUnavailable("the sandbox server sent an unreadable event")
        return event

    def kill(self) -> None:
        """Kill the server's process group; its runs die with it (parent-death signals)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()


class _ServerPool:
    """Idle sandbox servers of this process; rebuilt after a fork (Celery prefork)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.owner_pid = os.getpid()
        self.idle: list[SandboxServerProcess] = []

    def take(self) -> SandboxServerProcess:
        with self.lock:
            if self.owner_pid != os.getpid():
                # Inherited from the parent process: those servers are not ours to use.
                self.owner_pid = os.getpid()
                self.idle = []
            while self.idle:
                server = self.idle.pop()
                if server.alive():
                    return server
                server.kill()
        _ensure_private_dir(_settings.run_root, 0o711)
        model_cache_root = _settings.run_root / "models"
        _ensure_private_dir(model_cache_root, 0o700)
        return SandboxServerProcess(_settings.python_executable, model_cache_root)

    def give_back(self, server: SandboxServerProcess) -> None:
        with self.lock:
            if self.owner_pid == os.getpid() and server.alive():
                self.idle.append(server)
                return
        server.kill()

    def close_all(self) -> None:
        """Stop this process's idle servers (at exit), so none outlives its worker."""
        with self.lock:
            servers, self.idle = (self.idle if self.owner_pid == os.getpid() else []), []
        for server in servers:
            server.kill()


_servers = _ServerPool()
atexit.register(_servers.close_all)


def isolation_level() -> str:
    """The isolation the sandbox sets up here, e.g. "namespaces+setuid+seccomp+rlimits",
    or "unavailable" when no sandbox server can be started."""
    try:
        server = _servers.take()
    except SandboxUnavailable:
        return "unavailable"
    _servers.give_back(server)
    return server.isolation


# ---- run dirs and slots ----------------------------------------------------------------


def _ensure_private_dir(path: Path, mode: int) -> None:
    """Create `path` or accept it only if it is a real dir of ours nobody else can write."""
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise SandboxUnavailable(f"{path} is not a private directory of this user")
    os.chmod(path, mode)


@dataclass
class _RunDir:
    """`<run root>/run-XXXX/`: `sandbox/` becomes the model's /sandbox, `root/` is where
    its private root file system is mounted."""

    path: Path

    @property
    def sandbox(self) -> Path:
        return self.path / "sandbox"

    @property
    def root(self) -> Path:
        return self.path / "root"

    @classmethod
    def create(cls, fmu_path: Path, params: dict[str, Any]) -> _RunDir:
        _ensure_private_dir(_settings.run_root, 0o711)
        path = Path(tempfile.mkdtemp(prefix="run-", dir=_settings.run_root))
        # Traversable (not listable) so a model without namespaces can still reach its dir.
        os.chmod(path, 0o711)  # noqa: S103
        run_dir = cls(path)
        run_dir.sandbox.mkdir(mode=0o700)
        run_dir.root.mkdir(mode=0o700)
        shutil.copyfile(fmu_path, run_dir.sandbox / MODEL_FILE)
        (run_dir.sandbox / PARAMS_FILE).write_text(json.dumps(params))
        return run_dir


class _Slot:
    """An flock-held slot number, unique among all runs on this machine."""

    def __init__(self) -> None:
        slots_dir = _settings.run_root / "slots"
        _ensure_private_dir(slots_dir, 0o700)
        for number in range(_settings.slot_count):
            fd = os.open(slots_dir / f"{number}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.number, self.fd = number, fd
            return
        raise SandboxUnavailable("every sandbox slot is busy")

    @property
    def uid(self) -> int:
        return _settings.slot_uid_base + self.number

    def release(self) -> None:
        os.close(self.fd)  # closing drops the flock


# ---- reading what the run left behind --------------------------------------------------


def _open_regular_file(path: Path) -> int | None:
    """Open a file the model may have replaced: no symlinks, no FIFOs, no devices."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    info = os.fstat(fd)
    # A hard link could make us (root) read a file the model cannot read itself.
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        return None
    return fd


def _read_tail(path: Path, max_bytes: int) -> bytes:
    fd = _open_regular_file(path)
    if fd is None:
        return b""
    try:
        size = os.fstat(fd).st_size
        os.lseek(fd, max(0, size - max_bytes), os.SEEK_SET)
        return os.read(fd, max_bytes)
    finally:
        os.close(fd)


def _clean_text(text: str, limit: int) -> str:
    text = _CONTROL_CHARACTERS.sub(" ", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _log_tail(run_dir: _RunDir) -> str:
    data = _read_tail(run_dir.sandbox / LOG_FILE, LOG_TAIL_BYTES).decode("utf-8", "replace")
    lines = data.splitlines()[-LOG_TAIL_LINES:]
    return "\n".join(_clean_text(line, 2000) for line in lines)


def _reported_failure(run_dir: _RunDir) -> tuple[str, str]:
    """The model process's own account of its failure (a label, not a verdict)."""
    default = ("model_error", "The simulation failed.")
    data = _read_tail(run_dir.sandbox / ERROR_FILE, ERROR_FILE_BYTES)
    try:
        report = json.loads(data)
        code, message = report["code"], report["message"]
    except (ValueError, KeyError, TypeError):
        return default
    if code not in REPORTED_ERROR_CODES or not isinstance(message, str):
        return default
    return code, _clean_text(" ".join(message.split()), 500)


def _validated_result(run_dir: _RunDir, limits: SandboxLimits) -> Path | None:
    """result.npy if it is a well-formed fmpy result table, else None."""
    path = run_dir.sandbox / RESULT_FILE
    fd = _open_regular_file(path)
    if fd is None:
        return None
    try:
        if os.fstat(fd).st_size > limits.file_size_bytes:
            return None
        with os.fdopen(fd, "rb", closefd=False) as stream:
            result = np.load(stream, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    finally:
        os.close(fd)
    names = result.dtype.names if isinstance(result, np.ndarray) else None
    if not names or names[0] != "time" or result.ndim != 1:
        return None
    for name in names:
        field_type = result.dtype.fields[name][0]
        if field_type.kind not in "biuf" or field_type.shape:
            return None
    times = result["time"]
    if not np.all(np.isfinite(times)) or np.any(np.diff(times) < 0):
        return None
    return path


# ---- judging the outcome ----------------------------------------------------------------


def _signal_name(number: int) -> str:
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
    description = signal.strsignal(number)
    return f"{name} ({description.lower()})" if description else name


Verdict = tuple[str, str | None, str | None, Path | None]  # status, error_code, message, result


def _judge(finished: dict[str, Any], run_dir: _RunDir, limits: SandboxLimits) -> Verdict:
    """The run's verdict from the server's report (trusted) and the files it left."""
    kind, value = finished.get("exit_kind"), finished.get("exit_value")
    # A model that exited by itself just before the kill landed is judged as it ended.
    killed_by = finished.get("killed_by") if kind != "exited" else None
    cpu_seconds = float(finished.get("cpu_seconds") or 0.0)
    max_rss = int(finished.get("max_rss_bytes") or 0)
    if killed_by == "timeout":
        message = (
            f"The run exceeded its wall-clock limit of {limits.wall_timeout_seconds:g} s "
            "and was stopped."
        )
        return TIMED_OUT, "timeout", message, None
    if killed_by == "cancelled":
        return CANCELLED, "cancelled", "The run was cancelled.", None
    if finished.get("setup_error") or kind not in ("exited", "signaled"):
        logger.error("sandbox setup failed: %s", finished.get("setup_error"))
        return PLATFORM_ERROR, "sandbox_failed", "The sandbox could not run the model.", None
    if kind == "signaled":
        number = int(value)
        if number == signal.SIGXCPU or (
            number == signal.SIGKILL and cpu_seconds >= limits.cpu_seconds - 0.5
        ):
            message = f"The model used more than its limit of {limits.cpu_seconds:g} CPU seconds."
            return FAILED, "cpu_time_exceeded", message, None
        if number == signal.SIGXFSZ:
            return FAILED, "file_size_exceeded", "The run exceeded its file size limit.", None
        if number == signal.SIGKILL and max_rss >= 0.8 * limits.memory_bytes:
            return FAILED, "out_of_memory", "The model ran out of memory and was killed.", None
        message = f"The model crashed with {_signal_name(number)}."
        return FAILED, "model_crashed", message, None
    code = int(value)
    if code == 0:
        result_path = _validated_result(run_dir, limits)
        if result_path is None:
            message = "The run ended without a valid result."
            return FAILED, "invalid_result", message, None
        return SUCCEEDED, None, None, result_path
    if code == REPORTED_FAILURE_EXIT_CODE:
        error_code, message = _reported_failure(run_dir)
        return FAILED, error_code, message, None
    return FAILED, "model_exited", f"The model ended the process with exit code {code}.", None


# ---- running -------------------------------------------------------------------------


def _check_params(params: dict[str, Any]) -> None:
    unknown = set(params) - SIMULATION_PARAMETERS
    if unknown:
        raise ValueError(f"unknown simulation parameters: {', '.join(sorted(unknown))}")
    table = params.get("input")
    if table is not None:
        columns, rows = table.get("columns"), table.get("rows")
        if not columns or columns[0] != "time" or not isinstance(rows, list):
            raise ValueError('input must be {"columns": ["time", ...], "rows": [[...], ...]}')
        if any(len(row) != len(columns) for row in rows):
            raise ValueError("every input row needs one value per column")


def _relay_run(
    server: SandboxServerProcess,
    run_id: str,
    limits: SandboxLimits,
    on_progress: Callable[[float], None] | None,
    should_cancel: Callable[[], bool] | None,
) -> tuple[dict[str, Any] | None, str | None]:
    """Wait for the run's "finished" event while relaying progress and cancels.
    Returns (finished event, None) or (None, why the server had to be killed)."""
    started = time.monotonic()
    backstop = started + limits.wall_timeout_seconds + SERVER_GRACE_SECONDS
    cancel_requested = False
    next_cancel_poll = started
    last_progress_at = -math.inf
    last_progress = 0.0
    while True:
        now = time.monotonic()
        if should_cancel is not None and not cancel_requested and now >= next_cancel_poll:
            next_cancel_poll = now + POLL_INTERVAL
            if should_cancel():
                cancel_requested = True
                server.send({"op": "cancel", "run_id": run_id})
                backstop = min(backstop, now + SERVER_GRACE_SECONDS)
        if now >= backstop:
            return None, "cancelled" if cancel_requested else "unresponsive"
        event = server.read_event(min(POLL_INTERVAL, backstop - now))
        if event is None or event.get("run_id") != run_id:
            continue
        kind = event.get("event")
        if kind == "finished":
            return event, None
        if kind == "progress" and on_progress is not None:
            value = event.get("value")
            if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                continue
            if value > last_progress and now - last_progress_at >= PROGRESS_CALLBACK_INTERVAL:
                last_progress, last_progress_at = float(value), now
                on_progress(last_progress)
        elif kind == "error":
            raise SandboxUnavailable(str(event.get("message")))


def run_simulation(
    *,
    fmu_path: Path,
    params: dict[str, Any],
    limits: SandboxLimits,
    on_progress: Callable[[float], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    model_key: str | None = None,
) -> SandboxOutcome:
    """Simulate `fmu_path` in the sandbox. `params` mirror fmpy.simulate_fmu's arguments
    (start_time, stop_time, output_interval, step_size, relative_tolerance, fmi_type,
    solver, start_values {name: value}, input {"columns": ["time", ...], "rows": [...]},
    output [names]). `model_key`, the FMU's sha256, lets the server reuse its extracted
    copy of the same file. Raises ValueError for malformed params; every other problem
    is reported in the outcome."""
    started = time.monotonic()
    _check_params(params)
    params_json = json.loads(json.dumps(params))  # fails early if not JSON-serializable

    def outcome(
        status: str,
        code: str | None,
        message: str | None,
        *,
        result_path: Path | None = None,
        log_tail: str = "",
        cpu_seconds: float = 0.0,
        run_dir: Path | None = None,
        model_cache: str = "off",
    ) -> SandboxOutcome:
        return SandboxOutcome(
            status=status,
            result_path=result_path,
            error_code=code,
            message=message,
            log_tail=log_tail,
            cpu_seconds=cpu_seconds,
            wall_seconds=time.monotonic() - started,
            run_dir=run_dir,
            model_cache=model_cache,
        )

    try:
        run_dir = _RunDir.create(Path(fmu_path), params_json)
    except (OSError, SandboxUnavailable) as error:
        logger.error("cannot prepare a sandbox run: %s", error)
        return outcome(PLATFORM_ERROR, "sandbox_failed", "The sandbox could not prepare the run.")

    server: SandboxServerProcess | None = None
    slot: _Slot | None = None
    keep_run_dir = False
    try:
        slot = _Slot()
        server = _servers.take()
        run_id = run_dir.path.name
        server.send(
            {
                "op": "run",
                "run_id": run_id,
                "run_dir": str(run_dir.sandbox),
                "root_dir": str(run_dir.root),
                "uid": slot.uid,
                "gid": slot.uid,
                "model_key": model_key,
                "limits": {
                    "cpu_seconds": limits.cpu_seconds,
                    "memory_bytes": limits.memory_bytes,
                    "file_size_bytes": limits.file_size_bytes,
                    "max_processes": limits.max_processes,
                    "wall_timeout_seconds": limits.wall_timeout_seconds,
                },
            }
        )
        finished, kill_reason = _relay_run(server, run_id, limits, on_progress, should_cancel)
        if finished is None:
            server.kill()
            server = None
            log_tail = _log_tail(run_dir)
            if kill_reason == "cancelled":
                return outcome(CANCELLED, "cancelled", "The run was cancelled.", log_tail=log_tail)
            logger.error("the sandbox server stopped answering; killed it")
            message = "The sandbox stopped responding; the run was stopped."
            return outcome(PLATFORM_ERROR, "sandbox_failed", message, log_tail=log_tail)
        status, code, message, result_path = _judge(finished, run_dir, limits)
        keep_run_dir = status == SUCCEEDED
        return outcome(
            status,
            code,
            message,
            result_path=result_path,
            log_tail=_log_tail(run_dir),
            cpu_seconds=float(finished.get("cpu_seconds") or 0.0),
            run_dir=run_dir.path if keep_run_dir else None,
            model_cache=str(finished.get("model_cache", "off")),
        )
    except SandboxUnavailable as error:
        logger.error("sandbox failure: %s", error)
        if server is not None:
            server.kill()
            server = None
        return outcome(
            PLATFORM_ERROR,
            "sandbox_failed",
            "The sandbox failed while running the model.",
            log_tail=_log_tail(run_dir),
        )
    except BaseException:
        # A callback raised or the worker is being stopped: the run must not outlive us.
        if server is not None:
            server.kill()
            server = None
        raise
    finally:
        if server is not None:
            _servers.give_back(server)
        if slot is not None:
            slot.release()
        if not keep_run_dir:
            shutil.rmtree(run_dir.path, ignore_errors=True)
