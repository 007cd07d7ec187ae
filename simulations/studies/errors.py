"""The refusal of a study request, with field errors like a run request's."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from core.errors import DomainError
from core.problems import ProblemCode


class InvalidStudyRequest(DomainError):
    """Field errors by dotted path (``design.parameters.h.num``, ``design.samples``,
    ``summary.h``) -> messages, answered as a 400 problem+json whose ``errors`` member the
    client shows next to what the caller wrote; the sibling of
    simulations.params.InvalidSimulationRequest, so the two read alike."""

    code = ProblemCode.INVALID_REQUEST

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("The study request has invalid fields; see errors.", errors=errors)
        self.errors = errors


def close_hint(name: Any, choices: Iterable[Any]) -> str:
    """' Did you mean ...?' when one of ``choices`` is close to ``name`` (difflib), else ''."""
    if not isinstance(name, str):
        return ""
    close = difflib.get_close_matches(name, [str(choice) for choice in choices], n=1)
    return f" Did you mean {close[0]!r}?" if close else ""
