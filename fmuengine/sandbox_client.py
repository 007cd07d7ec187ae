"""The runner's connections to sandbox servers, and the engine's settings.

A connection is a unix stream socket carrying `protocol` JSON lines. Either the runner
connects to a root daemon's socket (`sandbox_socket` set: production, where the worker
is not root), or it starts `python -m fmuengine.sandbox --fd N` as its own child with an
empty environment (no secret of the worker reaches it) and a socketpair.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from fmuengine.protocol import MAX_EVENT_LINE_BYTES

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SERVER_START_TIMEOUT = 30.0


DEFAULT_SLOT_UID_BASE = 1_879_048_192
DEFAULT_SLOT_COUNT = 256


@dataclass
class Settings:
    """The engine's settings; Django sets them with `runner.configure()`."""

    run_root: Path = Path("/tmp/fmu-gateway-sandbox")  # noqa: S108  (checked: ours, 0711)
    # Slot n runs as uid/gid slot_uid_base + n: systemd documents 1879048192-2147483647
    # as unused, so no system account or container uid range collides with these.
    slot_uid_base: int = DEFAULT_SLOT_UID_BASE
    slot_count: int = DEFAULT_SLOT_COUNT
    python_executable: str = sys.executable
    sandbox_socket: str | None = None  # a root daemon's socket; None: start our own
    state_dir: Path | None = None  # a started server's own state (default: under run_root)
    required_isolation: str = "none"  # "full" or "none": see protocol.ISOLATION_LEVELS
    min_free_disk_bytes: int = 0

    def key(self) -> tuple[Any, ...]:
        """What a started server was told: a connection made under other settings is
        not reused after configure()."""
        return (self.run_root, self.slot_uid_base, self.slot_count, self.sandbox_socket)

    def update(self, **changes: Any) -> None:
        known = {field.name for field in fields(self)}
        for name, value in changes.items():
            if name not in known:
                raise TypeError(f"unknown sandbox setting {name!r}")
            if value is None and name not in ("sandbox_socket", "state_dir"):
                continue
            if name in ("run_root", "state_dir") and value is not None:
                value = Path(value)
            setattr(self, name, value)


settings = Settings()


def ensure_private_dir(path: Path, mode: int) -> None:
    """Create `path` or accept it only if it is a real dir of ours nobody else can write."""
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise SandboxUnavailable(f"{path} is not a private directory of this user")
    os.chmod(path, mode)


class SandboxUnavailable(Exception):
    """No sandbox server could be reached, or it broke down (the platform's fault)."""


class SandboxConnection:
    """One server (started here or reached over the daemon's socket) and its socket."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.settings_key = settings.key()
        if settings.sandbox_socket:
            self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self.socket.connect(settings.sandbox_socket)
            except OSError as error:
                self.socket.close()
                raise SandboxUnavailable(
                    f"cannot reach the sandbox daemon at {settings.sandbox_socket}: {error}"
                ) from error
        else:
            self.socket = self._start_server()
        self.socket.setblocking(False)
        self.buffer = b""
        self.isolation = "unknown"
        self.measures: frozenset[str] = frozenset()
        self.missing: dict[str, str] = {}
        try:
            ready = self.read_event(SERVER_START_TIMEOUT)
        except SandboxUnavailable:
            self.kill()
            raise
        if ready is None or ready.get("event") != "ready":
            self.kill()
            raise SandboxUnavailable("the sandbox server did not become ready")
        self.isolation = str(ready.get("isolation"))
        self.measures = frozenset(map(str, ready.get("measures") or ()))
        missing = ready.get("missing")
        self.missing = (
            {str(k): str(v) for k, v in missing.items()} if isinstance(missing, dict) else {}
        )

    def _start_server(self) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        state_dir = settings.state_dir or settings.run_root / "models"
        try:
            self.process = subprocess.Popen(
                [
                    settings.python_executable,
                    "-s",
                    "-m",
                    "fmuengine.sandbox",
                    "--fd",
                    str(theirs.fileno()),
                    "--run-root",
                    str(settings.run_root),
                    "--state-dir",
                    str(state_dir),
                    "--slot-uid-base",
                    str(settings.slot_uid_base),
                    "--slot-count",
                    str(settings.slot_count),
                ],
                cwd=PROJECT_ROOT,
                env={},  # no secret of the worker reaches the sandbox
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=[theirs.fileno()],
                start_new_session=True,
                close_fds=True,
            )
        except OSError as error:
            ours.close()
            raise SandboxUnavailable(f"cannot start the sandbox server: {error}") from error
        finally:
            theirs.close()
        return ours

    def alive(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            return False
        if self.socket.fileno() < 0:
            return False
        # A closed peer reads as EOF; pending bytes between runs mean a broken protocol.
        readable, _, _ = select.select([self.socket], [], [], 0)
        return not readable

    def send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message) + "\n").encode()
        deadline = time.monotonic() + 5.0
        try:
            while data:
                try:
                    sent = self.socket.send(data)
                except BlockingIOError as error:
                    if time.monotonic() > deadline:
                        reason = "the sandbox server does not read its commands"
                        raise SandboxUnavailable(reason) from error
                    select.select([], [self.socket], [], 0.5)
                    continue
                data = data[sent:]
        except OSError as error:
            raise SandboxUnavailable(f"cannot talk to the sandbox server: {error}") from error

    def read_event(self, timeout: float) -> dict[str, Any] | None:
        """The next event, or None if none came within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            poller = select.poll()  # poll, not select: fds above FD_SETSIZE happen
            poller.register(self.socket.fileno(), select.POLLIN)
            if not poller.poll(remaining * 1000):
                return None
            try:
                chunk = self.socket.recv(65536)
            except BlockingIOError:
                continue
            except OSError as error:
                raise SandboxUnavailable(f"the sandbox connection broke: {error}") from error
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

    def close(self) -> None:
        """End the connection cleanly: a server started here sees EOF, ends its spare
        (which removes its cgroup) and exits; killed if it has not within 2 s."""
        with contextlib.suppress(OSError):
            self.socket.close()
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=2)
        self.kill()

    def kill(self) -> None:
        """Drop the connection; a server started here is killed with its process group
        (its jobs die with it: parent-death signals), a daemon's ends on EOF."""
        with contextlib.suppress(OSError):
            self.socket.close()
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)


class ConnectionPool:
    """Idle connections of this process; rebuilt after a fork (Celery prefork)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.owner_pid = os.getpid()
        self.idle: list[SandboxConnection] = []

    def take(self) -> SandboxConnection:
        with self.lock:
            if self.owner_pid != os.getpid():
                # Inherited from the parent process: those are not ours to use.
                self.owner_pid = os.getpid()
                self.idle = []
            while self.idle:
                connection = self.idle.pop()
                if connection.alive() and connection.settings_key == settings.key():
                    return connection
                connection.kill()
        if not settings.sandbox_socket:
            ensure_private_dir(settings.run_root, 0o711)
        return SandboxConnection()

    def give_back(self, connection: SandboxConnection) -> None:
        with self.lock:
            if self.owner_pid == os.getpid() and connection.alive():
                self.idle.append(connection)
                return
        connection.kill()

    def close_all(self) -> None:
        """Close this process's idle connections (at exit), so no server outlives us."""
        with self.lock:
            connections, self.idle = (self.idle if self.owner_pid == os.getpid() else []), []
        for connection in connections:
            connection.close()


connection_pool = ConnectionPool()
