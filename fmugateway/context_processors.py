from django.conf import settings
from django.http import HttpRequest

from billing.selectors import billing_mode


def site(request: HttpRequest) -> dict:
    """What every page shows: the billing banner and the public URL."""
    return {
        "billing_enabled": settings.BILLING_ENABLED,
        "billing_mode": billing_mode(),
        "site_url": settings.SITE_URL,
    }
