"""Studies through the Python client and `fmugw study` against a live gateway (gunicorn,
a Celery worker on Redis, PostgreSQL, the sandbox; the fake Stripe for the paid one)."""

from __future__ import annotations

import csv
import io
import threading
from decimal import Decimal

import pandas as pd  # type: ignore[import-untyped]
import pyarrow.parquet as pq
import pytest
from django.db import connection
from fmugateway_client import (
    NotFound,
    PaymentRequired,
    Result,
    Study,
    StudyCase,
    StudyQuote,
    ValidationError,
)

from billing.models import Payment
from billing.tests.fake_stripe import pay_on_checkout

BASE = {"stop_time": 1.5, "output_interval": 0.01, "output": ["h", "v"]}
GRID = {"kind": "grid", "parameters": {"e": [0.5, 0.8], "h": {"start": 1, "stop": 2, "num": 3}}}
# The grid's cases in order: the first parameter varies slowest.
GRID_CASES = [{"e": e, "h": h} for e in (0.5, 0.8) for h in (1.0, 1.5, 2.0)]


@pytest.mark.live
def test_a_grid_study_from_an_fmu_path_to_its_summary_table(gateway, fmu_paths, tmp_path):
    client = gateway.client
    quote = client.create_study(
        fmu_paths["bouncing_ball"], design=GRID, base=BASE, summary=["final", "max"], dry_run=True
    )
    assert isinstance(quote, StudyQuote)
    assert quote.cases == 6
    assert quote.parameters == ["e", "h"]
    assert client.studies() == []  # a dry run creates nothing

    seen: list[tuple[str, float]] = []
    study = client.create_study(
        fmu_paths["bouncing_ball"], design=GRID, base=BASE, summary=["final", "max"]
    )
    assert isinstance(study, Study)
    assert study.counts.total == 6 and study.parameters == ["e", "h"]
    study.wait(timeout=300, progress=lambda state: seen.append((state.status, state.progress)))

    assert study.status == "succeeded", study.raw
    failures = [(case.index, case.error) for case in study.cases(status="failed")]
    assert (study.counts.succeeded, study.counts.failed) == (6, 0), failures
    assert seen[-1] == ("succeeded", 1.0)
    assert [listed.id for listed in client.studies()] == [study.id]
    assert client.study(study.id).status == "succeeded"

    cases = list(study.cases())
    assert all(isinstance(case, StudyCase) for case in cases)
    assert [case.index for case in cases] == list(range(6))
    assert [case.parameters for case in cases] == GRID_CASES
    assert all(set(case.summary) == {"final(h)", "max(h)", "final(v)", "max(v)"} for case in cases)

    rows = study.summary(as_frame=False)
    assert [row["index"] for row in rows] == list(range(6))
    assert [(row["e"], row["h"]) for row in rows] == [(c["e"], c["h"]) for c in GRID_CASES]
    assert [row["final(h)"] for row in rows] == [case.summary["final(h)"] for case in cases]
    assert [row["max(h)"] for row in rows] == [case.summary["max(h)"] for case in cases]
    frame = study.summary()  # pandas is importable here: a DataFrame
    assert isinstance(frame, pd.DataFrame)
    assert frame["max(h)"].tolist() == [row["max(h)"] for row in rows]

    parquet = study.download_summary(tmp_path / "summary.parquet")
    assert parquet == tmp_path / "summary.parquet"
    table = pq.read_table(parquet).to_pandas()
    assert table["final(v)"].tolist() == pytest.approx([row["final(v)"] for row in rows])
    # A case's trace is the run of the same model with the same start values.
    fourth = study.case_result(4)
    assert isinstance(fourth, Result) and fourth.columns == ["time", "h", "v"]
    run = client.simulate(study.model, **BASE, start_values={"e": 0.8, "h": 1.5})
    assert fourth.columns == run.columns and len(fourth) == len(run)
    for mine, theirs in zip(fourth.data, run.data, strict=True):
        assert mine == pytest.approx(theirs, rel=1e-9, abs=1e-12)
    assert cases[4].summary["final(h)"] == pytest.approx(fourth["h"][-1], rel=1e-12)
    assert cases[4].summary["max(h)"] == pytest.approx(max(fourth["h"]), rel=1e-12)

    study.download_case_result(4, tmp_path / "case4.csv")
    header, *lines = list(csv.reader(io.StringIO((tmp_path / "case4.csv").read_text())))
    assert header == ["time", "h", "v"] and len(lines) == len(fourth)


