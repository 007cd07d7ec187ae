"""What paid for a run or a study: the typed contract between it and the money it took.

`Simulation.charge` and `Study.charge` are JSON columns, and this module is the one place
that knows their keys. Billing makes charges and gives them back
(billing.services.run_charges, billing.services.study_charges); simulations keeps them on
the run or study: `simulation.charge = charge.to_json()` to write,
`Charge.from_json(simulation.charge)` to read. Every format written since the first
migration still reads back, key for key and in the same order, so no row changes:

    {"kind": "free"}                                         billing is off
    {"kind": "free", "reason": "operator retry of <run id>"}  an operator's free retry
    {"kind": "credit", "ledger_entry": 12}                   paid from credit (its CHARGE entry)
    {"kind": "token", "payment": "<payment uuid>"}           paid with a payment token
    + "refunded": true, "refund_ledger_entry": 13, "refund_reason": "worker_lost"
                                                             given back (once, ever)
    {}                                                       no charge recorded: a row made
                                                             outside simulation_create
                                                             (fixtures, the shell)

Since credit became money, a paid charge also says how much it took, and a study's charge
how many cases it paid for and how much of it was given back so far (a study is given
back in parts: cancelled or platform-failed cases):

    {"kind": "credit", "ledger_entry": 12, "amount_cents": 100}       a run, from credit
    {"kind": "free", "cases": 500}                                    a study, billing off
    {"kind": "token", "payment": "<uuid>", "amount_cents": 1000, "cases": 500}
    + "refunded_cents": 40, "refund_ledger_entry": 15, "refund_reason": "..."  (the latest)
    + "refunded": true                                                once all is given back

A charge without "amount_cents" (written before) took one run at the price of its day;
its refund gives back what its ledger entry or payment says it took.

Ledger entry ids are ours (operators follow them in the admin); the API shows the rest
(simulations.api.ChargeSerializer).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any


class ChargeKind(StrEnum):
    FREE = "free"  # nothing taken: billing off, or an operator's retry
    CREDIT = "credit"  # taken from the account's prepaid balance (a CHARGE entry)
    TOKEN = "token"  # noqa: S105 (a kind, not a secret): a paid Payment's token, consumed

    @classmethod
    def choices(cls) -> list[tuple[str, str]]:
        """(value, label) pairs for serializers and the OpenAPI enum (ENUM_NAME_OVERRIDES)."""
        return [(kind.value, kind.value) for kind in cls]


# The stored keys, in the order they are written.
_KEYS = (
    "kind",
    "ledger_entry",
    "payment",
    "reason",
    "amount_cents",
    "cases",
    "refunded",
    "refunded_cents",
    "refund_ledger_entry",
    "refund_reason",
)


@dataclass(frozen=True)
class Charge:
    """One run's or study's charge. `kind` is None only for a row that records no charge
    ({}). `cases` is set exactly on a study's charge."""

    kind: ChargeKind | None = None
    ledger_entry: int | None = None  # credit: the CHARGE ledger entry that took the money
    payment: str | None = None  # token: the Payment (uuid) whose token paid
    reason: str | None = None  # free: why, when not because billing is off
    amount_cents: int | None = None  # what it took (None: written before credit was money)
    cases: int | None = None  # a study's charge: how many cases it paid for
    refunded: bool = False  # all of it given back
    refunded_cents: int | None = None  # a study's: how much was given back so far
    refund_ledger_entry: int | None = None  # the (latest) REFUND ledger entry
    refund_reason: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Charge:
        """Read a stored charge; a key this module does not write is an error, not ignored
        (it would be lost on the next write)."""
        data = data or {}
        unknown = set(data) - set(_KEYS)
        if unknown:
            raise ValueError(f"unknown charge keys: {sorted(unknown)}")
        kind = data.get("kind")
        return cls(
            kind=None if kind is None else ChargeKind(kind),
            ledger_entry=data.get("ledger_entry"),
            payment=data.get("payment"),
            reason=data.get("reason"),
            amount_cents=data.get("amount_cents"),
            cases=data.get("cases"),
            refunded=bool(data.get("refunded", False)),
            refunded_cents=data.get("refunded_cents"),
            refund_ledger_entry=data.get("refund_ledger_entry"),
            refund_reason=data.get("refund_reason"),
        )

    def to_json(self) -> dict[str, Any]:
        """The stored form: only the keys that are set ("refunded" only once true)."""
        values = {
            "kind": None if self.kind is None else self.kind.value,
            "ledger_entry": self.ledger_entry,
            "payment": self.payment,
            "reason": self.reason,
            "amount_cents": self.amount_cents,
            "cases": self.cases,
            "refunded": True if self.refunded else None,
            "refunded_cents": self.refunded_cents,
            "refund_ledger_entry": self.refund_ledger_entry,
            "refund_reason": self.refund_reason,
        }
        return {key: values[key] for key in _KEYS if values[key] is not None}

    @property
    def is_paid(self) -> bool:
        """Whether the run took something (credit or a token) that could be given back."""
        return self.kind in (ChargeKind.CREDIT, ChargeKind.TOKEN)

    @property
    def is_study(self) -> bool:
        return self.cases is not None

    @property
    def is_refundable(self) -> bool:
        return self.is_paid and not self.refunded

    @property
    def refundable_cents(self) -> int:
        """What of a study's charge may still be given back (0 for a free one)."""
        if not self.is_refundable or self.amount_cents is None:
            return 0
        return max(self.amount_cents - (self.refunded_cents or 0), 0)

    def given_back(self, *, refund_ledger_entry: int, reason: str) -> Charge:
        return replace(
            self, refunded=True, refund_ledger_entry=refund_ledger_entry, refund_reason=reason
        )

    def partly_given_back(self, *, cents: int, refund_ledger_entry: int, reason: str) -> Charge:
        """A study's charge after `cents` more of it were given back (all of it: refunded)."""
        refunded_cents = (self.refunded_cents or 0) + cents
        return replace(
            self,
            refunded=self.amount_cents is not None and refunded_cents >= self.amount_cents,
            refunded_cents=refunded_cents,
            refund_ledger_entry=refund_ledger_entry,
            refund_reason=reason,
        )
