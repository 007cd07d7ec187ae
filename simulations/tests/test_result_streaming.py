"""A large result streams from storage: the serving process's memory stays flat."""

import pytest
import requests

from accounts.tests.factories import UserFactory
from simulations.tests.factories import run_with_result
from testing.api import bearer_headers
from testing.processes import PeakMemory, gunicorn_worker

pytestmark = pytest.mark.live

MEGABYTE = 1024 * 1024


@pytest.mark.django_db(transaction=True)
def test_a_million_row_csv_streams_in_flat_memory(shared_web):
    (server,) = shared_web(1)
    owner = UserFactory()
    headers = bearer_headers(owner)
    small, big = run_with_result(owner, 1_000), run_with_result(owner, 1_000_000)
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
