"""The portal's model and run pages, as a signed-in engineer uses them in a browser."""

import json
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from accounts.tests.factories import UserFactory
from billing.services import PaymentRequired
from simulations import services
from simulations.forms import SimulationRunForm
from simulations.models import Model, Simulation, SimulationStatus
from simulations.tests.factories import upload_model

pytestmark = pytest.mark.django_db


@pytest.fixture
def engineer(user):
    """The signed-in engineer: `browser` is logged in as them, `bouncing_ball` is theirs."""
    return user


def queue_run(owner, model: Model, **request) -> Simulation:
    simulation, _created = services.simulation_create(owner=owner, model=model, request=request)
    return simulation


def start_value_field(model: Model, variable_name: str) -> str:
    """The run form's field name for a variable's start value (the form numbers them)."""
    form = SimulationRunForm(model=model)
    return next(
        name for name in form.start_value_field_names if form.fields[name].label == variable_name
    )


def page_text(response) -> str:
    return response.content.decode()


# --- access ------------------------------------------------------------------------------------


def test_visitors_who_are_not_signed_in_are_sent_to_log_in():
    for url in (reverse("portal:models"), reverse("portal:runs")):
        response = Client().get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))


def test_another_accounts_model_and_run_pages_are_not_found(browser, fmu_paths):
    stranger = UserFactory()
    their_model = upload_model(stranger, fmu_paths["bouncing_ball"])
    their_run = queue_run(stranger, their_model)

    for url in (
        reverse("portal:model", args=[their_model.pk]),
        reverse("portal:model-run", args=[their_model.pk]),
        reverse("portal:run", args=[their_run.pk]),
    ):
        assert browser.get(url).status_code == 404, url
    for url in (
        reverse("portal:model-run", args=[their_model.pk]),
        reverse("portal:model-delete", args=[their_model.pk]),
        reverse("portal:run-cancel", args=[their_run.pk]),
    ):
        assert browser.post(url, {"stop_time": "1"}).status_code == 404, url

    assert Model.objects.filter(pk=their_model.pk).exists()
    their_run.refresh_from_db()
    assert their_run.status == SimulationStatus.QUEUED
    assert Simulation.objects.count() == 1
    listed = page_text(browser.get(reverse("portal:models"))) + page_text(
        browser.get(reverse("portal:runs"))
    )
    assert str(their_model.pk) not in listed
    assert str(their_run.pk) not in listed


# --- models ------------------------------------------------------------------------------------


def test_an_uploaded_fmu_is_listed_on_the_models_page(browser, engineer, fmu_paths):
    with fmu_paths["bouncing_ball"].open("rb") as handle:
        response = browser.post(reverse("portal:models"), {"file": handle})

    model = Model.objects.get(owner=engineer)
    assert response.status_code == 302
    assert response["Location"] == reverse("portal:model", args=[model.pk])
    listing = page_text(browser.get(reverse("portal:models")))
    assert reverse("portal:model", args=[model.pk]) in listing
    assert "bouncing_ball" in listing
    assert "2.0" in listing
    assert "CoSimulation" in listing
    assert "<td>6</td>" in listing  # variables


def test_the_upload_form_accepts_fmu_files_and_labels_its_input(browser):
    page = page_text(browser.get(reverse("portal:models")))
    assert 'enctype="multipart/form-data"' in page
    assert re.search(r'<input type="file" name="file" id="id_file" accept=".fmu"', page)
    assert '<label for="id_file">' in page


def test_a_file_that_is_not_an_fmu_is_refused_on_the_page_and_nothing_is_stored(
    browser, media_root
):
    text_file = SimpleUploadedFile("notes.fmu", b"this is not a zip archive\n" * 10)

    response = browser.post(reverse("portal:models"), {"file": text_file})

    assert response.status_code == 400
    page = page_text(response)
    assert "The upload was refused." in page
    assert "ZIP" in page or "zip" in page
    assert Model.objects.count() == 0
    assert not (media_root / "fmus").exists()


