"""The studies API: thin views that validate, call one service or selector, serialize.

A study is many cases of one model, paid once (see simulations/services/studies.py).
Its results are columnar files (simulations/studies/tables.py); the views here stream
them as CSV, JSON or Parquet without holding a study in memory.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.http import FileResponse, Http404, StreamingHttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework import serializers, status
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import Conflict
from core.openapi import PAGINATION_PARAMETERS, errors, paginated
from core.problems import PROBLEM_CONTENT_TYPE
from simulations import selectors, study_selectors
from simulations.api import (
    ApiPagination,
    IgnoreAcceptHeader,
    ResultJsonSerializer,
)
from simulations.models import (
    IDEMPOTENCY_KEY_MAX_LENGTH,
    Model,
    Study,
    StudyCase,
    StudyCaseStatus,
    StudyStatus,
)
from simulations.services import studies as study_services
from simulations.studies import tables
from simulations.studies.summary import SummarySpec
from simulations.study_serializers import (
    GRID_EXAMPLE,
    LHS_EXAMPLE,
    STUDY_PAYMENT_REQUIRED,
    StudyCaseOutputSerializer,
    StudyInputSerializer,
    StudyOutputSerializer,
    StudyQuoteSerializer,
    quote_json,
    study_request_of,
    trace_iter_csv,
    trace_iter_json,
    trace_units,
)

# --- reading the owner's objects ------------------------------------------------------------


def get_owned_study(request: Request, study_id) -> Study:
    try:
        return study_selectors.study_for_owner(owner=request.user, study_id=study_id)
    except Study.DoesNotExist as exc:
        raise Http404 from exc


def get_owned_case(request: Request, study_id, index: int) -> StudyCase:
    try:
        return study_selectors.study_case_for_owner(
            owner=request.user, study_id=study_id, index=index
        )
    except StudyCase.DoesNotExist as exc:
        raise Http404 from exc


def _flag(request: Request, name: str) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no", ""):
        return False
    raise serializers.ValidationError({name: [f"{name} is true or false."]})


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key and len(key) > IDEMPOTENCY_KEY_MAX_LENGTH:
        raise serializers.ValidationError(
            {"Idempotency-Key": [f"At most {IDEMPOTENCY_KEY_MAX_LENGTH} characters."]}
        )
    return key or None


class StudyListApi(APIView):
    parser_classes = [JSONParser]

    @extend_schema(
        operation_id="studies_list",
        summary="List your studies, newest first",
        tags=["studies"],
        parameters=[
            OpenApiParameter(
                "status",
                str,
                enum=list(StudyStatus.values),
                description="Only studies in this state.",
            ),
            *PAGINATION_PARAMETERS,
        ],
        responses={200: paginated(StudyOutputSerializer, "PaginatedStudyList"), **errors(400)},
    )
    def get(self, request: Request) -> Response:
        queryset = study_selectors.studies_for_owner(owner=request.user)
        status_filter = request.query_params.get("status")
        if status_filter:
            if status_filter not in StudyStatus.values:
                raise serializers.ValidationError(
                    {"status": [f"status is one of {', '.join(StudyStatus.values)}."]}
                )
            queryset = queryset.filter(status=status_filter)
        paginator = ApiPagination()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(StudyOutputSerializer(page, many=True).data)

    @extend_schema(
        operation_id="studies_create",
        summary="Start a study: many cases of one model, paid once",
        description=(
            "Every case is a run of `model` with `base`'s parameters and the design's start "
            "values. With `?dry_run=true` the request is validated and priced, nothing is "
            "created or charged (200). Otherwise the study is queued (202): paid from credit, "
            "or with a `Payment-Token`; without either the answer is one 402 for the whole "
            "study, naming its case count and total."
        ),
        tags=["studies"],
        request=StudyInputSerializer,
        parameters=[
            OpenApiParameter(
                "dry_run",
                OpenApiTypes.BOOL,
                description="Validate and price the study; create and charge nothing.",
            ),
            OpenApiParameter(
                "Idempotency-Key",
                {"type": "string", "maxLength": IDEMPOTENCY_KEY_MAX_LENGTH},
                OpenApiParameter.HEADER,
                description="Repeat a request with the same key: the same study, charged once.",
            ),
            OpenApiParameter(
                "Payment-Token",
                str,
                OpenApiParameter.HEADER,
                description="The token of a paid payment (`pt_...`): pays for this study.",
            ),
            OpenApiParameter(
                "Location",
                str,
                OpenApiParameter.HEADER,
                description="The study's URL.",
                response=[202],
            ),
        ],
        responses={
            200: OpenApiResponse(StudyQuoteSerializer, description="?dry_run=true: the quote."),
            202: OpenApiResponse(
                StudyOutputSerializer,
                description="Queued, or the study of an earlier request with this Idempotency-Key.",
            ),
            **errors(400, 409, 415, 503),
            (402, PROBLEM_CONTENT_TYPE): STUDY_PAYMENT_REQUIRED,
        },
        examples=[
            OpenApiExample("A grid of two parameters", value=GRID_EXAMPLE, request_only=True),
            OpenApiExample("A seeded Latin hypercube", value=LHS_EXAMPLE, request_only=True),
        ],
    )
    def post(self, request: Request) -> Response:
        dry_run = _flag(request, "dry_run")
        serializer = StudyInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        try:
            model = selectors.model_for_owner(owner=request.user, model_id=data["model"])
        except Model.DoesNotExist as exc:
            raise serializers.ValidationError({"model": ["No such model."]}) from exc
        study_request = study_request_of(data)
        if dry_run:
            quote = study_services.study_quote(
                owner=request.user, model=model, request=study_request
            )
            return Response(quote_json(quote))
        study, _created = study_services.study_create(
            owner=request.user,
            model=model,
            request=study_request,
            idempotency_key=_idempotency_key(request),
            payment_token=request.headers.get("Payment-Token"),
        )
        study = study_selectors.study_for_owner(owner=request.user, study_id=study.pk)
        return Response(
            StudyOutputSerializer(study).data,
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": reverse("api-study", args=[study.pk])},
        )


class StudyDetailApi(APIView):
    @extend_schema(
        operation_id="studies_retrieve",
        summary="A study's status, case counts, progress, price, charge and timings",
        tags=["studies"],
        responses={200: StudyOutputSerializer, **errors(404)},
    )
    def get(self, request: Request, study_id) -> Response:
        return Response(StudyOutputSerializer(get_owned_study(request, study_id)).data)

    @extend_schema(
        operation_id="studies_destroy",
        summary="Delete a study and its results",
        tags=["studies"],
        responses={204: OpenApiResponse(description="Deleted."), **errors(404, 409)},
    )
    def delete(self, request: Request, study_id) -> Response:
        study_services.study_delete(study=get_owned_study(request, study_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class StudyCancelApi(APIView):
    @extend_schema(
        operation_id="studies_cancel",
        summary="Cancel a study: the cases that have not ended are cancelled",
        tags=["studies"],
        request=None,
        responses={202: StudyOutputSerializer, **errors(404, 409)},
    )
    def post(self, request: Request, study_id) -> Response:
        study = study_services.study_cancel(study=get_owned_study(request, study_id))
        study = study_selectors.study_for_owner(owner=request.user, study_id=study.pk)
        return Response(StudyOutputSerializer(study).data, status=status.HTTP_202_ACCEPTED)


class StudyCaseListApi(APIView):
    @extend_schema(
        operation_id="studies_cases_list",
        summary="A study's cases in index order: parameters, status, error, summary",
        tags=["studies"],
        parameters=[
            OpenApiParameter(
                "status",
                str,
                enum=list(StudyCaseStatus.values),
                description="Only cases in this state (e.g. failed).",
            ),
            *PAGINATION_PARAMETERS,
        ],
        responses={
            200: paginated(StudyCaseOutputSerializer, "PaginatedStudyCaseList"),
            **errors(400, 404),
        },
    )
    def get(self, request: Request, study_id) -> Response:
        study = get_owned_study(request, study_id)
        status_filter = request.query_params.get("status")
        if status_filter and status_filter not in StudyCaseStatus.values:
            raise serializers.ValidationError(
                {"status": [f"status is one of {', '.join(StudyCaseStatus.values)}."]}
            )
        cases = study_selectors.study_cases(study=study, status=status_filter or None)
        paginator = ApiPagination()
        page = paginator.paginate_queryset(cases, request, view=self)
        columns = SummarySpec.from_json(study.summary_spec).columns()
        cases_json = StudyCaseOutputSerializer(page, many=True, context={"columns": columns}).data
        return paginator.get_paginated_response(cases_json)


# --- results: one case's trace, the summary, the long table ---------------------------------

PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"
_MEDIA_FORMATS = {
    "text/csv": "csv",
    "application/json": "json",
    PARQUET_CONTENT_TYPE: "parquet",
    "application/x-parquet": "parquet",
}
ROWS_PER_BLOCK = 8192
# Case indexes are a PostgreSQL integer: a larger one is no case, not a database error.
MAX_CASE_INDEX = 2**31 - 1


def _result_format(request: Request, allowed: tuple[str, ...]) -> str:
    """?format wins; without it the first acceptable type of the Accept header; else the
    first allowed format. A ?format the endpoint does not serve is a 400 naming them."""
    chosen = request.query_params.get("format")
    if chosen is None:
        for media_range in request.headers.get("Accept", "").split(","):
            media_type = media_range.split(";")[0].strip().lower()
            if _MEDIA_FORMATS.get(media_type) in allowed:
                return _MEDIA_FORMATS[media_type]
        return allowed[0]
    if chosen not in allowed:
        raise serializers.ValidationError({"format": [f"format is {' or '.join(allowed)}."]})
    return chosen


def _primed(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Read the first chunk before the response starts, so that a missing file or a storage
    outage is answered as a problem (404, 503), not as a 200 cut short."""
    first = next(chunks, None)

    def stream() -> Iterator[bytes]:
        if first is not None:
            yield first
        yield from chunks

    return stream()


