"""Migrations 0003-0005 turn run credits into money at SIMULATION_PRICE_CENTS, both ways.

Rows are made with the historical models of 0002 (credit counted in runs), the migrations
run forward, and the same accounts read back in cents through today's selectors.
"""

from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from accounts.models import User
from billing.models import money_text
from billing.selectors import credit_balance

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("billing", "0002_seed_credit_packs")]
AFTER = [("billing", "0005_money_only")]


def migrate(targets: list[tuple[str, str]]) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()  # what the previous migrate changed
    executor.migrate(targets)
    return MigrationExecutor(connection)


@pytest.fixture
def at_runs() -> Iterator[MigrationExecutor]:
    """billing migrated back to 0002 (credit in runs); forward again afterwards, whatever
    the test did, so the database is left as every other test expects it."""
    executor = migrate(BEFORE)
    try:
        yield executor
    finally:
        migrate(AFTER)


def historical(executor: MigrationExecutor, targets: list[tuple[str, str]], name: str):
    app_label, model_name = name.split(".")
    return executor.loader.project_state(targets).apps.get_model(app_label, model_name)


def make_run_credits(executor: MigrationExecutor) -> dict[str, object]:
    """One account's history in runs: a grant of 7, a run charged and refunded, a pack of
    10 runs bought, and a run payment; another account with one run left."""
    user_model = historical(executor, BEFORE, "accounts.User")
    pack_model = historical(executor, BEFORE, "billing.CreditPack")
    payment_model = historical(executor, BEFORE, "billing.Payment")
    entry_model = historical(executor, BEFORE, "billing.LedgerEntry")
    alice = user_model.objects.create(email="alice@example.com", password="!")
    bob = user_model.objects.create(email="bob@example.com", password="!")
    pack = pack_model.objects.create(name="Ten", runs=10, price_cents=900, currency="usd")
    later = timezone.now() + timedelta(hours=1)
    pack_payment = payment_model.objects.create(
        user_id=alice.pk,
        purpose="credit_pack",
        credit_pack_id=pack.pk,
        runs=10,
        amount_cents=900,
        currency="usd",
        status="paid",
        expires_at=later,
    )
    run_payment = payment_model.objects.create(
        user_id=alice.pk, purpose="run", runs=1, amount_cents=100, currency="usd", expires_at=later
    )
    for kind, runs, payment in (
        ("grant", 7, None),
        ("charge", -1, None),
        ("refund", 1, None),
        ("purchase", 10, pack_payment),
    ):
        entry_model.objects.create(
            user_id=alice.pk, kind=kind, runs=runs, payment_id=getattr(payment, "pk", None)
        )
    entry_model.objects.create(user_id=bob.pk, kind="grant", runs=1)
    return {
        "alice": alice.pk,
        "bob": bob.pk,
        "pack": pack.pk,
        "pack_payment": pack_payment.pk,
        "run_payment": run_payment.pk,
    }


def test_a_balance_of_runs_becomes_the_money_those_runs_cost(at_runs, settings):
    settings.SIMULATION_PRICE_CENTS = 250  # the price as deployed when the migration runs
    made = make_run_credits(at_runs)

    after = migrate(AFTER)

    alice, bob = User.objects.get(pk=made["alice"]), User.objects.get(pk=made["bob"])
    assert credit_balance(user=alice) == 17 * 250  # 7 - 1 + 1 + 10 runs
    assert money_text(credit_balance(user=alice)) == "$42.50"
    assert credit_balance(user=bob) == 250
    entry_model = historical(after, AFTER, "billing.LedgerEntry")
    assert sorted(
        entry_model.objects.filter(user_id=made["alice"]).values_list("kind", "amount_cents")
    ) == [("charge", -250), ("grant", 1750), ("purchase", 2500), ("refund", 250)]
    pack = historical(after, AFTER, "billing.CreditPack").objects.get(pk=made["pack"])
    assert (pack.credit_cents, pack.price_cents) == (2500, 900)  # what it sold, as money
    payments = historical(after, AFTER, "billing.Payment").objects
    assert payments.get(pk=made["pack_payment"]).credit_cents == 2500
    assert payments.get(pk=made["run_payment"]).credit_cents == 0  # a run payment buys no credit


def test_backwards_the_cents_become_the_same_runs_again(at_runs, settings):
    settings.SIMULATION_PRICE_CENTS = 250
    made = make_run_credits(at_runs)
    migrate(AFTER)

    back = migrate(BEFORE)

    entry_model = historical(back, BEFORE, "billing.LedgerEntry")
    assert sorted(
        entry_model.objects.filter(user_id=made["alice"]).values_list("kind", "runs")
    ) == [("charge", -1), ("grant", 7), ("purchase", 10), ("refund", 1)]
    assert historical(back, BEFORE, "billing.CreditPack").objects.get(pk=made["pack"]).runs == 10
    payments = historical(back, BEFORE, "billing.Payment").objects
    assert payments.get(pk=made["pack_payment"]).runs == 10
