"""Money records: what can be bought, what was paid, and the credit ledger.

The ledger is the truth about credits: an account's balance is the sum of its entries'
`runs`. Payments hold a 402 quote (or a credit-pack order), its Stripe Checkout Session
and, for a paid run, the single-use payment token.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


def format_cents(cents: int) -> str:
    """1234 -> "12.34": amounts leave the API as decimal strings, never floats."""
    return f"{Decimal(cents) / 100:.2f}"


class CreditPack(models.Model):
    """Prepaid runs sold through Checkout; operators edit these in the admin."""

    name = models.CharField(max_length=100)
    runs = models.PositiveIntegerField()
    price_cents = models.PositiveIntegerField()
    currency = models.CharField(max_length=3, default="usd")
    active = models.BooleanField(default=True, help_text="Only active packs are on sale.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["runs", "price_cents"]
        constraints = [
            models.CheckConstraint(condition=Q(runs__gt=0), name="credit_pack_runs_positive"),
            models.CheckConstraint(
                condition=Q(price_cents__gt=0), name="credit_pack_price_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name}: {self.runs} runs for {self.price} {self.currency.upper()}"

    @property
    def price(self) -> str:
        return format_cents(self.price_cents)

    @property
    def price_per_run(self) -> str:
        return format_cents(round(self.price_cents / self.runs))


class PaymentPurpose(models.TextChoices):
    RUN = "run", "One run (HTTP 402)"
    CREDIT_PACK = "credit_pack", "Credit pack"


class PaymentStatus(models.TextChoices):
    PENDING = "pending"
    PAID = "paid"
    EXPIRED = "expired"
    FAILED = "failed"
    REFUNDED = "refunded"


class Payment(models.Model):
    """One Stripe Checkout Session we created, and what paying it bought.

    A run payment mints a token when the verified webhook says it is paid; the token
    pays for exactly one run of the same account within PAYMENT_TOKEN_TTL.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="payments"
    )
    purpose = models.CharField(max_length=16, choices=PaymentPurpose.choices)
    credit_pack = models.ForeignKey(
        CreditPack, null=True, blank=True, on_delete=models.PROTECT, related_name="payments"
    )
    # What this payment buys, fixed when it is created (a pack's runs may be edited later).
    runs = models.PositiveIntegerField(default=1)
    amount_cents = models.PositiveIntegerField()
    currency = models.CharField(max_length=3)
    status = models.CharField(
        max_length=16, choices=PaymentStatus.choices, default=PaymentStatus.PENDING
    )

    stripe_checkout_session_id = models.CharField(
        max_length=255, unique=True, null=True, blank=True
    )
    stripe_payment_intent_id = models.CharField(max_length=255, blank=True, db_index=True)
    checkout_url = models.URLField(max_length=2048, blank=True)
    expires_at = models.DateTimeField(help_text="When the Checkout Session expires.")
    paid_at = models.DateTimeField(null=True, blank=True)
    fulfilled_by_event = models.CharField(
        max_length=255, blank=True, help_text="The Stripe event (or reconciliation) that paid it."
    )
    refunded_at = models.DateTimeField(null=True, blank=True)
    refunded_cents = models.PositiveIntegerField(default=0)
    notes = models.TextField(blank=True, help_text="What happened to it, one line per event.")

    # Stored readable on purpose: the owner reads it back (API, success page) during its
    # short life, and it is bound to this account, so a copy is no use to anyone else.
    token = models.CharField(max_length=64, unique=True, null=True, blank=True)
    token_expires_at = models.DateTimeField(null=True, blank=True)
    token_used_at = models.DateTimeField(null=True, blank=True)
    token_voided_at = models.DateTimeField(null=True, blank=True)
    simulation = models.ForeignKey(
        "simulations.Simulation",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="payments",
        help_text="The run this payment's token paid for.",
    )

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "purpose", "status", "-created_at"])]
        constraints = [
            models.CheckConstraint(
                condition=Q(purpose="run") | Q(credit_pack__isnull=False),
                name="payment_credit_pack_has_pack",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_purpose_display()} {self.amount} {self.currency.upper()} ({self.status})"

    @property
    def amount(self) -> str:
        return format_cents(self.amount_cents)

    @property
    def token_state(self) -> str:
        """none, unused, used, expired or void."""
        if not self.token:
            return "none"
        if self.token_used_at:
            return "used"
        if self.token_voided_at:
            return "void"
        if self.token_expires_at and self.token_expires_at <= timezone.now():
            return "expired"
        return "unused"


class LedgerKind(models.TextChoices):
    PURCHASE = "purchase"  # a paid credit pack (+runs)
    CHARGE = "charge"  # a run paid from credit (-1)
    REFUND = "refund"  # a run's charge given back (+1)
    GRANT = "grant"  # an operator's gift (+runs)
    REVOCATION = "revocation"  # credits taken back: Stripe refund or operator (-runs)


class LedgerEntry(models.Model):
    """One change of an account's credit balance, in runs. Never edited, never deleted."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="ledger_entries"
    )
    kind = models.CharField(max_length=16, choices=LedgerKind.choices)
    runs = models.IntegerField(help_text="Change of the balance, in runs.")
    payment = models.ForeignKey(
        Payment, null=True, blank=True, on_delete=models.PROTECT, related_name="ledger_entries"
    )
    simulation = models.ForeignKey(
        "simulations.Simulation",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="ledger_entries",
    )
    reason = models.CharField(max_length=255, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The operator who made it, if one did.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "ledger entries"
        indexes = [models.Index(fields=["user", "-created_at"])]
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(kind__in=["purchase", "refund", "grant"], runs__gt=0)
                    | Q(kind__in=["charge", "revocation"], runs__lt=0)
                ),
                name="ledger_entry_sign_matches_kind",
            ),
            # A payment buys its pack once, however often Stripe tells us it was paid.
            models.UniqueConstraint(
                fields=["payment"], condition=Q(kind="purchase"), name="one_purchase_per_payment"
            ),
            # A run is charged once and refunded at most once.
            models.UniqueConstraint(
                fields=["simulation"], condition=Q(kind="charge"), name="one_charge_per_run"
            ),
            models.UniqueConstraint(
                fields=["simulation"], condition=Q(kind="refund"), name="one_refund_per_run"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.runs:+d} for {self.user}"
