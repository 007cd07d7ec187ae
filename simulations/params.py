"""A run request checked against its model: what the caller may set, and the defaults.

The serializer checks types; this module checks meaning (names the model has, values it
accepts, limits of the service), so a bad request is refused before it is paid for.
"""

from __future__ import annotations

import math
from itertools import pairwise

from django.conf import settings

from core.errors import DomainError
from core.problems import ProblemCode
from fmuengine.inspection import FMUSummary, settable_variable_names
from simulations.models import Model


class InvalidSimulationRequest(DomainError):
    """Field errors by name, which the portal's run form shows next to its fields."""

    code = ProblemCode.INVALID_REQUEST

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("The simulation request has invalid fields; see errors.", errors=errors)
        self.errors = errors


def simulation_params(*, model: Model, request: dict) -> dict:
    """The complete, JSON-serialisable parameters of a run (fmpy.simulate_fmu's arguments)."""
    summary = FMUSummary.from_json(model.summary)
    errors: dict[str, list[str]] = {}
    experiment = model.default_experiment or {}
    variables = {variable.name: variable for variable in summary.variables}

    fmi_type = request.get("fmi_type") or _default_fmi_type(model)
    if fmi_type not in model.runnable_fmi_types:
        errors["fmi_type"] = [
            f"This model can run as {', '.join(model.runnable_fmi_types)} here, not {fmi_type}."
        ]

    start_time = _first_number(request.get("start_time"), experiment.get("start_time"), 0.0)
    stop_time = _first_number(request.get("stop_time"), experiment.get("stop_time"), start_time + 1)
    if stop_time <= start_time:
        errors["stop_time"] = [f"stop_time ({stop_time}) must be after start_time ({start_time})."]

    output_interval = request.get("output_interval")
    if output_interval is not None and stop_time > start_time:
        points = (stop_time - start_time) / output_interval
        if points > settings.SIMULATION_MAX_OUTPUT_POINTS:
            errors["output_interval"] = [
                f"This interval gives {points:,.0f} output points; the limit is "
                f"{settings.SIMULATION_MAX_OUTPUT_POINTS:,}. Use a larger output_interval."
            ]

    solver = request.get("solver") or "CVode"
    if solver != "CVode" and fmi_type == "CoSimulation":
        errors["solver"] = ["A solver can only be chosen for ModelExchange runs."]

    start_values = request.get("start_values") or {}
    if fmi_type in model.fmi_types:
        settable = settable_variable_names(summary, fmi_type=fmi_type)
        for name in start_values:
            if name not in variables:
                errors.setdefault("start_values", []).append(f"The model has no variable {name!r}.")
            elif name not in settable:
                variable = variables[name]
                errors.setdefault("start_values", []).append(
                    f"{name!r} ({variable.causality}, {variable.variability}) cannot be given a "
                    "start value."
                )

    output = request.get("output")
    for name in output or []:
        if name not in variables:
            errors.setdefault("output", []).append(f"The model has no variable {name!r}.")

    input_table = request.get("input")
    if input_table:
        _check_input(input_table, variables, errors)

    timeout = request.get("timeout") or settings.SIMULATION_DEFAULT_WALL_SECONDS
    if timeout > settings.SIMULATION_MAX_WALL_SECONDS:
        errors["timeout"] = [
            f"The longest a run may take is {settings.SIMULATION_MAX_WALL_SECONDS} seconds."
        ]

    if errors:
        raise InvalidSimulationRequest(errors)
    return {
        "fmi_type": fmi_type,
        "start_time": start_time,
        "stop_time": stop_time,
        "output_interval": output_interval,
        "step_size": request.get("step_size"),
        "relative_tolerance": request.get("relative_tolerance"),
        "solver": solver,
        "start_values": start_values,
        "input": input_table or None,
        "output": output or None,
        "timeout": float(timeout),
    }


def _default_fmi_type(model: Model) -> str:
    runnable = model.runnable_fmi_types or model.fmi_types
    return "CoSimulation" if "CoSimulation" in runnable else runnable[0]


def _first_number(*candidates) -> float:
    return next(float(value) for value in candidates if value is not None)


def _check_input(table: dict, variables: dict, errors: dict[str, list[str]]) -> None:
    problems = errors.setdefault("input", [])
    times = table.get("time")
    if not isinstance(times, list) or not times:
        problems.append('The input needs a "time" column: a list of increasing times.')
    elif any(not _is_finite_number(value) for value in times):
        problems.append('The input "time" column must hold finite numbers.')
    else:
        if len(times) > settings.SIMULATION_MAX_INPUT_ROWS:
            problems.append(
                f"The input may have at most {settings.SIMULATION_MAX_INPUT_ROWS} rows."
            )
        if any(later < earlier for earlier, later in pairwise(times)):
            problems.append('The input "time" column must not decrease.')
        for name, column in table.items():
            if name == "time":
                continue
            if name not in variables:
                problems.append(f"The model has no variable {name!r}.")
            elif variables[name].causality != "input":
                problems.append(f"{name!r} is not an input of the model.")
            if not isinstance(column, list) or len(column) != len(times):
                problems.append(f"The column {name!r} must have one value per time ({len(times)}).")
            elif any(not _is_finite_number(value) for value in column):
                problems.append(f"The column {name!r} must hold finite numbers.")
        if len(table) < 2:
            problems.append("The input names no input variable besides time.")
    if not problems:
        del errors["input"]


def _is_finite_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
