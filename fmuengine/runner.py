"""Run one simulation in the sandbox and judge how it ended (called by the Celery worker).

The runner is the unprivileged side. It talks to a sandbox server (see
`fmuengine.sandbox`), either a root daemon reached over a unix socket (`configure(
sandbox_socket=...)`, production: the worker holding the secrets is not root) or a
server it starts itself as its child (`make run`, tests). One connection serves one run
at a time; a thread that finds every connection busy opens another. A run:

1. gets a private dir under the run root: the FMU copied in (and hashed on the way:
   the sha256 is the key of the server's prepared copy), `params.json`, an empty `out/`,
   and a slot, whose number gives the run its own uid/gid (flock: unique machine-wide);
2. is sent to the server, which runs it in a jail and enforces the wall-clock limit;
   progress is relayed to `on_progress`, `should_cancel` is polled;
3. is judged from the server's report (exit status, rusage, the cgroup's OOM kills,
   whether the disk quota is full: measured outside the jail) plus what the sandbox
   copied into `out/`, parsed by `fmuengine.outputs` as untrusted input. Nothing a
   model writes can make its run a platform fault: only a set-up that failed before
   model code ran, or a server that broke, is one (and refunded).

If the server dies, stops answering or breaks the protocol, the connection is dropped
(the run dies with it), the run is a `platform_error`, and the next run gets a fresh
server. Nothing a model does can end or hang the caller. Below the configured required
isolation (`required_isolation`), no run is started at all: the sandbox fails closed.

Many cases of one model for one owner (a study) run together: see `fmuengine.batch`.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmuengine import outputs
from fmuengine.fsutil import remove_tree
from fmuengine.protocol import (
    ISOLATION_LEVELS,
    LOG_FILE,
    MODEL_FILE,
    OUT_DIR,
    PARAMS_FILE,
    RunCommand,
    RunErrorCode,
    SandboxLimits,
)
from fmuengine.sandbox_client import (
    DEFAULT_SLOT_COUNT,
    DEFAULT_SLOT_UID_BASE,
    SandboxConnection,
    SandboxUnavailable,
    connection_pool,
    ensure_private_dir,
)
from fmuengine.sandbox_client import settings as _settings
from fmuengine.verdict import (
    CANCELLED,
    FAILED,
    PLATFORM_ERROR,
    SUCCEEDED,
    TIMED_OUT,
    judge,
)

__all__ = [
    "CANCELLED",
    "DEFAULT_SLOT_COUNT",
    "DEFAULT_SLOT_UID_BASE",
    "FAILED",
    "PLATFORM_ERROR",
    "SUCCEEDED",
    "TIMED_OUT",
    "SandboxLimits",
    "SandboxOutcome",
    "SandboxStatus",
    "SandboxUnavailable",
    "configure",
    "isolation_level",
    "run_simulation",
    "sandbox_status",
]

logger = logging.getLogger(__name__)


POLL_INTERVAL = 0.2
PROGRESS_CALLBACK_INTERVAL = 0.25
# How long past the wall-clock limit (or a cancel) the server gets to report a kill.
SERVER_GRACE_SECONDS = 3.0
# Preparing a model the server has not seen (extract, parse) comes before the run's clock.
PREPARE_GRACE_SECONDS = 60.0
COPY_CHUNK_BYTES = 1 << 20

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
    # Whether the server had this FMU prepared already ("hit"), did it now ("miss"), or
    # left it to the run ("off", "bad_key", "unprepared").
    model_cache: str = "off"
    run_id: str = ""  # the run's name in the sandbox (its dir under the run root)
    # Holds the run dir's lock until cleanup(), so no sweep takes the result away.
    owner: _RunDir | None = field(default=None, repr=False, compare=False)

    def cleanup(self) -> None:
        """Delete the run's dir (result and log); safe to call more than once."""
        if self.owner is not None:
            self.owner.remove()
        elif self.run_dir is not None:
            remove_tree(self.run_dir)


@dataclass(frozen=True)
class SandboxStatus:
    """Whether this worker may take runs, and why not."""

    ready: bool
    isolation: str
    missing: dict[str, str]
    reason: str


def configure(**changes: Any) -> None:
    """Set where runs live, the slot uids, the interpreter, the daemon's socket, the
    required isolation and the free-disk threshold (from Django settings; nothing in
    the engine reads the environment). See sandbox_client.Settings."""
    _settings.update(**changes)


# ---- status ------------------------------------------------------------------------------


def _free_disk_bytes() -> int:
    root = _settings.run_root
    root.mkdir(parents=True, exist_ok=True)
    info = os.statvfs(root)
    return info.f_bavail * info.f_frsize


