"""The studies API (/api/v1/studies): created, run in-process chunk by chunk as a worker
would, and read back; every case's trace equals fmpy's, its statistics equal those of the
trace; requests are validated, priced, owner-scoped and idempotent like runs."""

from __future__ import annotations

import csv
import io
import json

import fmpy
import numpy as np
import pyarrow.parquet as pq
import pytest
from django.core.management import call_command
from django.test import Client
from rest_framework.test import APIClient

import fmuengine.batch
from accounts.tests.factories import UserFactory
from billing.models import LedgerEntry, Payment
from billing.selectors import credit_balance
from billing.tests.factories import LedgerEntryFactory
from billing.tests.fake_stripe import pay_on_checkout
from core.storage import stored_file_exists
from simulations.models import Study, StudyCase
from simulations.services.study_execution import study_chunk_execute
from testing.api import api_client_for, uploaded_model_id

pytestmark = pytest.mark.django_db

STUDIES_URL = "/api/v1/studies"
BASE = {"stop_time": 2.0, "output_interval": 0.01, "output": ["h", "v"]}
STATISTICS = [
    "final",
    "initial",
    "min",
    "max",
    "mean",
    "std",
    "integral",
    "time_of_min",
    "time_of_max",
]


def body_text(response) -> str:
    """A streamed (or plain) response's body as text."""
    content = getattr(response, "streaming_content", None)
    if content is None and hasattr(response, "file_to_stream"):
        return response.getvalue().decode()
    if content is None:
        return response.content.decode()
    return b"".join(content).decode()


def command_output(name: str, *args: str) -> str:
    out = io.StringIO()
    call_command(name, *args, stdout=out)
    return out.getvalue()


def body_bytes(response) -> bytes:
    return b"".join(response.streaming_content)


def create(client: APIClient, body: dict, **headers):
    return client.post(STUDIES_URL, body, format="json", **headers)


def run_study(client: APIClient, study_id: str) -> dict:
    """Run the study's chunks in this process, as workers would, until it has finished."""
    for _ in range(1000):
        if Study.objects.get(pk=study_id).is_finished:
            break
        study_chunk_execute(study_id=study_id)
    response = client.get(f"{STUDIES_URL}/{study_id}")
    assert response.status_code == 200
    return response.json()


def all_cases(client: APIClient, study: dict) -> list[dict]:
    cases: list[dict] = []
    url = study["urls"]["cases"] + "?limit=7"  # a few pages
    while url:
        page = client.get(url).json()
        cases.extend(page["results"])
        url = page["next"]
    return cases


def case_trace(client: APIClient, case: dict) -> tuple[list[str], np.ndarray]:
    response = client.get(case["result_url"] + "?format=csv")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(body_text(response))))
    return rows[0], np.array(rows[1:], dtype=float)


def statistic(name: str, time: np.ndarray, values: np.ndarray) -> float:
    """The statistics as documented (simulations/studies/summary.py), computed here anew."""
    span = time[-1] - time[0]
    integral = float(np.sum(np.diff(time) * (values[1:] + values[:-1]) / 2))
    mean = integral / span if span else float(values[-1])
    if name == "final":
        return float(values[-1])
    if name == "initial":
        return float(values[0])
    if name == "min":
        return float(values.min())
    if name == "max":
        return float(values.max())
    if name == "mean":
        return mean
    if name == "integral":
        return integral
    if name == "std":
        squared = (values - mean) ** 2
        return float(np.sqrt(np.sum(np.diff(time) * (squared[1:] + squared[:-1]) / 2) / span))
    if name == "time_of_min":
        return float(time[np.argmax(values == values.min())])
    if name == "time_of_max":
        return float(time[np.argmax(values == values.max())])
    raise AssertionError(name)


DESIGNS = {
    "grid": {
        "kind": "grid",
        "parameters": {"e": [0.5, 0.8], "h": {"start": 1.0, "stop": 2.0, "num": 3}},
    },
    "cases": {"kind": "cases", "cases": [{"e": 0.6, "v": 1.5}, {"e": 0.9, "v": -0.5}]},
    "lhs": {
        "kind": "lhs",
        "samples": 5,
        "seed": 7,
        "parameters": {"e": {"low": 0.5, "high": 0.9}, "g": {"low": 5.0, "high": 15.0}},
    },
}


