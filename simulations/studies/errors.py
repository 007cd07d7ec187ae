"""The refusal of a study request, with field errors like a run request's."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
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


# Field errors are collected, not raised one by one: a caller sees every bad field at once.


def error_add(errors: dict[str, list[str]], where: str, message: str) -> None:
    errors.setdefault(where, []).append(message)


def number_field(box: Mapping[str, Any], key: str, where: str, errors: dict[str, list[str]]) -> Any:
    """box[key] if it is a finite number (not a boolean), else None with an error."""
    value = box.get(key)
    if value is None:
        error_add(errors, f"{where}.{key}", f"Give {key}.")
    elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        error_add(errors, f"{where}.{key}", f"{key} must be a finite number, not {value!r}.")
    else:
        return value
    return None


def bounds_check(low: Any, high: Any, where: str, errors: dict[str, list[str]]) -> None:
    if low is not None and high is not None and not low < high:
        error_add(errors, f"{where}.high", f"high ({high}) must be greater than low ({low}).")


def unknown_keys_refuse(
    box: Mapping[str, Any], allowed: Sequence[str], where: str, errors: dict[str, list[str]]
) -> None:
    for key in box:
        if key not in allowed:
            message = f"Unknown field {key!r}; this object takes {names_text(allowed)}."
            error_add(errors, f"{where}.{key}", message + close_hint(key, allowed))


def names_text(names: Sequence[str]) -> str:
    return ", ".join(str(name) for name in names)
