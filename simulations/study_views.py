"""Portal pages for studies: thin views over the same services and selectors as the API.

The new-study page posts its form here (the live price posts the same form with
?dry_run=1 and reads the API's quote JSON back); the study page reads the JSON API for its
live progress, table and plots (static/js/study_page.js).
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from billing.models import money_text
from core.errors import Conflict, DomainError
from simulations import selectors, study_selectors
from simulations.models import STUDY_FINISHED_STATUSES, Model, Study, StudyStatus
from simulations.services import studies as study_services
from simulations.studies.errors import InvalidStudyRequest
from simulations.study_forms import StudyForm
from simulations.study_serializers import quote_json
from simulations.views import status_filtered_page

STUDIES_PER_PAGE = 50


def _owned_model(request: HttpRequest, model_id) -> Model:
    try:
        return selectors.model_for_owner(owner=request.user, model_id=model_id)
    except Model.DoesNotExist as exc:
        raise Http404("No such model.") from exc


def _owned_study(request: HttpRequest, study_id) -> Study:
    try:
        return study_selectors.study_for_owner(owner=request.user, study_id=study_id)
    except Study.DoesNotExist as exc:
        raise Http404("No such study.") from exc


@login_required
@require_http_methods(["GET", "POST"])
def study_new(request: HttpRequest, model_id) -> HttpResponse:
    """The new-study form; a valid POST queues the study (paid like an API call) and opens
    its page. With ?dry_run=1 the answer is the quote (or the errors) as JSON: the page's
    live price."""
    model = _owned_model(request, model_id)
    form = StudyForm(request.POST or None, model=model)
    context = {"model": model, "form": form}
    dry_run = request.GET.get("dry_run") == "1"
    if request.method != "POST":
        return render(request, "simulations/study_new.html", context)
    if not form.is_valid():
        if dry_run:
            return JsonResponse({"errors": _form_errors(form)}, status=400)
        return render(request, "simulations/study_new.html", context, status=400)
    try:
        if dry_run:
            quote = study_services.study_quote(
                owner=request.user, model=model, request=form.study_request()
            )
            return JsonResponse(quote_json(quote))
        study, _created = study_services.study_create(
            owner=request.user, model=model, request=form.study_request()
        )
    except InvalidStudyRequest as exc:
        if dry_run:
            return JsonResponse({"errors": exc.errors}, status=400)
        form.add_request_errors(exc.errors)
        return render(request, "simulations/study_new.html", context, status=400)
    except DomainError as exc:
        if dry_run:
            return JsonResponse({"errors": {"": [exc.detail]}}, status=exc.status_code)
        # e.g. PaymentRequired (402) with a Checkout link for the whole study.
        payment = exc.extra.get("payment")
        context.update(
            study_error=exc.detail,
            checkout_url=payment.get("checkout_url", "") if isinstance(payment, dict) else "",
            credit_packs_url=exc.extra.get("credit_packs_url", ""),
        )
        return render(request, "simulations/study_new.html", context, status=exc.status_code)
    messages.success(request, f"The study of {study.case_count} cases is queued.")
    return redirect("portal:study", study_id=study.pk)


def _form_errors(form: StudyForm) -> dict[str, list[str]]:
    return {
        name or "": [str(message) for message in errors] for name, errors in form.errors.items()
    }


@login_required
def study_list(request: HttpRequest) -> HttpResponse:
    studies = study_selectors.studies_for_owner(owner=request.user)
    context = status_filtered_page(request, studies, StudyStatus, STUDIES_PER_PAGE)
    context["studies"] = context["page"].object_list
    return render(request, "simulations/study_list.html", context)


@login_required
def study_detail(request: HttpRequest, study_id) -> HttpResponse:
    """The study as of now; static/js/study_page.js keeps it live and draws its plots."""
    study = _owned_study(request, study_id)
    counts = study_selectors.study_case_counts(study=study)
    config = {
        "status": study.status,
        "status_url": reverse("api-study", args=[study.pk]),
        "cases_url": reverse("api-study-cases", args=[study.pk]),
        "summary_url": reverse("api-study-summary", args=[study.pk]),
        "finished_statuses": [str(status) for status in STUDY_FINISHED_STATUSES],
        "status_labels": dict(StudyStatus.choices),
        "parameters": list(study.parameters),
    }
    context = {
        "study": study,
        "counts": counts,
        "study_config": config,
        "summary_csv_url": f"{config['summary_url']}?format=csv",
        "summary_parquet_url": f"{config['summary_url']}?format=parquet",
        "results_csv_url": reverse("api-study-results", args=[study.pk]),
        "base": study.base or {},
        "price_text": f"{money_text(study.price_cents)} for {study.case_count} cases",
    }
    return render(request, "simulations/study_detail.html", context)


@login_required
@require_POST
def study_cancel(request: HttpRequest, study_id) -> HttpResponse:
    study = _owned_study(request, study_id)
    try:
        study = study_services.study_cancel(study=study)
    except Conflict as exc:  # already finished
        messages.error(request, exc.detail)
    else:
        messages.success(request, "Cancelling: the cases that have not ended are cancelled.")
    return redirect("portal:study", study_id=study.pk)


@login_required
@require_POST
def study_delete(request: HttpRequest, study_id) -> HttpResponse:
    study = _owned_study(request, study_id)
    try:
        study_services.study_delete(study=study)
    except DomainError as exc:
        messages.error(request, exc.detail)
        return redirect("portal:study", study_id=study.pk)
    messages.success(request, f"Deleted the study of {study.model_name}.")
    return redirect("portal:studies")
