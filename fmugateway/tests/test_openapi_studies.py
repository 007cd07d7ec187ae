"""The OpenAPI schema's studies: every endpoint with its parameters, headers, formats and
the study's own 402, so generated clients and the docs know them as they are; and true to
the live API: schemathesis on real studies finds no 5xx and no schema violation."""

from __future__ import annotations

import pytest
import requests
import schemathesis
from django.test import Client
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts.tests.factories import UserFactory
from billing.tests.factories import LedgerEntryFactory
from simulations.models import Study, StudyStatus
from simulations.services.study_execution import study_chunk_execute
from testing.api import bearer_headers

OPENAPI_JSON = "application/vnd.oai.openapi+json"
PROBLEM_JSON = "application/problem+json"


@pytest.fixture
def operations(db) -> dict[str, dict]:
    response = Client().get("/api/schema/", HTTP_ACCEPT=OPENAPI_JSON)
    assert response.status_code == 200
    return {
        operation["operationId"]: operation
        for item in response.json()["paths"].values()
        for method, operation in item.items()
        if method in ("get", "post", "delete")
    }


def parameters(operation: dict, where: str) -> set[str]:
    return {p["name"] for p in operation.get("parameters", []) if p["in"] == where}


def test_every_study_operation_is_documented_with_its_parameters(operations):
    assert {name for name in operations if name.startswith("studies_")} == {
        "studies_list",
        "studies_create",
        "studies_retrieve",
        "studies_destroy",
        "studies_cancel",
        "studies_cases_list",
        "studies_cases_result_retrieve",
        "studies_summary_retrieve",
        "studies_results_retrieve",
    }
    create = operations["studies_create"]
    assert parameters(create, "header") == {"Idempotency-Key", "Payment-Token"}
    assert parameters(create, "query") == {"dry_run"}
    assert set(create["responses"]) >= {"200", "202", "400", "402", "409"}
    assert "Location" in create["responses"]["202"]["headers"]
    assert parameters(operations["studies_list"], "query") == {"status", "limit", "offset"}
    assert parameters(operations["studies_cases_list"], "query") == {"status", "limit", "offset"}
    for name in ("studies_retrieve", "studies_cases_list", "studies_summary_retrieve"):
        assert "404" in operations[name]["responses"]


def test_results_are_documented_in_each_format_they_come_in(operations):
    def formats(name: str) -> set[str]:
        return set(operations[name]["responses"]["200"]["content"])

    assert formats("studies_summary_retrieve") == {
        "text/csv",
        "application/json",
        "application/vnd.apache.parquet",
    }
    assert formats("studies_cases_result_retrieve") == {"text/csv", "application/json"}
    assert formats("studies_results_retrieve") == {"text/csv"}
    for name in ("studies_summary_retrieve", "studies_cases_result_retrieve"):
        (parameter,) = [p for p in operations[name]["parameters"] if p["name"] == "format"]
        assert parameter["schema"]["default"] == "csv"
    assert "409" in operations["studies_cases_result_retrieve"]["responses"]


def test_a_studys_402_names_its_cases_and_total(operations):
    refused = operations["studies_create"]["responses"]["402"]["content"][PROBLEM_JSON]
    (example,) = refused["examples"].values()
    body = example["value"]
    assert body["status"] == 402
    assert (body["cases"], body["total"], body["total_cents"]) == (1000, "$20.00", 2000)
    assert "1000 cases" in body["detail"]
    assert {"id", "checkout_url", "status_url"} <= set(body["payment"])


# --- schemathesis against a live server, on real studies ----------------------------------------

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES_PER_OPERATION = 30
GRID = {"kind": "grid", "parameters": {"e": [0.5, 0.7], "h": {"start": 1, "stop": 2, "num": 2}}}


def real_studies(server_url: str, session: requests.Session, fmu_paths) -> dict[str, list[str]]:
    """Objects for the fuzzer, by path parameter: a finished study (and its case 0), a queued
    one to cancel and one to delete."""
    with fmu_paths["bouncing_ball"].open("rb") as handle:
        uploaded = session.post(
            f"{server_url}/api/v1/models", files={"file": ("bb.fmu", handle)}, timeout=60
        )
    assert uploaded.status_code == 201, uploaded.text
    model_id = uploaded.json()["id"]

    def create() -> str:
        body = {"model": model_id, "base": {"stop_time": 1, "output_interval": 0.1}, "design": GRID}
        response = session.post(f"{server_url}/api/v1/studies", json=body, timeout=60)
        assert response.status_code == 202, response.text
        return response.json()["id"]

    finished = create()
    while not Study.objects.get(pk=finished).is_finished:
        study_chunk_execute(study_id=finished)
    assert Study.objects.get(pk=finished).status == StudyStatus.SUCCEEDED
    return {
        "model_id": [model_id],
        "study_id": [finished],
        "index": ["0", "3"],
        "cancellable_study_id": [create()],
        "deletable_study_id": [create()],
    }


