"""Money records: what can be bought, what was paid, and the credit ledger.

The ledger is the truth about credit: an account's balance is money, the sum of its
entries' `amount_cents` (a run debits its price, a study the price of its cases).
Payments hold a 402 quote (for a run or a study) or a credit-pack order, its Stripe
Checkout Session and, once a quote is paid, the single-use payment token.
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


def money_text(cents: int, currency: str | None = None) -> str:
    """1234 -> "$12.34", -500 -> "-$5.00"; other currencies keep their code: "12.34 EUR".

    The one way people read an amount (pages, the admin, the API's `balance`, 402s).
    """
    currency = (currency or settings.SIMULATION_PRICE_CURRENCY).lower()
    sign = "-" if cents < 0 else ""
    amount = format_cents(abs(cents))
    return f"{sign}${amount}" if currency == "usd" else f"{sign}{amount} {currency.upper()}"


class CreditPack(models.Model):
    """Prepaid credit (money) sold through Checkout; operators edit these in the admin.

    A pack sells an amount of credit, not a number of runs: a run debits its price and a
    study the price of its cases, so one balance pays for both.
    """

    name = models.CharField(max_length=100)
    credit_cents = models.PositiveIntegerField(
        help_text="Credit the pack adds to the balance, in cents (may exceed its price)."
    )
    price_cents = models.PositiveIntegerField()
    currency = models.CharField(max_length=3, default="usd")
    active = models.BooleanField(default=True, help_text="Only active packs are on sale.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["credit_cents", "price_cents"]
        constraints = [
            models.CheckConstraint(
                condition=Q(credit_cents__gt=0), name="credit_pack_credit_positive"
            ),
            models.CheckConstraint(
                condition=Q(price_cents__gt=0), name="credit_pack_price_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name}: {self.credit_text} of credit for {self.price_text}"

    @property
    def price(self) -> str:
        return format_cents(self.price_cents)

    @property
    def price_text(self) -> str:
        return money_text(self.price_cents, self.currency)

    @property
    def credit_text(self) -> str:
        return money_text(self.credit_cents, self.currency)

    @property
    def runs_at_current_price(self) -> int:
        """How many runs the credit pays for at today's run price (for people to compare)."""
        return self.credit_cents // max(settings.SIMULATION_PRICE_CENTS, 1)


class PaymentPurpose(models.TextChoices):
    RUN = "run", "One run (HTTP 402)"
    CREDIT_PACK = "credit_pack", "Credit pack"
    STUDY = "study", "One study (HTTP 402)"


class PaymentStatus(models.TextChoices):
    PENDING = "pending"
    PAID = "paid"
    EXPIRED = "expired"
    FAILED = "failed"
    REFUNDED = "refunded"


class Payment(models.Model):
    """One Stripe Checkout Session we created, and what paying it bought.

    A run or study payment mints a token when the verified webhook says it is paid; the
    token pays for exactly one run (a study payment: one study of exactly `cases` cases)
    of the same account within PAYMENT_TOKEN_TTL. A pack payment adds `credit_cents`.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="payments"
    )
    purpose = models.CharField(max_length=16, choices=PaymentPurpose.choices)
    credit_pack = models.ForeignKey(
        CreditPack, null=True, blank=True, on_delete=models.PROTECT, related_name="payments"
    )
    # What this payment buys, fixed when it is created (a pack may be edited later): a
    # pack's credit, or the size of the study a study payment's token pays for.
    credit_cents = models.PositiveIntegerField(
        default=0, help_text="Credit a pack payment adds to the balance once paid, in cents."
    )
    cases = models.PositiveIntegerField(
        null=True, blank=True, help_text="A study payment: the cases of the study it pays for."
    )
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
    study = models.ForeignKey(
        "simulations.Study",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="payments",
        help_text="The study this payment's token paid for.",
    )

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "purpose", "status", "-created_at"])]
        constraints = [
            models.CheckConstraint(
                condition=~Q(purpose="credit_pack") | Q(credit_pack__isnull=False),
                name="payment_credit_pack_has_pack",
            ),
            models.CheckConstraint(
                condition=~Q(purpose="study") | Q(cases__gt=0),
                name="payment_study_has_cases",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_purpose_display()} {self.amount_text} ({self.status})"

    @property
    def amount(self) -> str:
        return format_cents(self.amount_cents)

    @property
    def amount_text(self) -> str:
        return money_text(self.amount_cents, self.currency)

    @property
    def credit_text(self) -> str:
        return money_text(self.credit_cents, self.currency)

    @property
    def pays_with_token(self) -> bool:
        """Run and study quotes are paid back with a token; a pack adds credit instead."""
        return self.purpose in (PaymentPurpose.RUN, PaymentPurpose.STUDY)

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
    PURCHASE = "purchase"  # a paid credit pack (+its credit)
    CHARGE = "charge"  # a run or study paid from credit (-its price)
    REFUND = "refund"  # a run's charge, or part of a study's, given back (+)
    GRANT = "grant"  # an operator's gift (+)
    REVOCATION = "revocation"  # credit taken back: Stripe refund or operator (-)


class LedgerEntry(models.Model):
    """One change of an account's credit balance, in cents. Never edited, never deleted."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="ledger_entries"
    )
    kind = models.CharField(max_length=16, choices=LedgerKind.choices)
    amount_cents = models.IntegerField(help_text="Change of the balance, in cents.")
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
    study = models.ForeignKey(
        "simulations.Study",
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
                    Q(kind__in=["purchase", "refund", "grant"], amount_cents__gt=0)
                    | Q(kind__in=["charge", "revocation"], amount_cents__lt=0)
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
            # A study is charged once; its refunds are partial, so there may be several.
            models.UniqueConstraint(
                fields=["study"], condition=Q(kind="charge"), name="one_charge_per_study"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount_text} for {self.user}"

    @property
    def amount_text(self) -> str:
        """Signed money: "+$5.00", "-$1.00"."""
        return ("+" if self.amount_cents > 0 else "") + money_text(self.amount_cents)
