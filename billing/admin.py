"""Operators: payments, the ledger and credit packs; grant credit, void tokens, refund money.

Amounts are money: the ledger's add form takes dollars and cents (12.34), and every list
shows "$12.34".

Payments and ledger rows are records of money: they are never edited or deleted here.
Every change goes through billing.services and leaves a ledger row or a payment note.
The actions that give a run's charge back act on runs, so simulations/admin.py adds
them to these two pages (billing never imports simulations).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, cast

from django import forms
from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse

from accounts.models import User
from billing import selectors, services
from billing.models import CreditPack, LedgerEntry, Payment, money_text
from core.errors import DomainError

if TYPE_CHECKING:
    # Generic in django-stubs only: Django's classes take no subscript at run time.
    _CreditPackAdmin = admin.ModelAdmin[CreditPack]
    _PaymentAdmin = admin.ModelAdmin[Payment]
    _LedgerEntryAdmin = admin.ModelAdmin[LedgerEntry]
    _LedgerEntryInline = admin.TabularInline[LedgerEntry, Payment]
    _LedgerEntryForm = forms.ModelForm[LedgerEntry]
else:
    _CreditPackAdmin = _PaymentAdmin = _LedgerEntryAdmin = admin.ModelAdmin
    _LedgerEntryInline = admin.TabularInline
    _LedgerEntryForm = forms.ModelForm


def _operator(request: HttpRequest) -> User:
    """Who acts: only logged-in staff get into the admin, so its request.user is a User."""
    return cast(User, request.user)


@admin.register(CreditPack)
class CreditPackAdmin(_CreditPackAdmin):
    list_display = ("name", "credit", "price_paid", "runs_at_current_price", "active")
    fields = ("name", "credit_cents", "price_cents", "currency", "active")
    list_editable = ("active",)
    list_filter = ("active",)

    @admin.display(description="credit", ordering="credit_cents")
    def credit(self, pack: CreditPack) -> str:
        return pack.credit_text

    @admin.display(description="price", ordering="price_cents")
    def price_paid(self, pack: CreditPack) -> str:
        return pack.price_text

    def has_delete_permission(self, request: HttpRequest, obj: CreditPack | None = None) -> bool:
        # Payments keep pointing at the pack they bought; retire a pack by deactivating it.
        return False


class LedgerEntryInline(_LedgerEntryInline):
    model = LedgerEntry
    fields = ("created_at", "kind", "amount", "simulation", "study", "reason", "created_by")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Payment | None = None) -> bool:
        return False

    @admin.display(description="amount")
    def amount(self, entry: LedgerEntry) -> str:
        return entry.amount_text


@admin.register(Payment)
class PaymentAdmin(_PaymentAdmin):
    list_display = (
        "created_at",
        "user",
        "purpose",
        "amount_text",
        "status",
        "token_state",
        "stripe_checkout_session_id",
    )
    list_filter = ("status", "purpose", "created_at")
    search_fields = (
        "user__email",
        "=stripe_checkout_session_id",
        "=stripe_payment_intent_id",
    )
    date_hierarchy = "created_at"
    list_select_related = ("user", "credit_pack")
    inlines = [LedgerEntryInline]
    actions = ["void_tokens", "refund_in_stripe"]
    fields = (
        "id",
        "user",
        "purpose",
        "credit_pack",
        "credit_text",
        "cases",
        "amount_text",
        "amount_cents",
        "currency",
        "status",
        "stripe_checkout_session_id",
        "stripe_payment_intent_id",
        "checkout_url",
        "expires_at",
        "paid_at",
        "fulfilled_by_event",
        "token_state",
        "token_expires_at",
        "token_used_at",
        "token_voided_at",
        "simulation",
        "study",
        "refunded_at",
        "refunded_cents",
        "notes",
        "created_at",
        "updated_at",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Payment | None = None) -> bool:
        return False

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        mode = {"off": "billing off", "test": "Stripe test mode", "live": "Stripe LIVE mode"}
        title = f"Payments ({mode[selectors.billing_mode()]})"
        return super().changelist_view(request, {**(extra_context or {}), "title": title})

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Payment], search_term: str
    ) -> tuple[QuerySet[Payment], bool]:
        """Also find a payment by its id (pasted from an API response or an e-mail)."""
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        if selectors.is_uuid(term):
            results = results | queryset.filter(pk=uuid.UUID(term))
        return results, may_have_duplicates

    @admin.action(description="Void the unused payment token")
    def void_tokens(self, request: HttpRequest, queryset: QuerySet[Payment]) -> None:
        for payment in queryset:
            try:
                services.payment_token_void(
                    payment=payment, reason="voided in the admin", operator=_operator(request)
                )
            except DomainError as exc:
                self.message_user(request, f"{payment.pk}: {exc.detail}", messages.WARNING)
            else:
                self.message_user(request, f"{payment.pk}: token voided.", messages.SUCCESS)

    @admin.action(description="Refund the money in Stripe (records follow its webhook)")
    def refund_in_stripe(self, request: HttpRequest, queryset: QuerySet[Payment]) -> None:
        for payment in queryset:
            try:
                refund = services.payment_refund_in_stripe(
                    payment=payment, operator=_operator(request)
                )
            except DomainError as exc:
                self.message_user(request, f"{payment.pk}: {exc.detail}", messages.WARNING)
            else:
                self.message_user(
                    request, f"{payment.pk}: refund {refund['id']} requested.", messages.SUCCESS
                )


class CreditChangeForm(_LedgerEntryForm):
    """The ledger's add form: grant (positive) or revoke (negative) money, with a reason."""

    amount = forms.DecimalField(
        max_digits=12,
        decimal_places=2,
        help_text="Money to grant (e.g. 5.00) or, negative, to revoke (e.g. -5.00).",
    )
    reason = forms.CharField(max_length=255, help_text="Why: kept on the ledger for good.")

    class Meta:
        model = LedgerEntry
        fields = ("user", "reason")

    def clean_amount(self) -> int:
        """The amount in cents (the form takes money as people write it: 12.34)."""
        cents = int(self.cleaned_data["amount"] * 100)
        if cents == 0:
            raise forms.ValidationError("Grant or revoke at least one cent.")
        return cents

    def clean(self) -> dict[str, Any]:
        super().clean()  # BaseModelForm.clean() returns self.cleaned_data, never None
        cleaned = self.cleaned_data
        user, cents = cleaned.get("user"), cleaned.get("amount")
        if user is not None and cents is not None and cents < 0:
            balance = selectors.credit_balance(user=user)
            if -cents > balance:
                self.add_error("amount", f"The account holds {money_text(balance)}.")
        return cleaned