@pytest.mark.live
def test_a_design_the_model_cannot_take_is_refused_naming_the_field(gateway, fmu_paths):
    model = gateway.client.upload_model(fmu_paths["bouncing_ball"])
    with pytest.raises(ValidationError) as refused:
        gateway.client.create_study(
            model, design={"kind": "grid", "parameters": {"e": {"start": 0, "stop": 1, "num": 0}}}
        )
    assert "design.parameters.e.num" in refused.value.errors
    assert gateway.client.studies() == []


@pytest.mark.live
def test_fmugw_study_create_waits_and_writes_the_summary_then_status_and_summary(
    gateway, fmu_paths, tmp_path
):
    model = gateway.client.upload_model(fmu_paths["bouncing_ball"])
    out = tmp_path / "summary.csv"
    created = gateway.cli(
        "study",
        "create",
        model.id,
        "--grid",
        "e=0.5:0.9:3",
        "--stop-time",
        "1",
        "--output",
        "h",
        "--stat",
        "max",
        "--stat",
        "final",
        "--wait",
        "--progress",
        "-o",
        str(out),
        timeout=300,
    )
    assert created.returncode == 0, created.stderr
    assert "100%" in created.stderr and "3 of 3 cases succeeded" in created.stderr
    (study,) = gateway.client.studies()
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [float(row["e"]) for row in rows] == [0.5, 0.7, 0.9]
    assert all(row["status"] == "succeeded" for row in rows)
    assert [float(row["max(h)"]) for row in rows] == [
        case.summary["max(h)"] for case in study.cases()
    ]

    status = gateway.cli("study", "status", study.id)
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith(f"{study.id} succeeded 100% 3/3 cases")
    summary = gateway.cli("study", "summary", study.id)
    assert summary.returncode == 0 and summary.stdout == out.read_text()
    dry = gateway.cli("study", "create", model.id, "--kind", "lhs", "--samples", "8",
                      "--param", "e=0.5:0.9", "--dry-run")  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("8 cases, ")
    bad = gateway.cli("study", "create", model.id, "--grid", "nope=1,2")
    assert bad.returncode == 1 and "design.parameters.nope" in bad.stderr

    study.delete()
    with pytest.raises(NotFound):
        study.refresh()
    assert gateway.client.studies() == []


@pytest.mark.live
@pytest.mark.stripe
def test_a_study_without_credit_is_paid_once_through_checkout_then_runs(
    paid_gateway, fake_stripe, webhook, fmu_paths
):
    gateway = paid_gateway
    model = gateway.client.upload_model(fmu_paths["bouncing_ball"])
    notices: list[PaymentRequired] = []

    def pay(checkout_url: str) -> None:
        try:
            payment = Payment.objects.get(checkout_url=checkout_url)
            session = payment.stripe_checkout_session_id
            assert pay_on_checkout(fake_stripe, webhook, session, to=gateway.url) == 200
        finally:
            connection.close()  # this thread's own database connection

    def pay_a_moment_later(required: PaymentRequired) -> None:
        notices.append(required)
        threading.Timer(1.0, pay, args=(required.checkout_url,)).start()

    # Below the smallest card payment there is no Checkout: even a waiting client stops.
    small = {"kind": "grid", "parameters": {"e": [0.6, 0.7, 0.8, 0.9]}}
    with pytest.raises(PaymentRequired) as too_small:
        gateway.client.create_study(
            model, design=small, base={"stop_time": 1.0}, on_payment_required="wait"
        )
    assert too_small.value.payment_id is None and too_small.value.cases == 4
    assert notices == []

    axis = {"start": 0.5, "stop": 0.9, "num": 5}
    design = {"kind": "grid", "parameters": {"e": axis, "h": axis}}
    with pytest.raises(PaymentRequired) as refused:
        gateway.client.create_study(model, design=design, base={"stop_time": 0.5})
    assert refused.value.cases == 25 and refused.value.checkout_url

    study = gateway.client.create_study(
        model,
        design=design,
        base={"stop_time": 0.5},
        on_payment_required="wait",
        checkout_notice=pay_a_moment_later,
        payment_poll_interval=0.2,
        payment_timeout=60,
    )

    (required,) = notices
    assert (required.cases, required.total_cents) == (25, study.price.cents)
    assert required.price is not None and required.price.amount == Decimal("0.02")  # a case
    assert study.price.amount > Decimal(0)
    assert study.charge["kind"] == "token"
    assert study.wait(timeout=300).status == "succeeded"
    assert study.counts.succeeded == 25
    assert len(gateway.client.studies()) == 1  # one payment, one study
