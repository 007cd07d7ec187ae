"""What paid for a run: the typed contract between a run and the money it took.

`Simulation.charge` is a JSON column, and this module is the one place that knows its
keys. Billing makes charges and gives them back (billing.services.run_charges);
simulations keeps them on the run: `simulation.charge = charge.to_json()` to write,
`Charge.from_json(simulation.charge)` to read. The stored format is the one written
since the first migration, key for key and in the same order, so no row changes:

    {"kind": "free"}                                         billing is off
    {"kind": "free", "reason": "operator retry of <run id>"}  an operator's free retry
    {"kind": "credit", "ledger_entry": 12}                   paid from credit (its CHARGE entry)
    {"kind": "token", "payment": "<payment uuid>"}           paid with a payment token
    + "refunded": true, "refund_ledger_entry": 13, "refund_reason": "worker_lost"
                                                             given back (once, ever)
    {}                                                       no charge recorded: a row made
                                                             outside simulation_create
                                                             (fixtures, the shell)

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
    CREDIT = "credit"  # one run taken from the account's prepaid balance (a CHARGE entry)
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
    "refunded",
    "refund_ledger_entry",
    "refund_reason",
)


@dataclass(frozen=True)
class Charge:
    """One run's charge. `kind` is None only for a row that records no charge ({})."""

    kind: ChargeKind | None = None
    ledger_entry: int | None = None  # credit: the CHARGE ledger entry that took the run
    payment: str | None = None  # token: the Payment (uuid) whose token paid
    reason: str | None = None  # free: why, when not because billing is off
    refunded: bool = False
    refund_ledger_entry: int | None = None  # the REFUND ledger entry that gave it back
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
            refunded=bool(data.get("refunded", False)),
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
            "refunded": True if self.refunded else None,
            "refund_ledger_entry": self.refund_ledger_entry,
            "refund_reason": self.refund_reason,
        }
        return {key: values[key] for key in _KEYS if values[key] is not None}

    @property
    def is_paid(self) -> bool:
        """Whether the run took something (credit or a token) that could be given back."""
        return self.kind in (ChargeKind.CREDIT, ChargeKind.TOKEN)

    @property
    def is_refundable(self) -> bool:
        return self.is_paid and not self.refunded

    def given_back(self, *, refund_ledger_entry: int, reason: str) -> Charge:
        return replace(
            self, refunded=True, refund_ledger_entry=refund_ledger_entry, refund_reason=reason
        )
