"""RFC 9457 problem+json for every API error, mapped in this one place."""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://fmugateway.dev/errors/"

_TITLES = {
    400: "Invalid request",
    401: "Authentication required",
    402: "Payment required",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}
_SLUGS = {
    400: "invalid-request",
    401: "unauthenticated",
    402: "payment-required",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    409: "conflict",
    413: "too-large",
    415: "unsupported-media-type",
    429: "throttled",
    500: "server-error",
    503: "unavailable",
}


class DomainError(Exception):
    """A business-rule failure a service raises; the API shows it as problem+json."""

    status_code = 400
    code = "invalid-request"
    title: str | None = None

    def __init__(self, detail: str, *, code: str | None = None, **extra: object) -> None:
        super().__init__(detail)
        self.detail = detail
        if code:
            self.code = code
        self.extra = extra


def problem_body(status_code: int, detail: str, *, code: str | None = None, **extra) -> dict:
    slug = code or _SLUGS.get(status_code, "error")
    body = {
        "type": PROBLEM_TYPE_BASE + slug,
        "title": _TITLES.get(status_code, "Error"),
        "status": status_code,
        "detail": detail,
    }
    body.update(extra)
    return body


def problem_response(status_code: int, detail: str, **extra) -> Response:
    return Response(
        problem_body(status_code, detail, **extra),
        status=status_code,
        content_type=PROBLEM_CONTENT_TYPE,
    )


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
        response = problem_response(
            exc.status_code,
            exc.detail,
            code=exc.code,
            **exc.extra,
        )
        if exc.title:
            response.data["title"] = exc.title
        return response
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    response = drf_exception_handler(exc, context)
    if response is None:
        logger.exception("Unhandled API error", exc_info=exc)
        return problem_response(
            500, "The server failed to handle this request; it has been logged."
        )

    status_code = response.status_code
    if isinstance(exc, exceptions.ValidationError):
        body = problem_body(
            400,
            "The request has invalid fields; see errors.",
            errors=_flatten_errors(exc.detail),
        )
    elif isinstance(exc, exceptions.Throttled):
        body = problem_body(429, str(exc.detail), retry_after_seconds=exc.wait and int(exc.wait))
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        body = problem_body(status_code, str(detail))
    response.data = body
    response.content_type = PROBLEM_CONTENT_TYPE
    if status_code == status.HTTP_401_UNAUTHORIZED and "WWW-Authenticate" not in response:
        response["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


def _is_api_path(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def api_aware_404(request: HttpRequest, exception: Exception | None = None):
    """Django's 404 handler: problem+json under /api/, the HTML page elsewhere."""
    if _is_api_path(request):
        return JsonResponse(
            problem_body(404, "No such endpoint."), status=404, content_type=PROBLEM_CONTENT_TYPE
        )
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def api_aware_500(request: HttpRequest):
    if _is_api_path(request):
        return JsonResponse(
            problem_body(500, "The server failed to handle this request; it has been logged."),
            status=500,
            content_type=PROBLEM_CONTENT_TYPE,
        )
    from django.views.defaults import server_error

    return server_error(request)