@pytest.mark.parametrize("design", DESIGNS, ids=list(DESIGNS))
def test_every_case_equals_fmpy_and_its_summary_equals_the_traces_statistics(
    api_client, fmu_paths, design
):
    model_id = uploaded_model_id(api_client, fmu_paths["bouncing_ball"])
    body = {"model": model_id, "base": BASE, "design": DESIGNS[design], "summary": STATISTICS}
    created = create(api_client, body)
    assert created.status_code == 202, created.content
    assert created["Location"] == f"{STUDIES_URL}/{created.json()['id']}"
    study = run_study(api_client, created.json()["id"])

    expected_cases = {"grid": 6, "cases": 2, "lhs": 5}[design]
    assert study["status"] == "succeeded"
    assert study["progress"] == 1.0
    assert study["cases"] == {
        "total": expected_cases,
        "queued": 0,
        "running": 0,
        "succeeded": expected_cases,
        "failed": 0,
        "cancelled": 0,
    }
    cases = all_cases(api_client, study)
    assert [case["index"] for case in cases] == list(range(expected_cases))
    summary_rows = json.loads(body_text(api_client.get(study["urls"]["summary"] + "?format=json")))
    assert [row["index"] for row in summary_rows] == list(range(expected_cases))

    for case, row in zip(cases, summary_rows, strict=True):
        assert case["status"] == "succeeded" and case["error"] is None
        assert set(case["parameters"]) == set(study["parameters"])
        header, table = case_trace(api_client, case)
        reference = fmpy.simulate_fmu(
            str(fmu_paths["bouncing_ball"]),
            start_time=0.0,
            stop_time=2.0,
            output_interval=0.01,
            start_values=case["parameters"],
            output=["h", "v"],
        )
        assert header == list(reference.dtype.names)
        assert table.shape == (len(reference), len(header))
        for column, name in enumerate(header):
            np.testing.assert_allclose(table[:, column], reference[name], rtol=0, atol=1e-9)
        time = table[:, 0]
        for output in ("h", "v"):
            values = table[:, header.index(output)]
            for name in STATISTICS:
                expected = statistic(name, time, values)
                column = f"{name}({output})"
                assert case["summary"][column] == pytest.approx(expected, rel=1e-9, abs=1e-9)
                assert row[column] == pytest.approx(expected, rel=1e-9, abs=1e-9)
        for parameter, value in case["parameters"].items():
            assert row[parameter] == value

    if design == "grid":
        assert sorted((c["parameters"]["e"], c["parameters"]["h"]) for c in cases) == sorted(
            (e, h) for e in (0.5, 0.8) for h in (1.0, 1.5, 2.0)
        )
    if design == "cases":
        assert [c["parameters"] for c in cases] == DESIGNS["cases"]["cases"]


def test_the_same_seed_gives_the_same_design(api_client, fmu_paths):
    model_id = uploaded_model_id(api_client, fmu_paths["bouncing_ball"])
    body = {"model": model_id, "base": BASE, "design": DESIGNS["lhs"]}
    first = create(api_client, body).json()
    second = create(api_client, body).json()
    assert first["id"] != second["id"]
    assert first["design"]["seed"] == second["design"]["seed"] == 7

    def values(study: dict) -> list[dict]:
        return [case["parameters"] for case in all_cases(api_client, study)]

    assert values(first) == values(second)
    assert len({tuple(v.values()) for v in values(first)}) == 5  # five distinct points
    other_seed = {**body, "design": {**DESIGNS["lhs"], "seed": 8}}
    assert values(create(api_client, other_seed).json()) != values(first)
    # The quote of a dry run names the same design.
    quote = api_client.post(STUDIES_URL + "?dry_run=true", body, format="json").json()
    assert quote["design"]["seed"] == 7
    assert quote["cases"] == 5


