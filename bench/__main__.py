"""`make bench`: the gateway against bare fmpy, measured in one run on this machine.

Prints, for a small FMU (the bouncing ball test model, 0..3 s):
- in-process fmpy.simulate_fmu time, the `fmpy simulate` CLI process time, and the
  gateway's end-to-end time (POST -> result ready; gunicorn + a Celery worker on Redis +
  PostgreSQL + the sandbox), as ratios;
- runs per second with 2 workers against bare fmpy in 2 processes, two ways: the
  worker pool draining queued runs, and everything through the API at once on this
  machine (load generator, web, database, broker and workers on the same cores);
- the same with one forked process per run and no sandbox (the ceiling of a design
  that gives each run its own process), and the CLI;
- where the CPU goes per run in the gateway;
- the worker pool against bare fmpy again for longer runs of the same FMU (0..100 s,
  10,001 rows), to show how the ratio depends on how long a run simulates.
- a 1,000-case grid study against bare fmpy looping over the same cases in 2 processes
  (bench/studies.py).
Targets (issue 4): end-to-end <= 1.3x in-process + 50 ms and below the CLI time;
throughput >= 0.7x bare. Studies (issue 13): >= 0.8x the careful fmpy loop.
`python -m bench studies` (or `runs`) measures one part only.
"""

from __future__ import annotations

import functools
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

from bench import baselines, studies
from bench.cpu import CpuWindow

BENCH_DATABASE = "fmugateway_bench"
REPEATS_IN_PROCESS = 40
REPEATS_CLI = 5
REPEATS_END_TO_END = 30
THROUGHPUT_RUNS = 120
THROUGHPUT_CLIENTS = 8
BASELINE_RUNS = 200
CLI_RUNS = 10
LONG_RUN = {"stop_time": 100.0, "output_interval": 0.01}
LONG_RUNS = 40


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


class Gateway:
    """A client of the live gateway, with one uploaded model."""

    def __init__(self, url: str, api_key: str, fmu: str) -> None:
        import requests

        self.url = url
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.session = requests.Session()
        self.session.headers.update(self.headers)
        with open(fmu, "rb") as handle:
            response = self.session.post(f"{url}/api/v1/models", files={"file": handle})
        response.raise_for_status()
        self.model_id = response.json()["id"]

    def submit(self, session=None, **request) -> str:
        response = (session or self.session).post(
            f"{self.url}/api/v1/simulations", json={"model": self.model_id, **request}
        )
        if response.status_code != 202:
            raise RuntimeError(f"bench run refused: {response.status_code} {response.text}")
        return response.json()["id"]

    def wait(self, run_id: str, session=None) -> None:
        while True:
            state = (
                (session or self.session)
                .get(f"{self.url}/api/v1/simulations/{run_id}?wait=30")
                .json()
            )
            if state["status"] not in ("queued", "running"):
                break
        if state["status"] != "succeeded":
            raise RuntimeError(f"bench run failed: {state}")

    def run_and_wait(self, session=None) -> None:
        self.wait(self.submit(session), session)


def api_throughput(gateway: Gateway, cpu: CpuWindow) -> float:
    """Runs/s with clients submitting and waiting through the API, all on this machine."""
    import requests

    def client(runs: int) -> None:
        session = requests.Session()
        session.headers.update(gateway.headers)
        for _ in range(runs):
            gateway.run_and_wait(session)

    per_client = THROUGHPUT_RUNS // THROUGHPUT_CLIENTS
    cpu.start()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=THROUGHPUT_CLIENTS) as pool:
        list(pool.map(client, [per_client] * THROUGHPUT_CLIENTS))
    rate = per_client * THROUGHPUT_CLIENTS / (time.perf_counter() - started)
    cpu.stop()
    return rate


