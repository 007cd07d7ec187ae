"""What the client raises: a class per documented API status, built from problem+json.

Everything derives from FmuGatewayError, so one `except` catches all of it; API
answers derive from ApiError and keep the whole problem body in `body`.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import requests

from fmugateway_client.resources import Payment, Price, Simulation, parse_time


class FmuGatewayError(Exception):
    """Base of everything this package raises."""


class TransportError(FmuGatewayError):
    """The server could not be reached or the connection broke (after retries)."""


class ApiError(FmuGatewayError):
    """The API answered with an error: RFC 9457 fields, plus `errors` {field: [messages]}."""

    def __init__(
        self,
        status: int,
        type: str = "about:blank",
        title: str = "",
        detail: str = "",
        errors: dict[str, list[str]] | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.type = type
        self.title = title
        self.detail = detail
        self.errors = errors or {}
        self.body = body or {}
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.status} {self.title}".strip()
        if self.detail:
            text += f": {self.detail}"
        for name, messages in self.errors.items():
            text += f"\n  {name}: {' '.join(messages)}"
        return text


class ValidationError(ApiError):
    """400: the request has invalid fields; `errors` says which and why."""


class AuthenticationError(ApiError):
    """401: no API key, or one that is wrong, revoked or expired."""


class PaymentRequired(ApiError):
    """402: no credit and no valid payment token; pay at `checkout_url`, then retry.

    `payment_token_status` says why a token that was sent was refused
    ("used", "expired", "void", "invalid"; "none" when none was sent). For a study,
    `cases` and `total` ("$0.50") say what the one payment pays for. Without
    `checkout_url` (a total below the smallest card payment) only credit can pay.
    """

    def __init__(self, status: int = 402, *args: Any, **kwargs: Any) -> None:
        super().__init__(status, *args, **kwargs)
        payment = self.body.get("payment") or {}
        price = self.body.get("price")
        self.payment_id: str | None = payment.get("id")
        self.checkout_url: str | None = payment.get("checkout_url")
        self.status_url: str | None = payment.get("status_url")
        self.expires_at: datetime | None = parse_time(payment.get("expires_at"))
        self.token_ttl_seconds: int | None = payment.get("token_ttl_seconds")
        self.price: Price | None = Price.from_json(price) if isinstance(price, dict) else None
        self.credit_packs_url: str | None = self.body.get("credit_packs_url")
        self.payment_token_status: str | None = self.body.get("payment_token_status")
        # A study's 402: its case count and total (`price` is then one case's price).
        self.cases: int | None = self.body.get("cases")
        self.total: str | None = self.body.get("total")
        self.total_cents: int | None = self.body.get("total_cents")


class PermissionDenied(ApiError):
    """403: the key may not do this."""


class NotFound(ApiError):
    """404: no such object, or it belongs to another account (the API does not say which)."""


class Conflict(ApiError):
    """409: the object's state forbids it (e.g. a result of an unfinished run, or an
    Idempotency-Key reused for a different request)."""


class PayloadTooLarge(ApiError):
    """413: the upload is larger than the server accepts."""


class RateLimited(ApiError):
    """429: too many requests; `retry_after` is how many seconds to wait, when known."""

    def __init__(self, *args: Any, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after = retry_after


class ServerError(ApiError):
    """5xx: the server failed or is not ready; retrying later may work."""


class SimulationFailed(FmuGatewayError):
    """The run finished without a result (failed, cancelled or timed out)."""

    def __init__(self, simulation: Simulation) -> None:
        self.simulation = simulation
        error = simulation.error
        reason = f"{error.code}: {error.message}" if error else "no error reported"
        super().__init__(f"Simulation {simulation.id} {simulation.status} ({reason})")


class SimulationTimeout(FmuGatewayError, TimeoutError):
    """The run had not finished when the caller stopped waiting; it may still finish."""

    def __init__(self, simulation: Simulation, waited_seconds: float) -> None:
        self.simulation = simulation
        super().__init__(
            f"Simulation {simulation.id} still {simulation.status} after {waited_seconds:.0f} s"
        )


class PaymentFailed(FmuGatewayError):
    """The payment ended without a usable token (expired, failed, refunded, token used)."""

    def __init__(self, payment: Payment, reason: str) -> None:
        self.payment = payment
        super().__init__(f"Payment {payment.id}: {reason}")


class PaymentTimeout(FmuGatewayError, TimeoutError):
    """The payment was still pending when the caller stopped waiting."""

    def __init__(self, payment: Payment, waited_seconds: float) -> None:
        self.payment = payment
        super().__init__(
            f"Payment {payment.id} still {payment.status} after {waited_seconds:.0f} s"
        )


_ERROR_CLASSES: dict[int, type[ApiError]] = {
    400: ValidationError,
    401: AuthenticationError,
    402: PaymentRequired,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    429: RateLimited,
}


def api_error_from_response(response: requests.Response) -> ApiError:
    """The typed exception for an error answer, problem+json or not (e.g. a proxy's HTML)."""
    status = response.status_code
    try:
        body = response.json()
    except (ValueError, json.JSONDecodeError):
        body = None
    if not isinstance(body, dict):
        body = {"detail": response.text[:500].strip() or response.reason or ""}
    error_class = _ERROR_CLASSES.get(status) or (ServerError if status >= 500 else ApiError)
    fields: dict[str, Any] = {
        "type": str(body.get("type") or "about:blank"),
        "title": str(body.get("title") or response.reason or ""),
        "detail": str(body.get("detail") or ""),
        "errors": _field_errors(body.get("errors")),
        "body": body,
    }
    if error_class is RateLimited:
        fields["retry_after"] = retry_after_seconds(response)
    return error_class(status, **fields)


def retry_after_seconds(response: requests.Response) -> float | None:
    raw = response.headers.get("Retry-After")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None  # an HTTP date: rare enough to fall back on the caller's backoff


def _field_errors(errors: Any) -> dict[str, list[str]]:
    if not isinstance(errors, dict):
        return {}
    return {
        str(name): [str(message) for message in (value if isinstance(value, list) else [value])]
        for name, value in errors.items()
    }
