"""Shared pieces of the OpenAPI schema: problem+json and its examples, pagination.

The views' `@extend_schema` annotations use these; drf-spectacular serves the schema at
/api/schema/ and the docs at /api/docs/ (see fmugateway/urls.py). The API key's security
scheme is the accounts app's (accounts/authentication.py), next to the class it describes.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
)
from rest_framework import serializers

from core.problems import PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_BASE, ProblemCode, problem_body

API_PREFIX = "/api/v1/"
EXAMPLE_UUID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"


def only_api_endpoints(endpoints):
    """PREPROCESSING_HOOKS: document the versioned JSON API, not the portal or webhooks."""
    return [endpoint for endpoint in endpoints if endpoint[0].startswith(API_PREFIX)]


# --- problem+json (RFC 9457) -----------------------------------------------------------------


class ProblemSerializer(serializers.Serializer):
    type = serializers.URLField(help_text=f"A URI naming the error, under {PROBLEM_TYPE_BASE}.")
    title = serializers.CharField()
    status = serializers.IntegerField(help_text="The HTTP status code.")
    detail = serializers.CharField(help_text="What went wrong and what to do about it.")


class ValidationProblemSerializer(ProblemSerializer):
    # DRF's metaclass takes declared fields off the class: this does not replace
    # Serializer.errors, as mypy thinks.
    errors = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Messages by field; nested fields are dotted (`start_values.k`).",
    )


class ThrottledProblemSerializer(ProblemSerializer):
    retry_after_seconds = serializers.IntegerField(allow_null=True, required=False)


class PriceSerializer(serializers.Serializer):
    amount = serializers.CharField(help_text='A decimal string, e.g. "1.00".')
    currency = serializers.CharField(help_text="ISO 4217, lower case.")


class PaymentLinkSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    checkout_url = serializers.URLField(help_text="Stripe Checkout: pay the run here.")
    expires_at = serializers.DateTimeField(help_text="When the checkout page closes.")
    status_url = serializers.CharField(
        help_text="GET it until `status` is `paid`; it then holds the payment token."
    )
    token_ttl_seconds = serializers.IntegerField(
        help_text="How long the token stays valid after payment."
    )


class PaymentRequiredProblemSerializer(ProblemSerializer):
    price = PriceSerializer()
    payment = PaymentLinkSerializer()
    credit_packs_url = serializers.CharField(help_text="Buy credits for many runs here.")
    payment_token_status = serializers.ChoiceField(
        choices=["none", "invalid", "used", "expired", "void", "mismatch"],
        required=False,
        help_text=(
            "Why no Payment-Token paid for this request (`none`: none was sent; `mismatch`: "
            "a token bought for another purpose, e.g. a run's for a study or a study's of "
            "another size)."
        ),
    )


def _problem_example(name: str, code: ProblemCode, detail: str, **extra) -> OpenApiExample:
    return OpenApiExample(
        name,
        value=problem_body(code, detail, **extra),
        response_only=True,
        status_codes=[str(code.status)],
        media_type=PROBLEM_CONTENT_TYPE,
    )


PAYMENT_REQUIRED_EXAMPLE = OpenApiExample(
    "Payment required",
    value=problem_body(
        ProblemCode.PAYMENT_REQUIRED,
        "You have no credit: this run costs 1.00 USD. Pay 1.00 USD at payment.checkout_url, "
        "then retry the same request with the header 'Payment-Token: <token>' (the token "
        "appears at payment.status_url once paid), or buy credits at credit_packs_url.",
        price={"amount": "1.00", "currency": "usd"},
        payment={
            "id": EXAMPLE_UUID,
            "checkout_url": "https://checkout.stripe.com/c/pay/cs_test_a1b2c3",
            "expires_at": "2026-01-01T13:00:00Z",
            "status_url": f"/api/v1/payments/{EXAMPLE_UUID}",
            "token_ttl_seconds": 1800,
        },
        credit_packs_url="/pricing/",
        payment_token_status="none",  # noqa: S106 (a state, not a secret)
    ),
    response_only=True,
    status_codes=["402"],
    media_type=PROBLEM_CONTENT_TYPE,
)


def problem(
    code: ProblemCode,
    description: str,
    *,
    example: str | None = None,
    name: str | None = None,
    **extra,
):
    """An OpenApiResponse of problem+json with one example body."""
    serializer = {
        400: ValidationProblemSerializer,
        402: PaymentRequiredProblemSerializer,
        429: ThrottledProblemSerializer,
    }.get(code.status, ProblemSerializer)
    examples = [_problem_example(name or description, code, example or description, **extra)]
    return OpenApiResponse(response=serializer, description=description, examples=examples)


INVALID_REQUEST = problem(
    ProblemCode.INVALID_REQUEST,
    "Invalid request",
    example="The request has invalid fields; see errors.",
    errors={"stop_time": ["A valid number is required."]},
)
UNAUTHENTICATED = problem(
    ProblemCode.UNAUTHENTICATED,
    "No API key, or an invalid one",
    example="Invalid API key.",
    name="Invalid API key",
)
PAYMENT_REQUIRED = OpenApiResponse(
    response=PaymentRequiredProblemSerializer,
    description=(
        "No credit and no valid Payment-Token: pay at `payment.checkout_url`, then retry "
        "the same request with `Payment-Token: <token>` from `payment.status_url`."
    ),
    examples=[PAYMENT_REQUIRED_EXAMPLE],
)
NOT_FOUND = problem(
    ProblemCode.NOT_FOUND, "Not found, or not yours", example="Not found.", name="Not found"
)
CONFLICT = problem(ProblemCode.CONFLICT, "Conflict with the object's state", name="Conflict")
RESULT_DELETED = problem(
    ProblemCode.RESULT_EXPIRED,
    "The result was deleted after the retention period",
    name="Result deleted",
)
TOO_LARGE = problem(
    ProblemCode.UPLOAD_TOO_LARGE,
    "Upload too large",
    example="The upload is larger than the 200 MB limit for an FMU.",
)
UNSUPPORTED_MEDIA_TYPE = problem(
    ProblemCode.UNSUPPORTED_MEDIA_TYPE,
    "Unsupported media type",
    example='Unsupported media type "text/plain" in request.',
)
THROTTLED = problem(
    ProblemCode.THROTTLED,
    "Too many requests (see the Retry-After header)",
    example="Request was throttled. Expected available in 12 seconds.",
    name="Throttled",
    retry_after_seconds=12,
)
UNAVAILABLE = problem(
    ProblemCode.UNAVAILABLE,
    "A backing service is unavailable; retry later",
    name="Service unavailable",
)

_ERRORS = {
    400: INVALID_REQUEST,
    401: UNAUTHENTICATED,
    402: PAYMENT_REQUIRED,
    404: NOT_FOUND,
    409: CONFLICT,
    410: RESULT_DELETED,
    413: TOO_LARGE,
    415: UNSUPPORTED_MEDIA_TYPE,
    429: THROTTLED,
    503: UNAVAILABLE,
}


def errors(*status_codes: int) -> dict:
    """`responses` entries for these problem+json errors, plus 401 and 429 (every operation)."""
    return {
        (code, PROBLEM_CONTENT_TYPE): _ERRORS[code] for code in sorted({*status_codes, 401, 429})
    }


# --- pagination --------------------------------------------------------------------------------

PAGINATION_PARAMETERS = [
    OpenApiParameter(
        "limit",
        OpenApiTypes.INT,
        description="Items per page (default 50, at most 1000).",
        required=False,
    ),
    OpenApiParameter(
        "offset", OpenApiTypes.INT, description="Items to skip (default 0).", required=False
    ),
]


def paginated(serializer_class: type[serializers.Serializer], name: str):
    """The LimitOffsetPagination envelope around a list of serializer_class."""
    return type(
        name,
        (serializers.Serializer,),
        {
            "count": serializers.IntegerField(),
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": serializer_class(many=True),
            "__module__": serializer_class.__module__,
        },
    )
