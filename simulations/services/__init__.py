"""Writes for models, runs and studies: uploads, creation, execution, cancel, retention.

Callers (the API, the portal's views, tasks, the admin, receivers, other apps, tests)
import the names below from `simulations.services`; the modules are how they are kept:

    models     uploads checked and stored once per content, deletes, stored files released
    runs       create (paid and idempotent), cancel, retry, an operator's refund
    execution  the worker's side: claim, sandbox, outcome, platform faults, stale leases
    retention  the beat's pass over expired results, unused models and orphaned files
    lifecycle  every status change of a run, each one conditional UPDATE: the state machine
    studies    studies as callers ask for them: quote, create (paid once), cancel, delete
    study_execution  the worker's side of a study: claim a chunk, run it, record it
    study_reconcile  chunks whose worker died, studies whose tickets were lost
    study_lifecycle  every status change of a study, and its counters
    errors     FMURejected (conflicts are core.errors.Conflict, with their ProblemCode)

Imports go one way (pyproject.toml's layers contract). Within the package: runs,
execution and retention use lifecycle and models, never each other; the lifecycles use
no other service; studies use runs (the request fingerprint); study_execution uses
studies and execution (a run's sandbox limits); study_reconcile uses studies. Across
apps: simulations imports billing (the Charge, billing.services' run_charge_* and
study_charge_*), never the reverse.
Tasks and services: see simulations/tasks.py.
"""

from simulations.services.errors import FMURejected
from simulations.services.execution import (
    reconcile_stale_simulations,
    sandbox_limits,
    sandbox_params,
    simulation_execute,
)
from simulations.services.models import (
    fmu_limits,
    fmu_storage_name,
    model_delete,
    model_upload,
    stored_fmu_release,
    stored_result_release,
)
from simulations.services.retention import (
    models_expire,
    results_expire,
    storage_orphans_delete,
    storage_retention_apply,
)
from simulations.services.runs import (
    request_fingerprint,
    simulation_cancel,
    simulation_create,
    simulation_refund,
    simulation_retry,
)
from simulations.services.studies import (
    STUDY_CHUNK_TASK,
    StudyQuote,
    study_cancel,
    study_create,
    study_delete,
    study_quote,
)
from simulations.services.study_execution import study_chunk_execute
from simulations.services.study_reconcile import reconcile_stale_study_chunks

__all__ = [
    "STUDY_CHUNK_TASK",
    "FMURejected",
    "StudyQuote",
    "fmu_limits",
    "fmu_storage_name",
    "model_delete",
    "model_upload",
    "models_expire",
    "reconcile_stale_simulations",
    "reconcile_stale_study_chunks",
    "request_fingerprint",
    "results_expire",
    "sandbox_limits",
    "sandbox_params",
    "simulation_cancel",
    "simulation_create",
    "simulation_execute",
    "simulation_refund",
    "simulation_retry",
    "storage_orphans_delete",
    "storage_retention_apply",
    "stored_fmu_release",
    "stored_result_release",
    "study_cancel",
    "study_chunk_execute",
    "study_create",
    "study_delete",
    "study_quote",
]
