"""Stand-ins for the platform failing, to monkeypatch in where a test needs our fault."""

from __future__ import annotations


def sandbox_cannot_start(**_kwargs: object) -> None:
    """For fmuengine.runner.run_simulation: no sandbox at all (a refunded platform fault)."""
    raise OSError("no sandbox today")