def test_an_upload_over_the_size_limit_is_refused_on_the_page(browser, settings):
    settings.FMU_MAX_UPLOAD_BYTES = 1024 * 1024
    too_big = SimpleUploadedFile("huge.fmu", b"\0" * (1024 * 1024 + 4096))

    response = browser.post(reverse("portal:models"), {"file": too_big})

    assert response.status_code == 413
    assert "larger than the 1 MB limit" in page_text(response)
    assert Model.objects.count() == 0


def test_an_upload_without_the_csrf_token_is_forbidden(engineer, fmu_paths):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(engineer)

    with fmu_paths["bouncing_ball"].open("rb") as handle:
        response = browser.post(reverse("portal:models"), {"file": handle})

    assert response.status_code == 403
    assert Model.objects.count() == 0


def test_submitting_the_upload_form_without_a_file_asks_for_one(browser):
    response = browser.post(reverse("portal:models"), {})
    assert response.status_code == 400
    assert "This field is required." in page_text(response)


def test_the_model_page_summarises_the_fmu_and_lists_its_variables(browser, bouncing_ball):
    response = browser.get(reverse("portal:model", args=[bouncing_ball.pk]))

    assert response.status_code == 200
    page = page_text(response)
    assert "<h1>bouncing_ball</h1>" in page
    assert bouncing_ball.guid in page
    assert "CoSimulation, ModelExchange" in page or "ModelExchange, CoSimulation" in page
    assert "linux64" in page
    assert "stop 3.0 s" in page
    for name in ("h", "v", "g", "e", "der(h)"):
        assert f"<code>{name}</code>" in page
    assert "restitution" in page
    assert reverse("portal:model-run", args=[bouncing_ball.pk]) in page


def test_the_variables_can_be_filtered_by_causality(browser, bouncing_ball):
    url = reverse("portal:model", args=[bouncing_ball.pk])

    page = page_text(browser.get(url, {"causality": "parameter"}))

    assert "<code>g</code>" in page
    assert "<code>e</code>" in page
    assert "<code>h</code>" not in page
    assert '<option value="parameter" selected>' in page


def test_a_model_can_be_deleted(browser, bouncing_ball):
    response = browser.post(reverse("portal:model-delete", args=[bouncing_ball.pk]))

    assert response.status_code == 302
    assert response["Location"] == reverse("portal:models")
    assert not Model.objects.filter(pk=bouncing_ball.pk).exists()


def test_a_model_with_a_queued_run_is_not_deleted_and_the_page_says_why(
    browser, engineer, bouncing_ball
):
    queue_run(engineer, bouncing_ball)

    response = browser.post(reverse("portal:model-delete", args=[bouncing_ball.pk]), follow=True)

    assert Model.objects.filter(pk=bouncing_ball.pk).exists()
    assert "cancel them first" in page_text(response)


# --- the run form --------------------------------------------------------------------------------


def test_the_run_form_offers_the_experiment_start_values_and_outputs(browser, bouncing_ball):
    page = page_text(browser.get(reverse("portal:model-run", args=[bouncing_ball.pk])))

    assert 'name="stop_time"' in page
    assert 'value="3.0"' in page  # the default experiment's stop time
    assert '<option value="CoSimulation" selected>' in page
    # Parameters and states take start values; derivatives do not.
    form = SimulationRunForm(model=bouncing_ball)
    assert [form.fields[name].label for name in form.start_value_field_names] == [
        "h",
        "v",
        "g",
        "e",
    ]
    assert '<option value="h" selected>' in page  # outputs are chosen by default
    assert '<option value="der(h)">' in page
    for field in ("id_stop_time", "id_output", f"id_{start_value_field(bouncing_ball, 'e')}"):
        assert f'<label for="{field}">' in page


def test_the_run_form_queues_a_run_with_the_stop_time_and_start_values(
    browser, engineer, bouncing_ball
):
    response = browser.post(
        reverse("portal:model-run", args=[bouncing_ball.pk]),
        {
            "fmi_type": "ModelExchange",
            "stop_time": "1.5",
            "output_interval": "0.05",
            start_value_field(bouncing_ball, "e"): "0.5",
            start_value_field(bouncing_ball, "h"): "2",
            "output": ["h", "v"],
        },
    )

    simulation = Simulation.objects.get(owner=engineer)
    assert response.status_code == 302
    assert response["Location"] == reverse("portal:run", args=[simulation.pk])
    assert simulation.status == SimulationStatus.QUEUED
    assert simulation.model == bouncing_ball
    assert simulation.params["fmi_type"] == "ModelExchange"
    assert simulation.params["stop_time"] == 1.5
    assert simulation.params["output_interval"] == 0.05
    assert simulation.params["start_values"] == {"e": 0.5, "h": 2.0}
    assert simulation.params["output"] == ["h", "v"]


