"""`make run` on a clone, with no environment and no services, serves /healthz within 60 s."""

import os
import shutil
import signal
import subprocess
import time

import pytest
import requests
from django.conf import settings

from fmugateway.tests.live_server import free_port

pytestmark = pytest.mark.live

IGNORED = shutil.ignore_patterns(".venv", "var", ".git", "__pycache__", "*.pyc")


def test_make_run_serves_healthz_with_no_environment(tmp_path):
    clone = tmp_path / "clone"
    shutil.copytree(settings.BASE_DIR, clone, ignore=IGNORED)
    # The venv is already built by `make test`; `make run` must find it up to date.
    (clone / ".venv").symlink_to(settings.BASE_DIR / ".venv")
    port = free_port()
    process = subprocess.Popen(
        ["make", "run", f"PORT={port}"],
        cwd=clone,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        healthy = False
        while time.monotonic() < deadline and process.poll() is None:
            try:
                healthy = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok
            except requests.RequestException:  # not listening yet, or still booting
                healthy = False
            if healthy:
                break
            time.sleep(0.25)
        assert healthy, "make run did not serve /healthz within 60 s"
        landing = requests.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert "simulations are free" in landing.text
        assert (clone / "var" / "db.sqlite3").exists()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/" in output
    assert "create_api_key" in output
    assert "celery@" in output or "worker" in output.lower()