def _attachment(response, filename: str):
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _file_stem(study: Study) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in study.model_name) or "study"
    return f"{safe}-study-{study.pk}"


class StudyCaseResultApi(APIView):
    content_negotiation_class = IgnoreAcceptHeader

    @extend_schema(
        operation_id="studies_cases_result_retrieve",
        summary="One case's full trace, as CSV or JSON",
        tags=["studies"],
        parameters=[OpenApiParameter("format", str, enum=["csv", "json"], default="csv")],
        responses={
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR,
                description="Header row `time,<var>,...`, then one row per output point.",
            ),
            (200, "application/json"): ResultJsonSerializer,
            **errors(400, 404, 409, 503),
        },
    )
    def get(self, request: Request, study_id, index: int) -> StreamingHttpResponse:
        if index > MAX_CASE_INDEX:
            raise Http404
        case = get_owned_case(request, study_id, index)
        result_format = _result_format(request, ("csv", "json"))
        if case.status != StudyCaseStatus.SUCCEEDED:
            reason = f" ({case.error_code}: {case.error_message})" if case.error_code else ""
            raise Conflict(f"Case {index} has no result: it is {case.status}{reason}.")
        trace = tables.case_trace(case.study, case.index)
        if trace is None:
            raise Conflict(f"The result of case {index} is not available yet; retry shortly.")
        if result_format == "json":
            columns = list(trace.dtype.names or [])
            units = trace_units(case.study, columns)
            return StreamingHttpResponse(
                trace_iter_json(trace, units), content_type="application/json"
            )
        return _attachment(
            StreamingHttpResponse(trace_iter_csv(trace), content_type="text/csv; charset=utf-8"),
            f"{_file_stem(case.study)}-case-{index}.csv",
        )