def test_a_design_without_seed_is_given_one_that_reproduces_it(api_client, fmu_paths):
    model_id = uploaded_model_id(api_client, fmu_paths["bouncing_ball"])
    unseeded = {k: v for k, v in DESIGNS["lhs"].items() if k != "seed"}
    first = create(api_client, {"model": model_id, "design": unseeded}).json()
    seed = first["design"]["seed"]
    assert isinstance(seed, int)
    again = create(api_client, {"model": model_id, "design": {**unseeded, "seed": seed}}).json()
    assert [c["parameters"] for c in all_cases(api_client, again)] == [
        c["parameters"] for c in all_cases(api_client, first)
    ]


def test_a_dry_run_answers_the_count_and_price_and_creates_nothing(api_client, fmu_paths, settings):
    settings.STUDY_CASE_PRICE_CENTS = 3
    model_id = uploaded_model_id(api_client, fmu_paths["bouncing_ball"])
    body = {"model": model_id, "base": BASE, "design": DESIGNS["grid"], "summary": ["max"]}
    response = api_client.post(STUDIES_URL + "?dry_run=true", body, format="json")
    assert response.status_code == 200, response.content
    quote = response.json()
    assert quote["cases"] == 6
    assert quote["price"] == {"cents": 18, "amount": "0.18", "per_case_cents": 3, "currency": "usd"}
    assert quote["parameters"] == ["e", "h"]
    assert quote["design"]["kind"] == "grid"
    assert quote["summary"] == {
        "statistics": [
            {"output": "h", "statistics": ["max"]},
            {"output": "v", "statistics": ["max"]},
        ]
    }
    assert not Study.objects.exists()
    # The same request, not dry, costs what the dry run said.
    study = create(api_client, body).json()
    assert study["price"] == quote["price"]
    assert study["cases"]["total"] == 6 and study["cases"]["queued"] == 6


def test_dry_run_must_be_a_boolean(api_client, fmu_paths):
    model_id = uploaded_model_id(api_client, fmu_paths["bouncing_ball"])
    body = {"model": model_id, "design": DESIGNS["grid"]}
    response = api_client.post(STUDIES_URL + "?dry_run=perhaps", body, format="json")
    assert response.status_code == 400
    assert "dry_run" in response.json()["errors"]
    assert not Study.objects.exists()


@pytest.mark.parametrize(
    ("request_fields", "field", "words"),
    [
        (
            {"design": {"kind": "grid", "parameters": {"nope": [1, 2]}}},
            "design.parameters.nope",
            "nope",
        ),
        (
            {"design": {"kind": "grid", "parameters": {"der(h)": [1, 2]}}},
            "design.parameters.der(h)",
            "",
        ),
        (
            {
                "design": {
                    "kind": "grid",
                    "parameters": {"e": {"start": 0.5, "stop": 0.9, "num": 0}},
                }
            },
            "design.parameters.e",
            "",
        ),
        (
            {
                "design": {
                    "kind": "lhs",
                    "samples": 4,
                    "parameters": {"e": {"low": 0.9, "high": 0.5}},
                }
            },
            "design.parameters.e",
            "",
        ),
        (
            {
                "design": {
                    "kind": "grid",
                    "parameters": {
                        "e": {"start": 0, "stop": 1, "num": 200},
                        "g": {"start": 1, "stop": 2, "num": 200},
                    },
                }
            },
            "design",
            "at most",
        ),
        ({"design": {"kind": "spiral"}}, "design", ""),
        ({"design": "grid"}, "design", ""),
        ({"design": DESIGNS["grid"], "base": {"stop_time": -1}}, "base.stop_time", ""),
        (
            {"design": DESIGNS["grid"], "base": {"start_values": {"nope": 1}}},
            "base.start_values",
            "nope",
        ),
        ({"design": DESIGNS["grid"], "summary": ["median"]}, "summary", "median"),
        ({"design": DESIGNS["grid"], "summary": {"x": ["max"]}}, "summary.x", ""),
    ],
    ids=[
        "unknown-parameter",
        "non-settable",
        "empty-range",
        "low-above-high",
        "too-many-cases",
        "unknown-kind",
        "design-not-an-object",
        "bad-base-field",
        "bad-start-value",
        "unknown-statistic",
        "unknown-output",
    ],
)
def test_bad_requests_are_400_naming_the_field_and_nothing_is_created(
    api_client, fmu_paths, settings, request_fields, field, words
):
    settings.STUDY_MAX_CASES = 10_000
    model_id = uploaded_model_id(api_client, fmu_paths["bouncing_ball"])
    body = {"model": model_id, **request_fields}
    for url in (STUDIES_URL, STUDIES_URL + "?dry_run=true"):
        response = api_client.post(url, body, format="json")
        assert response.status_code == 400, response.content
        assert response["Content-Type"] == "application/problem+json"
        errors = response.json()["errors"]
        assert any(name == field or name.startswith(field + ".") for name in errors), errors
        assert words in json.dumps(errors)
    assert not Study.objects.exists()
    assert not StudyCase.objects.exists()


