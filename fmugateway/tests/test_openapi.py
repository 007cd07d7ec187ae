"""The OpenAPI schema (/api/schema/) and its docs (/api/docs/): valid, complete, self-contained,
and true to the live API: schemathesis against gunicorn finds no 5xx and no schema violations."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
import requests
import schemathesis
import yaml
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts.services import api_key_create
from accounts.tests.factories import UserFactory
from billing.tests.factories import LedgerEntryFactory, PaymentFactory
from simulations.models import Simulation, SimulationStatus
from simulations.services import simulation_execute

API_PREFIX = "api/v1/"
OPENAPI_JSON = "application/vnd.oai.openapi+json"
PROBLEM_JSON = "application/problem+json"
HTTP_METHODS = ("get", "post", "put", "patch", "delete")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES_PER_OPERATION = 30
# The studies API is fuzzed apart, against real studies (test_openapi_studies.py).
STUDIES_PATH = "/api/v1/studies"


def routed_api_operations() -> set[tuple[str, str]]:
    """(METHOD, /path/{param}) of every view the URL resolver routes under /api/v1/."""
    operations: set[tuple[str, str]] = set()

    def walk(patterns, prefix: str) -> None:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, route)
            elif isinstance(pattern, URLPattern) and route.startswith(API_PREFIX):
                # as_view() sets view_class on the function it returns.
                view_class = pattern.callback.view_class  # type: ignore[attr-defined]
                path = "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)
                operations.update(
                    (method.upper(), path) for method in HTTP_METHODS if hasattr(view_class, method)
                )

    walk(get_resolver().url_patterns, "")
    return operations


def documented_operations(schema: dict) -> dict[tuple[str, str], dict]:
    return {
        (method.upper(), path): operation
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    }


@pytest.fixture
def schema(db) -> dict:
    response = Client().get("/api/schema/", HTTP_ACCEPT=OPENAPI_JSON)
    assert response.status_code == 200, response.content
    return response.json()


def test_the_schema_is_valid_openapi_and_documents_every_api_operation(schema):
    validate(schema)
    assert schema["openapi"].startswith("3.")
    operations = documented_operations(schema)
    assert set(operations) == routed_api_operations()
    operation_ids = [operation["operationId"] for operation in operations.values()]
    assert len(set(operation_ids)) == len(operation_ids)

    for (method, path), operation in operations.items():
        assert operation["security"] == [{"ApiKey": []}], (method, path)
        responses = operation["responses"]
        assert any(code.startswith("2") for code in responses), (method, path)
        for code, response in responses.items():
            if code.startswith(("4", "5")):
                # Every error is RFC 9457 problem+json, with an example body.
                assert list(response["content"]) == [PROBLEM_JSON], (method, path, code)
                assert response["content"][PROBLEM_JSON]["examples"], (method, path, code)
        assert {"401", "429"} <= set(responses), (method, path)

    scheme = schema["components"]["securitySchemes"]["ApiKey"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    assert "fmu_<prefix>_<secret>" in scheme["bearerFormat"]


def test_the_schema_documents_the_402_body_headers_parameters_and_formats(schema):
    operations = {op["operationId"]: op for op in documented_operations(schema).values()}
    create = operations["simulations_create"]
    payment_required = create["responses"]["402"]["content"][PROBLEM_JSON]
    (example,) = payment_required["examples"].values()
    body = example["value"]
    assert body["status"] == 402
    assert body["type"].endswith("/errors/payment-required")
    assert body["price"] == {"amount": "1.00", "currency": "usd"}
    assert {"id", "checkout_url", "expires_at", "status_url", "token_ttl_seconds"} <= set(
        body["payment"]
    )
    assert body["credit_packs_url"] == "/pricing/"
    headers = {p["name"] for p in create["parameters"] if p["in"] == "header"}
    assert headers == {"Idempotency-Key", "Payment-Token"}
    assert "Location" in create["responses"]["202"]["headers"]
    assert "errors" in str(create["responses"]["400"])

    def query(operation_id: str) -> set[str]:
        return {p["name"] for p in operations[operation_id]["parameters"] if p["in"] == "query"}

    assert query("simulations_retrieve") == {"wait"}
    assert query("simulations_result_retrieve") == {"format", "variables"}
    assert query("models_variables_list") == {"causality"}
    assert query("simulations_list") == {"status", "limit", "offset"}
    upload = operations["models_create"]["requestBody"]["content"]
    assert list(upload) == ["multipart/form-data"]
    result = operations["simulations_result_retrieve"]["responses"]["200"]["content"]
    assert set(result) == {"text/csv", "application/json"}
    assert "402" in operations["simulations_create"]["responses"]


def test_the_schema_is_served_as_yaml_too(db):
    response = Client().get("/api/schema/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi")
    validate(yaml.safe_load(response.content))


class Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        for name in ("src", "href"):
            url = attributes.get(name)
            if url and tag in ("script", "link", "img"):
                self.urls.append(url)


def test_the_docs_render_from_local_static_files_only(db):
    client = Client()
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assets = Assets()
    assets.feed(html)
    assert assets.urls
    for asset in assets.urls:
        assert asset.startswith("/static/"), asset
        assert client.get(asset).status_code == 200, asset
    # No CDN anywhere (the sidecar package serves Swagger UI and Redoc).
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "/api/schema/" in html


# --- schemathesis against a live server --------------------------------------------------------


def real_data(server_url: str, headers: dict, fmu_paths) -> dict[str, list[str]]:
    """Objects for the fuzzer to hit, by path parameter: models, a finished and a queued run."""

    def upload(name: str) -> str:
        with fmu_paths[name].open("rb") as handle:
            response = requests.post(
                f"{server_url}/api/v1/models",
                files={"file": (f"{name}.fmu", handle)},
                headers=headers,
                timeout=60,
            )
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def start(model_id: str) -> str:
        response = requests.post(
            f"{server_url}/api/v1/simulations",
            json={"model": model_id, "stop_time": 1.0, "output_interval": 0.05},
            headers=headers,
            timeout=60,
        )
        assert response.status_code == 202, response.text
        return response.json()["id"]

    model_id = upload("bouncing_ball")
    finished_id = start(model_id)
    simulation_execute(simulation_id=finished_id)
    assert Simulation.objects.get(pk=finished_id).status == SimulationStatus.SUCCEEDED
    return {
        "model_id": [model_id],
        "simulation_id": [finished_id],
        # Cancelled by the fuzzer (202), then a conflict (409).
        "cancellable_simulation_id": [start(model_id)],
        # Deleted by the fuzzer (204), then not found (404).
        "deletable_model_id": [upload("inputs_params")],
    }


def edge_cases(api, ids: dict[str, list[str]]):
    """Requests that once made the server fail (a 500), each with the status it answers now."""
    simulations = api["/api/v1/simulations"]
    result = api["/api/v1/simulations/{simulation_id}/result"]
    model_id, simulation_id = ids["model_id"][0], ids["simulation_id"][0]
    return [
        # An unbounded LIMIT the database refused: ?limit is capped now.
        (api["/api/v1/models"]["GET"].Case(query={"limit": 10**30}), 200),
        (simulations["GET"].Case(query={"limit": 10**30}), 200),
        # A NUL the database refused, in a filter and in a start value.
        (simulations["GET"].Case(query={"status": "\x00"}), 400),
        (
            simulations["POST"].Case(
                body={"model": model_id, "start_values": {"e": "\x00"}},
                media_type="application/json",
            ),
            400,
        ),
        # An Idempotency-Key longer than its column.
        (
            simulations["POST"].Case(
                body={"model": model_id},
                headers={"Idempotency-Key": "k" * 300},
                media_type="application/json",
            ),
            400,
        ),
        # `Accept: text/csv` was a 406; ?format decides, and errors stay problem+json.
        (
            result["GET"].Case(
                path_parameters={"simulation_id": simulation_id},
                headers={"Accept": "text/csv"},
            ),
            200,
        ),
    ]


def fuzz(operation, mode, *, ids: dict[str, list[str]], server_url: str, session, headers: dict):
    """A hypothesis test of one operation: generated requests, half of them on real objects."""

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    def exercise(case, data, *, failures: dict[str, str], seen: set[int], label: str) -> None:
        if data.draw(st.booleans(), label="use real objects"):
            for name in case.path_parameters or {}:
                if name not in ids:
                    continue  # a negative case's made-up parameter
                pool = ids[name]
                if operation.path.endswith("/cancel"):
                    pool = pool + ids["cancellable_simulation_id"]
                if operation.method.lower() == "delete":
                    pool = ids["deletable_model_id"]
                case.path_parameters[name] = data.draw(st.sampled_from(pool))
            if isinstance(case.body, dict) and "model" in case.body:
                case.body["model"] = ids["model_id"][0]
        if label in failures:
            return  # one failure per operation is enough (draw first: hypothesis replays)
        try:
            response = case.call_and_validate(
                base_url=server_url, session=session, headers=headers, checks=CHECKS
            )
        except (FailureGroup, Failure) as failure:
            failures[label] = str(failure)
            return
        seen.add(response.status_code)

    return exercise


@pytest.mark.live
@pytest.mark.stripe
@pytest.mark.django_db(transaction=True)
def test_schemathesis_finds_no_server_errors_and_no_schema_violations(
    shared_billing_web,
    fake_stripe,
    fmu_paths,
):
    (server,) = shared_billing_web(1)  # API_RATE_LIMIT=100000/min
    user = UserFactory()
    _api_key, key = api_key_create(user=user)
    headers = {"Authorization": f"Bearer {key}"}
    # Credit for the two setup runs and a few fuzzed ones; after that POSTs answer 402.
    LedgerEntryFactory(user=user, amount_cents=500, reason="openapi test credit")
    ids = real_data(server.url, headers, fmu_paths)
    paid = PaymentFactory(user=user, paid=True)
    ids["payment_id"] = [str(paid.pk), str(PaymentFactory(user=user).pk)]

    api = schemathesis.openapi.from_url(f"{server.url}/api/schema/")
    session = requests.Session()
    session.headers.update(headers)
    failures: dict[str, str] = {}
    seen_statuses: dict[str, set[int]] = {}

    for result in api.get_all_operations():
        operation = result.ok()
        if operation.path.startswith(STUDIES_PATH):
            continue  # fuzzed with real studies in test_openapi_studies.py
        label = f"{operation.method.upper()} {operation.path}"
        seen_statuses[label] = set()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(operation, mode, ids=ids, server_url=server.url, session=session, headers=headers)(
                failures=failures, seen=seen_statuses[label], label=f"{label} ({mode.value})"
            )

    for case, expected in edge_cases(api, ids):
        label = f"{case.operation.method.upper()} {case.operation.path} {case.query or ''}"
        try:
            response = case.call_and_validate(
                base_url=server.url, session=session, headers=headers, checks=CHECKS
            )
        except (FailureGroup, Failure) as failure:
            failures[label] = str(failure)
            continue
        assert response.status_code == expected, (label, response.status_code, response.text)

    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
    assert set(seen_statuses) == {
        f"{method} {path}"
        for method, path in routed_api_operations()
        if not path.startswith(STUDIES_PATH)
    }
    # The fuzzer reached real objects, not only 404s: successes and the 402 were validated too.
    for label, expected in {
        "GET /api/v1/models/{model_id}": 200,
        "GET /api/v1/models/{model_id}/variables": 200,
        "DELETE /api/v1/models/{model_id}": 204,
        "POST /api/v1/simulations": 402,
        "GET /api/v1/simulations/{simulation_id}": 200,
        "POST /api/v1/simulations/{simulation_id}/cancel": 202,
        "GET /api/v1/simulations/{simulation_id}/result": 200,
        "GET /api/v1/payments/{payment_id}": 200,
    }.items():
        assert expected in seen_statuses[label], (label, seen_statuses[label])