@admin.register(LedgerEntry)
class LedgerEntryAdmin(_LedgerEntryAdmin):
    list_display = (
        "created_at",
        "user",
        "kind",
        "amount",
        "reason",
        "simulation",
        "study",
        "payment",
    )
    list_filter = ("kind", "created_at")
    search_fields = ("user__email", "reason", "=payment__stripe_checkout_session_id")
    list_select_related = ("user", "simulation", "study", "payment")
    date_hierarchy = "created_at"
    raw_id_fields = ("user",)

    def get_form(
        self,
        request: HttpRequest,
        obj: LedgerEntry | None = None,
        change: bool = False,
        **kwargs: Any,
    ) -> type[forms.ModelForm[LedgerEntry]]:
        if obj is None:
            kwargs["form"] = CreditChangeForm
        return super().get_form(request, obj, change=change, **kwargs)

    @admin.display(description="amount", ordering="amount_cents")
    def amount(self, entry: LedgerEntry) -> str:
        return entry.amount_text

    def get_fields(self, request: HttpRequest, obj: LedgerEntry | None = None) -> tuple[str, ...]:
        if obj is None:
            return ("user", "amount", "reason")
        return (
            "user",
            "kind",
            "amount",
            "amount_cents",
            "reason",
            "payment",
            "simulation",
            "study",
            "created_by",
            "created_at",
        )

    def get_readonly_fields(
        self, request: HttpRequest, obj: LedgerEntry | None = None
    ) -> tuple[str, ...]:
        return () if obj is None else self.get_fields(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: LedgerEntry | None = None) -> bool:
        return False

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[LedgerEntry], search_term: str
    ) -> tuple[QuerySet[LedgerEntry], bool]:
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        if selectors.is_uuid(term):
            results = results | queryset.filter(
                Q(payment_id=term) | Q(simulation_id=term) | Q(study_id=term)
            )
        return results, may_have_duplicates

    def save_model(
        self,
        request: HttpRequest,
        obj: LedgerEntry,
        form: forms.ModelForm[LedgerEntry],
        change: bool,
    ) -> None:
        """Grants and revocations go through the services (balance lock, reason required)."""
        if change:
            return
        cents, user, reason = form.cleaned_data["amount"], obj.user, form.cleaned_data["reason"]
        if cents > 0:
            entry = services.credits_grant(
                user=user, cents=cents, reason=reason, operator=_operator(request)
            )
        else:
            entry = services.credits_revoke(
                user=user, cents=-cents, reason=reason, operator=_operator(request)
            )
        obj.pk = entry.pk
        obj.kind = entry.kind
        obj.amount_cents = entry.amount_cents
        obj.created_at = entry.created_at

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra_context = {**(extra_context or {}), "title": "Grant or revoke credit (money)"}
        return super().add_view(request, form_url, extra_context)