def _refusal(connection: SandboxConnection) -> str:
    """Why no run may start on this connection's sandbox ("" when one may): below the
    required isolation, or less free disk under the run root than the threshold."""
    required = ISOLATION_LEVELS.get(_settings.required_isolation, frozenset())
    lacking = {name: why for name, why in connection.missing.items() if name in required}
    if lacking:
        reasons = "; ".join(f"{name}: {why}" for name, why in sorted(lacking.items()))
        return (
            f"the sandbox isolation is below the required level "
            f"'{_settings.required_isolation}' ({reasons})"
        )
    try:
        free = _free_disk_bytes()
    except OSError as error:
        return f"run root: {error}"
    if free < _settings.min_free_disk_bytes:
        return (
            f"only {free >> 20} MiB free under {_settings.run_root} "
            f"(at least {_settings.min_free_disk_bytes >> 20} MiB needed)"
        )
    return ""


def sandbox_status() -> SandboxStatus:
    """Ready when a sandbox answers with at least the required isolation and the run
    root has the free disk the threshold asks for."""
    try:
        connection = connection_pool.take()
    except SandboxUnavailable as error:
        return SandboxStatus(False, "unavailable", {}, str(error))
    connection_pool.give_back(connection)
    reason = _refusal(connection)
    return SandboxStatus(not reason, connection.isolation, connection.missing, reason)


def isolation_level() -> str:
    """The measures the sandbox applies here, e.g.
    "namespaces+setuid+cgroups+disk-quota+seccomp+rlimits", or "unavailable"."""
    try:
        connection = connection_pool.take()
    except SandboxUnavailable:
        return "unavailable"
    connection_pool.give_back(connection)
    return connection.isolation


# ---- run dirs and slots ----------------------------------------------------------------


SWEEP_INTERVAL_SECONDS = 600.0
_sweep_lock = threading.Lock()
_next_sweep = 0.0


def _sweep_abandoned_run_dirs() -> None:
    """Remove run dirs whose runner is gone (a killed worker), at most every ten
    minutes per process: a live run holds an flock on its dir's .lock from its
    creation until its caller's cleanup(); a dir younger than the interval is left
    alone whatever its lock says (it may be being made right now)."""
    global _next_sweep
    with _sweep_lock:
        now = time.monotonic()
        if now < _next_sweep:
            return
        _next_sweep = now + SWEEP_INTERVAL_SECONDS
    for entry in os.scandir(_settings.run_root):
        if not entry.name.startswith("run-") or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            if time.time() - entry.stat(follow_symlinks=False).st_mtime < SWEEP_INTERVAL_SECONDS:
                continue
        except OSError:
            continue
        try:
            fd = os.open(os.path.join(entry.path, ".lock"), os.O_RDWR | os.O_NOFOLLOW)
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its runner is alive
            finally:
                os.close(fd)
        remove_tree(entry.path)


