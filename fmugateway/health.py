"""Liveness and readiness: what a load balancer and an operator ask first."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from kombu import Connection

logger = logging.getLogger(__name__)

BROKER_TIMEOUT_SECONDS = 2.0


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_broker() -> None:
    broker = Connection(
        settings.CELERY_BROKER_URL,
        transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        connect_timeout=BROKER_TIMEOUT_SECONDS,
    )
    try:
        broker.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_SECONDS)
    finally:
        broker.release()


def check_storage() -> None:
    """Write and delete a tiny probe object: reachable is not enough, uploads need writable.

    Against a bucket the probe uses a client that does not retry, so a storage outage makes
    /readyz answer 503 within seconds.
    """
    from simulations.storage import probe_storage

    probe_storage()


class WorkersRefuseRuns(Exception):
    """A worker said it takes no run (below the required sandbox isolation, or worse)."""


def check_sandbox() -> None:
    """Fail while any worker reported, within the last few minutes, that it takes no run.

    Workers have no HTTP port, so they record their sandbox status in the database (at
    start, every 30 s, on each refusal) and this reads it: a worker below the required
    isolation leaves runs queued, which an operator must hear about from the usual check.
    Fly's own check is /healthz, so this never takes a web machine out of the proxy.
    """
    from simulations.selectors import workers_refusing_runs

    refusing = list(workers_refusing_runs())
    if refusing:
        raise WorkersRefuseRuns(
            "; ".join(
                f"worker {worker.hostname} takes no run: {worker.reason}" for worker in refusing
            )
        )


READINESS_CHECKS = {
    "database": check_database,
    "broker": check_broker,
    "storage": check_storage,
    "sandbox": check_sandbox,
}
# A failing check reads "error: <exception>: <reason>", at most this long (a sandbox
# reason names each missing measure, for each refusing worker).
CHECK_RESULT_MAX_CHARS = 1000


def readiness() -> dict[str, str]:
    """Run every check; a failing one reads "error: <reason>"."""
    results = {}
    for name, check in READINESS_CHECKS.items():
        try:
            check()
        except Exception as exc:  # any failure means "not ready", with the reason shown
            logger.warning("readiness check %s failed: %s", name, exc)
            results[name] = f"error: {exc.__class__.__name__}: {exc}"[:CHECK_RESULT_MAX_CHARS]
        else:
            results[name] = "ok"
    return results


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    checks = readiness()
    failing = sorted(name for name, result in checks.items() if result != "ok")
    if failing:
        return JsonResponse(
            {
                "type": "https://fmugateway.dev/errors/unavailable",
                "title": "Service unavailable",
                "status": 503,
                "detail": f"Not ready: {', '.join(failing)} failing.",
                "checks": checks,
            },
            status=503,
            content_type="application/problem+json",
        )
    return JsonResponse({"status": "ok", "checks": checks})
