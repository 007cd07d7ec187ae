"""The portal's study pages, as a signed-in engineer uses them: the new-study form (and its
live price), the study page, the list, cancel and delete. They call the same services as
the API, so what the form makes is what the API would."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from accounts.tests.factories import UserFactory
from simulations.models import Study, StudyStatus
from simulations.services.study_execution import study_chunk_execute
from simulations.study_forms import StudyForm

pytestmark = pytest.mark.django_db


def row_prefix(model, name: str) -> str:
    """The form's prefix of a parameter's row (the form numbers them)."""
    form = StudyForm(model=model)
    return next(row.prefix for row in form.parameter_rows if row.variable.name == name)


def grid_form(model, **extra) -> dict:
    """A grid of e (listed) and h (a range of 3 points): 6 cases of 1 s."""
    e, h = row_prefix(model, "e"), row_prefix(model, "h")
    return {
        "kind": "grid",
        "fmi_type": "CoSimulation",
        "stop_time": "1",
        "output_interval": "0.1",
        "output": ["h", "v"],
        "statistics": ["final", "max"],
        f"{e}_vary": "on",
        f"{e}_values": "0.5, 0.8",
        f"{h}_vary": "on",
        f"{h}_low": "1",
        f"{h}_high": "2",
        f"{h}_num": "3",
        **extra,
    }


def test_the_model_page_links_to_a_new_study_form_listing_its_settable_variables(
    browser, bouncing_ball
):
    model_page = browser.get(reverse("portal:model", args=[bouncing_ball.pk])).content.decode()
    new_study = reverse("portal:model-study", args=[bouncing_ball.pk])
    assert f'href="{new_study}"' in model_page
    page = browser.get(new_study)
    assert page.status_code == 200
    text = page.content.decode()
    for name in ("e", "g", "h", "v"):
        assert f"Vary <code>{name}</code>" in text
    assert "Vary <code>der(h)</code>" not in text  # not settable
    assert "start 0.7" in text  # e's start value is shown
    assert 'href="/portal/studies/"' in text  # the header's Studies link


def test_the_live_price_is_the_dry_run_and_creates_nothing(browser, bouncing_ball, settings):
    settings.STUDY_CASE_PRICE_CENTS = 5
    url = reverse("portal:model-study", args=[bouncing_ball.pk]) + "?dry_run=1"
    quote = browser.post(url, grid_form(bouncing_ball))
    assert quote.status_code == 200, quote.content
    body = quote.json()
    assert body["cases"] == 6
    assert body["price"]["cents"] == 30
    assert body["parameters"] == ["h", "e"]  # in the model's order
    h = row_prefix(bouncing_ball, "h")
    no_range = {f"{h}_low": "", f"{h}_high": "", f"{h}_num": ""}
    invalid = browser.post(url, grid_form(bouncing_ball, **no_range))
    assert invalid.status_code == 400
    assert any(name.startswith("design.parameters.h") for name in invalid.json()["errors"])
    assert not Study.objects.exists()


def test_a_grid_study_from_the_form_runs_and_its_page_shows_it(browser, bouncing_ball):
    response = browser.post(
        reverse("portal:model-study", args=[bouncing_ball.pk]), grid_form(bouncing_ball)
    )
    assert response.status_code == 302, response.content.decode()
    study = Study.objects.get()
    assert response["Location"] == reverse("portal:study", args=[study.pk])
    assert study.case_count == 6 and study.parameters == ["h", "e"]
    assert study.base["stop_time"] == 1.0 and study.base["output"] == ["h", "v"]
    assert sorted(
        (case["e"], case["h"]) for case in study.cases.values_list("values", flat=True)
    ) == sorted((e, h) for e in (0.5, 0.8) for h in (1.0, 1.5, 2.0))
    while not Study.objects.get(pk=study.pk).is_finished:
        study_chunk_execute(study_id=study.pk)

    page = browser.get(response["Location"])
    text = page.content.decode()
    assert page.status_code == 200
    assert re.search(r'id="study-status"[^>]*>Succeeded<', text)
    assert re.search(r'id="study-count-succeeded">6<', text)
    assert reverse("api-study-summary", args=[study.pk]) + "?format=parquet" in text
    assert "js/study_page." in text and "vendor/plotly.min." in text
    listing = browser.get(reverse("portal:studies")).content.decode()
    assert reverse("portal:study", args=[study.pk]) in listing
    # The page's script reads the same JSON as API callers, with the session.
    assert (
        browser.get(reverse("api-study-summary", args=[study.pk]) + "?format=json").status_code
        == 200
    )


def test_form_errors_are_shown_next_to_the_parameter_they_name(browser, bouncing_ball):
    h = row_prefix(bouncing_ball, "h")
    response = browser.post(
        reverse("portal:model-study", args=[bouncing_ball.pk]),
        grid_form(bouncing_ball, **{f"{h}_low": "", f"{h}_high": "", f"{h}_num": ""}),
    )
    assert response.status_code == 400
    text = response.content.decode()
    assert re.search(r'class="param has-errors" data-param="h"', text)
    nothing = browser.post(reverse("portal:model-study", args=[bouncing_ball.pk]), {"kind": "grid"})
    assert nothing.status_code == 400
    assert "Tick at least one parameter" in nothing.content.decode()
    assert not Study.objects.exists()


def test_cancel_and_delete_from_the_study_page(browser, bouncing_ball):
    browser.post(reverse("portal:model-study", args=[bouncing_ball.pk]), grid_form(bouncing_ball))
    study = Study.objects.get()
    response = browser.post(reverse("portal:study-cancel", args=[study.pk]), follow=True)
    assert "Cancelling" in response.content.decode()
    assert Study.objects.get().status == StudyStatus.CANCELLED
    again = browser.post(reverse("portal:study-cancel", args=[study.pk]), follow=True)
    assert "already finished" in again.content.decode()
    gone = browser.post(reverse("portal:study-delete", args=[study.pk]))
    assert gone["Location"] == reverse("portal:studies")
    assert not Study.objects.exists()


def test_another_accounts_study_pages_are_not_found(browser, fmu_paths):
    from simulations.tests.factories import upload_model

    stranger = UserFactory()
    theirs = upload_model(stranger, fmu_paths["bouncing_ball"])
    stranger_browser = Client()
    stranger_browser.force_login(stranger)
    stranger_browser.post(reverse("portal:model-study", args=[theirs.pk]), grid_form(theirs))
    study = Study.objects.get()
    assert browser.get(reverse("portal:model-study", args=[theirs.pk])).status_code == 404
    for url in (reverse("portal:study", args=[study.pk]),):
        assert browser.get(url).status_code == 404
    assert browser.post(reverse("portal:study-cancel", args=[study.pk])).status_code == 404
    assert browser.post(reverse("portal:study-delete", args=[study.pk])).status_code == 404
    assert Study.objects.get().status == StudyStatus.QUEUED


@pytest.mark.stripe
def test_a_study_without_credit_offers_to_pay_for_the_whole_study_once(
    browser, bouncing_ball, billing_on, settings
):
    settings.STUDY_CASE_PRICE_CENTS = 25
    url = reverse("portal:model-study", args=[bouncing_ball.pk])
    quote = browser.post(url + "?dry_run=1", grid_form(bouncing_ball))
    assert quote.status_code == 200 and quote.json()["price"]["amount"] == "1.50"
    assert billing_on.sessions == {}  # the live price asks Stripe for nothing

    response = browser.post(url, grid_form(bouncing_ball))

    assert response.status_code == 402
    text = response.content.decode()
    assert "6 cases" in text and "$1.50" in text
    (session,) = billing_on.sessions.values()
    assert session["amount_total"] == 150
    assert f'href="{session["url"]}"' in text and "Pay for this study" in text
    assert not Study.objects.exists()


@pytest.mark.parametrize(
    ("kind", "rows", "design"),
    [
        (
            "lhs",
            {"e": {"low": "0.5", "high": "0.9"}, "g": {"low": "5", "high": "15"}},
            {"e": {"low": 0.5, "high": 0.9}, "g": {"low": 5.0, "high": 15.0}},
        ),
        (
            "monte_carlo",
            {
                "e": {"distribution": "normal", "mean": "0.7", "std": "0.05", "low": "0.5"},
                "g": {"distribution": "lognormal", "mean": "2", "std": "0.1"},
                "h": {"distribution": "uniform", "low": "1", "high": "2"},
            },
            {
                "e": {"distribution": "normal", "mean": 0.7, "std": 0.05, "low": 0.5},
                "g": {"distribution": "lognormal", "mean": 2.0, "sigma": 0.1},
                "h": {"distribution": "uniform", "low": 1.0, "high": 2.0},
            },
        ),
    ],
)
def test_sampled_designs_from_the_form(browser, bouncing_ball, kind, rows, design):
    form = {"kind": kind, "fmi_type": "CoSimulation", "samples": "16", "seed": "7"}
    for name, fields in rows.items():
        prefix = row_prefix(bouncing_ball, name)
        form[f"{prefix}_vary"] = "on"
        form.update({f"{prefix}_{role}": value for role, value in fields.items()})
    response = browser.post(reverse("portal:model-study", args=[bouncing_ball.pk]), form)
    assert response.status_code == 302, response.content.decode()
    study = Study.objects.get()
    assert study.case_count == 16
    assert (study.design["kind"], study.design["seed"], study.design["samples"]) == (kind, 7, 16)
    assert study.design["parameters"] == design
    values = list(study.cases.values_list("values", flat=True))
    for name, spec in design.items():
        drawn = [case[name] for case in values]
        assert len(set(drawn)) == 16  # every case its own draw
        if "high" in spec:
            assert all(spec["low"] <= value <= spec["high"] for value in drawn)
