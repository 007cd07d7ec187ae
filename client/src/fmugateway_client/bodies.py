"""Request bodies as the API wants them, from what a Python caller has at hand."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def simulation_request(model_id: str, **parameters: Any) -> dict[str, Any]:
    """The POST /simulations body: the API's field names, without the None ones."""
    body: dict[str, Any] = {"model": model_id}
    for name, value in parameters.items():
        if value is None:
            continue
        if name == "input":
            value = _input_table(value)
        elif name == "output" and isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        elif name == "output" or name == "start_values":
            value = list(value) if name == "output" else dict(value)
        body[name] = value
    return body


def _input_table(value: Any) -> dict[str, list[Any]]:
    """{"time": [...], "u": [...]} from a mapping of columns or a numpy structured array."""
    names = getattr(getattr(value, "dtype", None), "names", None)
    if names:
        return {name: value[name].tolist() for name in names}
    if isinstance(value, Mapping):
        return {str(name): list(column) for name, column in value.items()}
    raise TypeError('input is {"time": [...], "<input name>": [...]} or a structured array')


def study_request(
    model_id: str,
    *,
    design: Mapping[str, Any],
    base: Mapping[str, Any] | None = None,
    summary: str | Sequence[str] | Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """The POST /studies body. `base` takes a run's fields (start_time, stop_time,
    output_interval, start_values, input, output, timeout ...), converted as for a run;
    None values are left out. `summary`: statistics for every output (a list), or per
    output (a mapping), or None for the final value of every output."""
    if not isinstance(design, Mapping) or "kind" not in design:
        raise ValueError('design is a mapping with a "kind" (grid, cases, lhs, sobol, ...)')
    base_body = simulation_request(model_id, **dict(base or {}))
    del base_body["model"]
    body: dict[str, Any] = {"model": model_id, "base": base_body, "design": dict(design)}
    if isinstance(summary, str):
        body["summary"] = [summary]
    elif isinstance(summary, Mapping):
        body["summary"] = {str(output): list(stats) for output, stats in summary.items()}
    elif summary is not None:
        body["summary"] = list(summary)
    return body
