"""The Charge stored on a run: every shape written today reads back and writes back as is."""

import pytest

from billing.charges import Charge, ChargeKind

STORED_SHAPES = [
    {},
    {"kind": "free"},
    {"kind": "free", "reason": "operator retry of 0b7e4c1e-6a53-4c1b-9d43-1f0f3c6a8e21"},
    {"kind": "credit", "ledger_entry": 12},
    {"kind": "token", "payment": "5f1c1a52-93b8-4f7e-8d7a-2f6c1b0e9d44"},
    {
        "kind": "credit",
        "ledger_entry": 12,
        "refunded": True,
        "refund_ledger_entry": 13,
        "refund_reason": "worker_lost",
    },
    {
        "kind": "token",
        "payment": "5f1c1a52-93b8-4f7e-8d7a-2f6c1b0e9d44",
        "refunded": True,
        "refund_ledger_entry": 14,
        "refund_reason": "cancelled before start",
    },
]


@pytest.mark.parametrize("stored", STORED_SHAPES)
def test_a_stored_charge_round_trips_key_for_key(stored):
    assert list(Charge.from_json(stored).to_json().items()) == list(stored.items())


def test_only_credit_and_token_charges_can_be_given_back_and_only_once():
    credit = Charge(kind=ChargeKind.CREDIT, ledger_entry=12)
    given_back = credit.given_back(refund_ledger_entry=13, reason="worker_lost")

    assert credit.is_refundable and not given_back.is_refundable
    assert given_back.to_json()["refund_reason"] == "worker_lost"
    assert not Charge(kind=ChargeKind.FREE).is_refundable
    assert not Charge().is_paid


def test_a_key_the_contract_does_not_know_is_refused_rather_than_lost():
    with pytest.raises(ValueError, match="unknown charge keys"):
        Charge.from_json({"kind": "credit", "ledger_entry": 1, "price": "1.00"})
