"""The simulation worker needs no Stripe key: what it runs never calls Stripe.

On Fly the worker's entrypoint leaves STRIPE_* out of its environment (fly.toml), so in
the worker settings.STRIPE_SECRET_KEY is empty and billing reads as off. A run the
platform fails is still refunded there, as a ledger credit, which needs no Stripe; the
one task that does call Stripe (payments reconciliation) is sent by the worker's beat to
the billing queue, which only the billing process group consumes.
"""

import shlex
from datetime import timedelta

import pytest
from celery.beat import Scheduler
from django.conf import settings as django_settings
from django.utils import timezone

from billing import services, stripe_api
from billing.models import LedgerEntry, LedgerKind
from billing.selectors import credit_balance
from billing.tasks import reconcile_payments
from billing.tests.factories import LedgerEntryFactory, PaymentFactory
from fmuengine import runner
from fmugateway.celery import BILLING_QUEUE
from fmugateway.celery import app as celery_app
from simulations import services as simulation_services
from simulations.models import Simulation, SimulationStatus
from simulations.workers import consumes_default_queue
from testing.api import run_request
from testing.deployment import fly_config
from testing.faults import sandbox_cannot_start

pytestmark = pytest.mark.django_db

SIMULATIONS_URL = "/api/v1/simulations"
STRIPE_CALLS = [
    "checkout_session_create",
    "checkout_session_retrieve",
    "checkout_sessions_created_since",
    "charge_retrieve",
    "refund_create",
]


@pytest.fixture
def as_worker(settings, billing_on, monkeypatch):
    """Turn this process into a simulation worker after the web side charged the run:
    no Stripe key (the entrypoint left it out), and any Stripe call fails the test."""

    def become_worker():
        settings.STRIPE_SECRET_KEY = ""
        settings.STRIPE_PUBLISHABLE_KEY = ""
        settings.BILLING_ENABLED = False
        for name in STRIPE_CALLS:
            monkeypatch.setattr(stripe_api, name, _no_stripe_on_a_worker(name))
        billing_on.requests.clear()  # from here on, any request to the fake is counted

    return become_worker


def _no_stripe_on_a_worker(name):
    def call(*_args, **_kwargs):
        raise AssertionError(f"the simulation worker called Stripe ({name})")

    return call


@pytest.mark.stripe
def test_a_platform_fault_is_refunded_without_stripe(
    api_client, bouncing_ball, billing_on, as_worker, monkeypatch
):
    LedgerEntryFactory(user=api_client.user, amount_cents=100)
    run = api_client.post(SIMULATIONS_URL, run_request(bouncing_ball), format="json").json()
    assert run["charge"]["kind"] == "credit"

    as_worker()
    monkeypatch.setattr(runner, "run_simulation", sandbox_cannot_start)
    failed = simulation_services.simulation_execute(simulation_id=run["id"])

    assert failed.status == SimulationStatus.FAILED
    assert failed.charge["refunded"] is True
    assert credit_balance(user=api_client.user) == 100
    assert billing_on.requests == []


@pytest.mark.stripe
def test_a_token_paid_run_is_refunded_as_a_credit_without_stripe(
    api_client, bouncing_ball, billing_on, as_worker, monkeypatch
):
    payment = PaymentFactory(user=api_client.user, paid=True)
    run = api_client.post(
        SIMULATIONS_URL, run_request(bouncing_ball), format="json", HTTP_PAYMENT_TOKEN=payment.token
    ).json()
    assert run["charge"]["kind"] == "token"

    as_worker()
    monkeypatch.setattr(runner, "run_simulation", sandbox_cannot_start)
    simulation_services.simulation_execute(simulation_id=run["id"])

    refund = LedgerEntry.objects.get(user=api_client.user)
    assert (refund.kind, refund.amount_cents, refund.payment_id) == (
        LedgerKind.REFUND,
        100,
        payment.pk,
    )
    assert billing_on.requests == []


@pytest.mark.stripe
def test_a_run_whose_worker_was_lost_is_refunded_by_the_beat_without_stripe(
    api_client, bouncing_ball, billing_on, as_worker
):
    LedgerEntryFactory(user=api_client.user, amount_cents=100)
    run = api_client.post(SIMULATIONS_URL, run_request(bouncing_ball), format="json").json()
    Simulation.objects.filter(pk=run["id"]).update(
        status=SimulationStatus.RUNNING, lease_expires_at=timezone.now() - timedelta(seconds=1)
    )

    as_worker()
    assert simulation_services.reconcile_stale_simulations() == 1

    lost = Simulation.objects.get(pk=run["id"])
    assert (lost.error_code, lost.charge["refunded"]) == ("worker_lost", True)
    assert credit_balance(user=api_client.user) == 100
    assert billing_on.requests == []


def test_the_beat_sends_the_stripe_task_to_the_billing_queue_only(monkeypatch):
    """What the worker's beat does with every entry of the schedule: the reconciliation,
    which calls Stripe, goes to the billing queue; the worker's own tasks stay on the
    default queue, the only one the worker consumes."""
    celery_app.loader.import_default_modules()
    sent = []
    monkeypatch.setattr(celery_app, "send_task", lambda name, *a, **kw: sent.append((name, kw)))
    scheduler = Scheduler(celery_app, lazy=True)
    for name, entry in django_settings.CELERY_BEAT_SCHEDULE.items():
        scheduler.apply_async(scheduler.Entry(name=name, app=celery_app, **entry), advance=False)

    queues = {
        task: celery_app.amqp.router.route(options, task)["queue"].name for task, options in sent
    }
    assert queues.pop("billing.tasks.reconcile_payments") == BILLING_QUEUE
    # Every other entry (the simulation workers' own: these two, and any added since)
    # stays off the billing queue.
    assert BILLING_QUEUE not in queues.values()
    assert queues["simulations.tasks.reconcile_stale_simulations"] == (
        celery_app.conf.task_default_queue
    )
    assert queues["simulations.tasks.apply_storage_retention"] == (
        celery_app.conf.task_default_queue
    )


def test_only_the_billing_group_consumes_the_billing_queue():
    processes = fly_config()["processes"]
    worker = shlex.split(processes["worker"].split(" -- ", 1)[1])
    billing = shlex.split(processes["billing"])
    # The simulation workers take every queue but billing's (no -Q: the default one only).
    worker_queues = worker[worker.index("-Q") + 1].split(",") if "-Q" in worker else []
    assert BILLING_QUEUE not in worker_queues
    assert billing[billing.index("-Q") + 1] == BILLING_QUEUE


def test_a_billing_only_worker_is_not_a_simulation_worker():
    """What `-Q billing` leaves selected: consumes_default_queue() tells the simulation
    worker's start-up hooks (sandbox status, stale runs) to leave such a worker alone."""
    from celery import Celery

    worker = Celery("fmugateway-test", set_as_current=False)
    assert consumes_default_queue(worker)  # no -Q: every queue, the default one included
    worker.amqp.queues.select([BILLING_QUEUE])
    assert not consumes_default_queue(worker)
    worker.amqp.queues.select([worker.conf.task_default_queue, BILLING_QUEUE])
    assert consumes_default_queue(worker)


@pytest.mark.stripe
def test_the_billing_worker_calls_stripe(user, billing_on):
    """The reconciliation does reach Stripe, where the key is: in the billing group."""
    missed = services.run_payment_open_or_create(user=user)
    billing_on.pay(missed.stripe_checkout_session_id)

    assert reconcile_payments() == {"paid": 1}
    assert billing_on.requests_to("GET", "/v1/checkout/sessions")
