"""Portal pages for models and runs: thin views over the same services and selectors as the API."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db import models
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_http_methods, require_POST

from core.errors import Conflict, DomainError
from fmuengine.inspection import CAUSALITIES, FMUSummary, output_variable_names
from simulations import selectors, services
from simulations.forms import ModelUploadForm, SimulationRunForm
from simulations.models import FINISHED_STATUSES, Model, Simulation, SimulationStatus
from simulations.params import InvalidSimulationRequest
from simulations.uploads import UploadTooLarge

MODELS_PER_PAGE = 50
RUNS_PER_PAGE = 50


def _owned_model(request: HttpRequest, model_id) -> Model:
    try:
        return selectors.model_for_owner(owner=request.user, model_id=model_id)
    except Model.DoesNotExist as exc:
        raise Http404("No such model.") from exc


def _owned_simulation(request: HttpRequest, simulation_id) -> Simulation:
    try:
        return selectors.simulation_for_owner(owner=request.user, simulation_id=simulation_id)
    except Simulation.DoesNotExist as exc:
        raise Http404("No such run.") from exc


# --- models ----------------------------------------------------------------------------------


# The upload handler raises UploadTooLarge while the body is parsed, and CsrfViewMiddleware
# parses it to read the token: so the CSRF check runs inside the view, after that error is caught
# (Django's documented pattern for views that need their upload handling to run first).
@csrf_exempt
@login_required
@require_http_methods(["GET", "POST"])
def model_list(request: HttpRequest) -> HttpResponse:
    """The user's models, and the form to upload another."""
    if request.method == "POST":
        try:
            request.FILES  # noqa: B018 - parse the body here, where its errors can be shown
        except UploadTooLarge as exc:
            # Nothing was stored, so refusing without the CSRF check changes nothing.
            return _render_model_list(
                request, ModelUploadForm(), upload_error=exc.detail, status=413
            )
        except MultiPartParserError:
            return _render_model_list(
                request,
                ModelUploadForm(),
                upload_error="The browser sent a damaged upload; please try again.",
                status=400,
            )
    return _model_list_checked(request)


