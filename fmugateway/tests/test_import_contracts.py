"""The import contracts (pyproject.toml) hold, and they catch a wrong-way import.

Run on a copy of the project's packages, so that the deliberate violation never touches
the checkout: billing importing simulations must fail the "apps in layers" contract, and
a service importing tasks the "services never import tasks" one.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("fmuengine", "fmugateway", "core", "accounts", "billing", "simulations")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


@pytest.fixture(scope="module")
def project_copy(tmp_path_factory) -> Path:
    copy = tmp_path_factory.mktemp("contracts")
    shutil.copy(ROOT / "pyproject.toml", copy)
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, copy / package, ignore=shutil.ignore_patterns("__pycache__", "*.so")
        )
    return copy


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def lint_imports(directory: Path) -> subprocess.CompletedProcess:
    """lint-imports on `directory`, its output without colours."""
    checked = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=directory,
        env={"PYTHONPATH": str(directory), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    checked.stdout = ANSI_ESCAPE.sub("", checked.stdout)
    return checked


def test_the_project_keeps_its_contracts(project_copy):
    checked = lint_imports(project_copy)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "0 broken" in checked.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract", "offence"),
    [
        (
            "billing/wrong_way.py",
            "from simulations.models import Simulation  # noqa: F401\n",
            "Apps in layers: simulations over billing over accounts BROKEN",
            "billing.wrong_way -> simulations.models",
        ),
        (
            "simulations/services/wrong_way.py",
            "from simulations.tasks import run_simulation_task  # noqa: F401\n",
            "Services never import tasks BROKEN",
            "simulations.services.wrong_way -> simulations.tasks",
        ),
    ],
)
def test_a_wrong_way_import_breaks_a_contract(
    project_copy, tmp_path, module, line, contract, offence
):
    broken = tmp_path / "project"
    shutil.copytree(project_copy, broken)
    (broken / module).write_text(line)
    checked = lint_imports(broken)
    assert checked.returncode != 0
    assert contract in checked.stdout, checked.stdout
    assert offence in checked.stdout
