"""Services about the Celery workers themselves: may this worker take runs, and what it reports.

Fail closed: a worker whose sandbox is below `SANDBOX_REQUIRED_ISOLATION` (or unreachable,
or short of disk under the run root) takes no run. The engine would refuse such a run too
(`runner.run_simulation` returns a platform error), but only after the run was claimed,
failed and refunded; checked here, before the claim, the run simply stays queued for a
worker that can run it.

Each worker records what it found in `WorkerStatus` (see its docstring for why a table):
at start, every SANDBOX_CHECK_INTERVAL_SECONDS from its main process (so `checked_at`
tells a live worker from one that is gone; it also stops the worker
consuming while it is not ready: tasks.SandboxWatch), and from its pool processes on each
refusal and each change. `/readyz`, the admin and the embedded mode's banner read it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from django.utils import timezone

from fmuengine import runner
from fmuengine.protocol import FULL_ISOLATION
from fmuengine.sandbox_client import connection_pool
from simulations.models import WorkerStatus

logger = logging.getLogger(__name__)

# How long one process trusts its last answer: checking starts a sandbox server the first
# time, and is cheap afterwards, but not free on every run. The runner checks again right
# before it starts a run, so a sandbox that breaks within this window fails no more than
# the runs it would have failed anyway (as refunded platform errors).
STATUS_CACHE_SECONDS = 10.0


class SandboxNotReady(Exception):
    """This worker may not take runs now; `status.reason` says why."""

    def __init__(self, status: runner.SandboxStatus) -> None:
        super().__init__(status.reason)
        self.status = status


@dataclass
class _Checked:
    pid: int  # a forked pool process starts with its parent's copy: not its own answer
    status: runner.SandboxStatus
    at: float  # time.monotonic()
    recorded: tuple | None  # what this process last wrote to its WorkerStatus row


_last: _Checked | None = None
# Held while a check runs, and taken before any fork of this process: a pool process
# forked while another thread (Celery's timer thread without an event loop) was inside
# the engine's connection pool would start with that pool's lock held, forever.
_check_lock = threading.RLock()
os.register_at_fork(
    before=_check_lock.acquire,
    after_in_parent=_check_lock.release,
    after_in_child=_check_lock.release,
)


def forget_sandbox_status() -> None:
    """Drop this process's cached answer (the engine was configured anew)."""
    global _last
    with _check_lock:
        _last = None


def default_worker_name() -> str:
    """Celery's default node name, for callers outside a worker (tests, eager mode)."""
    return f"celery@{socket.gethostname()}"


def is_fully_isolated(status: runner.SandboxStatus) -> bool:
    """Whether every measure of the "full" level is applied, whatever level is required."""
    return set(status.isolation.split("+")) >= FULL_ISOLATION


def _fingerprint(status: runner.SandboxStatus) -> tuple:
    return (status.ready, status.isolation, status.reason)


def sandbox_check(
    *, worker: str, max_age: float = STATUS_CACHE_SECONDS, record: bool = False
) -> tuple[runner.SandboxStatus, bool]:
    """This process's sandbox status, at most `max_age` seconds old; returns (status, changed).

    A fresh answer is recorded when this process has not recorded one yet, when it
    differs from what this process recorded last (a recovery, or a new reason), when it
    is a refusal (so the row stays fresh while runs are refused), or when `record` asks.
    """
    global _last
    with _check_lock:
        now = time.monotonic()
        last = _last if _last is not None and _last.pid == os.getpid() else None
        if last is not None and now - last.at < max_age:
            return last.status, False
        status = runner.sandbox_status()
        recorded = last.recorded if last is not None else None
        changed = recorded is not None and recorded != _fingerprint(status)
        if record or recorded is None or changed or not status.ready:
            worker_status_record(worker=worker, status=status)
            recorded = _fingerprint(status)
        _last = _Checked(pid=os.getpid(), status=status, at=now, recorded=recorded)
        return status, changed


def sandbox_require_ready(*, worker: str, simulation_id) -> None:
    """Raise SandboxNotReady, with the reason logged, unless this worker may take the run."""
    status, _changed = sandbox_check(worker=worker)
    if not status.ready:
        logger.error(
            "worker %s takes no run: run %s stays queued: %s", worker, simulation_id, status.reason
        )
        raise SandboxNotReady(status)


def worker_sandbox_report(*, worker: str, at_start: bool = False) -> runner.SandboxStatus | None:
    """Check and record this worker's sandbox (its main process: at start, then heartbeats).

    Logged at start, INFO with the isolation level or ERROR with the reason, and later
    only when it changes. The main process takes no run, so it keeps neither a sandbox
    server nor a database connection between checks (pool processes forked later would
    inherit them). Never raises: a heartbeat that fails is logged and tried again.
    """
    try:
        status, changed = sandbox_check(worker=worker, max_age=0, record=True)
    except Exception:
        logger.exception("worker %s could not check its sandbox", worker)
        return None
    finally:
        connection_pool.close_all()
        if not connection.in_atomic_block:
            connection.close()
    required = settings.SANDBOX_REQUIRED_ISOLATION
    if status.ready and (at_start or changed):
        logger.info(
            "worker %s takes runs: sandbox isolation %s (required: %s)",
            worker,
            status.isolation,
            required,
        )
    elif not status.ready and (at_start or changed):
        logger.error(
            "worker %s takes no run: %s (sandbox isolation %s, required: %s)",
            worker,
            status.reason,
            status.isolation,
            required,
        )
    return status


def worker_status_record(*, worker: str, status: runner.SandboxStatus) -> WorkerStatus:
    """Upsert the worker's row with what its sandbox check found."""
    row, _created = WorkerStatus.objects.update_or_create(
        hostname=worker[:255],
        defaults={
            "ready": status.ready,
            "isolation": status.isolation[:255],
            "fully_isolated": is_fully_isolated(status),
            "missing": dict(status.missing),
            "required": settings.SANDBOX_REQUIRED_ISOLATION,
            "reason": status.reason,
            "checked_at": timezone.now(),
        },
    )
    return row


def consumes_default_queue(celery_app) -> bool:
    """Whether this worker takes tasks from the default queue, where the runs are.

    Not every worker does: fly.toml's `billing` group runs `celery worker -Q billing`
    (the tasks that call Stripe), on a machine with no sandbox. What a simulation worker
    does when it starts (check and record its sandbox, fail stale runs) is not for it;
    a worker_ready receiver asks this first, with the app of the worker that started.
    Without -Q a worker takes every queue declared in the settings, the default one
    included.
    """
    return celery_app.conf.task_default_queue in celery_app.amqp.queues.consume_from
