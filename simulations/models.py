from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q


class Model(models.Model):
    """An uploaded FMU, one row per owner; the file itself is stored once per sha256."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="models"
    )
    file_name = models.CharField(max_length=255)
    sha256 = models.CharField(max_length=64, db_index=True)
    size = models.BigIntegerField()
    storage_name = models.CharField(max_length=255)
    model_name = models.CharField(max_length=255)
    description = models.TextField(blank=True)
    fmi_version = models.CharField(max_length=3)
    guid = models.CharField(max_length=255, blank=True)
    generation_tool = models.CharField(max_length=255, blank=True)
    fmi_types = models.JSONField(default=list)
    runnable_fmi_types = models.JSONField(default=list)
    platforms = models.JSONField(default=list)
    default_experiment = models.JSONField(default=dict)
    # FMUSummary.to_json(): variables, model identifiers, states; see fmuengine.inspection.
    summary = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.model_name} ({self.file_name})"

    @property
    def variables(self) -> list[dict]:
        return self.summary.get("variables", [])

    @property
    def variables_count(self) -> int:
        return len(self.variables)


class SimulationStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


FINISHED_STATUSES = (
    SimulationStatus.SUCCEEDED,
    SimulationStatus.FAILED,
    SimulationStatus.CANCELLED,
    SimulationStatus.TIMED_OUT,
)

# The longest Idempotency-Key a run keeps (and the API accepts).
IDEMPOTENCY_KEY_MAX_LENGTH = 255


class Simulation(models.Model):
    """One run of a model with one set of parameters."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="simulations"
    )
    # A finished run outlives its model (its result stays downloadable).
    model = models.ForeignKey(
        Model, null=True, on_delete=models.SET_NULL, related_name="simulations"
    )
    model_name = models.CharField(max_length=255)
    status = models.CharField(
        max_length=16, choices=SimulationStatus.choices, default=SimulationStatus.QUEUED
    )
    progress = models.FloatField(default=0.0)
    params = models.JSONField()
    # NULL, not "", when absent: the unique constraint applies only to given keys.
    idempotency_key = models.CharField(  # noqa: DJ001
        max_length=IDEMPOTENCY_KEY_MAX_LENGTH, null=True, blank=True
    )
    request_fingerprint = models.CharField(max_length=64, blank=True)
    charge = models.JSONField(default=dict)

    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    log_tail = models.TextField(blank=True)

    result_name = models.CharField(max_length=255, blank=True)
    result_rows = models.BigIntegerField(null=True, blank=True)
    result_columns = models.JSONField(default=list, blank=True)
    result_units = models.JSONField(default=dict, blank=True)
    # Set when retention deletes the result (the run row stays for history and billing);
    # from then on the result is gone for clients, even while its object is being removed.
    result_deleted_at = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    cpu_seconds = models.FloatField(null=True, blank=True)
    wall_seconds = models.FloatField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["owner", "-created_at"]),
            models.Index(fields=["status", "lease_expires_at"]),
            # The retention task's scan: finished runs that still have a stored result.
            models.Index(
                fields=["finished_at"],
                condition=~Q(result_name=""),
                name="simulation_stored_result_idx",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="unique_idempotency_key_per_owner",
            )
        ]

    def __str__(self) -> str:
        return f"{self.model_name} run {self.id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @property
    def queued_at(self):
        return self.created_at

    @property
    def has_result(self) -> bool:
        """Whether a result is stored and may be served (not yet deleted by retention)."""
        return bool(self.result_name) and self.result_deleted_at is None

    @property
    def result_expires_at(self) -> datetime | None:
        """When retention deletes (or deleted) this run's result; None without a result."""
        if self.result_deleted_at is not None:
            return self.result_deleted_at
        days = settings.RESULT_RETENTION_DAYS
        if not self.result_name or self.finished_at is None or days <= 0:
            return None
        return self.finished_at + timedelta(days=days)


class WorkerStatus(models.Model):
    """What a Celery worker last said about its sandbox, one row per worker node.

    In the database rather than the cache because every process can read it in every
    mode (CACHE_URL is optional, and a cache cannot list its keys for the admin), and
    because the few writes (worker start, a check every 30 s, refusals and recoveries)
    cost nothing there. A row outlives its worker; readers judge it by `checked_at`.
    """

    hostname = models.CharField(max_length=255, primary_key=True)  # Celery's node name
    ready = models.BooleanField()  # whether it takes runs
    # The measures its sandbox applies, e.g. "namespaces+setuid+cgroups+...", or
    # "unavailable"; and whether that is all of them, whatever the required level.
    isolation = models.CharField(max_length=255)
    fully_isolated = models.BooleanField()
    missing = models.JSONField(default=dict, blank=True)  # measure -> why it is missing
    required = models.CharField(max_length=16)  # SANDBOX_REQUIRED_ISOLATION at the time
    reason = models.TextField(blank=True)  # why it takes no run ("" when ready)
    checked_at = models.DateTimeField()

    class Meta:
        ordering = ["hostname"]
        verbose_name = "worker sandbox status"
        verbose_name_plural = "worker sandbox statuses"

    def __str__(self) -> str:
        state = "ready" if self.ready else "refusing runs"
        return f"{self.hostname}: {self.isolation} ({state})"


