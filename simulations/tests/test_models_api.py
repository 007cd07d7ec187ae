import zipfile
from pathlib import Path

import pytest
from django.core.files.storage import default_storage

from accounts.tests.factories import UserFactory
from fmuengine.tests.fmus.handwritten import (
    BILLION_LAUGHS,
    DUMMY_BINARY,
    EVIL_DESCRIPTION,
    FMI2_BOUNCING_BALL,
    FMI2_ENTRIES,
    build_archive,
    build_fmu,
)
from simulations.models import Model
from testing.api import api_client_for, upload_fmu

pytestmark = pytest.mark.django_db

MODELS_URL = "/api/v1/models"


def stored_files(prefix: str = "fmus") -> list[str]:
    found: list[str] = []

    def walk(directory: str) -> None:
        if not default_storage.exists(directory):
            return
        folders, files = default_storage.listdir(directory)
        found.extend(f"{directory}/{name}" for name in files)
        for folder in folders:
            walk(f"{directory}/{folder}")

    walk(prefix)
    return found


def test_upload_summarises_the_model(api_client, fmu_paths):
    response = upload_fmu(api_client, fmu_paths["bouncing_ball"])
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["model_name"] == "bouncing_ball"
    assert body["fmi_version"] == "2.0"
    assert body["fmi_types"] == ["CoSimulation", "ModelExchange"]
    assert body["platforms"] == ["linux64"]
    assert body["default_experiment"]["stop_time"] == 3.0
    assert body["variables_count"] == 6
    assert len(body["sha256"]) == 64
    assert body["size"] == fmu_paths["bouncing_ball"].stat().st_size
    assert {"id", "guid", "generation_tool", "created_at"} <= body.keys()


def test_fmi3_upload(api_client, fmu_paths):
    body = upload_fmu(api_client, fmu_paths["bouncing_ball3"]).json()
    assert body["fmi_version"] == "3.0"
    assert body["platforms"] == ["x86_64-linux"]


def test_list_get_variables_and_delete(api_client, fmu_paths):
    model_id = upload_fmu(api_client, fmu_paths["bouncing_ball"]).json()["id"]
    listing = api_client.get(MODELS_URL).json()
    assert [item["id"] for item in listing["results"]] == [model_id]
    assert api_client.get(f"{MODELS_URL}/{model_id}").json()["id"] == model_id

    variables = api_client.get(f"{MODELS_URL}/{model_id}/variables").json()
    height = next(variable for variable in variables if variable["name"] == "h")
    assert height["causality"] == "output"
    assert height["variability"] == "continuous"
    assert height["start"] == "1"
    parameters = api_client.get(f"{MODELS_URL}/{model_id}/variables?causality=parameter").json()
    assert {variable["name"] for variable in parameters} == {"g", "e"}

    assert api_client.delete(f"{MODELS_URL}/{model_id}").status_code == 204
    assert api_client.get(f"{MODELS_URL}/{model_id}").status_code == 404


def test_the_same_file_is_stored_once_and_removed_with_its_last_model(
    fmu_paths, django_capture_on_commit_callbacks
):
    alice, bob = api_client_for(UserFactory()), api_client_for(UserFactory())
    first = upload_fmu(alice, fmu_paths["bouncing_ball"]).json()
    second = upload_fmu(bob, fmu_paths["bouncing_ball"]).json()
    assert first["id"] != second["id"]
    assert first["sha256"] == second["sha256"]
    assert len(stored_files()) == 1

    with django_capture_on_commit_callbacks(execute=True):
        assert alice.delete(f"{MODELS_URL}/{first['id']}").status_code == 204
    assert len(stored_files()) == 1
    with django_capture_on_commit_callbacks(execute=True):
        assert bob.delete(f"{MODELS_URL}/{second['id']}").status_code == 204
    assert stored_files() == []


