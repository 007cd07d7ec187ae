"""The models and simulations API: thin views that validate, call a service, serialize."""

from __future__ import annotations

from django.conf import settings
from django.http import Http404, StreamingHttpResponse
from django.urls import reverse
from rest_framework import serializers, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from simulations import results, selectors, services
from simulations.models import Model, Simulation
from simulations.uploads import UploadTooLarge


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


class ModelListApi(APIView):
    parser_classes = [MultiPartParser]

    def get(self, request: Request) -> Response:
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(
            selectors.models_for_owner(owner=request.user), request, view=self
        )
        return paginator.get_paginated_response(ModelOutputSerializer(page, many=True).data)

    def post(self, request: Request) -> Response:
        upload = request.FILES.get("file")
        if upload is None:
            raise serializers.ValidationError(
                {"file": ["Send the FMU as multipart/form-data in the field 'file'."]}
            )
        if upload.size > settings.FMU_MAX_UPLOAD_BYTES:  # defence in depth; the handler stops first
            raise UploadTooLarge("The upload is larger than the limit for an FMU.")
        model = services.model_upload(
            owner=request.user,
            file_path=upload.temporary_file_path(),
            file_name=upload.name,
            sha256=upload.sha256,
            size=upload.size,
        )
        return Response(ModelOutputSerializer(model).data, status=status.HTTP_201_CREATED)


class ModelDetailApi(APIView):
    def get(self, request: Request, model_id) -> Response:
        return Response(ModelOutputSerializer(get_owned_model(request, model_id)).data)

    def delete(self, request: Request, model_id) -> Response:
        services.model_delete(model=get_owned_model(request, model_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class ModelVariablesApi(APIView):
    class OutputSerializer(serializers.Serializer):
        name = serializers.CharField()
        causality = serializers.CharField()
        variability = serializers.CharField()
        type = serializers.CharField()
        start = serializers.CharField(allow_null=True)
        unit = serializers.CharField(allow_null=True)
        description = serializers.CharField(allow_null=True)

    def get(self, request: Request, model_id) -> Response:
        model = get_owned_model(request, model_id)
        variables = model.variables
        causality = request.query_params.get("causality")
        if causality:
            variables = [v for v in variables if v["causality"] == causality]
        return Response(self.OutputSerializer(variables, many=True).data)


class SimulationOutputSerializer(serializers.ModelSerializer):
    error = serializers.SerializerMethodField()
    result_url = serializers.SerializerMethodField()
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
            "params",
            "charge",
            "created_at",
            "queued_at",
            "started_at",
            "finished_at",
            "cpu_seconds",
            "wall_seconds",
        ]

    def get_error(self, simulation: Simulation) -> dict | None:
        if not simulation.error_code:
            return None
        return {
            "code": simulation.error_code,
            "message": simulation.error_message,
            "log_tail": simulation.log_tail,
        }

    def get_result_url(self, simulation: Simulation) -> str | None:
        if not simulation.result_name:
            return None
        return reverse("api-simulation-result", args=[simulation.pk])


class SimulationListApi(APIView):
    parser_classes = [JSONParser]

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
            return value

    def get(self, request: Request) -> Response:
        paginator = LimitOffsetPagination()
        queryset = selectors.simulations_for_owner(owner=request.user)
        status_filter = request.query_params.get("status")
        if status_filter:
            queryset = queryset.filter(status=status_filter)
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(SimulationOutputSerializer(page, many=True).data)

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
        simulation, _created = services.simulation_create(
            owner=request.user,
            model=model,
            request=request_fields,
            idempotency_key=request.headers.get("Idempotency-Key"),
            payment_token=request.headers.get("Payment-Token"),
        )
        body = SimulationOutputSerializer(simulation).data
        return Response(
            body,
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": reverse("api-simulation", args=[simulation.pk])},
        )


class SimulationDetailApi(APIView):
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
    def post(self, request: Request, simulation_id) -> Response:
        simulation = services.simulation_cancel(
            simulation=get_owned_simulation(request, simulation_id)
        )
        return Response(
            SimulationOutputSerializer(simulation).data, status=status.HTTP_202_ACCEPTED
        )


class SimulationResultApi(APIView):
    def get(self, request: Request, simulation_id) -> StreamingHttpResponse:
        simulation = get_owned_simulation(request, simulation_id)
        if not simulation.result_name:
            raise services.SimulationConflict(
                f"The simulation has no result ({simulation.status})."
            )
        result_format = request.query_params.get("format", "csv")
        if result_format not in ("csv", "json"):
            raise serializers.ValidationError({"format": ["format is csv or json."]})
        columns = results.selected_columns(simulation, request.query_params.get("variables"))
        if result_format == "csv":
            response = StreamingHttpResponse(
                results.iter_csv(simulation, columns), content_type="text/csv; charset=utf-8"
            )
            response["Content-Disposition"] = (
                f'attachment; filename="{simulation.model_name}-{simulation.pk}.csv"'
            )
        else:
            response = StreamingHttpResponse(
                results.iter_json(simulation, columns), content_type="application/json"
            )
        return response
