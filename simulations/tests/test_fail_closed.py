"""Fail closed: a worker below the required sandbox isolation takes no run, and says so.

The acceptance test runs a real Celery worker as an unprivileged user, so that its
sandbox really is below "full" (user namespaces at best: no namespaces of its own, no uid
per run, no cgroups), next to a real gunicorn on the same PostgreSQL and Redis.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from django.test import Client
from django.utils import timezone

from accounts.tests.factories import UserFactory
from fmuengine import runner
from fmuengine.tests.unprivileged import unprivileged_prefix
from simulations import services
from simulations.apps import configure_sandbox
from simulations.models import Simulation, SimulationStatus, WorkerStatus
from simulations.workers import SandboxNotReady, forget_sandbox_status, worker_status_record
from testing.api import http_session, upload_over_http

NOBODY = 65534
FULL = "namespaces+setuid+cgroups+disk-quota+seccomp+rlimits"
BELOW_FULL = runner.SandboxStatus(
    ready=False,
    isolation="user-namespaces+disk-quota+seccomp+rlimits",
    missing={"namespaces": "not root", "setuid": "not root", "cgroups": "not root"},
    reason="the sandbox isolation is below the required level 'full' (cgroups: not root)",
)


# --- (a) a real worker below the required isolation ------------------------------------------


@pytest.fixture
def as_nobody():
    """A command prefix that runs the rest as uid/gid 65534, with no groups, able to reach
    the interpreter, the venv and the project even where they lie in dirs only root can
    enter (see fmuengine/tests/unprivileged.py). Also returns a dir the unprivileged user
    owns (its HOME and its sandbox run root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to start the worker as another user")
    for needed in ("unshare", "setpriv", "mount"):
        if shutil.which(needed) is None:
            pytest.skip(f"needs {needed}")
    project = Path(__file__).resolve().parents[2]
    own_dir = Path(tempfile.mkdtemp(prefix="fmugw-unprivileged-"))
    os.chown(own_dir, NOBODY, NOBODY)
    reachable = [Path(sys.executable), Path(sys.prefix), project]
    with unprivileged_prefix(NOBODY, reachable) as prefix:
        yield prefix, own_dir
    shutil.rmtree(own_dir, ignore_errors=True)


def _wait_for_log(worker, pattern: str, *, count: int = 1, timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.findall(pattern, worker.log())
        if len(found) >= count:
            return found
        assert worker.process.poll() is None, f"the worker died:\n{worker.log()}"
        time.sleep(0.2)
    raise AssertionError(f"{pattern!r} not {count}x in the worker's log:\n{worker.log()}")


@pytest.mark.live
@pytest.mark.sandbox
def test_a_worker_below_the_required_isolation_takes_no_run_logs_why_and_readyz_names_it(
    live_servers, live_workers, redis_broker_url, fmu_paths, as_nobody
):
    prefix, own_dir = as_nobody
    queue = {"CELERY_BROKER_URL": redis_broker_url}
    (server,) = live_servers(1, **queue)
    refusing = live_workers(
        concurrency=1,
        name="unisolated@fmugw-test",
        command_prefix=prefix,
        HOME=str(own_dir),
        SANDBOX_RUN_ROOT=str(own_dir / "runs"),
        **queue,
    )
    # At start, before it fetches anything: why it takes no run, naming each missing measure.
    (at_start,) = _wait_for_log(refusing, r"ERROR.*worker unisolated@fmugw-test takes no run: .*")
    assert "below the required level 'full'" in at_start
    for measure in ("namespaces", "setuid", "cgroups"):
        assert f"{measure}: not root" in at_start
    _wait_for_log(refusing, r"ERROR.*worker unisolated@fmugw-test stops consuming celery")

    session = http_session(UserFactory())
    model = upload_over_http(server.url, fmu_paths["bouncing_ball"], session=session)
    assert model.status_code == 201, model.text
    submitted = session.post(
        f"{server.url}/api/v1/simulations", json={"model": model.json()["id"]}, timeout=30
    )
    assert submitted.status_code == 202, submitted.text
    run_id = submitted.json()["id"]

    time.sleep(3)  # ample for a worker that consumed the queue to take the run
    run = session.get(f"{server.url}/api/v1/simulations/{run_id}", timeout=30).json()
    assert run["status"] == "queued"
    assert run["error"] is None
    assert run["charge"] == {"kind": "free"}  # nothing charged, nothing refunded
    stored = Simulation.objects.get(pk=run_id)
    assert (stored.status, stored.attempts, stored.started_at) == (SimulationStatus.QUEUED, 0, None)
    assert "run_simulation_task[" not in refusing.log()  # its message was never even fetched
    assert refusing.process.poll() is None

    ready = requests.get(f"{server.url}/readyz", timeout=30)
    assert ready.status_code == 503, ready.text
    body = ready.json()
    assert "sandbox" in body["detail"]
    assert body["checks"]["database"] == "ok"
    assert "worker unisolated@fmugw-test takes no run" in body["checks"]["sandbox"]
    assert "below the required level 'full'" in body["checks"]["sandbox"]
    assert "cgroups: not root" in body["checks"]["sandbox"]
    status = WorkerStatus.objects.get(hostname="unisolated@fmugw-test")
    assert (status.ready, status.fully_isolated, status.required) == (False, False, "full")
    assert status.isolation != FULL
    assert {"namespaces", "setuid", "cgroups"} <= set(status.missing)

    # The run was left to the others: a worker with full isolation takes it at once.
    live_workers(concurrency=1, name="isolated@fmugw-test", **queue)
    finished = session.get(f"{server.url}/api/v1/simulations/{run_id}?wait=30", timeout=60).json()
    assert finished["status"] == "succeeded", finished
    assert WorkerStatus.objects.get(hostname="isolated@fmugw-test").fully_isolated
    assert "run_simulation_task[" not in refusing.log()


@pytest.fixture
def daemon_dir():
    """A short path (unix sockets allow about 100 bytes) for a sandbox daemon's socket."""
    path = Path(tempfile.mkdtemp(prefix="fmugw-daemon-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.live
@pytest.mark.sandbox
def test_a_worker_that_started_before_its_sandbox_daemon_takes_runs_once_the_daemon_is_up(
    live_servers, live_workers, redis_broker_url, fmu_paths, daemon_dir
):
    queue = {"CELERY_BROKER_URL": redis_broker_url}
    socket_path = daemon_dir / "sandbox.sock"
    (server,) = live_servers(1, **queue)
    worker = live_workers(
        concurrency=1,
        name="early@fmugw-test",
        SANDBOX_SOCKET=str(socket_path),
        SANDBOX_RUN_ROOT=str(daemon_dir / "runs"),
        SANDBOX_CHECK_INTERVAL_SECONDS="1",
        **queue,
    )
    (at_start,) = _wait_for_log(worker, r"ERROR.*worker early@fmugw-test takes no run: .*")
    assert f"cannot reach the sandbox daemon at {socket_path}" in at_start
    _wait_for_log(worker, r"worker early@fmugw-test stops consuming celery")
    session = http_session(UserFactory())
    model = upload_over_http(server.url, fmu_paths["bouncing_ball"], session=session)
    body = {"model": model.json()["id"]}
    run_id = session.post(f"{server.url}/api/v1/simulations", json=body, timeout=30).json()["id"]
    time.sleep(2)
    assert Simulation.objects.get(pk=run_id).status == SimulationStatus.QUEUED
    assert requests.get(f"{server.url}/readyz", timeout=30).status_code == 503

    daemon = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fmuengine.sandbox",
            "--listen",
            str(socket_path),
            "--allow-uid",
            str(os.geteuid()),
            "--run-root",
            str(daemon_dir / "runs"),
            "--state-dir",
            str(daemon_dir / "state"),
        ],
        cwd=Path(__file__).resolve().parents[2],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        finished = session.get(
            f"{server.url}/api/v1/simulations/{run_id}?wait=30", timeout=60
        ).json()
        assert finished["status"] == "succeeded", (finished, worker.log())
        _wait_for_log(worker, r"INFO.*worker early@fmugw-test consumes celery again")
        recovered = _wait_for_log(worker, r"INFO.*worker early@fmugw-test takes runs: .*")
        assert FULL in recovered[-1]
        status = WorkerStatus.objects.get(hostname="early@fmugw-test")
        assert (status.ready, status.isolation, status.reason) == (True, FULL, "")
        ready = requests.get(f"{server.url}/readyz", timeout=30)
        assert ready.json()["checks"]["sandbox"] == "ok", ready.text
    finally:
        os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait()


# --- the check before the claim, in this process --------------------------------------------


@pytest.fixture
def sandbox_unreachable(tmp_path):
    """This process's engine pointed at a daemon socket nobody listens on ("unavailable")."""
    runner.configure(sandbox_socket=str(tmp_path / "nobody-listens.sock"))
    forget_sandbox_status()
    yield
    configure_sandbox()


@pytest.mark.django_db
def test_a_worker_that_is_not_ready_raises_before_the_claim_and_the_run_stays_queued(
    sandbox_unreachable, caplog
):
    run = Simulation.objects.create(owner=UserFactory(), model_name="ball", params={"timeout": 5})

    with caplog.at_level(logging.ERROR), pytest.raises(SandboxNotReady):
        services.simulation_execute(simulation_id=run.pk, worker="celery@test-1")

    run.refresh_from_db()
    assert (run.status, run.attempts, run.started_at) == (SimulationStatus.QUEUED, 0, None)
    (record,) = [r for r in caplog.records if r.name == "simulations.workers"]
    assert record.levelno == logging.ERROR
    assert str(run.pk) in record.getMessage()
    assert "cannot reach the sandbox daemon" in record.getMessage()
    status = WorkerStatus.objects.get(hostname="celery@test-1")
    assert (status.ready, status.isolation) == (False, "unavailable")


@pytest.mark.django_db
def test_a_run_no_longer_queued_ends_its_task_even_on_a_worker_that_is_not_ready(
    sandbox_unreachable,
):
    run = Simulation.objects.create(
        owner=UserFactory(),
        model_name="ball",
        params={"timeout": 5},
        status=SimulationStatus.CANCELLED,
    )
    assert services.simulation_execute(simulation_id=run.pk, worker="celery@test-1") is None


# --- (b) the embedded mode's banner --------------------------------------------------------------


@pytest.fixture
def embedded(settings):
    settings.SANDBOX_REQUIRED_ISOLATION = "none"
    return settings


def _banner(page) -> str | None:
    match = re.search(r'<div [^>]*id="sandbox-warning"[^>]*>(.*?)</div>', page.content.decode())
    return match.group(1) if match else None


@pytest.mark.django_db
def test_embedded_pages_warn_loudly_when_a_worker_runs_below_full_isolation(embedded):
    # Below full, yet ready: with "none" required this worker takes runs, unisolated.
    worker_status_record(
        worker="celery@laptop", status=dataclasses.replace(BELOW_FULL, ready=True, reason="")
    )
    for path in ("/", "/accounts/login/", "/accounts/signup/", "/pricing/"):
        banner = _banner(Client().get(path, follow=True))
        assert banner is not None, path
        assert "not isolated" in banner
        assert "celery@laptop" in banner
        assert "cgroups" in banner


@pytest.mark.django_db
def test_no_banner_when_the_worker_is_fully_isolated_or_none_reported(embedded):
    assert _banner(Client().get("/")) is None
    worker_status_record(worker="celery@laptop", status=runner.SandboxStatus(True, FULL, {}, ""))
    assert _banner(Client().get("/")) is None


@pytest.mark.django_db
def test_no_banner_where_full_isolation_is_required(settings):
    settings.SANDBOX_REQUIRED_ISOLATION = "full"  # such a worker takes no run: /readyz says so
    worker_status_record(worker="celery@worker-1", status=BELOW_FULL)
    assert _banner(Client().get("/")) is None


# --- (c) the admin, and /readyz on recorded statuses -------------------------------------------


@pytest.mark.django_db
def test_the_admin_lists_each_workers_isolation_and_readiness():
    worker_status_record(worker="celery@worker-1", status=runner.SandboxStatus(True, FULL, {}, ""))
    worker_status_record(worker="celery@worker-2", status=BELOW_FULL)
    client = Client()
    client.force_login(UserFactory(operator=True))

    page = client.get("/admin/simulations/workerstatus/")

    assert page.status_code == 200
    html = page.content.decode()
    assert "celery@worker-1" in html
    assert FULL in html
    assert "celery@worker-2" in html
    assert BELOW_FULL.isolation in html
    assert page.context["cl"].result_count == 2
    detail = client.get("/admin/simulations/workerstatus/celery@worker-2/change/")
    assert "below the required level" in detail.content.decode()
    assert client.get("/admin/simulations/workerstatus/add/").status_code == 403


@pytest.mark.django_db
def test_readyz_names_a_worker_that_refuses_runs_until_its_report_is_stale(settings):
    settings.CELERY_BROKER_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}
    worker_status_record(worker="celery@worker-1", status=runner.SandboxStatus(True, FULL, {}, ""))
    assert Client().get("/readyz").json()["checks"]["sandbox"] == "ok"

    worker_status_record(worker="celery@worker-2", status=BELOW_FULL)
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert "celery@worker-2" in response.json()["checks"]["sandbox"]
    assert "cgroups: not root" in response.json()["checks"]["sandbox"]

    WorkerStatus.objects.filter(hostname="celery@worker-2").update(
        checked_at=timezone.now() - timedelta(minutes=10)
    )
    assert Client().get("/readyz").status_code == 200