class StudyStatus(models.TextChoices):
    """A study is queued until its first chunk starts, running until every case has
    ended, then succeeded (failed cases are listed, the others' results stand) or
    cancelled (its owner stopped it: the cases that had not ended were cancelled)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    CANCELLED = "cancelled"


STUDY_FINISHED_STATUSES = (StudyStatus.SUCCEEDED, StudyStatus.CANCELLED)


class StudyCaseStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


CASE_FINISHED_STATUSES = (
    StudyCaseStatus.SUCCEEDED,
    StudyCaseStatus.FAILED,
    StudyCaseStatus.CANCELLED,
)


class Study(models.Model):
    """Many cases of one model for one owner, paid once: a sweep or a design of
    experiments. The base request is validated once (as a run's params); each case
    differs from it only in the start values of the design's parameters."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="studies"
    )
    # As for runs: a study outlives its model, its results stay downloadable.
    model = models.ForeignKey(Model, null=True, on_delete=models.SET_NULL, related_name="studies")
    model_name = models.CharField(max_length=255)
    status = models.CharField(
        max_length=16, choices=StudyStatus.choices, default=StudyStatus.QUEUED
    )
    base = models.JSONField()  # the validated run params every case starts from
    design = models.JSONField()  # the normalised design, seed included (designs.Design.spec)
    parameters = models.JSONField(default=list)  # the design's parameter names, in order
    summary_spec = models.JSONField(default=dict)  # summary.SummarySpec.to_json()
    case_count = models.PositiveIntegerField()
    # Counters of ended cases, kept by the chunks that end them (conditional updates).
    cases_succeeded = models.PositiveIntegerField(default=0)
    cases_failed = models.PositiveIntegerField(default=0)
    cases_cancelled = models.PositiveIntegerField(default=0)

    price_cents = models.PositiveIntegerField(default=0)
    charge = models.JSONField(default=dict)
    # NULL, not "", when absent: the unique constraint applies only to given keys.
    idempotency_key = models.CharField(  # noqa: DJ001
        max_length=IDEMPOTENCY_KEY_MAX_LENGTH, null=True, blank=True
    )
    request_fingerprint = models.CharField(max_length=64, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    cpu_seconds = models.FloatField(default=0.0)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "studies"
        indexes = [
            models.Index(fields=["owner", "-created_at"]),
            models.Index(fields=["status"]),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="unique_study_idempotency_key_per_owner",
            )
        ]

    def __str__(self) -> str:
        return f"{self.model_name} study {self.id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in STUDY_FINISHED_STATUSES

    @property
    def cases_ended(self) -> int:
        return self.cases_succeeded + self.cases_failed + self.cases_cancelled

    @property
    def progress(self) -> float:
        return self.cases_ended / self.case_count if self.case_count else 1.0


class StudyChunk(models.Model):
    """Cases run together in one sandbox process by one task. Its results are stored as
    columnar files (`summary_name`: one row per case; `trace_name`: the long table of
    every case's trace); `refunded_cents` is what was given back for its cases."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="chunks")
    number = models.PositiveIntegerField()
    worker = models.CharField(max_length=255, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=1)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    summary_name = models.CharField(max_length=255, blank=True)
    trace_name = models.CharField(max_length=255, blank=True)
    cpu_seconds = models.FloatField(default=0.0)
    refunded_cents = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["study", "number"]
        constraints = [
            models.UniqueConstraint(fields=["study", "number"], name="unique_chunk_number")
        ]
        indexes = [models.Index(fields=["finished_at", "lease_expires_at"])]

    def __str__(self) -> str:
        return f"chunk {self.number} of study {self.study_id}"


class StudyCase(models.Model):
    """One case of a study: its parameter values, its status and summary statistics.
    Its full trace lives in its chunk's trace file."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="cases")
    index = models.PositiveIntegerField()
    values = models.JSONField()  # {parameter: value}, the design's actual values
    status = models.CharField(
        max_length=16, choices=StudyCaseStatus.choices, default=StudyCaseStatus.QUEUED
    )
    chunk = models.ForeignKey(
        StudyChunk, null=True, blank=True, on_delete=models.SET_NULL, related_name="cases"
    )
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    summary = models.JSONField(default=dict, blank=True)  # {"final(h)": 0.1, ...}
    result_rows = models.PositiveIntegerField(null=True, blank=True)
    cpu_seconds = models.FloatField(null=True, blank=True)
    wall_seconds = models.FloatField(null=True, blank=True)
    # Chunks that claimed it: a case whose chunks' workers keep dying is failed, not
    # requeued forever (STUDY_CASE_MAX_ATTEMPTS).
    attempts = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["study", "index"]
        constraints = [models.UniqueConstraint(fields=["study", "index"], name="unique_case_index")]
        indexes = [models.Index(fields=["study", "status", "index"])]

    def __str__(self) -> str:
        return f"case {self.index} of study {self.study_id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in CASE_FINISHED_STATUSES
