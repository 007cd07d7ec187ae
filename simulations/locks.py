"""Locks of simulations: a run's row, and a stored FMU's content (an advisory lock).

Taken inside a transaction and held to its end. A run's row lock comes before any
billing lock (run_charge_give_back takes none today; run_charge_take locks the account
before the run exists), so simulations and billing never wait on each other in a cycle.
"""

from __future__ import annotations

import uuid

from django.db import connection

from simulations.models import Simulation


def lock_simulation(simulation_id: uuid.UUID | str) -> Simulation:
    """The run, re-read and locked: whoever moves or refunds it now sees its latest state."""
    return Simulation.objects.select_for_update().get(pk=simulation_id)


def lock_stored_fmu(sha256: str) -> None:
    """Inside a transaction: one process at a time stores, references or deletes this FMU.

    Without it the last owner's delete could remove the object just after a new upload of the
    same file found it present, leaving the new row pointing at nothing. PostgreSQL only: the
    embedded SQLite mode is one machine, where this race needs two requests in one instant.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [int(sha256[:15], 16)])
