"""The models and simulations API: thin views that validate, call a service, serialize."""

from __future__ import annotations

from django.conf import settings
from django.http import Http404, StreamingHttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import serializers, status
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.charges import Charge, ChargeKind
from core.openapi import EXAMPLE_UUID, PAGINATION_PARAMETERS, errors, paginated
from fmuengine.inspection import CAUSALITIES
from simulations import results, selectors, services
from simulations.models import IDEMPOTENCY_KEY_MAX_LENGTH, Model, Simulation, SimulationStatus


class ApiPagination(LimitOffsetPagination):
    # The database takes no unbounded LIMIT: a larger ?limit is served as this one.
    max_limit = 1000


def get_owned_model(request: Request, model_id) -> Model:
    try:
        return selectors.model_for_owner(owner=request.user, model_id=model_id)
    except Model.DoesNotExist as exc:
        raise Http404 from exc


def get_owned_simulation(request: Request, simulation_id) -> Simulation:
    try:
        return selectors.simulation_for_owner(owner=request.user, simulation_id=simulation_id)
    except Simulation.DoesNotExist as exc:
        raise Http404 from exc


@extend_schema_serializer(component_name="Model")
class ModelOutputSerializer(serializers.ModelSerializer):
    variables_count = serializers.IntegerField()
    model_identifiers = serializers.SerializerMethodField()

    class Meta:
        model = Model
        fields = [
            "id",
            "file_name",
            "sha256",
            "size",
            "model_name",
            "description",
            "fmi_version",
            "guid",
            "generation_tool",
            "fmi_types",
            "runnable_fmi_types",
            "platforms",
            "default_experiment",
            "variables_count",
            "model_identifiers",
            "created_at",
        ]

    def get_model_identifiers(self, model: Model) -> dict:
        return model.summary.get("model_identifiers", {})


class ModelUploadSerializer(serializers.Serializer):
    """Schema only: the multipart form of an upload."""

    file = serializers.FileField(help_text="The .fmu file (FMI 1.0, 2.0 or 3.0).")


class ModelListApi(APIView):
    parser_classes = [MultiPartParser]

    @extend_schema(
        operation_id="models_list",
        summary="List your models",
        tags=["models"],
        parameters=PAGINATION_PARAMETERS,
        responses={200: paginated(ModelOutputSerializer, "PaginatedModelList"), **errors()},
    )
    def get(self, request: Request) -> Response:
        paginator = ApiPagination()
        page = paginator.paginate_queryset(
            selectors.models_for_owner(owner=request.user), request, view=self
        )
        return paginator.get_paginated_response(ModelOutputSerializer(page, many=True).data)

    @extend_schema(
        operation_id="models_create",
        summary="Upload an FMU",
        description="Send the FMU as `multipart/form-data` in the field `file`.",
        tags=["models"],
        request={"multipart/form-data": ModelUploadSerializer},
        responses={201: ModelOutputSerializer, **errors(400, 413, 415)},
    )
    def post(self, request: Request) -> Response:
        upload = request.FILES.get("file")
        if upload is None:
            raise serializers.ValidationError(
                {"file": ["Send the FMU as multipart/form-data in the field 'file'."]}
            )
        model = services.model_upload(
            owner=request.user,
            file_path=upload.temporary_file_path(),
            file_name=upload.name,
            sha256=upload.sha256,
            size=upload.size,
        )
        return Response(ModelOutputSerializer(model).data, status=status.HTTP_201_CREATED)