@dataclass
class _RunDir:
    """`<run root>/run-XXXX/`: model.fmu, params.json, out/; flocked while it lives."""

    path: Path
    lock_fd: int
    model_key: str

    @property
    def out(self) -> Path:
        return self.path / OUT_DIR

    @classmethod
    def create(cls, fmu_path: Path, params: dict[str, Any]) -> _RunDir:
        ensure_private_dir(_settings.run_root, 0o711)
        _sweep_abandoned_run_dirs()
        path = Path(tempfile.mkdtemp(prefix="run-", dir=_settings.run_root))
        lock_fd = os.open(path / ".lock", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        digest = hashlib.sha256()
        with open(fmu_path, "rb") as source, open(path / MODEL_FILE, "wb") as target:
            while chunk := source.read(COPY_CHUNK_BYTES):
                digest.update(chunk)
                target.write(chunk)
        # Readable by the run's slot uid inside its jail (the run dir itself is private).
        os.chmod(path / MODEL_FILE, 0o644)
        (path / PARAMS_FILE).write_text(json.dumps(params))
        (path / OUT_DIR).mkdir(mode=0o700)
        return cls(path, lock_fd, digest.hexdigest())

    def remove(self) -> None:
        """Delete the dir, then let go of its lock; safe to call more than once."""
        if self.lock_fd < 0:
            return
        remove_tree(self.path)
        with contextlib.suppress(OSError):
            os.close(self.lock_fd)
        self.lock_fd = -1


class _Slot:
    """An flock-held slot number, unique among all runs on this machine."""

    def __init__(self) -> None:
        slots_dir = _settings.run_root / "slots"
        ensure_private_dir(slots_dir, 0o700)
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
    connection: SandboxConnection,
    run_id: str,
    limits: SandboxLimits,
    on_progress: Callable[[float], None] | None,
    should_cancel: Callable[[], bool] | None,
) -> tuple[dict[str, Any] | None, str | None]:
    """Wait for the run's "finished" event while relaying progress and cancels.
    Returns (finished event, None) or (None, why the connection had to be dropped)."""
    started = time.monotonic()
    backstop = started + PREPARE_GRACE_SECONDS + limits.wall_timeout_seconds + SERVER_GRACE_SECONDS
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
                connection.send({"op": "cancel", "run_id": run_id})
                backstop = min(backstop, now + SERVER_GRACE_SECONDS)
        if now >= backstop:
            return None, "cancelled" if cancel_requested else "unresponsive"
        event = connection.read_event(min(POLL_INTERVAL, backstop - now))
        if event is None or event.get("run_id") != run_id:
            continue
        kind = event.get("event")
        if kind == "finished":
            return event, None
        if kind == "started":
            # The run's own clock starts now (a preparation may have come first).
            backstop = min(
                backstop, time.monotonic() + limits.wall_timeout_seconds + SERVER_GRACE_SECONDS
            )
        elif kind == "progress" and on_progress is not None:
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
    output [names]). With `model_key` (the FMU's sha256 as the caller knows it) the
    server may reuse its prepared copy, keyed by the sha256 computed here while copying.
    Raises ValueError for malformed params; every other problem is in the outcome."""
    started = time.monotonic()
    _check_params(params)
    params_json = json.loads(json.dumps(params))  # fails early if not JSON-serializable

    def outcome(
        status: str, code: str | None, message: str | None, **fields: Any
    ) -> SandboxOutcome:
        return SandboxOutcome(
            status=status,
            error_code=None if code is None else str(code),
            message=message,
            result_path=fields.pop("result_path", None),
            log_tail=fields.pop("log_tail", ""),
            cpu_seconds=fields.pop("cpu_seconds", 0.0),
            wall_seconds=time.monotonic() - started,
            **fields,
        )

    try:
        run_dir = _RunDir.create(Path(fmu_path), params_json)
    except (OSError, SandboxUnavailable) as error:
        logger.error("cannot prepare a sandbox run: %s", error)
        return outcome(
            PLATFORM_ERROR, RunErrorCode.SANDBOX_FAILED, "The sandbox could not prepare the run."
        )
    if model_key is not None and model_key != run_dir.model_key:
        logger.warning(
            "the caller's key for %s is not its sha256; the file's own is used", fmu_path
        )

    connection: SandboxConnection | None = None
    slot: _Slot | None = None
    keep_run_dir = False
    try:
        # The connection the run will use is the one checked (one pool round trip).
        try:
            connection = connection_pool.take()
            refusal = _refusal(connection)
        except SandboxUnavailable as error:
            refusal = str(error)
        if refusal or connection is None:
            logger.error("no run started: %s", refusal)
            message = "The sandbox is not available on this worker; the run was not started."
            return outcome(PLATFORM_ERROR, RunErrorCode.SANDBOX_FAILED, message)
        slot = _Slot()
        run_id = run_dir.path.name
        command = RunCommand(
            run_id=run_id,
            run_dir=str(run_dir.path),
            uid=slot.uid,
            gid=slot.uid,
            limits=limits,
            model_key=run_dir.model_key if model_key is not None else None,
        )
        connection.send(command.to_json())
        finished, kill_reason = _relay_run(connection, run_id, limits, on_progress, should_cancel)
        if finished is None:
            connection.kill()
            connection = None
            log_tail = outputs.read_log_tail(run_dir.out / LOG_FILE)
            if kill_reason == "cancelled":
                return outcome(
                    CANCELLED, RunErrorCode.CANCELLED, "The run was cancelled.", log_tail=log_tail
                )
            logger.error("the sandbox server stopped answering; dropped it")
            message = "The sandbox stopped responding; the run was stopped."
            return outcome(PLATFORM_ERROR, RunErrorCode.SANDBOX_FAILED, message, log_tail=log_tail)
        try:
            status_, code, judged_message, result_path = judge(finished, run_dir.out, limits)
        except Exception as error:  # whatever the model left: its own error, never ours
            logger.warning("judging run %s raised %r: the model's output is invalid", run_id, error)
            status_, code, judged_message, result_path = (
                FAILED,
                RunErrorCode.INVALID_RESULT,
                "The run ended without a valid result.",
                None,
            )
        keep_run_dir = status_ == SUCCEEDED
        return outcome(
            status_,
            code,
            judged_message,
            result_path=result_path,
            log_tail=outputs.read_log_tail(run_dir.out / LOG_FILE),
            cpu_seconds=float(finished.get("cpu_seconds") or 0.0),
            run_dir=run_dir.path if keep_run_dir else None,
            owner=run_dir if keep_run_dir else None,
            model_cache=str(finished.get("model_cache", "off")),
            run_id=run_id,
        )
    except SandboxUnavailable as error:
        logger.error("sandbox failure: %s", error)
        if connection is not None:
            connection.kill()
            connection = None
        return outcome(
            PLATFORM_ERROR,
            RunErrorCode.SANDBOX_FAILED,
            "The sandbox failed while running the model.",
            log_tail=outputs.read_log_tail(run_dir.out / LOG_FILE),
        )
    except BaseException:
        # A callback raised or the worker is being stopped: the run must not outlive us.
        if connection is not None:
            connection.kill()
            connection = None
        raise
    finally:
        if connection is not None:
            connection_pool.give_back(connection)
        if slot is not None:
            slot.release()
        if not keep_run_dir:  # else it stays, locked, until the caller's cleanup()
            run_dir.remove()


atexit.register(connection_pool.close_all)
