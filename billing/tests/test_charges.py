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
    # Since credit is money: what a charge took; a study's cases and partial refunds.
    {"kind": "credit", "ledger_entry": 12, "amount_cents": 100},
    {"kind": "free", "cases": 500},
    {"kind": "credit", "ledger_entry": 20, "amount_cents": 1000, "cases": 500},
    {
        "kind": "token",
        "payment": "5f1c1a52-93b8-4f7e-8d7a-2f6c1b0e9d44",
        "amount_cents": 1000,
        "cases": 500,
        "refunded_cents": 40,
        "refund_ledger_entry": 21,
        "refund_reason": "20 cases cancelled before they started",
    },
    {
        "kind": "credit",
        "ledger_entry": 20,
        "amount_cents": 1000,
        "cases": 500,
        "refunded": True,
        "refunded_cents": 1000,
        "refund_ledger_entry": 22,
        "refund_reason": "worker_lost",
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


def test_a_study_charge_is_given_back_in_parts_until_all_of_it_is():
    charge = Charge(kind=ChargeKind.CREDIT, ledger_entry=20, amount_cents=1000, cases=500)

    part = charge.partly_given_back(cents=400, refund_ledger_entry=21, reason="cancelled")
    rest = part.partly_given_back(cents=600, refund_ledger_entry=22, reason="failed")

    assert (charge.refundable_cents, part.refundable_cents, rest.refundable_cents) == (1000, 600, 0)
    assert (part.refunded, rest.refunded) == (False, True)
    assert charge.is_study and not Charge(kind=ChargeKind.CREDIT, ledger_entry=1).is_study
