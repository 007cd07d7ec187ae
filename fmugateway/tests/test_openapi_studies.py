"""The OpenAPI schema's studies: every endpoint with its parameters, headers, formats and
the study's own 402, so generated clients and the docs know them as they are."""

from __future__ import annotations

import pytest
from django.test import Client

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