class ModelDetailApi(APIView):
    @extend_schema(
        operation_id="models_retrieve",
        summary="One model, with its modelDescription summary",
        tags=["models"],
        responses={200: ModelOutputSerializer, **errors(404)},
    )
    def get(self, request: Request, model_id) -> Response:
        return Response(ModelOutputSerializer(get_owned_model(request, model_id)).data)

    @extend_schema(
        operation_id="models_destroy",
        summary="Delete a model",
        tags=["models"],
        responses={204: OpenApiResponse(description="Deleted."), **errors(404, 409)},
    )
    def delete(self, request: Request, model_id) -> Response:
        services.model_delete(model=get_owned_model(request, model_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class ModelVariablesApi(APIView):
    @extend_schema_serializer(component_name="ModelVariable")
    class OutputSerializer(serializers.Serializer):
        name = serializers.CharField()
        causality = serializers.CharField()
        variability = serializers.CharField()
        type = serializers.CharField()
        start = serializers.CharField(allow_null=True)
        unit = serializers.CharField(allow_null=True)
        description = serializers.CharField(allow_null=True)

    @extend_schema(
        operation_id="models_variables_list",
        summary="A model's variables",
        tags=["models"],
        parameters=[
            OpenApiParameter(
                "causality",
                str,
                enum=list(CAUSALITIES),
                description="Only variables of this causality.",
            )
        ],
        responses={200: OutputSerializer(many=True), **errors(404)},
    )
    def get(self, request: Request, model_id) -> Response:
        model = get_owned_model(request, model_id)
        variables = model.variables
        causality = request.query_params.get("causality")
        if causality:
            variables = [v for v in variables if v["causality"] == causality]
        return Response(self.OutputSerializer(variables, many=True).data)


class SimulationErrorSerializer(serializers.Serializer):
    """Schema only: why a run failed."""

    code = serializers.CharField()
    message = serializers.CharField()
    log_tail = serializers.CharField(help_text="The end of the model's log.")


@extend_schema_serializer(component_name="Charge")
class ChargeSerializer(serializers.Serializer):
    """What paid for a run, as its owner sees it: the stored charge without our ledger ids.

    Only the members a charge has are sent: a free run's charge is {"kind": "free"}.
    """

    kind = serializers.ChoiceField(
        choices=ChargeKind.choices(),
        help_text=(
            "free: nothing was taken (billing off, or an operator's retry); credit: the price "
            "taken from your credit; token: a paid payment's token."
        ),
    )
    payment = serializers.UUIDField(
        required=False, help_text="token: the payment whose token paid for the run."
    )
    reason = serializers.CharField(required=False, help_text="free: why, if not billing off.")
    amount_cents = serializers.IntegerField(
        required=False, help_text="What was taken, in cents (credit and token charges)."
    )
    cases = serializers.IntegerField(
        required=False, help_text="A study's charge: the number of cases it paid for."
    )
    refunded = serializers.BooleanField(
        required=False,
        help_text="Present (true) once the whole charge was given back, as credit.",
    )
    refunded_cents = serializers.IntegerField(
        required=False,
        help_text="A study's charge: what was given back so far as credit, in cents "
        "(cases failed through our fault, or cancelled before they ran).",
    )
    refund_reason = serializers.CharField(
        required=False, help_text="Why it was given back (e.g. an error code of ours)."
    )

    def to_representation(self, instance: Charge | dict) -> dict:
        charge = instance if isinstance(instance, Charge) else Charge.from_json(instance)
        stored = charge.to_json()
        # BindingDict iterates over its names, not (as djangorestframework-stubs say) its fields.
        return {name: stored[name] for name in self.fields if name in stored}  # type: ignore[index]


@extend_schema_serializer(component_name="Simulation")
class SimulationOutputSerializer(serializers.ModelSerializer):
    error = serializers.SerializerMethodField()
    charge = ChargeSerializer(read_only=True)
    result_url = serializers.SerializerMethodField()
    # Results are deleted RESULT_RETENTION_DAYS after the run finished: clients see when.
    result_expires_at = serializers.DateTimeField(read_only=True, allow_null=True)
    model = serializers.UUIDField(source="model_id", allow_null=True)
    queued_at = serializers.DateTimeField(source="created_at")

    class Meta:
        model = Simulation
        fields = [
            "id",
            "model",
            "model_name",
            "status",
            "progress",
            "error",
            "result_url",
            "result_rows",
            "result_expires_at",
            "params",
            "charge",
            "created_at",
            "queued_at",
            "started_at",
            "finished_at",
            "cpu_seconds",
            "wall_seconds",
        ]

    @extend_schema_field(SimulationErrorSerializer(allow_null=True))
    def get_error(self, simulation: Simulation) -> dict | None:
        if not simulation.error_code:
            return None
        return {
            "code": simulation.error_code,
            "message": simulation.error_message,
            "log_tail": simulation.log_tail,
        }

    def get_result_url(self, simulation: Simulation) -> str | None:
        if not simulation.has_result:
            return None
        return reverse("api-simulation-result", args=[simulation.pk])


class SimulationListApi(APIView):
    parser_classes = [JSONParser]

    @extend_schema_serializer(component_name="NewSimulation")
    class InputSerializer(serializers.Serializer):
        model = serializers.UUIDField()
        start_time = serializers.FloatField(required=False, allow_null=True)
        stop_time = serializers.FloatField(required=False, allow_null=True)
        output_interval = serializers.FloatField(required=False, allow_null=True, min_value=1e-12)
        step_size = serializers.FloatField(required=False, allow_null=True, min_value=1e-12)
        relative_tolerance = serializers.FloatField(
            required=False, allow_null=True, min_value=1e-15, max_value=1
        )
        fmi_type = serializers.ChoiceField(
            choices=["CoSimulation", "ModelExchange"], required=False, allow_null=True
        )
        solver = serializers.ChoiceField(
            choices=["CVode", "Euler"], required=False, allow_null=True
        )
        start_values = serializers.DictField(required=False, allow_null=True)
        input = serializers.DictField(
            child=serializers.ListField(), required=False, allow_null=True
        )
        output = serializers.ListField(
            child=serializers.CharField(), required=False, allow_null=True, max_length=10_000
        )
        timeout = serializers.FloatField(required=False, allow_null=True, min_value=0.1)

        def validate_start_values(self, value):
            for name, start in (value or {}).items():
                if not isinstance(start, int | float | bool | str):
                    raise serializers.ValidationError(
                        f"The start value of {name!r} must be a number, boolean or string."
                    )
                if isinstance(start, str) and "\x00" in start:
                    raise serializers.ValidationError(
                        f"The start value of {name!r} must not contain NUL characters."
                    )
            return value

    @extend_schema(
        operation_id="simulations_list",
        summary="List your simulations, newest first",
        tags=["simulations"],
        parameters=[
            OpenApiParameter(
                "status", str, enum=SimulationStatus.values, description="Only runs in this state."
            ),
            *PAGINATION_PARAMETERS,
        ],
        responses={
            200: paginated(SimulationOutputSerializer, "PaginatedSimulationList"),
            **errors(400),
        },
    )
    def get(self, request: Request) -> Response:
        paginator = ApiPagination()
        queryset = selectors.simulations_for_owner(owner=request.user)
        status_filter = request.query_params.get("status")
        if status_filter:
            if status_filter not in SimulationStatus.values:
                raise serializers.ValidationError(
                    {"status": [f"status is one of {', '.join(SimulationStatus.values)}."]}
                )
            queryset = queryset.filter(status=status_filter)
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(SimulationOutputSerializer(page, many=True).data)

    @extend_schema(
        operation_id="simulations_create",
        summary="Start a simulation",
        description=(
            "Queues one run of a model; defaults come from the model's DefaultExperiment. "
            "Without credit and without a valid `Payment-Token` the answer is 402 with a "
            "checkout link; pay, then repeat the request with the token."
        ),
        tags=["simulations"],
        request=InputSerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                {"type": "string", "maxLength": IDEMPOTENCY_KEY_MAX_LENGTH},
                OpenApiParameter.HEADER,
                description=(
                    "Repeat a request with the same key to get the same run, charged once."
                ),
            ),
            OpenApiParameter(
                "Payment-Token",
                str,
                OpenApiParameter.HEADER,
                description="The token of a paid payment (`pt_...`): pays for this run.",
            ),
            OpenApiParameter(
                "Location",
                str,
                OpenApiParameter.HEADER,
                description="The run's URL.",
                response=[202],
            ),
        ],
        responses={
            202: OpenApiResponse(
                SimulationOutputSerializer,
                description="Queued, or the run an earlier request with this Idempotency-Key made.",
            ),
            **errors(400, 402, 409, 415, 503),
        },
        examples=[
            OpenApiExample(
                "Bouncing ball for 3 s",
                value={
                    "model": EXAMPLE_UUID,
                    "stop_time": 3.0,
                    "output_interval": 0.01,
                    "start_values": {"e": 0.7},
                    "output": ["h", "v"],
                },
                request_only=True,
            )
        ],
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        model_id = data.pop("model")
        try:
            model = selectors.model_for_owner(owner=request.user, model_id=model_id)
        except Model.DoesNotExist as exc:
            raise serializers.ValidationError({"model": ["No such model."]}) from exc
        request_fields = {name: value for name, value in data.items() if value is not None}
        idempotency_key = request.headers.get("Idempotency-Key")
        if idempotency_key and len(idempotency_key) > IDEMPOTENCY_KEY_MAX_LENGTH:
            raise serializers.ValidationError(
                {"Idempotency-Key": [f"At most {IDEMPOTENCY_KEY_MAX_LENGTH} characters."]}
            )
        simulation, _created = services.simulation_create(
            owner=request.user,
            model=model,
            request=request_fields,
            idempotency_key=idempotency_key,
            payment_token=request.headers.get("Payment-Token"),
        )
        body = SimulationOutputSerializer(simulation).data
        return Response(
            body,
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": reverse("api-simulation", args=[simulation.pk])},
        )


class SimulationDetailApi(APIView):
    @extend_schema(
        operation_id="simulations_retrieve",
        summary="A simulation's status, progress, timings, error and charge",
        tags=["simulations"],
        parameters=[
            OpenApiParameter(
                "wait",
                OpenApiTypes.NUMBER,
                description=(
                    "Hold the request up to this many seconds (at most 30) and answer as soon "
                    "as the run has finished."
                ),
            )
        ],
        responses={200: SimulationOutputSerializer, **errors(400, 404)},
    )
    def get(self, request: Request, simulation_id) -> Response:
        simulation = get_owned_simulation(request, simulation_id)
        selectors.simulation_wait_until_finished(
            simulation=simulation, timeout=_wait_seconds(request)
        )
        return Response(SimulationOutputSerializer(simulation).data)


def _wait_seconds(request: Request) -> float:
    raw = request.query_params.get("wait")
    if raw is None:
        return 0.0
    try:
        wait = float(raw)
    except ValueError as exc:
        raise serializers.ValidationError({"wait": ["wait is a number of seconds."]}) from exc
    return max(0.0, min(wait, settings.SIMULATION_WAIT_MAX_SECONDS))


class SimulationCancelApi(APIView):
    @extend_schema(
        operation_id="simulations_cancel",
        summary="Cancel a queued or running simulation",
        tags=["simulations"],
        request=None,
        responses={202: SimulationOutputSerializer, **errors(404, 409)},
    )
    def post(self, request: Request, simulation_id) -> Response:
        simulation = services.simulation_cancel(
            simulation=get_owned_simulation(request, simulation_id)
        )
        return Response(
            SimulationOutputSerializer(simulation).data, status=status.HTTP_202_ACCEPTED
        )


class ResultJsonSerializer(serializers.Serializer):
    """Schema only: a result as JSON (`?format=json`)."""

    columns = serializers.ListField(child=serializers.CharField(), help_text="time first.")
    units = serializers.DictField(child=serializers.CharField(), help_text="Units by column.")
    # DRF's metaclass takes declared fields off the class: this does not replace
    # Serializer.data, as mypy thinks.
    data = serializers.ListField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.FloatField(allow_null=True)),
        help_text="One row per output point; null for a non-finite value.",
    )


