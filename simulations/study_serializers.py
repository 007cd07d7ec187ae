"""The studies API's serializers, request schema and result formats (simulations.api_studies
holds the views). Fields are explicit so the OpenAPI schema shows a study, its cases, a
quote, its price and charge exactly as they are sent."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import numpy as np
from django.conf import settings
from django.urls import reverse
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import serializers

from billing.models import format_cents
from core.openapi import (
    EXAMPLE_UUID,
    PaymentLinkSerializer,
    PriceSerializer,
    ProblemSerializer,
)
from core.problems import PROBLEM_CONTENT_TYPE, ProblemCode, problem_body
from simulations import study_selectors
from simulations.api import ChargeSerializer, SimulationListApi
from simulations.models import Study, StudyCase, StudyCaseStatus, StudyStatus
from simulations.services.studies import StudyQuote
from simulations.studies.summary import Statistic


def _enum(values: list[str], description: str = "") -> dict:
    """An inline string enum: status fields of studies and cases share values with runs',
    and a named enum component per field would collide with SimulationStatusEnum."""
    schema: dict = {"type": "string", "enum": values}
    if description:
        schema["description"] = description
    return schema


@extend_schema_field(_enum(list(StudyStatus.values)))
class StudyStatusField(serializers.CharField):
    pass


@extend_schema_field(_enum(list(StudyCaseStatus.values)))
class CaseStatusField(serializers.CharField):
    pass


@extend_schema_serializer(component_name="StudyCaseCounts")
class StudyCaseCountsSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    queued = serializers.IntegerField()
    running = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()
    cancelled = serializers.IntegerField()


@extend_schema_serializer(component_name="StudyPrice")
class StudyPriceSerializer(serializers.Serializer):
    cents = serializers.IntegerField(help_text="The whole study, in cents.")
    amount = serializers.CharField(help_text='The whole study as a decimal string, e.g. "20.00".')
    per_case_cents = serializers.IntegerField(help_text="The price of one case, in cents.")
    currency = serializers.CharField(help_text="ISO 4217, lower case.")


def price_json(*, cents: int, cases: int) -> dict:
    """What a study costs: the stored (or quoted) total, and per case as it was computed."""
    return {
        "cents": cents,
        "amount": format_cents(cents),
        "per_case_cents": cents // cases if cases else 0,
        "currency": settings.SIMULATION_PRICE_CURRENCY,
    }


@extend_schema_serializer(component_name="StudyUrls")
class StudyUrlsSerializer(serializers.Serializer):
    self = serializers.CharField()
    cases = serializers.CharField()
    summary = serializers.CharField(help_text="?format=csv|json|parquet")
    results = serializers.CharField(help_text="Every case's trace as one long CSV table.")
    cancel = serializers.CharField()


def _finite(value):
    """JSON has no NaN or infinity: such a statistic (e.g. of an empty trace) is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@extend_schema_serializer(component_name="Study")
class StudyOutputSerializer(serializers.ModelSerializer):
    model = serializers.UUIDField(source="model_id", allow_null=True)
    status = StudyStatusField()
    design = serializers.JSONField(
        help_text="The normalised design: the request's, with its seed and parameter_order."
    )
    parameters = serializers.ListField(
        child=serializers.CharField(), help_text="The design's parameters, in order."
    )
    base = serializers.JSONField(help_text="The run parameters every case starts from.")
    summary = serializers.JSONField(
        source="summary_spec", help_text="The statistics computed per case and output."
    )
    cases = serializers.SerializerMethodField()
    progress = serializers.FloatField(help_text="The share of cases that have ended, 0 to 1.")
    price = serializers.SerializerMethodField()
    charge = ChargeSerializer(read_only=True)
    urls = serializers.SerializerMethodField()

    class Meta:
        model = Study
        fields = [
            "id",
            "model",
            "model_name",
            "status",
            "design",
            "parameters",
            "base",
            "summary",
            "cases",
            "progress",
            "price",
            "charge",
            "created_at",
            "started_at",
            "finished_at",
            "cpu_seconds",
            "urls",
        ]

    @extend_schema_field(StudyCaseCountsSerializer)
    def get_cases(self, study: Study) -> dict:
        return study_selectors.study_case_counts(study=study).to_json()

    @extend_schema_field(StudyPriceSerializer)
    def get_price(self, study: Study) -> dict:
        return price_json(cents=study.price_cents, cases=study.case_count)

    @extend_schema_field(StudyUrlsSerializer)
    def get_urls(self, study: Study) -> dict:
        return {
            "self": reverse("api-study", args=[study.pk]),
            "cases": reverse("api-study-cases", args=[study.pk]),
            "summary": reverse("api-study-summary", args=[study.pk]),
            "results": reverse("api-study-results", args=[study.pk]),
            "cancel": reverse("api-study-cancel", args=[study.pk]),
        }


