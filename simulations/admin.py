"""Operators: models, runs, studies and workers; and the billing pages' actions that refund a run.

Refunding a run's charge locks and saves the run, so those actions live here, on
subclasses of billing's Payment and LedgerEntry pages registered in their place: the
pages, URLs and action names stay billing's, and billing never imports simulations.
"""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from billing import admin as billing_admin
from billing.models import LedgerEntry, LedgerKind, Payment
from core.errors import DomainError
from simulations import services
from simulations.models import Model, Simulation, Study, StudyChunk, WorkerStatus


@admin.register(Model)
class ModelAdmin(admin.ModelAdmin):
    list_display = ("model_name", "owner", "fmi_version", "file_name", "size", "created_at")
    list_filter = ("fmi_version",)
    search_fields = ("model_name", "file_name", "sha256", "owner__email", "id")
    list_select_related = ("owner",)
    readonly_fields = [field.name for field in Model._meta.fields] + ["variables_count"]
    exclude = ("summary",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(Simulation)
class SimulationAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "owner",
        "model_name",
        "status",
        "progress",
        "created_at",
        "finished_at",
        "error_code",
    )
    list_filter = ("status", "error_code", "created_at")
    search_fields = ("id", "owner__email", "model_name", "model__id", "idempotency_key")
    list_select_related = ("owner",)
    date_hierarchy = "created_at"
    readonly_fields = [field.name for field in Simulation._meta.fields]
    fieldsets = (
        (None, {"fields": ("id", "owner", "model", "model_name", "status", "progress", "charge")}),
        ("Request", {"fields": ("params", "idempotency_key")}),
        (
            "Timings",
            {
                "fields": (
                    "created_at",
                    "started_at",
                    "finished_at",
                    "cpu_seconds",
                    "wall_seconds",
                    "lease_expires_at",
                    "cancel_requested_at",
                    "attempts",
                )
            },
        ),
        ("Error and log", {"fields": ("error_code", "error_message", "log_tail")}),
        (
            "Result",
            {
                "fields": (
                    "result_name",
                    "result_rows",
                    "result_columns",
                    "result_units",
                    "result_deleted_at",
                )
            },
        ),
    )
    actions = ["cancel_runs", "retry_runs"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Cancel selected runs")
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet[Simulation]) -> None:
        self._apply(request, queryset, services.simulation_cancel, "cancel requested")

    @admin.action(description="Retry selected runs (free, same parameters)")
    def retry_runs(self, request: HttpRequest, queryset: QuerySet[Simulation]) -> None:
        self._apply(request, queryset, services.simulation_retry, "retry queued")

    def _apply(self, request, queryset, service, done: str) -> None:
        for simulation in queryset:
            try:
                service(simulation=simulation)
            except DomainError as error:
                messages.warning(request, f"{simulation.pk}: {error.detail}")
            else:
                messages.success(request, f"{simulation.pk}: {done}")