@csrf_protect
def _model_list_checked(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return _render_model_list(request, ModelUploadForm())
    form = ModelUploadForm(request.POST, request.FILES)
    if not form.is_valid():
        return _render_model_list(request, form, status=400)
    upload = form.cleaned_data["file"]
    try:
        model = services.model_upload(
            owner=request.user,
            file_path=Path(upload.temporary_file_path()),
            file_name=upload.name,
            sha256=upload.sha256,
            size=upload.size,
        )
    except DomainError as exc:
        return _render_model_list(
            request, ModelUploadForm(), upload_error=exc.detail, status=exc.status_code
        )
    messages.success(request, f"Uploaded {model.model_name}.")
    return redirect("portal:model", model_id=model.pk)


def _render_model_list(
    request: HttpRequest, form: ModelUploadForm, *, upload_error: str = "", status: int = 200
) -> HttpResponse:
    page = Paginator(selectors.models_for_owner(owner=request.user), MODELS_PER_PAGE).get_page(
        request.GET.get("page")
    )
    context = {
        "form": form,
        "upload_error": upload_error,
        "page": page,
        "models": page.object_list,
        "model_retention_days": (
            settings.MODEL_RETENTION_DAYS if settings.MODEL_RETENTION_ENABLED else None
        ),
    }
    return render(request, "simulations/model_list.html", context, status=status)


@login_required
def model_detail(request: HttpRequest, model_id) -> HttpResponse:
    """The model's summary, its variables (optionally of one causality), delete and run links."""
    model = _owned_model(request, model_id)
    causality = request.GET.get("causality", "")
    variables = model.variables
    present = sorted({variable["causality"] for variable in variables}, key=_causality_order)
    if causality:
        variables = [variable for variable in variables if variable["causality"] == causality]
    recent_runs = selectors.simulations_for_owner(owner=request.user).filter(model=model)[:10]
    context = {
        "model": model,
        "variables": variables,
        "causality": causality,
        "causalities": present,
        "recent_runs": recent_runs,
    }
    return render(request, "simulations/model_detail.html", context)


def _causality_order(causality: str) -> int:
    return CAUSALITIES.index(causality) if causality in CAUSALITIES else len(CAUSALITIES)


@login_required
@require_POST
def model_delete(request: HttpRequest, model_id) -> HttpResponse:
    model = _owned_model(request, model_id)
    try:
        services.model_delete(model=model)
    except Conflict as exc:  # the model has queued or running runs
        messages.error(request, exc.detail)
        return redirect("portal:model", model_id=model.pk)
    messages.success(request, f"Deleted {model.model_name}.")
    return redirect("portal:models")


# --- runs --------------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def model_run(request: HttpRequest, model_id) -> HttpResponse:
    """The run form; a valid POST queues the run (paid like an API call) and opens its page."""
    model = _owned_model(request, model_id)
    form = SimulationRunForm(request.POST or None, model=model)
    context = {"model": model, "form": form}
    if request.method != "POST":
        return render(request, "simulations/model_run.html", context)
    if not form.is_valid():
        return render(request, "simulations/model_run.html", context, status=400)
    try:
        simulation, _created = services.simulation_create(
            owner=request.user, model=model, request=form.simulation_request()
        )
    except InvalidSimulationRequest as exc:
        form.add_request_errors(exc.errors)
        return render(request, "simulations/model_run.html", context, status=400)
    except DomainError as exc:
        # e.g. PaymentRequired (402) with a Checkout link, or billing being unavailable.
        payment = exc.extra.get("payment")
        if not isinstance(payment, dict):
            payment = {}
        context.update(
            run_error=exc.detail,
            checkout_url=payment.get("checkout_url", ""),
            credit_packs_url=exc.extra.get("credit_packs_url", ""),
        )
        return render(request, "simulations/model_run.html", context, status=exc.status_code)
    messages.success(request, "The run is queued.")
    return redirect("portal:run", simulation_id=simulation.pk)


def status_filtered_page(
    request: HttpRequest, rows: QuerySet, statuses: type[models.TextChoices], per_page: int
) -> dict:
    """A list page's context: `rows` of the `?status=` asked for (all for none or an
    unknown one), the `?page=` of them, and the statuses to choose from."""
    status = request.GET.get("status", "")
    if status in statuses.values:
        rows = rows.filter(status=status)
    else:
        status = ""
    page = Paginator(rows, per_page).get_page(request.GET.get("page"))
    return {"page": page, "status": status, "statuses": statuses.choices}


@login_required
def run_list(request: HttpRequest) -> HttpResponse:
    runs = selectors.simulations_for_owner(owner=request.user)
    context = status_filtered_page(request, runs, SimulationStatus, RUNS_PER_PAGE)
    context["runs"] = context["page"].object_list
    return render(request, "simulations/run_list.html", context)


@login_required
def run_detail(request: HttpRequest, simulation_id) -> HttpResponse:
    """The run's state as of now; static/js/run_page.js keeps it live and draws the result."""
    simulation = _owned_simulation(request, simulation_id)
    params = simulation.params or {}
    config = {
        "status": simulation.status,
        "status_url": reverse("api-simulation", args=[simulation.pk]),
        "result_url": reverse("api-simulation-result", args=[simulation.pk]),
        "finished_statuses": [str(status) for status in FINISHED_STATUSES],
        "status_labels": dict(SimulationStatus.choices),
        "result_rows": simulation.result_rows,
        "columns": _expected_result_columns(simulation),
    }
    context = {
        "simulation": simulation,
        "params": params,
        "start_values": sorted((params.get("start_values") or {}).items()),
        "run_config": config,
        "csv_url": f"{config['result_url']}?format=csv",
        "result_retention_days": settings.RESULT_RETENTION_DAYS,
    }
    return render(request, "simulations/run_detail.html", context)


def _expected_result_columns(simulation: Simulation) -> list[str]:
    """The result's variables: known once it exists, else what the run asked for (or fmpy's
    default outputs), so the page can fetch a large result a few variables at a time."""
    if simulation.result_columns:
        return [name for name in simulation.result_columns if name != "time"]
    requested = (simulation.params or {}).get("output")
    if requested:
        return list(requested)
    if simulation.model is not None and simulation.model.summary:
        return output_variable_names(FMUSummary.from_json(simulation.model.summary))
    return []


@login_required
@require_POST
def run_cancel(request: HttpRequest, simulation_id) -> HttpResponse:
    simulation = _owned_simulation(request, simulation_id)
    try:
        simulation = services.simulation_cancel(simulation=simulation)
    except Conflict as exc:  # already finished
        messages.error(request, exc.detail)
    else:
        if simulation.status == SimulationStatus.CANCELLED:
            messages.success(request, "The run is cancelled.")
        else:
            messages.success(request, "Cancelling: the run stops within a few seconds.")
    return redirect("portal:run", simulation_id=simulation.pk)
