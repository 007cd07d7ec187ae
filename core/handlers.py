"""Where errors meet HTTP: DRF's exception handler and Django's 404/500 handlers, so every
API error, ours or the framework's, leaves as problem+json (settings and urls name these)."""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.views.defaults import page_not_found, server_error
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from core.errors import DomainError
from core.problems import (
    PROBLEM_CONTENT_TYPE,
    ProblemCode,
    problem_body,
    problem_json_response,
    problem_response,
)

logger = logging.getLogger(__name__)

SERVER_ERROR_DETAIL = "The server failed to handle this request; it has been logged."


def _flatten_errors(detail, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested error detail as {"field.sub": [messages]}."""
    errors: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            errors.update(_flatten_errors(value, f"{prefix}.{key}" if prefix else key))
    elif isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            errors.setdefault(prefix or "non_field_errors", []).extend(str(item) for item in detail)
        else:
            for index, item in enumerate(detail):
                errors.update(_flatten_errors(item, f"{prefix}.{index}" if prefix else str(index)))
    else:
        errors.setdefault(prefix or "non_field_errors", []).append(str(detail))
    return errors


def problem_exception_handler(exc: Exception, context: dict) -> Response:
    """DRF's EXCEPTION_HANDLER: every error leaves the API as problem+json."""
    if isinstance(exc, DomainError):
        return problem_response(exc.code, exc.detail, **exc.extra)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    # DRF's own handler first, for the headers it sets (Retry-After, WWW-Authenticate).
    response = drf_exception_handler(exc, context)
    if response is None:
        logger.exception("Unhandled API error", exc_info=exc)
        return problem_response(ProblemCode.SERVER_ERROR, SERVER_ERROR_DETAIL)

    status_code = response.status_code
    if isinstance(exc, exceptions.ValidationError):
        body = problem_body(
            ProblemCode.INVALID_REQUEST,
            "The request has invalid fields; see errors.",
            errors=_flatten_errors(exc.detail),
        )
    elif isinstance(exc, exceptions.Throttled):
        body = problem_body(
            ProblemCode.THROTTLED,
            str(exc.detail),
            # Throttled.__init__ sets wait; djangorestframework-stubs leave it out.
            retry_after_seconds=exc.wait and int(exc.wait),  # type: ignore[attr-defined]
        )
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        body = problem_body(ProblemCode.for_status(status_code), str(detail), status=status_code)
    response.data = body
    response.content_type = PROBLEM_CONTENT_TYPE
    if status_code == status.HTTP_401_UNAUTHORIZED and "WWW-Authenticate" not in response:
        response["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


def _is_api_path(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def api_aware_404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Django's 404 handler: problem+json under /api/, the HTML page elsewhere."""
    if _is_api_path(request):
        return problem_json_response(ProblemCode.NOT_FOUND, "No such endpoint.")
    return page_not_found(request, exception)


def api_aware_500(request: HttpRequest) -> HttpResponse:
    if _is_api_path(request):
        return problem_json_response(ProblemCode.SERVER_ERROR, SERVER_ERROR_DETAIL)
    return server_error(request)
