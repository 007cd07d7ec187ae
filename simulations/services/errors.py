"""The one DomainError of simulations' services with data of its own; their conflicts are
core.errors.Conflict, with a ProblemCode saying which (model-in-use, ...)."""

from __future__ import annotations

from core.errors import DomainError
from core.problems import ProblemCode
from fmuengine.inspection import InvalidFMU


class FMURejected(DomainError):
    """An upload that is not a usable FMU: the engine's InvalidFMU code ("corrupt_zip") is
    the ProblemCode ("corrupt-zip"), whose status (400, or 413 for a too-large one) the
    catalogue holds; core/tests/test_problem_codes.py checks the two agree."""

    def __init__(self, invalid: InvalidFMU) -> None:
        # A lookup by value, which mypy checks against ProblemCode.__new__ (it makes members).
        code = ProblemCode(invalid.code.replace("_", "-"))  # type: ignore[call-arg]
        super().__init__(invalid.message, code=code)
