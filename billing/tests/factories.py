import secrets
from datetime import timedelta

import factory
from django.utils import timezone

from accounts.tests.factories import UserFactory
from billing.models import (
    CreditPack,
    LedgerEntry,
    LedgerKind,
    Payment,
    PaymentPurpose,
    PaymentStatus,
)


class CreditPackFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CreditPack

    name = factory.Sequence(lambda n: f"Pack {n}")
    credit_cents = 1000
    price_cents = 900
    currency = "usd"


class PaymentFactory(factory.django.DjangoModelFactory):
    """A pay-per-run Payment; `paid=True` gives it a fresh, unused token."""

    class Meta:
        model = Payment

    class Params:
        paid = factory.Trait(
            status=PaymentStatus.PAID,
            paid_at=factory.LazyFunction(timezone.now),
            token=factory.LazyFunction(lambda: "pt_" + secrets.token_urlsafe(32)),
            token_expires_at=factory.LazyFunction(lambda: timezone.now() + timedelta(minutes=30)),
            stripe_payment_intent_id=factory.Sequence(lambda n: f"pi_factory_{n}"),
        )

    user = factory.SubFactory(UserFactory)
    purpose = PaymentPurpose.RUN
    amount_cents = 100
    currency = "usd"
    status = PaymentStatus.PENDING
    stripe_checkout_session_id = factory.Sequence(lambda n: f"cs_test_factory_{n}")
    checkout_url = factory.LazyAttribute(
        lambda payment: f"https://checkout.stripe.com/c/pay/{payment.stripe_checkout_session_id}"
    )
    expires_at = factory.LazyFunction(lambda: timezone.now() + timedelta(hours=1))


class LedgerEntryFactory(factory.django.DjangoModelFactory):
    """Credit (cents) granted by an operator (the simplest way to give an account a balance)."""

    class Meta:
        model = LedgerEntry

    user = factory.SubFactory(UserFactory)
    kind = LedgerKind.GRANT
    amount_cents = 500
    reason = "granted for a test"