class CaseErrorSerializer(serializers.Serializer):
    """Schema only: why a case failed (the same codes as a run's)."""

    code = serializers.CharField()
    message = serializers.CharField()


@extend_schema_serializer(component_name="StudyCase")
class StudyCaseOutputSerializer(serializers.ModelSerializer):
    parameters = serializers.DictField(
        source="values", help_text="This case's value of each of the design's parameters."
    )
    status = CaseStatusField()
    error = serializers.SerializerMethodField()
    summary = serializers.SerializerMethodField()
    result_url = serializers.SerializerMethodField()

    class Meta:
        model = StudyCase
        fields = [
            "index",
            "parameters",
            "status",
            "error",
            "summary",
            "result_url",
            "result_rows",
            "cpu_seconds",
            "wall_seconds",
        ]

    @extend_schema_field(CaseErrorSerializer(allow_null=True))
    def get_error(self, case: StudyCase) -> dict | None:
        if not case.error_code:
            return None
        return {"code": case.error_code, "message": case.error_message}

    @extend_schema_field(
        serializers.DictField(
            child=serializers.FloatField(allow_null=True),
            help_text='Statistic by column, e.g. {"final(h)": 0.12}; null where not finite.',
        )
    )
    def get_summary(self, case: StudyCase) -> dict:
        stored = case.summary or {}
        # JSONB keeps no key order: the view passes the study's column order.
        columns = self.context.get("columns") or list(stored)
        return {name: _finite(stored[name]) for name in columns if name in stored}

    def get_result_url(self, case: StudyCase) -> str | None:
        if case.status != StudyCaseStatus.SUCCEEDED:
            return None
        return reverse("api-study-case-result", args=[case.study_id, case.index])


# --- the request -----------------------------------------------------------------------------


@extend_schema_serializer(component_name="StudyBase")
class StudyBaseSerializer(SimulationListApi.InputSerializer):
    """A run's request without `model` (the study names it once): what every case shares."""

    model = None  # type: ignore[assignment]  # DRF drops a parent's field set to None


class GridDesignSerializer(serializers.Serializer):
    """Schema only: the full factorial of value lists and linear ranges."""

    kind = serializers.ChoiceField(choices=["grid"])
    parameters = serializers.DictField(
        child=serializers.JSONField(),
        help_text='Per parameter a list of values or a range {"start", "stop", "num"}.',
    )
    parameter_order = serializers.ListField(child=serializers.CharField(), required=False)


class CasesDesignSerializer(serializers.Serializer):
    """Schema only: explicit cases, each a map of parameter to value."""

    kind = serializers.ChoiceField(choices=["cases"])
    cases = serializers.ListField(child=serializers.DictField(child=serializers.JSONField()))
    parameter_order = serializers.ListField(child=serializers.CharField(), required=False)


class SampledDesignSerializer(serializers.Serializer):
    """Schema only: a sampled design (scipy.stats.qmc; numpy's Generator for Monte Carlo)."""

    kind = serializers.ChoiceField(choices=["lhs", "sobol", "halton", "monte_carlo"])
    samples = serializers.IntegerField(min_value=1)
    seed = serializers.IntegerField(
        required=False, help_text="The same seed gives the same design; drawn when absent."
    )
    parameters = serializers.DictField(
        child=serializers.DictField(),
        help_text=(
            'Per parameter a box {"low", "high"} (lhs, sobol, halton) or, for monte_carlo, '
            'a distribution: {"distribution": "uniform", "low", "high"}, '
            '{"distribution": "normal", "mean", "std", "low"?, "high"?} or '
            '{"distribution": "lognormal", "mean", "sigma"}.'
        ),
    )
    parameter_order = serializers.ListField(child=serializers.CharField(), required=False)


