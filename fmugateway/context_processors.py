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


def sandbox_isolation(request: HttpRequest) -> dict:
    """The "runs are not isolated" banner: where runs may go below full isolation (the
    embedded mode requires none) and a worker recorded a sandbox lacking some measure.

    With "full" required no such worker takes a run (/readyz names it instead), so
    deployed pages skip the query altogether.
    """
    if settings.SANDBOX_REQUIRED_ISOLATION == "full":
        return {"unisolated_workers": []}
    from simulations.selectors import workers_not_fully_isolated

    return {"unisolated_workers": list(workers_not_fully_isolated()[:5])}
