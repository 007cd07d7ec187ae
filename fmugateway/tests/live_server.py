"""Real gunicorn and Celery worker processes on the test database: started for one test
(conftest.py: live_servers, live_workers) or shared by the tests of a test process
(SharedProcesses: shared_web, shared_gateway, shared_billing_web, shared_billing_gateway)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests
from django.conf import settings
from django.db import connection

PROJECT_DIR = Path(settings.BASE_DIR)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_database_url() -> str:
    """The URL of the database this test runs on (pytest-django's test_ database)."""
    db = connection.settings_dict
    if connection.vendor != "postgresql":
        raise RuntimeError("Live-server tests need PostgreSQL: run them through `make test`.")
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"


def server_environment(**overrides: str) -> dict[str, str]:
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "DATABASE_URL": test_database_url(),
        "SECRET_KEY": settings.SECRET_KEY,
        "VAR_DIR": str(settings.VAR_DIR),
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "STATIC_ROOT": str(settings.STATIC_ROOT),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
    }
    environment.update(overrides)
    return environment


@dataclass
class LiveServer:
    process: subprocess.Popen
    url: str

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start_gunicorn(*, environment: dict[str, str], timeout: float = 30.0) -> LiveServer:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "fmugateway.wsgi",
            "-c",
            "fmugateway/gunicorn.conf.py",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--access-logfile",
            "/dev/null",
        ],
        cwd=PROJECT_DIR,
        env=environment,
        start_new_session=True,
    )
    server = LiveServer(process=process, url=f"http://127.0.0.1:{port}")
    try:
        wait_until_healthy(server.url, timeout=timeout, process=process)
    except RuntimeError:
        server.stop()  # never leave an orphaned gunicorn behind a failed start
        raise
    return server


def wait_until_healthy(url: str, *, timeout: float, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early with code {process.returncode}")
        try:
            if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except requests.RequestException:  # not listening yet, or still booting
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url}/healthz did not answer within {timeout} s")


@dataclass
class LiveWorker:
    process: subprocess.Popen
    log_path: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        # Same process-group handling: LiveServer.stop only reads the process.
        LiveServer.stop(self)  # type: ignore[arg-type]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_celery_worker(
    *,
    environment: dict[str, str],
    log_path: Path,
    concurrency: int = 2,
    timeout: float = 60.0,
    name: str | None = None,
    command_prefix: tuple[str, ...] = (),
) -> LiveWorker:
    """A real `celery worker` process; returns once it reports ready.

    `name` is its Celery node name (-n); `command_prefix` runs it through another command
    that ends by exec'ing the rest, e.g. to drop to another user (its pid stays the worker's).
    """
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        [
            *command_prefix,
            sys.executable,
            "-m",
            "celery",
            "-A",
            "fmugateway",
            "worker",
            "--loglevel=INFO",
            f"--concurrency={concurrency}",
            "--without-gossip",
            "--without-mingle",
            *(["-n", name] if name else []),
        ],
        cwd=PROJECT_DIR,
        env=environment,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    worker = LiveWorker(process=process, log_path=log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"celery worker exited early:\n{worker.log()}")
        if " ready." in worker.log():
            return worker
        time.sleep(0.2)
    worker.stop()
    raise RuntimeError(f"celery worker not ready within {timeout} s:\n{worker.log()}")


# An environment variable only the shared gateway's worker has (test_worker_queue.py shows
# that no model can read it).
WORKER_SECRET_NAME = "FMUGW_WORKER_SECRET"
WORKER_SECRET_VALUE = "s3cr3t-only-the-worker-knows-7d1f"


class SharedProcesses:
    """Live processes started on first use and kept for the rest of the test process.

    Each distinct environment gets its own processes, all on one MEDIA_ROOT (the tests
    that use them put theirs there too). Tests share them by using an account of their
    own; the database is emptied after each of them (transactional_db) as usual.
    """

    def __init__(self, *, media_root: Path, log_dir: Path) -> None:
        self.media_root = media_root
        self.log_dir = log_dir
        self._base = server_environment(MEDIA_ROOT=str(media_root))
        self._servers: dict[tuple, list[LiveServer]] = {}
        self._workers: dict[tuple, LiveWorker] = {}

    def servers(self, count: int = 1, **environment: str) -> list[LiveServer]:
        """`count` gunicorn processes with this environment (added to the base one)."""
        key = tuple(sorted(environment.items()))
        running = [server for server in self._servers.get(key, []) if server.alive()]
        while len(running) < count:
            running.append(start_gunicorn(environment={**self._base, **environment}))
        self._servers[key] = running
        return running[:count]

    def worker(self, *, concurrency: int = 2, name: str, **environment: str) -> LiveWorker:
        """The Celery worker with this node name and environment, started if need be."""
        key = (concurrency, name, *sorted(environment.items()))
        worker = self._workers.get(key)
        if worker is None or not worker.alive():
            worker = start_celery_worker(
                environment={**self._base, **environment},
                log_path=self.log_dir / f"{name.replace('@', '-')}-{len(self._workers)}.log",
                concurrency=concurrency,
                name=name,
            )
            self._workers[key] = worker
        return worker

    def started_workers(self, name: str) -> list[LiveWorker]:
        return [worker for key, worker in self._workers.items() if key[1] == name]

    def stop(self) -> None:
        for server in [server for servers in self._servers.values() for server in servers]:
            server.stop()
        for worker in self._workers.values():
            worker.stop()
