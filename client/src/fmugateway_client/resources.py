"""The API's JSON objects as small frozen dataclasses.

Each keeps the whole JSON it came from in `raw`, so a field the server adds later is
reachable before this package learns its name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

FINISHED_STATUSES = frozenset({"succeeded", "failed", "cancelled", "timed_out"})


def parse_time(value: Any) -> datetime | None:
    """ISO 8601 as the API writes it; None for anything else."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def parse_amount(value: Any) -> Decimal | None:
    """Money stays a Decimal: "1.00" must not become 0.99999."""
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


@dataclass(frozen=True)
class Price:
    amount: Decimal
    currency: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Price:
        return cls(
            amount=parse_amount(data.get("amount")) or Decimal(0),
            currency=str(data.get("currency", "")),
        )

    def __str__(self) -> str:
        if self.currency.lower() == "usd":
            return f"${self.amount}"
        return f"{self.amount} {self.currency.upper()}"


@dataclass(frozen=True)
class Account:
    email: str
    credit_balance: int  # whole runs the balance pays for at today's price
    balance: str  # the credit as money, e.g. "$12.34" ("" from a server before money)
    balance_cents: int
    price: Price
    billing_mode: str  # "off" (runs are free), "test" or "live"
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Account:
        return cls(
            email=data["email"],
            credit_balance=int(data.get("credit_balance") or 0),
            balance=str(data.get("balance") or ""),
            balance_cents=int(data.get("balance_cents") or 0),
            price=Price.from_json(data.get("price") or {}),
            billing_mode=data.get("billing_mode", "off"),
            raw=data,
        )


@dataclass(frozen=True)
class Model:
    id: str
    model_name: str
    file_name: str
    fmi_version: str
    fmi_types: list[str]
    runnable_fmi_types: list[str]
    platforms: list[str]
    default_experiment: dict[str, Any]
    variables_count: int
    sha256: str
    size: int
    description: str
    created_at: datetime | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Model:
        return cls(
            id=data["id"],
            model_name=data.get("model_name") or "",
            file_name=data.get("file_name") or "",
            fmi_version=data.get("fmi_version") or "",
            fmi_types=list(data.get("fmi_types") or []),
            runnable_fmi_types=list(data.get("runnable_fmi_types") or []),
            platforms=list(data.get("platforms") or []),
            default_experiment=dict(data.get("default_experiment") or {}),
            variables_count=int(data.get("variables_count") or 0),
            sha256=data.get("sha256") or "",
            size=int(data.get("size") or 0),
            description=data.get("description") or "",
            created_at=parse_time(data.get("created_at")),
            raw=data,
        )


@dataclass(frozen=True)
class Variable:
    name: str
    causality: str
    variability: str
    type: str
    start: str | None
    unit: str | None
    description: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Variable:
        return cls(
            name=data["name"],
            causality=data.get("causality") or "",
            variability=data.get("variability") or "",
            type=data.get("type") or "",
            start=data.get("start"),
            unit=data.get("unit"),
            description=data.get("description"),
        )


@dataclass(frozen=True)
class SimulationError:
    """Why a run did not succeed; `log_tail` is the end of the model's own log."""

    code: str
    message: str
    log_tail: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SimulationError:
        return cls(
            code=data.get("code") or "",
            message=data.get("message") or "",
            log_tail=data.get("log_tail") or "",
        )


@dataclass(frozen=True)
class Simulation:
    """One run: its status, progress (0..1) and, once finished, its outcome."""

    id: str
    model: str | None
    model_name: str
    status: str  # queued, running, succeeded, failed, cancelled, timed_out
    progress: float
    error: SimulationError | None
    result_url: str | None
    result_rows: int | None
    charge: dict[str, Any]
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Simulation:
        error = data.get("error")
        return cls(
            id=data["id"],
            model=data.get("model"),
            model_name=data.get("model_name") or "",
            status=data.get("status") or "",
            progress=float(data.get("progress") or 0.0),
            error=SimulationError.from_json(error) if isinstance(error, dict) else None,
            result_url=data.get("result_url"),
            result_rows=data.get("result_rows"),
            charge=dict(data.get("charge") or {}),
            created_at=parse_time(data.get("created_at")),
            started_at=parse_time(data.get("started_at")),
            finished_at=parse_time(data.get("finished_at")),
            raw=data,
        )

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


@dataclass(frozen=True)
class Payment:
    """A Stripe Checkout payment; once paid for a run, it carries the single-use token."""

    id: str
    status: str  # pending, paid, expired, failed, refunded
    amount: Decimal | None
    currency: str
    checkout_url: str | None
    expires_at: datetime | None
    token: str | None
    token_status: str | None  # unused, used, expired, void (only once paid)
    token_expires_at: datetime | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Payment:
        return cls(
            id=data["id"],
            status=data.get("status") or "",
            amount=parse_amount(data.get("amount")),
            currency=data.get("currency") or "",
            checkout_url=data.get("checkout_url") or None,
            expires_at=parse_time(data.get("expires_at")),
            token=data.get("token") or None,
            token_status=data.get("token_status"),
            token_expires_at=parse_time(data.get("token_expires_at")),
            raw=data,
        )