def test_a_model_that_is_not_yours_is_400_on_model(fmu_paths):
    owner, stranger = api_client_for(UserFactory()), api_client_for(UserFactory())
    model_id = uploaded_model_id(owner, fmu_paths["bouncing_ball"])
    response = create(stranger, {"model": model_id, "design": DESIGNS["grid"]})
    assert response.status_code == 400
    assert "model" in response.json()["errors"]


def test_another_accounts_study_and_its_cases_are_404(fmu_paths):
    owner, stranger = api_client_for(UserFactory()), api_client_for(UserFactory())
    model_id = uploaded_model_id(owner, fmu_paths["bouncing_ball"])
    study = create(owner, {"model": model_id, "base": BASE, "design": DESIGNS["cases"]}).json()
    run_study(owner, study["id"])
    url = f"{STUDIES_URL}/{study['id']}"
    for response in (
        stranger.get(url),
        stranger.get(url + "/cases"),
        stranger.get(url + "/cases/0/result"),
        stranger.get(url + "/summary"),
        stranger.get(url + "/results"),
        stranger.post(url + "/cancel"),
        stranger.delete(url),
    ):
        assert response.status_code == 404, response.content
        assert response["Content-Type"] == "application/problem+json"
    assert stranger.get(STUDIES_URL).json()["results"] == []
    assert owner.get(url).status_code == 200
    assert [s["id"] for s in owner.get(STUDIES_URL).json()["results"]] == [study["id"]]


def test_the_same_idempotency_key_gives_the_same_study_and_another_body_is_409(
    api_client, fmu_paths
):
    model_id = uploaded_model_id(api_client, fmu_paths["bouncing_ball"])
    body = {"model": model_id, "base": BASE, "design": DESIGNS["grid"]}
    first = create(api_client, body, HTTP_IDEMPOTENCY_KEY="study-1")
    again = create(api_client, body, HTTP_IDEMPOTENCY_KEY="study-1")
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert Study.objects.count() == 1 and StudyCase.objects.count() == 6
    other = create(api_client, {**body, "design": DESIGNS["cases"]}, HTTP_IDEMPOTENCY_KEY="study-1")
    assert other.status_code == 409
    assert other.json()["type"].endswith("/idempotency-key-reused")
    too_long = create(api_client, body, HTTP_IDEMPOTENCY_KEY="k" * 300)
    assert too_long.status_code == 400
    assert "Idempotency-Key" in too_long.json()["errors"]
    assert Study.objects.count() == 1


def test_cancelling_a_queued_study_cancels_its_cases(api_client, fmu_paths):
    model_id = uploaded_model_id(api_client, fmu_paths["bouncing_ball"])
    study = create(api_client, {"model": model_id, "base": BASE, "design": DESIGNS["grid"]}).json()
    response = api_client.post(study["urls"]["cancel"])
    assert response.status_code == 202, response.content
    cancelled = response.json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["cases"]["cancelled"] == 6 and cancelled["cases"]["queued"] == 0
    assert cancelled["progress"] == 1.0
    cases = all_cases(api_client, study)
    assert {case["status"] for case in cases} == {"cancelled"}
    assert all(
        case["error"]["code"] == "cancelled" and case["result_url"] is None for case in cases
    )
    # A chunk that arrives later does nothing.
    study_chunk_execute(study_id=study["id"])
    assert api_client.get(study["urls"]["self"]).json()["status"] == "cancelled"
    assert api_client.post(study["urls"]["cancel"]).status_code == 409
    # Its case has no result: a conflict that says why, not a server error.
    no_result = api_client.get(study["urls"]["self"] + "/cases/0/result")
    assert no_result.status_code == 409
    assert "cancelled" in no_result.json()["detail"]