class StudyChunkInline(admin.TabularInline):
    """A study's chunks: who ran them, when, where their files are, what was given back."""

    model = StudyChunk
    extra = 0
    can_delete = False
    show_change_link = False
    fields = (
        "number",
        "worker",
        "attempts",
        "started_at",
        "finished_at",
        "lease_expires_at",
        "cpu_seconds",
        "refunded_cents",
        "summary_name",
        "trace_name",
    )
    readonly_fields = fields
    ordering = ("number",)

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    """Studies, read-only: their counts, charge and chunks. Cancelling goes through the
    service (queued cases refunded at once), never an edit of the row."""

    list_display = (
        "id",
        "owner",
        "model_name",
        "status",
        "case_count",
        "cases_succeeded",
        "cases_failed",
        "cases_cancelled",
        "price_cents",
        "created_at",
        "finished_at",
    )
    list_filter = ("status", "created_at")
    search_fields = ("id", "owner__email", "model_name", "model__id", "idempotency_key")
    list_select_related = ("owner",)
    date_hierarchy = "created_at"
    readonly_fields = [field.name for field in Study._meta.fields] + ["progress"]
    fieldsets = (
        (None, {"fields": ("id", "owner", "model", "model_name", "status", "progress")}),
        (
            "Cases",
            {
                "fields": (
                    "case_count",
                    "cases_succeeded",
                    "cases_failed",
                    "cases_cancelled",
                )
            },
        ),
        ("Money", {"fields": ("price_cents", "charge")}),
        (
            "Request",
            {"fields": ("base", "design", "parameters", "summary_spec", "idempotency_key")},
        ),
        (
            "Timings",
            {
                "fields": (
                    "created_at",
                    "started_at",
                    "finished_at",
                    "cancel_requested_at",
                    "cpu_seconds",
                )
            },
        ),
    )
    inlines = [StudyChunkInline]
    actions = ["cancel_studies"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # viewed only; the cancel action goes through the service

    @admin.action(description="Cancel selected studies (queued cases refunded)")
    def cancel_studies(self, request: HttpRequest, queryset: QuerySet[Study]) -> None:
        for study in queryset:
            try:
                services.study_cancel(study=study)
            except DomainError as error:
                messages.warning(request, f"{study.pk}: {error.detail}")
            else:
                messages.success(request, f"{study.pk}: cancelled")


@admin.register(WorkerStatus)
class WorkerStatusAdmin(admin.ModelAdmin):
    """Each worker's sandbox, as it last reported it: read-only, since only the worker
    knows; deleting the row of a worker that is gone for good is allowed (a live one
    writes it again within a minute)."""

    list_display = ("hostname", "ready", "isolation", "fully_isolated", "required", "checked_at")
    list_filter = ("ready", "fully_isolated")
    search_fields = ("hostname", "isolation", "reason")
    readonly_fields = [field.name for field in WorkerStatus._meta.fields]
    fields = (
        "hostname",
        "ready",
        "reason",
        "isolation",
        "fully_isolated",
        "missing",
        "required",
        "checked_at",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


# --- runs refunded from billing's pages --------------------------------------------------------


admin.site.unregister(Payment)
admin.site.unregister(LedgerEntry)


@admin.register(Payment)
class PaymentAdmin(billing_admin.PaymentAdmin):
    actions = ["void_tokens", "refund_token_runs", "refund_in_stripe"]

    @admin.action(description="Refund the run paid with this token (as a credit)")
    def refund_token_runs(self, request: HttpRequest, queryset: QuerySet[Payment]) -> None:
        for payment in queryset.select_related("simulation"):
            if payment.simulation is None:
                self.message_user(
                    request, f"{payment.pk}: its token has paid for no run.", messages.WARNING
                )
                continue
            _refund_run(self, request, payment.simulation)


@admin.register(LedgerEntry)
class LedgerEntryAdmin(billing_admin.LedgerEntryAdmin):
    actions = ["refund_runs"]

    @admin.action(description="Refund the run charged by this entry")
    def refund_runs(self, request: HttpRequest, queryset: QuerySet[LedgerEntry]) -> None:
        for entry in queryset.select_related("simulation"):
            if entry.kind != LedgerKind.CHARGE or entry.simulation is None:
                self.message_user(
                    request, f"Entry {entry.pk} is not a run's charge.", messages.WARNING
                )
                continue
            _refund_run(self, request, entry.simulation)


def _refund_run(model_admin: admin.ModelAdmin, request: HttpRequest, simulation) -> None:
    try:
        services.simulation_refund(
            simulation=simulation, reason="refunded in the admin", operator=request.user
        )
    except DomainError as exc:
        model_admin.message_user(request, f"Run {simulation.pk}: {exc.detail}", messages.WARNING)
    else:
        model_admin.message_user(request, f"Run {simulation.pk}: refunded.", messages.SUCCESS)
