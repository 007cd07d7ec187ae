"""The sandbox banner on every page (base.html)."""

from django.conf import settings
from django.http import HttpRequest

from simulations.selectors import workers_not_fully_isolated


def sandbox_isolation(request: HttpRequest) -> dict:
    """The "runs are not isolated" banner: where runs may go below full isolation (the
    embedded mode requires none) and a worker recorded a sandbox lacking some measure.

    With "full" required no such worker takes a run (/readyz names it instead), so
    deployed pages skip the query altogether.
    """
    if settings.SANDBOX_REQUIRED_ISOLATION == "full":
        return {"unisolated_workers": []}
    return {"unisolated_workers": list(workers_not_fully_isolated()[:5])}