def test_another_accounts_model_is_404_everywhere(fmu_paths):
    owner, stranger = api_client_for(UserFactory()), api_client_for(UserFactory())
    model_id = upload_fmu(owner, fmu_paths["bouncing_ball"]).json()["id"]
    for response in (
        stranger.get(f"{MODELS_URL}/{model_id}"),
        stranger.get(f"{MODELS_URL}/{model_id}/variables"),
        stranger.delete(f"{MODELS_URL}/{model_id}"),
    ):
        assert response.status_code == 404
        assert response["Content-Type"] == "application/problem+json"
    assert stranger.get(MODELS_URL).json()["results"] == []
    assert Model.objects.filter(pk=model_id).exists()


def zip_bomb(path: Path) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("modelDescription.xml", FMI2_BOUNCING_BALL)
        archive.writestr("binaries/linux64/BouncingBall.so", DUMMY_BINARY)
        with archive.open("resources/zeros.bin", "w", force_zip64=True) as entry:
            for _ in range(50):
                entry.write(bytes(1024**2))
    return path


BAD_UPLOADS = {
    "not a zip": (lambda tmp: _write(tmp / "x.fmu", b"just some text"), "not-a-zip", "ZIP"),
    "zip slip": (
        lambda tmp: build_fmu(
            tmp / "slip.fmu",
            {
                "modelDescription.xml": FMI2_BOUNCING_BALL,
                "binaries/linux64/BouncingBall.so": DUMMY_BINARY,
                "../evil.so": DUMMY_BINARY,
            },
        ),
        "unsafe-path",
        "../evil.so",
    ),
    "entity bomb": (
        lambda tmp: build_fmu(
            tmp / "laughs.fmu",
            {
                "modelDescription.xml": BILLION_LAUGHS,
                "binaries/linux64/BouncingBall.so": DUMMY_BINARY,
            },
        ),
        "xml-entities-forbidden",
        "",
    ),
    "wrong platform": (
        lambda tmp: build_fmu(
            tmp / "win.fmu",
            {
                "modelDescription.xml": FMI2_BOUNCING_BALL,
                "binaries/win64/BouncingBall.dll": DUMMY_BINARY,
            },
        ),
        "no-binary-for-platform",
        "win64",
    ),
    "zip bomb": (lambda tmp: zip_bomb(tmp / "bomb.fmu"), "zip-bomb", "resources/zeros.bin"),
    # Inspected as one file, extracted as the other (see fmuengine/tests/test_inspection.py).
    "dot-slash collision": (
        lambda tmp: build_archive(
            tmp / "dot.fmu", [*FMI2_ENTRIES, ("./modelDescription.xml", EVIL_DESCRIPTION)]
        ),
        "duplicate-entry",
        ("'modelDescription.xml'", "'./modelDescription.xml'"),
    ),
    "letter case collision": (
        lambda tmp: build_archive(
            tmp / "case.fmu", [("Binaries/linux64/BouncingBall.so", b"other"), *FMI2_ENTRIES]
        ),
        "duplicate-entry",
        ("'Binaries/linux64/BouncingBall.so'", "'binaries/linux64/BouncingBall.so'"),
    ),
}


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("case", BAD_UPLOADS, ids=list(BAD_UPLOADS))
def test_bad_uploads_are_refused_naming_the_problem_and_store_nothing(api_client, tmp_path, case):
    make, code, named = BAD_UPLOADS[case]
    response = upload_fmu(api_client, make(tmp_path))
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["type"].endswith(code)
    for name in (named,) if isinstance(named, str) else named:
        assert name in body["detail"]
    assert stored_files() == []
    assert not Model.objects.exists()


def test_an_upload_over_the_size_cap_is_413(api_client, fmu_paths, settings):
    settings.FMU_MAX_UPLOAD_BYTES = 1024
    response = upload_fmu(api_client, fmu_paths["bouncing_ball"])
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]
    assert stored_files() == []


def test_an_upload_without_a_file_is_400_naming_the_field(api_client):
    response = api_client.post(MODELS_URL, {}, format="multipart")
    assert response.status_code == 400
    assert "file" in response.json()["errors"]
