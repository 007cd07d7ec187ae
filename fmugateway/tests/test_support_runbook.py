"""docs/support-runbook.md explains every code a customer may bring to support: each run
error code (a run's `error.code`) and each problem+json type the API answers."""

import re
from pathlib import Path

from django.conf import settings

from core.problems import ProblemCode
from fmuengine.protocol import RunErrorCode
from simulations.run_errors import AppRunErrorCode

RUNBOOK = Path(settings.BASE_DIR) / "docs" / "support-runbook.md"


def backticked_words() -> set[str]:
    return set(re.findall(r"`([a-z][a-z0-9_-]*)`", RUNBOOK.read_text()))


def test_the_runbook_explains_every_run_error_code():
    codes = {code.value for code in [*RunErrorCode, *AppRunErrorCode]}
    missing = sorted(codes - backticked_words())
    assert not missing, f"docs/support-runbook.md does not explain the run error codes {missing}"


def test_the_runbook_explains_every_problem_type():
    missing = sorted({code.value for code in ProblemCode} - backticked_words())
    assert not missing, f"docs/support-runbook.md does not explain the problem types {missing}"
