"""The simulations app's readiness check for /readyz (settings.READINESS_CHECKS names it)."""

from __future__ import annotations

from simulations.selectors import workers_refusing_runs


class WorkersRefuseRuns(Exception):
    """A worker said it takes no run (below the required sandbox isolation, or worse)."""


def check_sandbox() -> None:
    """Fail while any worker reported, within the last few minutes, that it takes no run.

    Workers have no HTTP port, so they record their sandbox status in the database (at
    start, every 30 s, on each refusal) and this reads it: a worker below the required
    isolation leaves runs queued, which an operator must hear about from the usual check.
    Fly's own check is /healthz, so this never takes a web machine out of the proxy.
    """
    refusing = list(workers_refusing_runs())
    if refusing:
        raise WorkersRefuseRuns(
            "; ".join(
                f"worker {worker.hostname} takes no run: {worker.reason}" for worker in refusing
            )
        )
