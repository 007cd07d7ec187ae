"""The billing banner on every page (base.html): whether runs cost money here, and in
which Stripe mode."""

from django.conf import settings
from django.http import HttpRequest

from billing.selectors import billing_mode


def billing(request: HttpRequest) -> dict[str, object]:
    return {"billing_enabled": settings.BILLING_ENABLED, "billing_mode": billing_mode()}
