"""Public pages that belong to no app: the landing page."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from billing.selectors import credit_packs_on_sale, simulation_price


def money_text(amount: str, currency: str) -> str:
    """ "1.00", "usd" -> "$1.00"; other currencies keep their code: "1.00 EUR"."""
    return f"${amount}" if currency.lower() == "usd" else f"{amount} {currency.upper()}"


def landing(request: HttpRequest) -> HttpResponse:
    """What the product does, a curl example against this site, and how paying works."""
    price = simulation_price()
    packs = [
        {"runs": pack.runs, "price": money_text(pack.price, pack.currency)}
        for pack in credit_packs_on_sale()
    ]
    context = {
        "api_base": settings.SITE_URL.rstrip("/") + "/api/v1",
        "price_text": money_text(price["amount"], price["currency"]),
        "credit_packs": packs,
        "token_ttl_minutes": settings.PAYMENT_TOKEN_TTL // 60,
        "wait_max_seconds": settings.SIMULATION_WAIT_MAX_SECONDS,
    }
    return render(request, "landing.html", context)