SUMMARY_JSON_SCHEMA = {
    "type": "array",
    "description": (
        "One object per case, in index order: index, status, error_code, the parameters, "
        "then the statistics (null where not finite, or for a case without a result)."
    ),
    "items": {"type": "object", "additionalProperties": True},
}


class StudySummaryApi(APIView):
    content_negotiation_class = IgnoreAcceptHeader

    @extend_schema(
        operation_id="studies_summary_retrieve",
        summary="One row per case (parameters and statistics), as CSV, JSON or Parquet",
        tags=["studies"],
        parameters=[
            OpenApiParameter("format", str, enum=["csv", "json", "parquet"], default="csv")
        ],
        responses={
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR, description="Header row, then one row per case."
            ),
            (200, "application/json"): SUMMARY_JSON_SCHEMA,
            (200, PARQUET_CONTENT_TYPE): OpenApiResponse(
                OpenApiTypes.BINARY, description="The same table as one Parquet file."
            ),
            **errors(400, 404, 503),
        },
    )
    def get(self, request: Request, study_id):
        study = get_owned_study(request, study_id)
        result_format = _result_format(request, ("csv", "json", "parquet"))
        stem = _file_stem(study)
        if result_format == "parquet":
            return FileResponse(
                tables.summary_parquet_open(study),
                content_type=PARQUET_CONTENT_TYPE,
                as_attachment=True,
                filename=f"{stem}-summary.parquet",
            )
        if result_format == "json":
            return StreamingHttpResponse(
                _primed(tables.summary_iter_json(study)), content_type="application/json"
            )
        return _attachment(
            StreamingHttpResponse(
                _primed(tables.summary_iter_csv(study)), content_type="text/csv; charset=utf-8"
            ),
            f"{stem}-summary.csv",
        )


class StudyResultsApi(APIView):
    content_negotiation_class = IgnoreAcceptHeader

    @extend_schema(
        operation_id="studies_results_retrieve",
        summary="Every case's trace as one long CSV table (case, time, outputs...)",
        tags=["studies"],
        parameters=[OpenApiParameter("format", str, enum=["csv"], default="csv")],
        responses={
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR, description="Header row `case,time,<var>,...`, then the rows."
            ),
            **errors(400, 404, 503),
        },
    )
    def get(self, request: Request, study_id) -> StreamingHttpResponse:
        study = get_owned_study(request, study_id)
        _result_format(request, ("csv",))
        return _attachment(
            StreamingHttpResponse(
                _primed(tables.traces_iter_csv(study)), content_type="text/csv; charset=utf-8"
            ),
            f"{_file_stem(study)}-results.csv",
        )