def test_deleting_a_study_removes_it_and_its_files(api_client, fmu_paths):
    model_id = uploaded_model_id(api_client, fmu_paths["bouncing_ball"])
    study = create(api_client, {"model": model_id, "base": BASE, "design": DESIGNS["cases"]}).json()
    run_study(api_client, study["id"])
    stored = [
        name
        for chunk in Study.objects.get(pk=study["id"]).chunks.all()
        for name in (chunk.summary_name, chunk.trace_name)
        if name
    ]
    assert stored and all(stored_file_exists(name=name) for name in stored)
    assert api_client.delete(study["urls"]["self"]).status_code == 204
    assert api_client.get(study["urls"]["self"]).status_code == 404
    assert not StudyCase.objects.exists()
    assert not any(stored_file_exists(name=name) for name in stored)
    assert api_client.delete(study["urls"]["self"]).status_code == 404


def test_summary_long_table_and_case_results_in_every_format(api_client, fmu_paths):
    model_id = uploaded_model_id(api_client, fmu_paths["bouncing_ball"])
    body = {"model": model_id, "base": BASE, "design": DESIGNS["grid"]}
    study = run_study(api_client, create(api_client, body).json()["id"])
    summary_url, results_url = study["urls"]["summary"], study["urls"]["results"]

    as_csv = api_client.get(summary_url + "?format=csv")
    assert as_csv.status_code == 200
    assert as_csv["Content-Type"].startswith("text/csv")
    assert as_csv["Content-Disposition"].startswith("attachment;")
    rows = list(csv.DictReader(io.StringIO(body_text(as_csv))))
    columns = ["index", "status", "error_code", "e", "h", "final(h)", "final(v)"]
    assert list(rows[0]) == columns
    as_json = json.loads(body_text(api_client.get(summary_url + "?format=json")))
    assert len(rows) == len(as_json) == 6
    for row, item in zip(rows, as_json, strict=True):
        assert int(row["index"]) == item["index"] and row["status"] == item["status"]
        for name in columns[3:]:
            assert float(row[name]) == item[name]  # CSV numbers read back exactly
    parquet = api_client.get(summary_url + "?format=parquet")
    assert parquet.status_code == 200
    assert parquet["Content-Type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(body_bytes(parquet)))
    assert table.column_names == columns
    assert table.to_pylist() == as_json
    # Without ?format, the Accept header chooses; ?format wins over it.
    accepted = api_client.get(summary_url, HTTP_ACCEPT="application/json")
    assert json.loads(body_text(accepted)) == as_json
    assert api_client.get(summary_url)["Content-Type"].startswith("text/csv")
    assert api_client.get(summary_url + "?format=csv", HTTP_ACCEPT="application/json")[
        "Content-Type"
    ].startswith("text/csv")
    bad = api_client.get(summary_url + "?format=xml")
    assert bad.status_code == 400
    assert "format" in bad.json()["errors"]

    long_table = list(csv.reader(io.StringIO(body_text(api_client.get(results_url)))))
    assert long_table[0] == ["case", "time", "h", "v"]
    cases = all_cases(api_client, study)
    assert all(list(case["summary"]) == columns[5:] for case in cases)  # in the study's order
    for case in cases:
        header, trace = case_trace(api_client, case)
        mine = np.array([row[1:] for row in long_table[1:] if int(row[0]) == case["index"]], float)
        np.testing.assert_array_equal(mine, trace)
    assert len(long_table) - 1 == sum(case["result_rows"] for case in cases)
    assert api_client.get(results_url + "?format=json").status_code == 400

    first = cases[0]
    as_json_trace = json.loads(body_text(api_client.get(first["result_url"] + "?format=json")))
    header, trace = case_trace(api_client, first)
    assert as_json_trace["columns"] == header == ["time", "h", "v"]
    assert as_json_trace["units"]["time"] == "s"
    np.testing.assert_array_equal(np.array(as_json_trace["data"]), trace)
    assert api_client.get(first["result_url"] + "?format=parquet").status_code == 400


def test_cases_are_paginated_and_filtered_and_bad_indexes_are_404(api_client, fmu_paths):
    model_id = uploaded_model_id(api_client, fmu_paths["bouncing_ball"])
    study = create(api_client, {"model": model_id, "base": BASE, "design": DESIGNS["grid"]}).json()
    page = api_client.get(study["urls"]["cases"] + "?limit=2&offset=2").json()
    assert page["count"] == 6
    assert [case["index"] for case in page["results"]] == [2, 3]
    assert page["results"][0]["status"] == "queued" and page["results"][0]["result_url"] is None
    queued = api_client.get(study["urls"]["cases"] + "?status=queued").json()
    assert queued["count"] == 6
    assert api_client.get(study["urls"]["cases"] + "?status=failed").json()["count"] == 0
    assert api_client.get(study["urls"]["cases"] + "?status=bogus").status_code == 400
    assert api_client.get(STUDIES_URL + "?status=bogus").status_code == 400
    assert api_client.get(STUDIES_URL + "?status=queued").json()["count"] == 1
    not_yet = api_client.get(study["urls"]["self"] + "/cases/0/result")
    assert not_yet.status_code == 409
    assert "queued" in not_yet.json()["detail"]
    for index in (6, 10**12):
        response = api_client.get(study["urls"]["self"] + f"/cases/{index}/result")
        assert response.status_code == 404
        assert response["Content-Type"] == "application/problem+json"


# --- money: one 402 for the whole study, one token or one debit, platform faults given back ----


def paid_token(api_client: APIClient, fake, webhook, payment: dict) -> str:
    """The customer pays the 402's Checkout Session and Stripe says so; the payment's token."""
    session_id = Payment.objects.get(pk=payment["id"]).stripe_checkout_session_id
    assert pay_on_checkout(fake, webhook, session_id, to=Client()) == 200
    paid = api_client.get(payment["status_url"]).json()
    assert paid["status"] == "paid", paid
    return paid["token"]


def ledger(user) -> list[tuple[str, int]]:
    return list(
        LedgerEntry.objects.filter(user=user).order_by("pk").values_list("kind", "amount_cents")
    )


@pytest.mark.stripe
def test_a_study_without_credit_gets_one_402_and_the_paid_token_pays_exactly_that_study(
    api_client, billing_on, webhook, fmu_paths, settings, monkeypatch
):
    fake = billing_on
    settings.STUDY_CASE_PRICE_CENTS = 25
    model_id = uploaded_model_id(api_client, fmu_paths["bouncing_ball"])
    body = {"model": model_id, "base": BASE, "design": DESIGNS["grid"]}  # 6 cases: $1.50

    # A dry run prices it and asks for nothing.
    quote = api_client.post(STUDIES_URL + "?dry_run=true", body, format="json")
    assert quote.status_code == 200
    assert quote.json()["price"]["cents"] == 150
    assert fake.requests_to("POST", "/v1/checkout/sessions") == []

    refused = create(api_client, body)
    assert refused.status_code == 402, refused.content
    assert refused["Content-Type"] == "application/problem+json"
    problem = refused.json()
    assert problem["type"].endswith("/errors/payment-required")
    assert (problem["cases"], problem["total"], problem["total_cents"]) == (6, "$1.50", 150)
    assert "6 cases" in problem["detail"] and "$1.50" in problem["detail"]
    session = fake.session_view(
        Payment.objects.get(pk=problem["payment"]["id"]).stripe_checkout_session_id
    )
    assert session["amount_total"] == 150
    # Asking again is the same one payment, not a second Checkout Session.
    assert create(api_client, body).json()["payment"]["id"] == problem["payment"]["id"]
    assert len(fake.requests_to("POST", "/v1/checkout/sessions")) == 1
    assert not Study.objects.exists()

    token = paid_token(api_client, fake, webhook, problem["payment"])
    # The token pays for exactly 6 cases: a study of 4 is refused, and the token stays good.
    smaller = {**body, "design": {"kind": "grid", "parameters": {"e": [0.5, 0.6], "h": [1, 2]}}}
    wrong_size = create(api_client, smaller, HTTP_PAYMENT_TOKEN=token)
    assert wrong_size.status_code == 402
    assert wrong_size.json()["payment_token_status"] == "mismatch"
    accepted = create(api_client, body, HTTP_PAYMENT_TOKEN=token)
    assert accepted.status_code == 202, accepted.content
    study = accepted.json()
    assert study["charge"] == {
        "kind": "token",
        "payment": problem["payment"]["id"],
        "amount_cents": 150,
        "cases": 6,
    }
    assert study["price"]["cents"] == 150
    reused = create(api_client, body, HTTP_PAYMENT_TOKEN=token)
    assert reused.status_code == 402
    assert reused.json()["payment_token_status"] == "used"
    assert Study.objects.count() == 1

    # The platform fails after the first case of each chunk: those cases are given back.
    real_run_batch = fmuengine.batch.run_batch

    def the_sandbox_dies_after_one_case(*, cases, **kwargs):
        real_run_batch(cases=cases[:1], **kwargs)
        raise OSError("the sandbox went away")

    monkeypatch.setattr(fmuengine.batch, "run_batch", the_sandbox_dies_after_one_case)
    finished = run_study(api_client, study["id"])
    cases = all_cases(api_client, finished)
    failed = [case for case in cases if case["status"] == "failed"]
    assert failed and len(failed) < 6
    assert {case["error"]["code"] for case in failed} == {"sandbox_failed"}
    assert finished["status"] == "succeeded"  # every case ended; the others' results stand
    assert finished["charge"]["refunded_cents"] == 25 * len(failed)
    assert credit_balance(user=api_client.user) == 25 * len(failed)  # given back as credit
    assert ledger(api_client.user) == [("refund", 25 * len(failed))]

    assert "paid: 0, expired: 0" in command_output("reconcile_payments")
    assert Payment.objects.get(pk=problem["payment"]["id"]).amount_cents == 150


@pytest.mark.stripe
def test_a_study_paid_from_credit_is_debited_once_and_cancelled_cases_are_given_back(
    api_client, billing_on, fmu_paths, settings
):
    settings.STUDY_CASE_PRICE_CENTS = 25
    user = api_client.user
    model_id = uploaded_model_id(api_client, fmu_paths["bouncing_ball"])
    body = {"model": model_id, "base": BASE, "design": DESIGNS["grid"]}
    LedgerEntryFactory(user=user, amount_cents=100)
    short = create(api_client, body)  # $1.00 of credit does not pay a $1.50 study, even in part
    assert short.status_code == 402
    assert credit_balance(user=user) == 100
    LedgerEntryFactory(user=user, amount_cents=900)

    first = create(api_client, body, HTTP_IDEMPOTENCY_KEY="credit-study")
    again = create(api_client, body, HTTP_IDEMPOTENCY_KEY="credit-study")
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    charge = first.json()["charge"]
    assert (charge["kind"], charge["amount_cents"], charge["cases"]) == ("credit", 150, 6)
    assert credit_balance(user=user) == 850
    assert ledger(user) == [("grant", 100), ("grant", 900), ("charge", -150)]

    cancelled = api_client.post(first.json()["urls"]["cancel"]).json()
    assert cancelled["cases"]["cancelled"] == 6
    assert cancelled["charge"]["refunded_cents"] == 150
    assert credit_balance(user=user) == 1000
    assert ledger(user)[-1] == ("refund", 150)
    assert "paid: 0, expired: 0" in command_output("reconcile_payments")