DESIGN_SCHEMA = PolymorphicProxySerializer(
    component_name="StudyDesign",
    serializers=[GridDesignSerializer, CasesDesignSerializer, SampledDesignSerializer],
    resource_type_field_name=None,
)


@extend_schema_field(DESIGN_SCHEMA)
class DesignField(serializers.DictField):
    """The design as the caller wrote it; simulations.studies.designs validates it, field by
    field, against the model (so its errors name `design.parameters.h.num` and the like)."""


@extend_schema_field(
    {
        "oneOf": [
            {"type": "array", "items": {"type": "string"}},
            {
                "type": "object",
                "additionalProperties": {"type": "array", "items": {"type": "string"}},
            },
        ],
        "nullable": True,
        "description": (
            'Statistics per case: a list (e.g. ["final", "max"]) for every output, or '
            'per output ({"h": ["max", "time_of_max"]}). Statistics: '
            + ", ".join(Statistic)
            + ". Default: final of every output."
        ),
    }
)
class SummaryField(serializers.JSONField):
    pass


@extend_schema_serializer(component_name="NewStudy")
class StudyInputSerializer(serializers.Serializer):
    model = serializers.UUIDField()
    base = StudyBaseSerializer(required=False, allow_null=True)
    design = DesignField()
    summary = SummaryField(required=False, allow_null=True)


def study_request_of(data: dict) -> dict:
    """The service's request: the base without the fields the caller left out."""
    base = {name: value for name, value in (data.get("base") or {}).items() if value is not None}
    return {"base": base, "design": dict(data["design"]), "summary": data.get("summary")}


@extend_schema_serializer(component_name="StudyQuote")
class StudyQuoteSerializer(serializers.Serializer):
    cases = serializers.IntegerField(help_text="How many cases the design makes.")
    price = StudyPriceSerializer()
    design = serializers.JSONField(help_text="The normalised design (seed included).")
    parameters = serializers.ListField(child=serializers.CharField())
    summary = serializers.JSONField(help_text="The statistics that would be computed.")


def quote_json(quote: StudyQuote) -> dict:
    return {
        "cases": quote.cases,
        "price": price_json(cents=quote.price_cents, cases=quote.cases),
        "design": quote.design,
        "parameters": list(quote.parameters),
        "summary": quote.summary,
    }


class StudyPaymentRequiredProblemSerializer(ProblemSerializer):
    """A study's 402: one payment for every case (billing.services.study_payment_request)."""

    price = PriceSerializer(help_text="The price of one case.")
    cases = serializers.IntegerField(help_text="The study's number of cases.")
    total = serializers.CharField(help_text='What the whole study costs, e.g. "$20.00".')
    total_cents = serializers.IntegerField()
    payment = PaymentLinkSerializer(
        allow_null=True,
        help_text="Pay the total here; null below the card minimum (buy credit instead).",
    )
    credit_packs_url = serializers.CharField(help_text="Buy credit here.")
    payment_token_status = serializers.ChoiceField(
        choices=["none", "invalid", "used", "expired", "void", "mismatch"],
        required=False,
        help_text=(
            "Why no Payment-Token paid for this study (`none`: none was sent; `mismatch`: "
            "a run's token, or a study's of another number of cases)."
        ),
    )


