"""The zygote: the only process that forks jobs, and it never sees tenant data.

Every job's processes are forks, so they inherit their parent's memory. The server
reads commands (run ids, paths, model keys) and keeps the cache's bookkeeping; were it
the parent, a model scanning its own memory would find pieces of other tenants' runs
(it did: file names, sha256s and run ids). So the server forks the zygote at start,
after the imports and before it reads any command, and from then on the zygote only
receives fixed-size instructions: one byte ("spawn a spare") with three pipe ends
attached (SCM_RIGHTS), and it answers with the new monitor's pid. A spare learns its
job from the server directly, over the request pipe, once it is its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
from dataclasses import dataclass
from typing import NoReturn

from fmuengine.sandbox import jail
from fmuengine.sandbox.monitor import JailSetup, run_monitor

SPAWN = b"S"
PID_FORMAT = "=i"
# The monitor's report and the model's progress (to the server), the job for the
# monitor, and the same job for the model process, which starts confining itself at
# once instead of waiting for the monitor to relay it.
PASSED_FDS = ("status_w", "progress_w", "request_r", "job_r")


class ZygoteGone(Exception):
    """The zygote died or stopped answering; the server cannot start jobs."""


@dataclass
class SpareProcesses:
    """A forked monitor (and its model process) as the server holds them."""

    monitor_pid: int
    pidfd: int
    status_fd: int
    progress_fd: int
    request_fd: int = -1  # the spare's pipe for its job; -1 once assigned
    job_fd: int = -1  # the same job, straight to its model process

    def close(self) -> None:
        for fd in (self.status_fd, self.progress_fd, self.request_fd, self.job_fd, self.pidfd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.status_fd = self.progress_fd = self.request_fd = self.job_fd = self.pidfd = -1

    def close_job_pipes(self) -> None:
        """Close the server's ends of the job pipes (after handing the job over, or to
        tell an unneeded spare to end)."""
        for fd in (self.request_fd, self.job_fd):
            if fd >= 0:
                os.close(fd)
        self.request_fd = self.job_fd = -1

    def kill(self) -> None:
        if self.pidfd >= 0:
            with contextlib.suppress(ProcessLookupError, OSError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)


class Zygote:
    """The server's handle on its zygote."""

    def __init__(self, setup: JailSetup) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            parent.close()
            _zygote_main(child, setup)
        child.close()
        self.pid = pid
        self.socket = parent

    def spawn(self) -> SpareProcesses:
        """Fork a spare (monitor + model process waiting for its job)."""
        pipes = {name: os.pipe() for name in ("status", "progress", "request", "job")}
        ours = {"status_r": pipes["status"][0], "progress_r": pipes["progress"][0]}
        ours["request_w"], ours["job_w"] = pipes["request"][1], pipes["job"][1]
        theirs = [pipes["status"][1], pipes["progress"][1], pipes["request"][0], pipes["job"][0]]
        try:
            socket.send_fds(self.socket, [SPAWN], theirs)
            answer = self.socket.recv(16)
        except OSError as error:
            for fd in ours.values():
                os.close(fd)
            raise ZygoteGone(f"the zygote is gone: {error}") from error
        finally:
            for fd in theirs:
                os.close(fd)
        if len(answer) != struct.calcsize(PID_FORMAT):
            for fd in ours.values():
                os.close(fd)
            raise ZygoteGone("the zygote did not answer")
        (monitor_pid,) = struct.unpack(PID_FORMAT, answer)
        try:
            pidfd = os.pidfd_open(monitor_pid)
        except OSError:
            pidfd = -1  # it died already: its status pipe reads EOF
        os.set_blocking(ours["status_r"], False)
        os.set_blocking(ours["progress_r"], False)
        return SpareProcesses(
            monitor_pid=monitor_pid,
            pidfd=pidfd,
            status_fd=ours["status_r"],
            progress_fd=ours["progress_r"],
            request_fd=ours["request_w"],
            job_fd=ours["job_w"],
        )

    def stop(self) -> None:
        self.socket.close()
        with contextlib.suppress(ChildProcessError, ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)


def _reap_ended_monitors() -> None:
    """Reap monitors that ended (at most a job's worth wait as zombies until the next
    spawn): reaped here, their CPU time counts in the zygote's children's time, where
    the machine's accounting (and `make bench`) finds it; ignoring SIGCHLD lost it."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def _zygote_main(sock: socket.socket, setup: JailSetup) -> NoReturn:
    code = 0
    try:
        jail.prctl(jail.PR_SET_PDEATHSIG, signal.SIGKILL)
        jail.close_descriptors_except({2, sock.fileno()})
        while True:
            message, fds, _flags, _address = socket.recv_fds(sock, 1, len(PASSED_FDS))
            _reap_ended_monitors()
            if message != SPAWN or len(fds) != len(PASSED_FDS):
                for fd in fds:
                    os.close(fd)
                if not message:
                    break  # the server is gone
                continue
            try:
                pid = os.fork()
            except OSError:
                pid = -1
            if pid == 0:
                sock.close()
                run_monitor(setup, dict(zip(PASSED_FDS, fds, strict=True)))
            for fd in fds:
                os.close(fd)
            sock.send(struct.pack(PID_FORMAT, pid))
    except BaseException:
        code = 1
    os._exit(code)