class IgnoreAcceptHeader(BaseContentNegotiation):
    """?format picks the result's format; an `Accept: text/csv` must not make errors a 406."""

    def select_parser(self, request, parsers):
        return parsers[0]

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class SimulationResultApi(APIView):
    content_negotiation_class = IgnoreAcceptHeader

    @extend_schema(
        operation_id="simulations_result_retrieve",
        summary="A finished run's result, streamed as CSV or JSON",
        tags=["simulations"],
        parameters=[
            OpenApiParameter("format", str, enum=["csv", "json"], default="csv"),
            OpenApiParameter(
                "variables",
                str,
                description="Comma-separated names of the columns to return (default: all).",
            ),
        ],
        responses={
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR,
                description="Header row `time,<var>,...`, then one row per output point.",
            ),
            (200, "application/json"): ResultJsonSerializer,
            **errors(400, 404, 409, 410, 503),
        },
    )
    def get(self, request: Request, simulation_id) -> StreamingHttpResponse:
        simulation = get_owned_simulation(request, simulation_id)
        results.check_result_available(simulation)
        result_format = request.query_params.get("format", "csv")
        if result_format not in ("csv", "json"):
            raise serializers.ValidationError({"format": ["format is csv or json."]})
        columns = results.selected_columns(simulation, request.query_params.get("variables"))
        stored = results.open_result(simulation)
        if result_format == "csv":
            response = StreamingHttpResponse(
                results.iter_csv(simulation, columns, stored),
                content_type="text/csv; charset=utf-8",
            )
            response["Content-Disposition"] = (
                f'attachment; filename="{simulation.model_name}-{simulation.pk}.csv"'
            )
        else:
            response = StreamingHttpResponse(
                results.iter_json(simulation, columns, stored), content_type="application/json"
            )
        return response
