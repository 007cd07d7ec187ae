"""Runs through the real thing: gunicorn, a Celery worker on Redis, PostgreSQL, the sandbox."""

import csv
import io
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import fmpy
import numpy as np
import pytest

from accounts.tests.factories import UserFactory
from fmugateway.tests.live_server import WORKER_SECRET_NAME, WORKER_SECRET_VALUE
from testing.api import http_session, upload_over_http, wait_for_run

pytestmark = pytest.mark.live


@pytest.fixture
def gateway(shared_gateway):
    """Web + worker (concurrency 2; WORKER_SECRET_NAME in its environment alone)."""
    return shared_gateway.server, shared_gateway.worker, http_session(UserFactory())


def upload(server, session, path) -> str:
    response = upload_over_http(server.url, path, session=session)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def submit(server, session, body: dict) -> str:
    response = session.post(f"{server.url}/api/v1/simulations", json=body, timeout=30)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def wait_for(server, session, run_id: str, timeout: float = 120) -> dict:
    return wait_for_run(server.url, run_id, session=session, timeout=timeout)


def result_table(server, session, run: dict) -> np.ndarray:
    response = session.get(f"{server.url}{run['result_url']}?format=csv", timeout=30)
    rows = list(csv.reader(io.StringIO(response.text)))
    return np.array(rows[1:], dtype=float)


def test_twenty_runs_submitted_at_once_all_finish_correctly(gateway, fmu_paths):
    server, _worker, session = gateway
    model_id = upload(server, session, fmu_paths["bouncing_ball"])
    restitutions = [0.5 + 0.02 * index for index in range(20)]
    bodies = [
        {"model": model_id, "stop_time": 2.0, "output_interval": 0.02, "start_values": {"e": e}}
        for e in restitutions
    ]
    with ThreadPoolExecutor(max_workers=20) as pool:
        run_ids = list(pool.map(lambda body: submit(server, session, body), bodies))
    with ThreadPoolExecutor(max_workers=20) as pool:
        runs = list(pool.map(lambda run_id: wait_for(server, session, run_id), run_ids))

    assert [run["status"] for run in runs] == ["succeeded"] * 20
    for run, e in zip(runs, restitutions, strict=True):
        reference = fmpy.simulate_fmu(
            str(fmu_paths["bouncing_ball"]),
            stop_time=2.0,
            output_interval=0.02,
            start_values={"e": e},
        )
        table = result_table(server, session, run)
        assert table.shape == (len(reference), 3)
        np.testing.assert_allclose(table[:, 1], reference["h"], rtol=0, atol=1e-9)


def test_hostile_models_fail_cleanly_and_the_worker_keeps_serving(gateway, fmu_paths):
    server, worker, session = gateway
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        hostile = {
            "segfault": {},
            "exit_early": {},
            "endless_loop": {"timeout": 2},
            "memory_hog": {},
            "fork_bomb": {"timeout": 10},
            "open_socket": {"start_values": {"port": port}},
            "read_secrets": {
                "start_values": {"env_name": WORKER_SECRET_NAME, "probe_pid": worker.process.pid}
            },
        }
        run_ids = {
            name: submit(
                server, session, {"model": upload(server, session, fmu_paths[name]), **extra}
            )
            for name, extra in hostile.items()
        }
        runs = {name: wait_for(server, session, run_id) for name, run_id in run_ids.items()}
        listener.settimeout(0.1)
        with pytest.raises(TimeoutError):
            listener.accept()  # nothing ever connected from inside the sandbox

    for name, run in runs.items():
        assert run["status"] in ("failed", "timed_out"), (name, run)
        assert run["error"]["message"], name
        assert run["result_url"] is None
    assert runs["segfault"]["error"]["code"] == "model_crashed"
    assert "SIGSEGV" in runs["segfault"]["error"]["message"]
    assert runs["endless_loop"]["status"] == "timed_out"
    assert runs["memory_hog"]["error"]["code"] == "memory_limit"
    assert "socket blocked" in runs["open_socket"]["error"]["log_tail"]
    secrets_log = runs["read_secrets"]["error"]["log_tail"]
    assert "could not read /etc/passwd" in secrets_log
    assert WORKER_SECRET_VALUE not in secrets_log
    assert "root:x:0" not in secrets_log
    assert f"getenv({WORKER_SECRET_NAME}) is not set" in secrets_log

    assert worker.process.poll() is None, "the worker died"
    good = wait_for(
        server,
        session,
        submit(server, session, {"model": upload(server, session, fmu_paths["bouncing_ball"])}),
    )
    assert good["status"] == "succeeded"


def test_cancelling_a_running_run_kills_it_quickly(gateway, fmu_paths):
    server, worker, session = gateway
    model_id = upload(server, session, fmu_paths["endless_loop"])
    run_id = submit(server, session, {"model": model_id, "timeout": 60})
    deadline = time.monotonic() + 30
    while session.get(f"{server.url}/api/v1/simulations/{run_id}").json()["status"] != "running":
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.05)

    cancelled_at = time.monotonic()
    response = session.post(f"{server.url}/api/v1/simulations/{run_id}/cancel", timeout=10)
    assert response.status_code == 202
    run = wait_for(server, session, run_id, timeout=30)
    assert run["status"] == "cancelled"
    assert time.monotonic() - cancelled_at < 5
    assert worker.process.poll() is None
