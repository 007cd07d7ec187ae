"""Fixtures of the engine's tests (no Django here: see the import-linter contract)."""

from __future__ import annotations

import os

import pytest

from fmuengine import runner, sandbox_client


@pytest.fixture(scope="module")
def slot_uids_of_this_test_process():
    """Slot uids no other process uses, so that checks for leftover processes are not
    confused by sandbox runs of concurrent test processes (xdist workers, live workers)."""
    previous = sandbox_client.settings.slot_uid_base
    runner.configure(
        slot_uid_base=runner.DEFAULT_SLOT_UID_BASE
        + 1_000_000
        + (os.getpid() % 1000) * runner.DEFAULT_SLOT_COUNT
    )
    yield
    runner.configure(slot_uid_base=previous)
