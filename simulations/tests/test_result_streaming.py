"""A large result streams from storage: the serving process's memory stays flat."""

import threading
import time

import numpy as np
import psutil
import pytest
import requests
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from accounts.services import api_key_create
from accounts.tests.factories import UserFactory
from simulations.models import Simulation, SimulationStatus
from simulations.results import result_storage_name

MEGABYTE = 1024 * 1024


def stored_result(owner, rows: int) -> Simulation:
    """A finished run whose result (time and two outputs) is already in storage."""
    table = np.zeros(rows, dtype=[("time", "f8"), ("h", "f8"), ("v", "f8")])
    table["time"] = np.linspace(0, 100, rows)
    table["h"] = np.sin(table["time"])
    table["v"] = np.cos(table["time"])
    simulation = Simulation.objects.create(
        owner=owner,
        model=None,
        model_name="big",
        params={},
        status=SimulationStatus.SUCCEEDED,
        result_rows=rows,
        result_columns=["time", "h", "v"],
        result_units={"time": "s"},
    )
    import io

    buffer = io.BytesIO()
    np.save(buffer, table)
    simulation.result_name = default_storage.save(
        result_storage_name(simulation.pk), ContentFile(buffer.getvalue())
    )
    simulation.save()
    return simulation


class PeakMemory:
    """Samples the resident memory of a process tree's worker while a download runs."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self.peak = process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()


def gunicorn_worker(server) -> psutil.Process:
    (worker,) = psutil.Process(server.process.pid).children()
    return worker


@pytest.mark.django_db(transaction=True)
def test_a_million_row_csv_streams_in_flat_memory(live_servers):
    (server,) = live_servers(1)
    owner = UserFactory()
    _key, plaintext = api_key_create(user=owner)
    headers = {"Authorization": f"Bearer {plaintext}"}
    small, big = stored_result(owner, 1_000), stored_result(owner, 1_000_000)
    url = f"{server.url}/api/v1/simulations/{{}}/result?format=csv"

    # Warm up: imports and first-request allocations are not what we measure.
    assert requests.get(url.format(small.pk), headers=headers, timeout=30).ok
    worker = gunicorn_worker(server)
    baseline = worker.memory_info().rss

    lines = 0
    with (
        PeakMemory(worker) as memory,
        requests.get(url.format(big.pk), headers=headers, stream=True, timeout=120) as response,
    ):
        assert response.status_code == 200
        for chunk in response.iter_content(chunk_size=256 * 1024):
            lines += chunk.count(b"\n")
    assert lines == 1_000_001  # header + one line per row
    growth = (memory.peak - baseline) / MEGABYTE
    assert growth < 50, f"serving a 1,000,000-row CSV grew memory by {growth:.1f} MB"
