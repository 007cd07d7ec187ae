"""FMUs and results on S3-compatible storage (moto's server), shared by every process.

Acceptance of the object-storage issue: (1) web A, web B and a worker, each with its own
empty MEDIA_ROOT, share one bucket and give the same bytes as local storage; (2) a 200 MB
upload and a 1,000,000-row download keep the serving process's memory flat; (3) one object
per content, removed with its last model; (4) storage stopped: /readyz and uploads say 503
and no row points at a missing object.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import zipfile
from pathlib import Path

import pytest
import requests

from accounts.tests.factories import UserFactory
from simulations import services
from simulations.models import Model, Simulation
from simulations.services import runs
from simulations.tests.factories import run_with_result
from testing.api import (
    api_client_for,
    bearer_headers,
    upload_fmu,
    upload_over_http,
    uploaded_model_id,
    wait_for_run,
)
from testing.processes import PeakMemory, gunicorn_worker

MEGABYTE = 1024 * 1024
MODELS_URL = "/api/v1/models"
SIMULATIONS_URL = "/api/v1/simulations"


def files_under(directory: Path) -> list[Path]:
    return [path for path in directory.rglob("*") if path.is_file()]


# --- (3) content addressing --------------------------------------------------------------------


@pytest.mark.s3
@pytest.mark.django_db
def test_two_owners_of_one_fmu_share_one_object_until_both_delete_it(
    s3_storage, fmu_paths, django_capture_on_commit_callbacks
):
    alice, bob = api_client_for(UserFactory()), api_client_for(UserFactory())
    first = upload_fmu(alice, fmu_paths["bouncing_ball"]).json()
    second = upload_fmu(bob, fmu_paths["bouncing_ball"]).json()
    assert first["id"] != second["id"]
    sha = hashlib.sha256(fmu_paths["bouncing_ball"].read_bytes()).hexdigest()
    assert first["sha256"] == second["sha256"] == sha
    expected_key = f"fmus/{sha[:2]}/{sha}.fmu"
    assert s3_storage.object_keys("fmus/") == [expected_key]
    assert s3_storage.read(expected_key) == fmu_paths["bouncing_ball"].read_bytes()

    with django_capture_on_commit_callbacks(execute=True):
        assert alice.delete(f"{MODELS_URL}/{first['id']}").status_code == 204
    assert s3_storage.object_keys("fmus/") == [expected_key]  # Bob's model still uses it

    with django_capture_on_commit_callbacks(execute=True):
        assert bob.delete(f"{MODELS_URL}/{second['id']}").status_code == 204
    assert s3_storage.object_keys("fmus/") == []


# --- (1) web A, web B and a worker share the bucket ----------------------------------------------


def local_reference_result(owner, fmu_path: Path, monkeypatch) -> dict[str, bytes]:
    """The same run on local storage, executed here as the worker would: CSV and JSON bytes."""
    monkeypatch.setattr(runs, "_enqueue", lambda simulation_id: None)
    client = api_client_for(owner)
    model_id = upload_fmu(client, fmu_path).json()["id"]
    run = client.post(SIMULATIONS_URL, {"model": model_id}, format="json").json()
    services.simulation_execute(simulation_id=run["id"])
    downloads = {}
    for result_format in ("csv", "json"):
        response = client.get(f"{SIMULATIONS_URL}/{run['id']}/result?format={result_format}")
        assert response.status_code == 200
        # The view's StreamingHttpResponse; django-stubs type a test client's as HttpResponse.
        downloads[result_format] = b"".join(response.streaming_content)  # type: ignore[attr-defined]
    return downloads


@pytest.mark.live
@pytest.mark.s3
@pytest.mark.django_db(transaction=True)
def test_uploaded_on_a_run_by_the_worker_downloaded_on_b_same_bytes_as_local(
    live_servers, live_workers, redis_broker_url, s3_bucket, fmu_paths, tmp_path, monkeypatch
):
    owner = UserFactory()
    fmu = fmu_paths["bouncing_ball"]
    reference = local_reference_result(owner, fmu, monkeypatch)

    media = {name: tmp_path / f"media-{name}" for name in ("a", "b", "worker")}
    for directory in media.values():
        directory.mkdir()
    queue = {"CELERY_BROKER_URL": redis_broker_url}
    (web_a,) = live_servers(1, MEDIA_ROOT=str(media["a"]), **queue, **s3_bucket.environment())
    # B is configured the way `fly storage create` names things (BUCKET_NAME, AWS_REGION, ...).
    (web_b,) = live_servers(
        1, MEDIA_ROOT=str(media["b"]), **queue, **s3_bucket.tigris_environment()
    )
    live_workers(concurrency=1, MEDIA_ROOT=str(media["worker"]), **queue, **s3_bucket.environment())
    headers = bearer_headers(owner)

    uploaded = upload_over_http(web_a.url, fmu, headers=headers)
    assert uploaded.status_code == 201, uploaded.text
    started = requests.post(
        f"{web_a.url}{SIMULATIONS_URL}",
        json={"model": uploaded.json()["id"]},
        headers=headers,
        timeout=30,
    )
    assert started.status_code == 202, started.text
    run = wait_for_run(web_b.url, started.json()["id"], headers=headers, timeout=90)
    assert run["status"] == "succeeded", run

    for result_format in ("csv", "json"):
        downloaded = requests.get(
            f"{web_b.url}{run['result_url']}?format={result_format}", headers=headers, timeout=60
        )
        assert downloaded.status_code == 200, downloaded.text
        assert downloaded.content == reference[result_format]

    sha = uploaded.json()["sha256"]
    assert s3_bucket.object_keys() == sorted(
        [f"fmus/{sha[:2]}/{sha}.fmu", f"results/{run['id']}.npy"]
    )
    for name, directory in media.items():
        assert files_under(directory) == [], f"{name} wrote to its own disk"


# --- (2) memory: a 200 MB upload and a 1,000,000-row download ------------------------------------

# Just under the 200 MB (MiB) upload cap, which counts the file alone; the multipart envelope
# around it fits in the request-size middleware's allowance.
BIG_FMU_BYTES = 200 * MEGABYTE - 256 * 1024


@pytest.fixture(scope="module")
def big_fmu(fmu_paths, tmp_path_factory) -> Path:
    """A valid small FMU plus an incompressible resources/ file: 200 MB that passes the checks.

    Random bytes, stored uncompressed, so the compression-ratio check sees a ratio of 1.
    """
    source = fmu_paths["bouncing_ball"]
    path = tmp_path_factory.mktemp("big-fmu") / "big.fmu"
    with zipfile.ZipFile(source) as small, zipfile.ZipFile(path, "w") as big:
        for entry in small.infolist():
            big.writestr(entry, small.read(entry))
        payload = zipfile.ZipInfo("resources/payload.bin")
        payload.compress_type = zipfile.ZIP_STORED
        overhead = source.stat().st_size + 1024  # headers and central directory, roughly
        remaining = BIG_FMU_BYTES - overhead
        with big.open(payload, "w", force_zip64=True) as out:
            while remaining > 0:
                block = os.urandom(min(8 * MEGABYTE, remaining))
                out.write(block)
                remaining -= len(block)
    size = path.stat().st_size
    assert 199 * MEGABYTE < size <= 200 * MEGABYTE
    return path


class MultipartFileBody:
    """A multipart/form-data body with one file, read from disk as it is sent.

    requests would otherwise build the whole 200 MB body in this process's memory first.
    """

    boundary = "fmugw-test-boundary-7f3a9c"

    def __init__(self, path: Path, field: str = "file") -> None:
        self.head = (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="{field}"; filename="{path.name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()
        self.path = path
        self.length = len(self.head) + path.stat().st_size + len(self.tail)

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        yield self.head
        with self.path.open("rb") as handle:
            while block := handle.read(MEGABYTE):
                yield block
        yield self.tail


@pytest.mark.live
@pytest.mark.s3
@pytest.mark.django_db(transaction=True)
def test_a_200_mb_upload_streams_to_the_bucket_in_flat_memory(
    live_servers, s3_bucket, fmu_paths, big_fmu, tmp_path
):
    media = tmp_path / "media"
    media.mkdir()
    (server,) = live_servers(1, MEDIA_ROOT=str(media), **s3_bucket.environment())
    headers = bearer_headers(UserFactory())

    # Warm up: imports, the S3 client and first-request allocations are not what we measure.
    assert (
        upload_over_http(server.url, fmu_paths["bouncing_ball3"], headers=headers).status_code
        == 201
    )
    worker = gunicorn_worker(server)
    baseline = worker.memory_info().rss

    body = MultipartFileBody(big_fmu)
    with PeakMemory(worker) as memory:
        response = requests.post(
            f"{server.url}{MODELS_URL}",
            data=body,
            headers={
                **headers,
                "Content-Type": body.content_type,
                "Content-Length": str(len(body)),
            },
            timeout=300,
        )
    assert response.status_code == 201, response.text
    growth = (memory.peak - baseline) / MEGABYTE
    print(f"200 MB upload to S3: serving process grew by {growth:.1f} MB")
    assert growth < 50, f"a 200 MB upload grew the serving process by {growth:.1f} MB"

    sha = response.json()["sha256"]
    key = f"fmus/{sha[:2]}/{sha}.fmu"
    assert s3_bucket.size(key) == big_fmu.stat().st_size
    digest = hashlib.sha256()
    with big_fmu.open("rb") as handle:
        while block := handle.read(8 * MEGABYTE):
            digest.update(block)
    assert sha == digest.hexdigest()
    assert files_under(media) == []


@pytest.mark.live
@pytest.mark.s3
@pytest.mark.django_db(transaction=True)
def test_a_million_row_result_streams_from_the_bucket_in_flat_memory(
    live_servers, s3_storage, tmp_path
):
    media = tmp_path / "media"
    media.mkdir()
    (server,) = live_servers(1, MEDIA_ROOT=str(media), **s3_storage.environment())
    owner = UserFactory()
    headers = bearer_headers(owner)
    small, big = run_with_result(owner, 1_000), run_with_result(owner, 1_000_000)
    assert s3_storage.size(big.result_name) > 20 * MEGABYTE  # really in the bucket
    url = f"{server.url}{SIMULATIONS_URL}/{{}}/result?format=csv"

    assert requests.get(url.format(small.pk), headers=headers, timeout=30).ok  # warm up
    worker = gunicorn_worker(server)
    baseline = worker.memory_info().rss

    lines = 0
    digest = hashlib.sha256()
    with (
        PeakMemory(worker) as memory,
        requests.get(url.format(big.pk), headers=headers, stream=True, timeout=300) as response,
    ):
        assert response.status_code == 200
        for chunk in response.iter_content(chunk_size=256 * 1024):
            lines += chunk.count(b"\n")
            digest.update(chunk)
    assert lines == 1_000_001  # header + one line per row
    growth = (memory.peak - baseline) / MEGABYTE
    print(f"1,000,000-row CSV from S3: serving process grew by {growth:.1f} MB")
    assert growth < 50, f"serving a 1,000,000-row CSV grew memory by {growth:.1f} MB"
    assert files_under(media) == []


# --- (4) storage down --------------------------------------------------------------------------


@pytest.fixture
def stoppable_s3_server():
    """A server of this test's own, so stopping it leaves the session's server alone."""
    from fmugateway.tests.s3_server import S3TestServer

    server = S3TestServer()
    server.start()
    yield server
    server.stop()


@pytest.mark.live
@pytest.mark.s3
@pytest.mark.django_db(transaction=True)
def test_with_storage_stopped_readyz_and_uploads_are_503_and_no_row_points_at_nothing(
    live_servers, stoppable_s3_server, fmu_paths, tmp_path
):
    bucket = stoppable_s3_server.create_bucket()
    media = tmp_path / "media"
    media.mkdir()
    (server,) = live_servers(1, MEDIA_ROOT=str(media), **bucket.environment())
    headers = bearer_headers(UserFactory())
    assert requests.get(f"{server.url}/readyz", timeout=30).status_code == 200
    kept = upload_over_http(server.url, fmu_paths["bouncing_ball"], headers=headers)
    assert kept.status_code == 201

    stoppable_s3_server.stop()

    ready = requests.get(f"{server.url}/readyz", timeout=30)
    assert ready.status_code == 503
    assert ready.headers["Content-Type"] == "application/problem+json"
    body = ready.json()
    assert "storage" in body["detail"]
    assert body["checks"]["storage"].startswith("error")
    assert body["checks"]["database"] == "ok"

    # A new file, and the file already stored: neither can be checked or stored now.
    for fmu in (fmu_paths["bouncing_ball3"], fmu_paths["bouncing_ball"]):
        started = time.monotonic()
        refused = upload_over_http(server.url, fmu, headers=headers)
        assert refused.status_code == 503, refused.text
        assert refused.headers["Content-Type"] == "application/problem+json"
        problem = refused.json()
        assert problem["status"] == 503
        assert problem["type"].endswith("/storage-unavailable")
        assert "storage" in problem["detail"].lower()
        assert time.monotonic() - started < 20  # fails fast, not after minutes of retries
    assert Model.objects.count() == 1

    stoppable_s3_server.start()  # same port, same buckets
    for model in Model.objects.all():
        assert bucket.size(model.storage_name) == model.size
    assert requests.get(f"{server.url}/readyz", timeout=30).status_code == 200
    assert files_under(media) == []


@pytest.fixture
def unreachable_storage(settings):
    """The default storage on a bucket whose server is not listening."""
    from fmugateway.tests.live_server import free_port
    from fmugateway.tests.s3_server import ACCESS_KEY, REGION, SECRET_KEY

    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "core.object_storage.ObjectStorage",
            "OPTIONS": {
                "bucket_name": "nowhere",
                "endpoint_url": f"http://127.0.0.1:{free_port()}",
                "access_key": ACCESS_KEY,
                "secret_key": SECRET_KEY,
                "region_name": REGION,
            },
        },
    }


@pytest.mark.django_db
def test_the_upload_page_says_storage_is_unavailable_and_stores_nothing(
    unreachable_storage, fmu_paths
):
    from django.test import Client

    browser = Client()
    browser.force_login(UserFactory())
    with fmu_paths["bouncing_ball"].open("rb") as handle:
        page = browser.post("/portal/models/", {"file": handle})
    assert page.status_code == 503
    assert "File storage is unavailable" in page.content.decode()
    assert Model.objects.count() == 0


@pytest.mark.s3
@pytest.mark.django_db
def test_a_run_whose_fmu_cannot_be_fetched_fails_as_our_fault_without_a_result(
    s3_storage, fmu_paths, settings, monkeypatch
):
    monkeypatch.setattr(runs, "_enqueue", lambda simulation_id: None)
    client = api_client_for(UserFactory())
    model_id = upload_fmu(client, fmu_paths["bouncing_ball"]).json()["id"]
    run_id = client.post(SIMULATIONS_URL, {"model": model_id}, format="json").json()["id"]
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            **settings.STORAGES["default"],
            "OPTIONS": {**s3_storage.storage_options(), "bucket_name": "no-such-bucket"},
        },
    }
    services.simulation_execute(simulation_id=run_id)
    run = client.get(f"{SIMULATIONS_URL}/{run_id}").json()
    assert run["status"] == "failed"
    assert run["error"]["code"] == "sandbox_failed"
    assert run["result_url"] is None and run["result_expires_at"] is None


@pytest.mark.s3
def test_the_object_storage_backend_can_be_pickled(s3_bucket):
    import pickle

    from core.object_storage import ObjectStorage

    backend = ObjectStorage(**s3_bucket.storage_options())
    backend.save("probe.txt", io.BytesIO(b"ok"))
    copy = pickle.loads(pickle.dumps(backend))  # noqa: S301 - our own bytes
    with copy.open("probe.txt") as handle:
        assert handle.read() == b"ok"


@pytest.mark.parametrize("backend", ["local", "s3"])
@pytest.mark.django_db
def test_storing_a_file_copies_it_and_leaves_the_callers_file_alone(
    backend, request, fmu_paths, tmp_path
):
    from core.storage import open_stored_file, store_file

    if backend == "s3":
        request.getfixturevalue("s3_storage")
    source = tmp_path / "model.fmu"
    source.write_bytes(fmu_paths["bouncing_ball"].read_bytes())
    assert store_file(name="fmus/test/model.fmu", path=source) == "fmus/test/model.fmu"
    assert source.read_bytes() == fmu_paths["bouncing_ball"].read_bytes()
    with open_stored_file(name="fmus/test/model.fmu") as stored:
        assert stored.read() == source.read_bytes()


@pytest.mark.parametrize("backend", ["local", "s3"])
@pytest.mark.django_db
def test_only_local_storage_offers_a_stored_file_in_place(backend, request, fmu_paths):
    from core.storage import store_file, stored_file_local_path

    if backend == "s3":
        request.getfixturevalue("s3_storage")
    store_file(name="fmus/test/model.fmu", path=fmu_paths["bouncing_ball"])

    in_place = stored_file_local_path(name="fmus/test/model.fmu")

    if backend == "local":
        assert in_place.read_bytes() == fmu_paths["bouncing_ball"].read_bytes()
    else:
        assert in_place is None
    assert stored_file_local_path(name="fmus/test/no-such.fmu") is None


@pytest.mark.django_db
def test_a_result_download_with_storage_down_is_503_before_any_row_is_sent(
    unreachable_storage,
):
    owner = UserFactory()
    run = Simulation.objects.create(
        owner=owner,
        model_name="m",
        params={},
        status="succeeded",
        result_name="results/somewhere.npy",
        result_rows=1,
        result_columns=["time"],
    )
    response = api_client_for(owner).get(f"{SIMULATIONS_URL}/{run.pk}/result?format=csv")
    assert response.status_code == 503
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["type"].endswith("/storage-unavailable")


@pytest.mark.s3
@pytest.mark.django_db
def test_objects_no_row_points_at_are_found_in_the_bucket_listing_and_deleted(
    s3_storage, fmu_paths
):
    from datetime import timedelta

    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage
    from django.utils import timezone

    owner = UserFactory()
    model = Model.objects.get(
        pk=uploaded_model_id(api_client_for(owner), fmu_paths["bouncing_ball"])
    )
    orphans = [f"fmus/cd/{'cd' * 32}.fmu", "results/00000000-0000-0000-0000-00000000000a.npy"]
    for name in orphans:
        default_storage.save(name, ContentFile(b"left behind"))

    # The bucket's clock cannot be turned back: sweep as if two hours had passed.
    deleted = services.storage_orphans_delete(now=timezone.now() + timedelta(hours=2))

    assert deleted == 2
    assert not any(default_storage.exists(name) for name in orphans)
    assert default_storage.exists(model.storage_name)