def fuzz(operation, mode, *, ids: dict[str, list[str]], server_url: str, session):
    """A hypothesis test of one operation: generated requests, half of them on real studies."""

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
                pool = ids.get(name)
                if pool is None:
                    continue  # a negative case's made-up parameter
                if name == "study_id" and operation.path.endswith("/cancel"):
                    pool = pool + ids["cancellable_study_id"]
                if name == "study_id" and operation.method.lower() == "delete":
                    pool = ids["deletable_study_id"]
                case.path_parameters[name] = data.draw(st.sampled_from(pool))
            if isinstance(case.body, dict) and "model" in case.body:
                case.body["model"] = ids["model_id"][0]
        if label in failures:
            return  # one failure per operation is enough (draw first: hypothesis replays)
        try:
            response = case.call_and_validate(base_url=server_url, session=session, checks=CHECKS)
        except (FailureGroup, Failure) as failure:
            failures[label] = str(failure)
            return
        seen.add(response.status_code)

    return exercise


@pytest.mark.live
@pytest.mark.stripe
@pytest.mark.django_db(transaction=True)
def test_schemathesis_finds_no_server_errors_in_the_studies_api(
    shared_billing_web, fake_stripe, fmu_paths
):
    (server,) = shared_billing_web(1)  # API_RATE_LIMIT=100000/min
    user = UserFactory()
    session = requests.Session()
    session.headers.update(bearer_headers(user))
    # Credit for the three studies and some fuzzed ones; after that creates answer 402.
    LedgerEntryFactory(user=user, amount_cents=2_000, reason="openapi test credit")
    ids = real_studies(server.url, session, fmu_paths)

    api = schemathesis.openapi.from_url(f"{server.url}/api/schema/")
    failures: dict[str, str] = {}
    seen: dict[str, set[int]] = {}
    for result in api.get_all_operations():
        operation = result.ok()
        if not operation.path.startswith("/api/v1/studies"):
            continue
        label = f"{operation.method.upper()} {operation.path}"
        seen[label] = set()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(operation, mode, ids=ids, server_url=server.url, session=session)(
                failures=failures, seen=seen[label], label=f"{label} ({mode.value})"
            )

    study = f"{server.url}/api/v1/studies/{ids['study_id'][0]}"
    studies = f"{server.url}/api/v1/studies"
    nul_case = {"model": ids["model_id"][0], "design": {"kind": "cases", "cases": [{"e": "\x00"}]}}
    for method, url, headers, body, expected in (
        ("GET", f"{studies}?limit={10**30}", {}, None, 200),
        ("GET", f"{study}/cases?limit={10**30}&offset={10**30}", {}, None, 200),
        ("GET", f"{study}/cases/{10**12}/result", {}, None, 404),
        ("GET", f"{study}/cases/0/result", {"Accept": "text/csv"}, None, 200),
        ("GET", f"{study}/summary", {"Accept": "application/vnd.apache.parquet"}, None, 200),
        ("GET", f"{study}/summary?format=xml", {}, None, 400),
        ("GET", f"{study}/cases?status=%00", {}, None, 400),
        ("POST", f"{studies}?dry_run=%00", {}, {"model": ids["model_id"][0]}, 400),
        ("POST", studies, {}, nul_case, 400),
        ("POST", studies, {"Idempotency-Key": "k" * 300}, {"model": ids["model_id"][0]}, 400),
    ):
        response = session.request(method, url, headers=headers, json=body, timeout=30)
        assert response.status_code == expected, (url, response.status_code, response.text)
        if expected >= 400:
            assert response.headers["Content-Type"] == "application/problem+json", url

    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
    assert len(seen) == 9
    # The fuzzer reached real studies, not only 404s.
    for label, expected in {
        "GET /api/v1/studies/{study_id}": 200,
        "GET /api/v1/studies/{study_id}/cases": 200,
        "GET /api/v1/studies/{study_id}/cases/{index}/result": 200,
        "GET /api/v1/studies/{study_id}/summary": 200,
        "GET /api/v1/studies/{study_id}/results": 200,
        "POST /api/v1/studies/{study_id}/cancel": 202,
        "DELETE /api/v1/studies/{study_id}": 204,
    }.items():
        assert expected in seen[label], (label, seen[label])
