"""Pages about money: the landing page (what a run costs), pricing, billing history, a
payment (Checkout's return page)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from accounts.http import AuthenticatedHttpRequest
from billing import selectors, services
from billing.models import CreditPack, Payment, PaymentPurpose
from core.errors import DomainError

ENTRIES_PER_PAGE = 50


def money_text(amount: str, currency: str) -> str:
    """ "1.00", "usd" -> "$1.00"; other currencies keep their code: "1.00 EUR"."""
    return f"${amount}" if currency.lower() == "usd" else f"{amount} {currency.upper()}"


def landing(request: HttpRequest) -> HttpResponse:
    """Public, at /: what the product does, a curl example against this site, and how
    paying works (the price and packs on sale)."""
    price = selectors.simulation_price()
    packs = [
        {
            "credit": pack.credit_text,
            # What the credit pays for at today's price, for templates that count runs.
            "runs": pack.runs_at_current_price,
            "price": money_text(pack.price, pack.currency),
        }
        for pack in selectors.credit_packs_on_sale()
    ]
    context = {
        "api_base": settings.SITE_URL.rstrip("/") + "/api/v1",
        "price_text": money_text(price["amount"], price["currency"]),
        "credit_packs": packs,
        "token_ttl_minutes": settings.PAYMENT_TOKEN_TTL // 60,
        "wait_max_seconds": settings.SIMULATION_WAIT_MAX_SECONDS,
    }
    return render(request, "landing.html", context)


def pricing(request: HttpRequest) -> HttpResponse:
    """Public: the price of a run and of a study's case, what a run may use, and the credit
    packs on sale."""
    context = {
        "price": selectors.simulation_price(),
        "study_case_price": selectors.study_case_price(),
        "credit_packs": selectors.credit_packs_on_sale(),
        "limits": {
            "cpu_seconds": settings.SIMULATION_CPU_SECONDS,
            "memory_mb": settings.SIMULATION_MEMORY_BYTES // (1024 * 1024),
            "wall_seconds": settings.SIMULATION_MAX_WALL_SECONDS,
            "default_wall_seconds": settings.SIMULATION_DEFAULT_WALL_SECONDS,
            "result_mb": settings.SIMULATION_RESULT_MAX_BYTES // (1024 * 1024),
            "upload_mb": settings.FMU_MAX_UPLOAD_BYTES // (1024 * 1024),
        },
        "token_ttl_minutes": settings.PAYMENT_TOKEN_TTL // 60,
        "balance": selectors.credit_balance_text(user=request.user),
    }
    return render(request, "billing/pricing.html", context)


@login_required
@require_POST
def credit_pack_buy(request: AuthenticatedHttpRequest, pack_id: int) -> HttpResponse:
    """Send the browser to Stripe Checkout for a credit pack."""
    pack = get_object_or_404(CreditPack, pk=pack_id)
    try:
        payment = services.credit_pack_checkout_start(user=request.user, credit_pack=pack)
    except DomainError as exc:
        messages.error(request, exc.detail)
        return redirect("billing:pricing")
    return redirect(payment.checkout_url, permanent=False)


@login_required
def billing_history(request: AuthenticatedHttpRequest) -> HttpResponse:
    """The account's balance, payments and ledger (credit bought, runs and studies charged,
    refunds), in money."""
    ledger = Paginator(selectors.ledger_for_owner(owner=request.user), ENTRIES_PER_PAGE)
    context = {
        "balance": selectors.credit_balance_text(user=request.user),
        "payments": selectors.payments_for_owner(owner=request.user)[:ENTRIES_PER_PAGE],
        "ledger_page": ledger.get_page(request.GET.get("page")),
    }
    return render(request, "billing/history.html", context)


def payment_detail(request: HttpRequest, payment_id: uuid.UUID) -> HttpResponse:
    """Where Checkout returns to: the payment's state and, once paid, the token to retry with.

    The owner sees it logged in; the browser that just paid sees it too, by the Checkout
    Session id Stripe put in the return URL (the token is bound to the account, so a
    copy of the page is no use to anyone else).
    """
    payment = _payment_for_viewer(request, payment_id)
    if payment is None:
        return redirect_to_login(request.get_full_path())
    api_url = settings.SITE_URL.rstrip("/") + reverse("api-simulations")
    context = {
        "payment": payment,
        "checkout": request.GET.get("checkout", ""),
        "api_url": api_url,
        "is_run": payment.purpose == PaymentPurpose.RUN,
        "is_study": payment.purpose == PaymentPurpose.STUDY,
        "token_ttl_minutes": settings.PAYMENT_TOKEN_TTL // 60,
        "status_url": reverse("api-payment", args=[payment.pk]),
    }
    return render(request, "billing/payment.html", context)


def _payment_for_viewer(request: HttpRequest, payment_id: uuid.UUID) -> Payment | None:
    if request.user.is_authenticated:
        try:
            return selectors.payment_for_owner(owner=request.user, payment_id=payment_id)
        except Payment.DoesNotExist:
            pass
    session_id = request.GET.get("session_id", "")
    if session_id:
        return Payment.objects.filter(pk=payment_id, stripe_checkout_session_id=session_id).first()
    return None
