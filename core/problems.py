"""The API's error vocabulary: every problem+json (RFC 9457) type it answers, and the one
function that renders one.

Clients branch on the `type` URI (the client library does), so a code is a promise: it is
listed here once, with the HTTP status and title it always comes with, and
docs/support-runbook.md says what each means (a test holds the runbook to this list).
Services raise them through core.errors; DRF's exception handler, Django's 404/500
handlers, /readyz and the request-size middleware all render them with problem_body().
"""

from __future__ import annotations

import enum

from django.http import JsonResponse
from rest_framework.response import Response

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://fmugateway.dev/errors/"

# Titles shared by every code of a status (RFC 9457: the title does not vary by occurrence).
_INVALID = "Invalid request"
_TOO_LARGE = "Payload too large"
_CONFLICT = "Conflict"
_UNAVAILABLE = "Service unavailable"


class ProblemCode(enum.StrEnum):
    """One problem type: its slug (the end of the `type` URI), HTTP status and title."""

    status: int
    # RFC 9457's member name; it shadows str.title() on the members, on purpose.
    title: str  # type: ignore[assignment]

    def __new__(cls, slug: str, status: int, title: str) -> ProblemCode:
        member = str.__new__(cls, slug)
        member._value_ = slug
        member.status = status
        member.title = title
        return member

    # -- the generic code of each HTTP status (DRF's and Django's own errors) -------------
    INVALID_REQUEST = "invalid-request", 400, _INVALID
    UNAUTHENTICATED = "unauthenticated", 401, "Authentication required"
    PAYMENT_REQUIRED = "payment-required", 402, "Payment required"
    FORBIDDEN = "forbidden", 403, "Not allowed"
    NOT_FOUND = "not-found", 404, "Not found"
    METHOD_NOT_ALLOWED = "method-not-allowed", 405, "Method not allowed"
    NOT_ACCEPTABLE = "not-acceptable", 406, "Not acceptable"
    CONFLICT = "conflict", 409, _CONFLICT
    TOO_LARGE = "too-large", 413, _TOO_LARGE
    UNSUPPORTED_MEDIA_TYPE = "unsupported-media-type", 415, "Unsupported media type"
    THROTTLED = "throttled", 429, "Too many requests"
    SERVER_ERROR = "server-error", 500, "Internal server error"
    UNAVAILABLE = "unavailable", 503, _UNAVAILABLE
    # An HTTP status none of the above names (none is answered today): the body then
    # carries the response's own status.
    ERROR = "error", 500, "Error"

    # -- the API's own, more precise codes ---------------------------------------------------
    MODEL_IN_USE = "model-in-use", 409, _CONFLICT
    IDEMPOTENCY_KEY_REUSED = "idempotency-key-reused", 409, _CONFLICT
    RESULT_EXPIRED = "result-expired", 410, "Result deleted"
    UPLOAD_TOO_LARGE = "upload-too-large", 413, _TOO_LARGE
    STORAGE_UNAVAILABLE = "storage-unavailable", 503, "Storage unavailable"
    PAYMENT_PROVIDER_UNAVAILABLE = "payment-provider-unavailable", 503, _UNAVAILABLE

    # -- an upload that is not a usable FMU: fmuengine's InvalidFMU codes, "_" -> "-" ------
    NOT_A_ZIP = "not-a-zip", 400, _INVALID
    CORRUPT_ZIP = "corrupt-zip", 400, _INVALID
    TOO_MANY_ENTRIES = "too-many-entries", 400, _INVALID
    DUPLICATE_ENTRY = "duplicate-entry", 400, _INVALID
    UNSAFE_PATH = "unsafe-path", 400, _INVALID
    ENCRYPTED_ENTRY = "encrypted-entry", 400, _INVALID
    UNSUPPORTED_COMPRESSION = "unsupported-compression", 400, _INVALID
    ZIP_BOMB = "zip-bomb", 400, _INVALID
    FMU_TOO_LARGE_UNCOMPRESSED = "fmu-too-large-uncompressed", 413, _TOO_LARGE
    MISSING_MODEL_DESCRIPTION = "missing-model-description", 400, _INVALID
    MODEL_DESCRIPTION_TOO_LARGE = "model-description-too-large", 413, _TOO_LARGE
    XML_ENTITIES_FORBIDDEN = "xml-entities-forbidden", 400, _INVALID
    INVALID_MODEL_DESCRIPTION = "invalid-model-description", 400, _INVALID
    UNSUPPORTED_FMI_VERSION = "unsupported-fmi-version", 400, _INVALID
    UNSUPPORTED_FMI_TYPE = "unsupported-fmi-type", 400, _INVALID
    NO_BINARY_FOR_PLATFORM = "no-binary-for-platform", 400, _INVALID

    @property
    def type_uri(self) -> str:
        return PROBLEM_TYPE_BASE + self.value

    @classmethod
    def for_status(cls, status: int) -> ProblemCode:
        """The generic code of an HTTP status: what an error that names none is answered as."""
        return _GENERIC_BY_STATUS.get(status, cls.ERROR)


_GENERIC_BY_STATUS = {
    code.status: code
    for code in (
        ProblemCode.INVALID_REQUEST,
        ProblemCode.UNAUTHENTICATED,
        ProblemCode.PAYMENT_REQUIRED,
        ProblemCode.FORBIDDEN,
        ProblemCode.NOT_FOUND,
        ProblemCode.METHOD_NOT_ALLOWED,
        ProblemCode.NOT_ACCEPTABLE,
        ProblemCode.CONFLICT,
        ProblemCode.TOO_LARGE,
        ProblemCode.UNSUPPORTED_MEDIA_TYPE,
        ProblemCode.THROTTLED,
        ProblemCode.SERVER_ERROR,
        ProblemCode.UNAVAILABLE,
    )
}


def problem_body(
    code: ProblemCode, detail: str, *, status: int | None = None, **extra: object
) -> dict:
    """The problem+json document: type, title and status from the code, then the detail
    and any extra members (a 402's payment link, a 400's field errors, /readyz's checks).

    `status` only for ProblemCode.ERROR, which stands for whatever status it came with.
    """
    return {
        "type": code.type_uri,
        "title": code.title,
        "status": status or code.status,
        "detail": detail,
        **extra,
    }


def problem_response(code: ProblemCode, detail: str, **extra: object) -> Response:
    """A problem for DRF views and DRF's exception handler (rendered like any DRF response)."""
    return Response(
        problem_body(code, detail, status=code.status, **extra),
        status=code.status,
        content_type=PROBLEM_CONTENT_TYPE,
    )


def problem_json_response(code: ProblemCode, detail: str, **extra: object) -> JsonResponse:
    """A problem from plain Django code, outside DRF: middleware, health, 404/500 handlers."""
    return JsonResponse(
        problem_body(code, detail, status=code.status, **extra),
        status=code.status,
        content_type=PROBLEM_CONTENT_TYPE,
    )