def test_fields_left_empty_keep_the_models_defaults(browser, engineer, bouncing_ball):
    browser.post(reverse("portal:model-run", args=[bouncing_ball.pk]), {"fmi_type": "CoSimulation"})

    simulation = Simulation.objects.get(owner=engineer)
    assert simulation.params["stop_time"] == 3.0
    assert simulation.params["start_values"] == {}
    assert simulation.params["output"] is None


def test_a_request_the_model_cannot_run_shows_the_errors_on_the_form(
    browser, engineer, bouncing_ball
):
    response = browser.post(
        reverse("portal:model-run", args=[bouncing_ball.pk]),
        {"fmi_type": "CoSimulation", "start_time": "2", "stop_time": "1"},
    )

    assert response.status_code == 400
    page = page_text(response)
    assert "must be after start_time" in page
    assert 'value="1.0"' in page or 'value="1"' in page  # what was typed is kept
    assert not Simulation.objects.filter(owner=engineer).exists()


def test_a_start_value_that_is_not_a_number_is_refused(browser, engineer, bouncing_ball):
    response = browser.post(
        reverse("portal:model-run", args=[bouncing_ball.pk]),
        {"fmi_type": "CoSimulation", start_value_field(bouncing_ball, "g"): "heavy"},
    )

    assert response.status_code == 400
    assert "Enter a number." in page_text(response)
    assert not Simulation.objects.filter(owner=engineer).exists()


def test_a_run_that_must_be_paid_for_shows_the_checkout_link(
    browser, engineer, bouncing_ball, monkeypatch
):
    def payment_required(**_kwargs):
        raise PaymentRequired(
            "You have no credit: pay $1.00 for this run.",
            payment={"id": "pay_1", "checkout_url": "https://checkout.stripe.com/c/pay_1"},
            credit_packs_url="/pricing/",
        )

    monkeypatch.setattr(services, "simulation_create", payment_required)

    response = browser.post(
        reverse("portal:model-run", args=[bouncing_ball.pk]), {"fmi_type": "CoSimulation"}
    )

    assert response.status_code == 402
    page = page_text(response)
    assert "You have no credit: pay $1.00 for this run." in page
    assert 'href="https://checkout.stripe.com/c/pay_1"' in page
    assert 'href="/pricing/"' in page


# --- runs ----------------------------------------------------------------------------------------


def test_the_run_page_shows_the_status_and_the_live_parts(browser, engineer, bouncing_ball):
    simulation = queue_run(engineer, bouncing_ball, stop_time=2.0)

    response = browser.get(reverse("portal:run", args=[simulation.pk]))

    assert response.status_code == 200
    page = page_text(response)
    assert re.search(r'id="run-status"[^>]*>Queued</span>', page)
    assert '<progress id="run-progress" max="1" value="0.000">' in page
    assert 'id="plot"' in page
    assert re.search(r'<script src="/static/vendor/plotly\.min\.[0-9a-f]+\.js" defer>', page)
    assert re.search(r'<script src="/static/js/run_page\.[0-9a-f]+\.js" defer>', page)
    assert "reload it to see the latest state" in page
    assert reverse("portal:run-cancel", args=[simulation.pk]) in page
    config = json.loads(
        re.search(r'<script id="run-config" type="application/json">(.*?)</script>', page, re.S)[1]
    )
    assert config["status_url"] == f"/api/v1/simulations/{simulation.pk}"
    assert config["result_url"] == f"/api/v1/simulations/{simulation.pk}/result"
    assert config["columns"] == ["h", "v"]