def worker_pool_throughput(
    gateway: Gateway, cpu: CpuWindow, runs: int = THROUGHPUT_RUNS, **request
) -> float:
    """Runs/s of the 2 workers draining runs queued beforehand through the API."""
    from fmugateway.celery import app as celery_app
    from simulations.models import Simulation, SimulationStatus

    celery_app.control.cancel_consumer("celery", reply=True)
    run_ids = [gateway.submit(**request) for _ in range(runs)]
    unfinished = Simulation.objects.filter(
        pk__in=run_ids, status__in=[SimulationStatus.QUEUED, SimulationStatus.RUNNING]
    )
    cpu.start()
    started = time.perf_counter()
    celery_app.control.add_consumer("celery", reply=True)
    while unfinished.exists():
        time.sleep(0.05)
    rate = runs / (time.perf_counter() - started)
    cpu.stop()
    failed = Simulation.objects.filter(pk__in=run_ids).exclude(status=SimulationStatus.SUCCEEDED)
    if failed.exists():
        raise RuntimeError(f"{failed.count()} bench runs did not succeed")
    return rate


def main(parts: frozenset[str] = frozenset({"runs", "studies"})) -> int:
    database_url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/fmugateway")
    database_url = database_url.rsplit("/", 1)[0] + f"/{BENCH_DATABASE}"
    # The broker on BENCH_REDIS_URL's database, the cache on the one below it.
    redis_base, redis_db = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11").rsplit(
        "/", 1
    )
    broker_url, cache_url = f"{redis_base}/{redis_db}", f"{redis_base}/{int(redis_db) - 1}"
    os.environ.update(DATABASE_URL=database_url, CELERY_BROKER_URL=broker_url, CACHE_URL=cache_url)
    os.environ.setdefault("SECRET_KEY", "bench-only-secret-key")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fmugateway.settings")
    ensure_database(database_url)

    import django

    django.setup()
    import redis
    from django.conf import settings
    from django.core.management import call_command

    from accounts.services import api_key_create, user_create
    from fmuengine.tests.fmus.build import build_fmu
    from fmugateway.tests.live_server import server_environment, start_celery_worker, start_gunicorn

    call_command("migrate", verbosity=0)
    call_command("createcachetable", verbosity=0)
    call_command("collectstatic", "--noinput", verbosity=0)
    for url in (broker_url, cache_url):
        redis.Redis.from_url(url).flushdb()

    work = Path(tempfile.mkdtemp(prefix="fmugw-bench-"))
    fmu = str(build_fmu("bouncing_ball", work))
    settings.MEDIA_ROOT = work / "media"

    print("FMU Gateway benchmark (bouncing_ball, default experiment: 0..3 s)")
    in_process = median_seconds(lambda: baselines.simulate_in_process(fmu), REPEATS_IN_PROCESS)
    cli = median_seconds(lambda: baselines.simulate_with_cli(fmu), REPEATS_CLI)

    # As deployed: throttling counters in Redis (CACHE_URL); a limit that a
    # capacity test does not hit.
    environment = server_environment(
        CELERY_BROKER_URL=broker_url, CACHE_URL=cache_url, API_RATE_LIMIT="1000000/min"
    )
    server = start_gunicorn(environment=environment)
    worker = start_celery_worker(
        environment=environment, log_path=work / "worker.log", concurrency=2
    )
    api_cpu, pool_cpu, study_cpu = CpuWindow(), CpuWindow(), CpuWindow()
    try:
        user = user_create(email=f"bench-{time.time_ns()}@example.com", password=None)
        _key, plaintext = api_key_create(user=user)
        gateway = Gateway(server.url, plaintext, fmu)
        for _ in range(4):  # both pool processes start their sandbox server
            gateway.run_and_wait()
        if "studies" in parts:
            warm_up = studies.WARM_UP_DESIGN
            studies.study_through_api(gateway.session, server.url, gateway.model_id, warm_up)
            study_cpu.start()
            study = studies.study_through_api(gateway.session, server.url, gateway.model_id)
            study_cpu.stop()
        if "runs" in parts:
            end_to_end = median_seconds(gateway.run_and_wait, REPEATS_END_TO_END)
            api_rate = api_throughput(gateway, api_cpu)
            pool_rate = worker_pool_throughput(gateway, pool_cpu)
            long_pool_rate = worker_pool_throughput(gateway, CpuWindow(), LONG_RUNS, **LONG_RUN)
    finally:
        worker.stop()
        server.stop()

    if "studies" in parts:
        cases = studies.grid_cases()
        careful_cpu = CpuWindow()
        careful_cpu.start()
        careful = studies.loop_rate_in_two_processes(studies.careful_loop, fmu, cases)
        careful_cpu.stop()
        naive = studies.loop_rate_in_two_processes(studies.naive_loop, fmu, cases)
        print("\n".join(studies.report_lines(study, careful, naive)))
        print(f"  CPU per case, the study through the API ({study.cases:,} cases):")
        print("\n".join(study_cpu.report_lines(study.cases, unit="case")))
        print("  CPU per case, the careful fmpy loop (processes' start included):")
        print("\n".join(careful_cpu.report_lines(len(cases), unit="case")))
    if "runs" not in parts:
        return 0

    bare_rate = baselines.rate_in_two_processes(baselines.simulate_in_process, fmu, BASELINE_RUNS)
    forked_rate = baselines.forked_rate_in_two_processes(fmu, BASELINE_RUNS)
    cli_rate = baselines.rate_in_two_processes(baselines.simulate_with_cli, fmu, CLI_RUNS)
    long_in_process = functools.partial(baselines.simulate_in_process, **LONG_RUN)
    long_run = median_seconds(lambda: long_in_process(fmu), 5)
    long_bare_rate = baselines.rate_in_two_processes(long_in_process, fmu, LONG_RUNS)

    budget = 1.3 * in_process + 0.050
    met = end_to_end <= budget and end_to_end < cli
    print(f"  in-process fmpy.simulate_fmu      {in_process * 1000:8.1f} ms   1.00x")
    print(f"  fmpy simulate (CLI process)       {cli * 1000:8.1f} ms   {cli / in_process:5.2f}x")
    print(
        f"  gateway end-to-end (POST->ready)  {end_to_end * 1000:8.1f} ms   "
        f"{end_to_end / in_process:5.2f}x in-process, {end_to_end / cli:4.2f}x CLI"
    )
    print(
        f"    target <= 1.3x in-process + 50 ms = {budget * 1000:.1f} ms and < CLI:"
        f" {'MET' if met else 'MISSED'}"
    )
    print("  throughput with 2 workers, runs/s (ratio to bare fmpy in 2 processes):")
    print(f"    bare fmpy, in-process                  {bare_rate:7.1f}   1.00")
    print(
        f"    fmpy, one forked process per run       {forked_rate:7.1f}   "
        f"{forked_rate / bare_rate:4.2f}  (no sandbox: the ceiling of a process per run)"
    )
    for label, rate in (
        ("gateway, worker pool draining a queue", pool_rate),
        ("gateway, all through the API", api_rate),
    ):
        verdict = "MET" if rate >= 0.7 * bare_rate else "MISSED"
        print(f"    {label:38s} {rate:7.1f}   {rate / bare_rate:4.2f}  target >= 0.70: {verdict}")
    cli_ratio = cli_rate / bare_rate
    print(f"    fmpy CLI, a process per run            {cli_rate:7.1f}   {cli_ratio:4.2f}")
    print(f"  longer runs (0..100 s, 10,001 rows, {long_run * 1000:.0f} ms in-process), runs/s:")
    print(f"    bare fmpy, in-process                  {long_bare_rate:7.1f}   1.00")
    long_ratio = long_pool_rate / long_bare_rate
    print(f"    gateway, worker pool draining a queue  {long_pool_rate:7.1f}   {long_ratio:4.2f}")
    print(f"  CPU per run, worker pool draining {THROUGHPUT_RUNS} queued runs:")
    print("\n".join(pool_cpu.report_lines(THROUGHPUT_RUNS)))
    print(f"  CPU per run, {THROUGHPUT_CLIENTS} clients through the API:")
    print("\n".join(api_cpu.report_lines(THROUGHPUT_RUNS)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(frozenset(sys.argv[1:]) or frozenset({"runs", "studies"})))
