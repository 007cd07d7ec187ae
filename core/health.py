"""Liveness and readiness: what a load balancer and an operator ask first.

/readyz runs the checks settings.READINESS_CHECKS names, in order. The configuration
lists them, not this module, because some belong to apps (the sandbox workers are the
simulations app's) and core imports no app.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.utils.module_loading import import_string
from django.views.decorators.cache import never_cache
from kombu import Connection

from core.problems import ProblemCode, problem_json_response

logger = logging.getLogger(__name__)

BROKER_TIMEOUT_SECONDS = 2.0
# A failing check reads "error: <exception>: <reason>", at most this long (a sandbox
# reason names each missing measure, for each refusing worker).
CHECK_RESULT_MAX_CHARS = 1000


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
        # kombu takes seconds as a float (time() + timeout); celery-types' stub says int.
        broker.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_SECONDS)  # type: ignore[arg-type]
    finally:
        broker.release()


def readiness() -> dict[str, str]:
    """Run every check; a check passes by returning, and a failing one reads
    "error: <exception class>: <reason>"."""
    results = {}
    for name, path in settings.READINESS_CHECKS.items():
        try:
            import_string(path)()
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
        return problem_json_response(
            ProblemCode.UNAVAILABLE, f"Not ready: {', '.join(failing)} failing.", checks=checks
        )
    return JsonResponse({"status": "ok", "checks": checks})
