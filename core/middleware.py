"""Refuse oversize request bodies before anything (CSRF, the parsers) starts reading them."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from core.problems import ProblemCode, problem_json_response

# Multipart framing around the file itself.
ENVELOPE_BYTES = 1024 * 1024


class RequestSizeLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        limit = settings.FMU_MAX_UPLOAD_BYTES
        if length > limit + ENVELOPE_BYTES:
            detail = f"The upload is larger than the {limit // (1024 * 1024)} MB limit for an FMU."
            if request.path.startswith("/api/"):
                return problem_json_response(ProblemCode.UPLOAD_TOO_LARGE, detail)
            return HttpResponse(detail, status=413, content_type="text/plain; charset=utf-8")
        return self.get_response(request)
