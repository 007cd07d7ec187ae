"""The sandbox server: one runner's connection, one job at a time.

    sandbox server (root; imports fmpy once; reads commands; holds the model cache's
     │              keys and paths; never forks a job itself)
     └─ zygote (forked at start, before any command; see zygote.py)
          └─ monitor ── model process, one pair per job (see monitor.py, jail.py)

The server probes which isolation measures it can apply, forks the zygote, and then
serves `protocol` commands on one connection (a socket to the runner). Each run gets a
spare forked ahead by the zygote; a run of a model the cache has not prepared first
gets a preparation job (confined like a run) whose output the cache keeps. The server
enforces the wall-clock limit and relays progress; the monitor reports how the job
ended. Nothing here opens an FMU or parses what a model wrote.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import selectors
import stat
import time
from dataclasses import dataclass
from typing import Any

from fmuengine.protocol import (
    MAX_COMMAND_LINE_BYTES,
    MODEL_FILE,
    OUT_DIR,
    PARAMS_FILE,
    RunCommand,
    SandboxLimits,
    describe_measures,
)
from fmuengine.sandbox.model_cache import ModelCache, ServerDirectory
from fmuengine.sandbox.monitor import JOB_PREPARE, JOB_RUN, JailSetup, Job
from fmuengine.sandbox.zygote import SpareProcesses, Zygote, ZygoteGone

PROGRESS_RELAY_INTERVAL = 0.2
KILL_GRACE_SECONDS = 2.0
# A preparation is confined like a run, with limits of its own (what the cache takes:
# 512 MiB extracted at most, on its scratch tmpfs, which counts as memory too).
PREPARE_LIMITS = SandboxLimits(
    cpu_seconds=60,
    memory_bytes=1536 << 20,
    file_size_bytes=512 << 20,
    max_processes=4,
    wall_timeout_seconds=60,
    disk_bytes=768 << 20,
)


def wall_clock_cap(command: RunCommand) -> float:
    """How long the server lets a job run. A batch's monitor enforces each case's own
    limit (a rolling deadline: see cases.py); this cap is the backstop, the time its
    cases could take if each used its limit, and the gaps between them too."""
    wall = command.limits.wall_timeout_seconds
    if command.first_case is None:
        return wall
    return wall * (2 * (command.case_count - command.first_case) + 1) + KILL_GRACE_SECONDS


@dataclass(frozen=True)
class ServerConfig:
    """What the server is allowed to do, from its command line (not from a runner)."""

    run_root: str  # run dirs must lie directly under it
    slot_uid_base: int
    slot_count: int


@dataclass
class ActiveRun:
    command: RunCommand
    processes: SpareProcesses
    started_at: float
    deadline: float
    model_pid: int | None = None
    killed_by: str | None = None
    status_buffer: bytes = b""
    progress_buffer: bytes = b""
    last_progress_sent: float = 0.0
    last_progress_value: float = -1.0
    report: dict[str, Any] | None = None
    model_cache: str = "off"


class SandboxServer:
    """Serves commands from one connection `fd` (read and written); see the docstring."""

    def __init__(
        self,
        fd: int,
        setup: JailSetup,
        config: ServerConfig,
        directory: ServerDirectory | None,
        measures: frozenset[str],
        missing: dict[str, str],
    ) -> None:
        self.fd = fd
        self.setup = setup
        self.config = config
        self.directory = directory
        self.measures = measures
        self.missing = missing
        self.models = ModelCache(directory.path if directory is not None else None)
        self.zygote = Zygote(setup)  # before the first command is read
        self.selector = selectors.DefaultSelector()
        self.command_buffer = b""
        self.outgoing = b""
        self.run: ActiveRun | None = None
        self.spare: SpareProcesses | None = None
        self.stopping = False

    # ---- talking to the runner -------------------------------------------------------

    def send(self, message: dict[str, Any], *, droppable: bool = False) -> None:
        """Queue one event and write what the connection takes now. A runner busy in a
        callback must not stall deadline enforcement, so droppable events (progress) are
        skipped while earlier output is still pending."""
        if droppable and self.outgoing:
            return
        self.outgoing += (json.dumps(message) + "\n").encode()
        self.flush(block=not droppable)

    def flush(self, *, block: bool = False) -> None:
        deadline = time.monotonic() + 5.0
        while self.outgoing:
            try:
                written = os.write(self.fd, self.outgoing)
            except BlockingIOError:
                if not block or time.monotonic() > deadline:
                    return
                select.select([], [self.fd], [], 0.5)
                continue
            except OSError:  # the runner is gone
                self.outgoing = b""
                self.stopping = True
                return
            self.outgoing = self.outgoing[written:]

    def serve(self) -> None:
        os.set_blocking(self.fd, False)
        self.selector.register(self.fd, selectors.EVENT_READ, "command")
        self.send(
            {
                "event": "ready",
                "isolation": describe_measures(self.measures),
                "measures": sorted(self.measures),
                "missing": self.missing,
                "pid": os.getpid(),
            }
        )
        while not (self.stopping and self.run is None):
            timeout = 0.5
            if self.run is not None:
                timeout = max(0.0, min(timeout, self.run.deadline - time.monotonic()))
            if self.outgoing:
                timeout = min(timeout, 0.05)
            for key, _ in self.selector.select(timeout):
                if key.data == "command":
                    self.read_commands()
                elif key.data == "status":
                    self.read_status()
                elif key.data == "progress":
                    self.read_progress()
            self.flush()
            self.enforce_deadline()
            # Also while a run runs: the next one then finds its processes ready.
            self.prepare_spare()
        self.discard_spare()
        self.zygote.stop()

    def read_commands(self) -> None:
        try:
            chunk = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            # The runner is gone: nobody wants this run any more.
            self.selector.unregister(self.fd)
            self.stopping = True
            if self.run is not None:
                self.kill_run("runner_gone")
            return
        self.command_buffer += chunk
        if len(self.command_buffer) > MAX_COMMAND_LINE_BYTES:
            self.command_buffer = b""
        while b"\n" in self.command_buffer:
            line, self.command_buffer = self.command_buffer.split(b"\n", 1)
            if line.strip():
                self.handle_command(line)

    def handle_command(self, line: bytes) -> None:
        try:
            command = json.loads(line)
            operation = command["op"]
        except (ValueError, KeyError, TypeError):
            self.send({"event": "error", "run_id": None, "message": "unreadable command"})
            return
        if operation == "run":
            self.start_run(command)
        elif (
            operation == "cancel" and self.run and self.run.command.run_id == command.get("run_id")
        ):
            self.kill_run("cancelled")

    # ---- starting a run ----------------------------------------------------------------

    def validate(self, command: RunCommand) -> None:
        """A run dir directly under the run root, a real dir with the run's files, and
        a slot uid: what the server will touch as root is what it was started for."""
        run_dir = command.run_dir
        parent = os.path.dirname(run_dir.rstrip("/"))
        if os.path.realpath(parent) != os.path.realpath(self.config.run_root):
            raise ValueError("the run dir is not in the run root")
        if os.path.realpath(run_dir) != os.path.join(
            os.path.realpath(parent), os.path.basename(run_dir)
        ):
            raise ValueError("the run dir is not a plain dir")
        for name, kind in (
            (".", stat.S_ISDIR),
            (MODEL_FILE, stat.S_ISREG),
            (PARAMS_FILE, stat.S_ISREG),
            (OUT_DIR, stat.S_ISDIR),
        ):
            if not kind(os.lstat(os.path.join(run_dir, name)).st_mode):
                raise ValueError(f"{name} is not what a run dir holds")
        first = self.config.slot_uid_base
        for value in (command.uid, command.gid):
            if not first <= value < first + self.config.slot_count or value <= 0:
                raise ValueError("not a slot uid")

    def start_run(self, data: dict[str, Any]) -> None:
        run_id = data.get("run_id")
        if self.run is not None:
            self.send({"event": "error", "run_id": run_id, "message": "a run is already active"})
            return
        try:
            command = RunCommand.from_json(data)
            if self.setup.mode in ("namespaces", "setuid"):
                self.validate(command)
        except (KeyError, TypeError, ValueError, OSError) as error:
            self.send({"event": "error", "run_id": run_id, "message": f"bad run request: {error}"})
            return
        started_at = time.monotonic()
        try:
            prepared_dir, model_cache = self.prepared_model(command)
            processes = self.take_spare()
            job = Job(
                kind=JOB_RUN,
                run_dir=command.run_dir,
                uid=command.uid,
                gid=command.gid,
                limits=command.limits,
                prepared_dir=prepared_dir,
                first_case=command.first_case,
                case_count=command.case_count,
            )
            self.assign(processes, job)
        except (OSError, ZygoteGone) as error:
            message = f"the run's processes could not start: {error}"
            self.send({"event": "error", "run_id": run_id, "message": message})
            if isinstance(error, ZygoteGone):
                self.stopping = True
            return
        self.run = ActiveRun(
            command=command,
            processes=processes,
            started_at=started_at,
            deadline=started_at + wall_clock_cap(command),
            model_cache=model_cache,
        )
        self.selector.register(processes.status_fd, selectors.EVENT_READ, "status")
        self.selector.register(processes.progress_fd, selectors.EVENT_READ, "progress")

    def prepared_model(self, command: RunCommand) -> tuple[str | None, str]:
        """The cache's prepared copy of the run's model, preparing it now if needed;
        (None, why not) when the run has to extract the FMU itself."""
        key = command.model_key
        if not self.models.usable_key(key):
            return None, "off" if key is None or self.models.directory is None else "bad_key"
        assert key is not None
        hit = self.models.get(key)
        if hit is not None:
            return hit, "hit"
        target = self.models.target(key)
        job = Job(
            kind=JOB_PREPARE,
            run_dir=command.run_dir,
            uid=command.uid,
            gid=command.gid,
            limits=PREPARE_LIMITS,
            model_key=key,
            target_dir=target,
        )
        report = self.run_to_end(job)
        if report.get("prepared") and os.path.isdir(target):
            return self.models.add(key, target), "miss"
        return None, "unprepared"

    def run_to_end(self, job: Job) -> dict[str, Any]:
        """Run a short job (a preparation) synchronously; the monitor's report."""
        processes = self.take_spare()
        self.assign(processes, job)
        deadline = time.monotonic() + job.limits.wall_timeout_seconds
        buffer = b""
        report: dict[str, Any] = {}
        try:
            os.set_blocking(processes.status_fd, True)
            while time.monotonic() < deadline:
                readable, _, _ = select.select([processes.status_fd], [], [], 0.5)
                if not readable:
                    continue
                chunk = os.read(processes.status_fd, 65536)
                if not chunk:
                    break
                buffer += chunk
                lines = buffer.split(b"\n")
                buffer = lines[-1]
                for line in lines[:-1]:
                    message: dict[str, Any] = json.loads(line)
                    if "pid" not in message:
                        return message
            processes.kill()
            return report
        finally:
            processes.close()

    def take_spare(self) -> SpareProcesses:
        """The waiting spare if it is still alive, else a new one."""
        spare, self.spare = self.spare, None
        if spare is not None:
            readable, _, _ = select.select([spare.status_fd], [], [], 0)
            if not readable:  # nothing to say yet: it waits, as a spare should
                return spare
            spare.kill()
            spare.close()
        return self.zygote.spawn()

    def assign(self, spare: SpareProcesses, job: Job) -> None:
        """Hand a spare its job; a spare that cannot take it is ended."""
        try:
            data = (json.dumps(job.to_json()) + "\n").encode()
            for fd in (spare.job_fd, spare.request_fd):  # model process first: it has more to do
                if os.write(fd, data) != len(data):  # small: fits the empty pipe
                    raise OSError("the spare took part of its job")
        except OSError:
            spare.kill()
            spare.close()
            raise
        spare.close_job_pipes()

    def prepare_spare(self) -> None:
        """Fork the next job's processes ahead, so that a run waits for no fork,
        namespace or mount (each job still gets processes of its own)."""
        if self.spare is not None or self.stopping:
            return
        try:
            self.spare = self.zygote.spawn()
        except (OSError, ZygoteGone):
            self.spare = None

    def discard_spare(self) -> None:
        """End the waiting spare: its monitor reads EOF, ends its model process and
        removes its cgroup; killed only if it does not within a second."""
        spare, self.spare = self.spare, None
        if spare is None:
            return
        spare.close_job_pipes()
        if spare.pidfd >= 0:
            select.select([spare.pidfd], [], [], 1.0)
        spare.kill()
        spare.close()

    # ---- a run in progress ---------------------------------------------------------------

    def read_status(self) -> None:
        run = self.run
        if run is None:  # ended by an earlier event of the same select()
            return
        try:
            chunk = os.read(run.processes.status_fd, 65536)
        except BlockingIOError:
            return
        if chunk:
            run.status_buffer += chunk
            while b"\n" in run.status_buffer:
                line, run.status_buffer = run.status_buffer.split(b"\n", 1)
                message = json.loads(line)
                if "case" in message:  # one case of a batch ended (the monitor's report)
                    event = {"event": "case", "run_id": run.command.run_id}
                    event.update((k, v) for k, v in message.items() if k != "case")
                    event["index"] = message["case"]
                    self.send(event)
                elif "pid" in message:
                    run.model_pid = int(message["pid"])
                    self.send(
                        {"event": "started", "run_id": run.command.run_id, "pid": run.model_pid}
                    )
                    if run.killed_by is not None:
                        self.kill_model(run)
                else:
                    run.report = message
                    self.finish_run()
                    return
            return
        self.finish_run()

    def read_progress(self) -> None:
        run = self.run
        if run is None:  # ended by an earlier event of the same select()
            return
        try:
            chunk = os.read(run.processes.progress_fd, 65536)
        except BlockingIOError:
            return
        if not chunk:
            self.selector.unregister(run.processes.progress_fd)
            os.close(run.processes.progress_fd)
            run.processes.progress_fd = -1
            return
        run.progress_buffer = (run.progress_buffer + chunk)[-4096:]
        lines = run.progress_buffer.split(b"\n")
        run.progress_buffer = lines[-1]
        now = time.monotonic()
        if len(lines) < 2 or now - run.last_progress_sent < PROGRESS_RELAY_INTERVAL:
            return
        try:
            value = float(lines[-2])
        except ValueError:
            return
        if not 0.0 <= value <= 1.0:  # also rejects NaN
            value = min(max(value, 0.0), 1.0) if value == value else 0.0
        if value > run.last_progress_value:
            run.last_progress_sent = now
            run.last_progress_value = value
            progress = {"event": "progress", "run_id": run.command.run_id, "value": value}
            self.send(progress, droppable=True)

    def kill_model(self, run: ActiveRun) -> None:
        if run.model_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(run.model_pid, 9)
        else:
            run.processes.kill()

    def kill_run(self, reason: str) -> None:
        run = self.run
        if run is None or run.killed_by is not None:
            return
        run.killed_by = reason
        # From now on the deadline is for the monitor's report of the kill.
        run.deadline = time.monotonic() + KILL_GRACE_SECONDS
        self.kill_model(run)

    def enforce_deadline(self) -> None:
        run = self.run
        if run is None or time.monotonic() < run.deadline:
            return
        if run.killed_by is None:
            self.kill_run("timeout")
        else:
            # The monitor did not report after its model was killed: end it too.
            run.processes.kill()
            run.deadline = float("inf")

    def finish_run(self) -> None:
        run = self.run
        assert run is not None
        self.selector.unregister(run.processes.status_fd)
        if run.processes.progress_fd >= 0:
            self.selector.unregister(run.processes.progress_fd)
        run.processes.close()
        report = run.report or {}
        event: dict[str, Any] = {
            "event": "finished",
            "run_id": run.command.run_id,
            "exit_kind": "unknown",
            "exit_value": None,
            "cpu_seconds": float(report.get("cpu_seconds", 0.0)),
            "max_rss_bytes": int(report.get("max_rss_bytes", 0)),
            "killed_by": run.killed_by,
            "setup_error": None,
            "wall_seconds": time.monotonic() - run.started_at,
            "model_cache": run.model_cache,
            "memory_limit": bool(report.get("oom_kills")),
            "memory_limit_hits": int(report.get("memory_limit_hits", 0)),
            "disk_full": bool(report.get("disk_full")),
            "outputs": report.get("outputs", {}),
        }
        if run.command.batch:
            # Where the job ended: in a case (None: between cases), why the monitor killed
            # it if it did (a case's wall-clock or CPU limit, broken markers), what it used.
            for name in ("current_case", "next_case", "case_cpu_seconds", "case_wall_seconds"):
                event[name] = report.get(name)
            event["case_log"] = report.get("case_log", "absent")
            if run.killed_by is None and report.get("case_killed_by"):
                event["killed_by"] = report["case_killed_by"]
        if "status" in report:
            status = int(report["status"])
            if os.WIFSIGNALED(status):
                event.update(exit_kind="signaled", exit_value=os.WTERMSIG(status))
            else:
                event.update(exit_kind="exited", exit_value=os.WEXITSTATUS(status))
            if report.get("setup") != "ok":
                event["setup_error"] = report.get("setup") or "the sandbox setup did not finish"
        else:
            event["setup_error"] = report.get("monitor_error") or (
                "the monitor ended without a report"
            )
        self.run = None
        self.send(event)
