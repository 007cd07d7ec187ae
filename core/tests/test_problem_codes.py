"""The ProblemCode catalogue: one code per problem type, each with the status it answers."""

import ast
from pathlib import Path

import pytest

from core.errors import Conflict, DomainError, ServiceUnavailable
from core.problems import PROBLEM_TYPE_BASE, ProblemCode, problem_body

ENGINE = Path(__file__).resolve().parents[2] / "fmuengine"


def invalid_fmu_codes() -> dict[str, int]:
    """{code: status} of every InvalidFMU(...) the engine raises, read from its source."""
    codes: dict[str, int] = {}
    for path in ENGINE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "InvalidFMU"):
                continue
            code = node.args[0]
            assert isinstance(code, ast.Constant), f"{path.name}:{node.lineno}: a literal code"
            assert isinstance(code.value, str), f"{path.name}:{node.lineno}: a literal code"
            status = next((k.value for k in node.keywords if k.arg == "status"), None)
            value = status.value if isinstance(status, ast.Constant) else 400
            assert isinstance(value, int), f"{path.name}:{node.lineno}: a literal status"
            codes[code.value] = value
    return codes


def test_every_fmu_rejection_the_engine_raises_is_a_problem_code_with_its_status():
    codes = invalid_fmu_codes()
    assert len(codes) >= 10  # the scan found them
    for code, status in codes.items():
        assert ProblemCode(code.replace("_", "-")).status == status, code


def test_each_status_has_a_generic_code_and_an_unknown_one_is_error():
    assert ProblemCode.for_status(404) is ProblemCode.NOT_FOUND
    assert ProblemCode.for_status(503) is ProblemCode.UNAVAILABLE
    assert ProblemCode.for_status(418) is ProblemCode.ERROR
    assert problem_body(ProblemCode.ERROR, "teapot", status=418)["status"] == 418


def test_a_problem_body_takes_type_title_and_status_from_its_code():
    body = problem_body(ProblemCode.RESULT_EXPIRED, "Gone.", extra_member=1)
    assert body == {
        "type": PROBLEM_TYPE_BASE + "result-expired",
        "title": "Result deleted",
        "status": 410,
        "detail": "Gone.",
        "extra_member": 1,
    }


def test_a_domain_error_answers_with_its_codes_status():
    assert DomainError("Bad.").status_code == 400
    assert Conflict("Busy.", code=ProblemCode.MODEL_IN_USE).status_code == 409
    assert ServiceUnavailable("Down.").code is ProblemCode.UNAVAILABLE
    with pytest.raises(ValueError, match="Conflict cannot carry"):
        Conflict("Not a conflict.", code=ProblemCode.NOT_FOUND)
    with pytest.raises(ValueError):
        DomainError("Not in the catalogue.", code="no-such-code")
