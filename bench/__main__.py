"""`make bench`: the gateway against bare fmpy, measured in one run on this machine.

Prints, for a small FMU (the bouncing ball test model):
- in-process fmpy.simulate_fmu time, the `fmpy simulate` CLI process time, and the
  gateway's end-to-end time (POST -> result ready; gunicorn + a Celery worker on Redis +
  PostgreSQL + the sandbox), as ratios;
- runs per second with 2 workers against bare fmpy in 2 processes.
Targets (issue 4): end-to-end <= 1.3x in-process + 50 ms and below the CLI time;
throughput >= 0.7x bare.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import Pool
from pathlib import Path

import psycopg

BENCH_DATABASE = "fmugateway_bench"
REPEATS_IN_PROCESS = 40
REPEATS_CLI = 5
REPEATS_END_TO_END = 30
THROUGHPUT_RUNS = 60


def ensure_database(url: str) -> None:
    base, name = url.rsplit("/", 1)
    with psycopg.connect(f"{base}/postgres", autocommit=True) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
        if not exists:
            connection.execute(f'CREATE DATABASE "{name}"')


def median_seconds(action, repeats: int) -> float:
    action()  # warm-up
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def simulate_in_process(fmu: str) -> None:
    import fmpy

    fmpy.simulate_fmu(fmu)


def main() -> int:
    database_url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/fmugateway")
    database_url = database_url.rsplit("/", 1)[0] + f"/{BENCH_DATABASE}"
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
    os.environ.update(DATABASE_URL=database_url, CELERY_BROKER_URL=redis_url)
    os.environ.setdefault("SECRET_KEY", "bench-only-secret-key")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fmugateway.settings")
    ensure_database(database_url)

    import django

    django.setup()
    import redis
    import requests
    from django.conf import settings
    from django.core.management import call_command

    from accounts.services import api_key_create, user_create
    from fmugateway.tests.live_server import server_environment, start_celery_worker, start_gunicorn
    from simulations.tests.fmus.build import build_fmu

    call_command("migrate", verbosity=0)
    call_command("createcachetable", verbosity=0)
    call_command("collectstatic", "--noinput", verbosity=0)
    redis.Redis.from_url(redis_url).flushdb()

    work = Path(tempfile.mkdtemp(prefix="fmugw-bench-"))
    fmu = str(build_fmu("bouncing_ball", work))
    settings.MEDIA_ROOT = work / "media"

    print("FMU Gateway benchmark (bouncing_ball, default experiment: 0..3 s)")
    in_process = median_seconds(lambda: simulate_in_process(fmu), REPEATS_IN_PROCESS)
    fmpy_cli = Path(sys.executable).parent / "fmpy"
    cli = median_seconds(
        lambda: subprocess.run([str(fmpy_cli), "simulate", fmu], check=True, capture_output=True),
        REPEATS_CLI,
    )

    environment = server_environment(CELERY_BROKER_URL=redis_url)
    server = start_gunicorn(environment=environment)
    worker = start_celery_worker(
        environment=environment, log_path=work / "worker.log", concurrency=2
    )
    try:
        user = user_create(email=f"bench-{time.time_ns()}@example.com", password=None)
        _key, plaintext = api_key_create(user=user)
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {plaintext}"
        with open(fmu, "rb") as handle:
            model_id = session.post(f"{server.url}/api/v1/models", files={"file": handle}).json()[
                "id"
            ]

        def end_to_end() -> None:
            run = session.post(f"{server.url}/api/v1/simulations", json={"model": model_id}).json()
            finished = session.get(f"{server.url}/api/v1/simulations/{run['id']}?wait=30").json()
            if finished["status"] != "succeeded":
                raise RuntimeError(f"bench run failed: {finished}")

        for _ in range(4):  # both pool processes start their sandbox server
            end_to_end()
        gateway = median_seconds(end_to_end, REPEATS_END_TO_END)

        def submit_and_wait(_index: int) -> None:
            local = requests.Session()
            local.headers.update(session.headers)
            run = local.post(f"{server.url}/api/v1/simulations", json={"model": model_id}).json()
            while True:
                state = local.get(f"{server.url}/api/v1/simulations/{run['id']}?wait=30").json()
                if state["status"] not in ("queued", "running"):
                    break

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(submit_and_wait, range(THROUGHPUT_RUNS)))
        gateway_rate = THROUGHPUT_RUNS / (time.perf_counter() - started)
    finally:
        worker.stop()
        server.stop()

    with Pool(2) as pool:
        pool.map(simulate_in_process, [fmu] * 4)  # warm-up: imports in both processes
        started = time.perf_counter()
        pool.map(simulate_in_process, [fmu] * THROUGHPUT_RUNS)
        bare_rate = THROUGHPUT_RUNS / (time.perf_counter() - started)

    def cli_run(_index: int) -> None:
        subprocess.run([str(fmpy_cli), "simulate", fmu], check=True, capture_output=True)

    cli_runs = 10
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(cli_run, range(cli_runs)))
    cli_rate = cli_runs / (time.perf_counter() - started)

    budget = 1.3 * in_process + 0.050
    print(f"  in-process fmpy.simulate_fmu      {in_process * 1000:8.1f} ms   1.00x")
    print(f"  fmpy simulate (CLI process)       {cli * 1000:8.1f} ms   {cli / in_process:5.2f}x")
    print(
        f"  gateway end-to-end (POST->ready)  {gateway * 1000:8.1f} ms   "
        f"{gateway / in_process:5.2f}x in-process, {gateway / cli:4.2f}x CLI"
    )
    print(
        f"    target <= 1.3x in-process + 50 ms = {budget * 1000:.1f} ms and < CLI:"
        f" {'MET' if gateway <= budget and gateway < cli else 'MISSED'}"
    )
    print(f"  throughput, 2 workers             {gateway_rate:8.1f} runs/s")
    print(f"  throughput, bare fmpy x2 procs    {bare_rate:8.1f} runs/s")
    print(
        f"    ratio {gateway_rate / bare_rate:.2f} (target >= 0.70):"
        f" {'MET' if gateway_rate >= 0.7 * bare_rate else 'MISSED'}"
    )
    print(f"  throughput, fmpy CLI x2 procs     {cli_rate:8.1f} runs/s")
    print(f"    ratio {gateway_rate / cli_rate:.2f} against a fresh fmpy process per run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
