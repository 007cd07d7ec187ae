"""The worker that holds the secrets is not root: it reaches a root sandbox daemon over
a unix socket, and that daemon (which holds no secret) serves only the uids it trusts."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fmpy
import numpy as np
import psutil
import pytest

from fmuengine.sandbox_client import PROJECT_ROOT
from fmuengine.tests.unprivileged import unprivileged_prefix

WORKER_UID = 65534  # nobody: any unprivileged uid
pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.skipif(os.geteuid() != 0, reason="starts a root daemon"),
]

WORKER_SCRIPT = """
import json, os, sys
from pathlib import Path
import numpy as np
from fmuengine import runner
from fmuengine.protocol import SandboxLimits
socket_path, run_root, fmu = sys.argv[1:4]
runner.configure(sandbox_socket=socket_path, run_root=Path(run_root), required_isolation="full")
status = runner.sandbox_status()
outcome = runner.run_simulation(
    fmu_path=Path(fmu),
    params={"fmi_type": "CoSimulation"},
    limits=SandboxLimits(cpu_seconds=20, memory_bytes=1 << 30, file_size_bytes=64 << 20,
                         max_processes=16, wall_timeout_seconds=30),
    model_key="",
)
rows = None
if outcome.result_path is not None:
    rows = np.load(outcome.result_path)["h"].tolist()
print(json.dumps({"uid": os.geteuid(), "ready": status.ready, "isolation": status.isolation,
                  "status": outcome.status, "error": outcome.message, "h": rows}))
outcome.cleanup()
"""


@pytest.fixture
def daemon():
    """A root sandbox daemon, started as the container's entrypoint would: empty
    environment, trusting only the worker's uid. Its socket and the run root lie where
    the worker's uid can reach them (pytest's own temp dirs are private to root)."""
    base = Path(tempfile.mkdtemp(prefix="fmugw-privsep-"))
    run_root = base / "runs"
    run_root.mkdir()
    os.chmod(base, 0o755)  # noqa: S103  the unprivileged worker must reach the socket
    os.chown(run_root, WORKER_UID, WORKER_UID)
    os.chmod(run_root, 0o711)  # noqa: S103
    socket_path = base / "sandbox.sock"
    process = subprocess.Popen(
        [
            sys.executable,
            "-s",
            "-m",
            "fmuengine.sandbox",
            "--listen",
            str(socket_path),
            "--allow-uid",
            str(WORKER_UID),
            "--run-root",
            str(run_root),
            "--state-dir",
            str(base / "state"),
        ],
        cwd=PROJECT_ROOT,
        env={},
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert process.stderr is not None
    deadline = time.monotonic() + 30
    while not socket_path.exists():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "the daemon did not start"
        time.sleep(0.05)
    yield process, socket_path, run_root, base
    os.killpg(process.pid, 9)
    process.wait()
    shutil.rmtree(base, ignore_errors=True)


def test_a_non_root_worker_runs_a_model_through_the_root_daemon(daemon, fmu_paths):
    _process, socket_path, run_root, base = daemon
    fmu = base / "model.fmu"
    shutil.copyfile(fmu_paths["bouncing_ball"], fmu)
    os.chmod(fmu, 0o644)

    with unprivileged_prefix(
        WORKER_UID, [Path(sys.executable), Path(sys.prefix), PROJECT_ROOT]
    ) as prefix:
        worker = _run_worker(prefix, socket_path, run_root, fmu)

    assert worker.returncode == 0, worker.stderr
    report = json.loads(worker.stdout.strip().splitlines()[-1])
    assert report["uid"] == WORKER_UID
    assert report["ready"], report
    assert report["isolation"] == "namespaces+setuid+cgroups+disk-quota+seccomp+rlimits"
    assert report["status"] == "succeeded", report
    direct = fmpy.simulate_fmu(str(fmu_paths["bouncing_ball"]), fmi_type="CoSimulation")
    np.testing.assert_allclose(report["h"], direct["h"], rtol=0, atol=1e-9)
    assert [entry.name for entry in run_root.iterdir() if entry.name.startswith("run-")] == []


def test_the_daemon_holds_no_secret_and_refuses_uids_it_does_not_trust(daemon):
    process, socket_path, _run_root, _base = daemon
    environment = Path(f"/proc/{process.pid}/environ").read_bytes()
    assert environment == b""
    assert psutil.Process(process.pid).uids().real == 0

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:  # we are root: untrusted
        client.connect(str(socket_path))
        client.settimeout(10)
        assert client.recv(4096) == b""  # closed without a word


def _run_worker(
    prefix: tuple[str, ...], socket_path: Path, run_root: Path, fmu: Path
) -> subprocess.CompletedProcess[str]:
    """The worker script as the unprivileged user (see fmuengine/tests/unprivileged.py)."""
    return subprocess.run(
        [
            *prefix,
            sys.executable,
            "-c",
            WORKER_SCRIPT,
            str(socket_path),
            str(run_root),
            str(fmu),
        ],
        cwd=PROJECT_ROOT,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