def test_pages_have_no_inline_event_handlers_or_scripts(browser, engineer, bouncing_ball):
    simulation = queue_run(engineer, bouncing_ball)
    for url in (
        reverse("portal:models"),
        reverse("portal:model", args=[bouncing_ball.pk]),
        reverse("portal:model-run", args=[bouncing_ball.pk]),
        reverse("portal:runs"),
        reverse("portal:run", args=[simulation.pk]),
    ):
        page = page_text(browser.get(url))
        assert not re.search(r"\son[a-z]+=", page), url
        for script in re.findall(r"<script[^>]*>", page):
            assert "src=" in script or 'type="application/json"' in script, (url, script)


def test_cancelling_a_queued_run_marks_it_cancelled(browser, engineer, bouncing_ball):
    simulation = queue_run(engineer, bouncing_ball)

    response = browser.post(reverse("portal:run-cancel", args=[simulation.pk]), follow=True)

    simulation.refresh_from_db()
    assert simulation.status == SimulationStatus.CANCELLED
    page = page_text(response)
    assert "The run is cancelled." in page
    assert re.search(r'id="run-status"[^>]*>Cancelled</span>', page)
    assert re.search(r'<form[^>]*id="cancel-form"[^>]*hidden', page)


def test_cancelling_a_finished_run_says_it_has_finished(browser, engineer, bouncing_ball):
    simulation = queue_run(engineer, bouncing_ball)
    services.simulation_cancel(simulation=simulation)

    response = browser.post(reverse("portal:run-cancel", args=[simulation.pk]), follow=True)

    assert "already finished" in page_text(response)


def test_a_failed_run_shows_its_error_and_log_tail(browser, engineer, bouncing_ball):
    simulation = queue_run(engineer, bouncing_ball)
    Simulation.objects.filter(pk=simulation.pk).update(
        status=SimulationStatus.FAILED,
        error_code="model_crashed",
        error_message="The model crashed (signal 11).",
        log_tail="doStep: <bad pointer> & more",
    )

    page = page_text(browser.get(reverse("portal:run", args=[simulation.pk])))

    assert "model_crashed" in page
    assert "The model crashed (signal 11)." in page
    assert (
        '<pre id="run-log-tail" tabindex="0">doStep: &lt;bad pointer&gt; &amp; more</pre>' in page
    )


def test_the_runs_page_lists_the_engineers_runs_newest_first(browser, engineer, bouncing_ball):
    first = queue_run(engineer, bouncing_ball, stop_time=1.0)
    second = queue_run(engineer, bouncing_ball, stop_time=2.0)
    services.simulation_cancel(simulation=second)

    page = page_text(browser.get(reverse("portal:runs")))
    assert page.index(str(second.pk)) < page.index(str(first.pk))
    assert "Cancelled" in page

    queued_only = page_text(browser.get(reverse("portal:runs"), {"status": "queued"}))
    assert str(first.pk) in queued_only
    assert str(second.pk) not in queued_only


def test_a_succeeded_run_offers_its_csv_and_the_columns_to_plot(browser, engineer, bouncing_ball):
    simulation = queue_run(engineer, bouncing_ball, stop_time=1.0, output_interval=0.1)
    services.simulation_execute(simulation_id=simulation.pk)  # as the worker would
    simulation.refresh_from_db()
    assert simulation.status == SimulationStatus.SUCCEEDED, simulation.error_message

    page = page_text(browser.get(reverse("portal:run", args=[simulation.pk])))

    assert re.search(r'id="run-status"[^>]*>Succeeded</span>', page)
    csv_url = f"/api/v1/simulations/{simulation.pk}/result?format=csv"
    assert f'href="{csv_url}"' in page
    assert re.search(r'<section id="result" aria-labelledby="result-title"\s*>', page)
    config = json.loads(
        re.search(r'<script id="run-config" type="application/json">(.*?)</script>', page, re.S)[1]
    )
    assert config["status"] == "succeeded"
    assert config["columns"] == ["h", "v"]
    assert config["result_rows"] == simulation.result_rows
    # The page's own session may read the result it links to.
    result = browser.get(f"{config['result_url']}?format=json&variables=h")
    assert result.status_code == 200
    body = json.loads(b"".join(result.streaming_content))
    assert body["columns"] == ["time", "h"]
    assert len(body["data"]) == simulation.result_rows