STUDY_PAYMENT_REQUIRED = OpenApiResponse(
    response=StudyPaymentRequiredProblemSerializer,
    description=(
        "No credit for the whole study and no valid Payment-Token: pay the total at "
        "`payment.checkout_url`, then retry the same request with `Payment-Token: <token>` "
        "(it pays for one study of exactly that many cases)."
    ),
    examples=[
        OpenApiExample(
            "Payment required for a study",
            value=problem_body(
                ProblemCode.PAYMENT_REQUIRED,
                "You have no credit: this study of 1000 cases costs $20.00. Pay $20.00 for "
                "the 1000 cases at payment.checkout_url, then retry the same request with "
                "the header 'Payment-Token: <token>' (the token appears at "
                "payment.status_url once paid; it pays for one study of exactly 1000 cases), "
                "or buy credits at credit_packs_url.",
                price={"amount": "0.02", "currency": "usd"},
                cases=1000,
                total="$20.00",
                total_cents=2000,
                payment={
                    "id": EXAMPLE_UUID,
                    "checkout_url": "https://checkout.stripe.com/c/pay/cs_test_a1b2c3",
                    "expires_at": "2026-01-01T13:00:00Z",
                    "status_url": f"/api/v1/payments/{EXAMPLE_UUID}",
                    "token_ttl_seconds": 1800,
                },
                credit_packs_url="/pricing/",
                payment_token_status="none",  # noqa: S106 (a state, not a secret)
            ),
            response_only=True,
            status_codes=["402"],
            media_type=PROBLEM_CONTENT_TYPE,
        )
    ],
)

GRID_EXAMPLE = {
    "model": EXAMPLE_UUID,
    "base": {"stop_time": 3.0, "output_interval": 0.01, "output": ["h", "v"]},
    "design": {
        "kind": "grid",
        "parameters": {"e": [0.5, 0.7, 0.9], "h": {"start": 1, "stop": 2, "num": 5}},
    },
    "summary": ["final", "max"],
}
LHS_EXAMPLE = {
    "model": EXAMPLE_UUID,
    "base": {"stop_time": 3.0, "output": ["h"]},
    "design": {
        "kind": "lhs",
        "samples": 256,
        "seed": 7,
        "parameters": {"e": {"low": 0.5, "high": 0.9}, "h": {"low": 1, "high": 2}},
    },
    "summary": {"h": ["max", "time_of_max"]},
}


# --- result formats ------------------------------------------------------------------------

ROWS_PER_BLOCK = 8192


def trace_units(study: Study, columns: list[str]) -> dict[str, str]:
    variables = {v["name"]: v for v in study.model.variables} if study.model else {}
    units = {name: variables.get(name, {}).get("unit") for name in columns}
    units["time"] = "s"
    return {name: unit for name, unit in units.items() if unit and name in columns}


def _trace_blocks(trace: np.ndarray, columns: list[str]) -> Iterator[list[list[float]]]:
    for start in range(0, len(trace), ROWS_PER_BLOCK):
        rows = trace[start : start + ROWS_PER_BLOCK]
        yield np.column_stack([rows[name].astype(np.float64) for name in columns]).tolist()


def _csv_name(name: str) -> str:
    if any(character in name for character in ',"\n'):
        return '"' + name.replace('"', '""') + '"'
    return name


def trace_iter_csv(trace: np.ndarray) -> Iterator[bytes]:
    """A trace as CSV: floats as repr (the shortest text that reads back exactly)."""
    columns = list(trace.dtype.names or [])
    yield (",".join(_csv_name(name) for name in columns) + "\n").encode()
    for block in _trace_blocks(trace, columns):
        yield "".join(",".join(map(repr, row)) + "\n" for row in block).encode()


def _json_number(value: float) -> str:
    return repr(value) if math.isfinite(value) else "null"


def trace_iter_json(trace: np.ndarray, units: dict[str, str]) -> Iterator[bytes]:
    """A trace as {"columns", "units", "data"}, like a run's result (null where not finite)."""
    columns = list(trace.dtype.names or [])
    yield (
        '{"columns": ' + json.dumps(columns) + ', "units": ' + json.dumps(units) + ', "data": ['
    ).encode()
    separator = ""
    for block in _trace_blocks(trace, columns):
        text = ",".join("[" + ",".join(map(_json_number, row)) + "]" for row in block)
        yield (separator + text).encode()
        separator = ","
    yield b"]}"
