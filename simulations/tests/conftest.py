"""Fixtures shared by the simulations tests."""

from pathlib import Path

import pytest

from simulations.tests.fmus.build import build_all


@pytest.fixture(scope="session")
def fmu_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every test FMU (see tests/fmus/build.py), compiled once per test session."""
    return build_all(tmp_path_factory.mktemp("fmus"))
