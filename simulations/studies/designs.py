"""A study's cases from the request's ``design``: which start values each case sets.

Kinds: ``grid`` (full factorial of value lists and linear ranges), ``cases`` (explicit),
``lhs``/``sobol``/``halton`` (quasi-random points of a box, scipy.stats.qmc) and
``monte_carlo`` (independent draws from distributions, numpy's Generator).

Why the spec is normalised and returned: a sampled design without a seed gets one drawn
here, and the stored spec (seed included) rebuilds exactly the same cases, so every study
can be reproduced and audited. JSONB does not keep the order of an object's keys, and the
order decides both the grid's case order and the Monte Carlo draws, so the normalised spec
carries ``parameter_order`` (a request may give it too).

Why counting comes first: a grid of a few axes can name billions of cases; the count is a
product of lengths, checked against ``max_cases`` before any axis is materialised.

Which variables a design may vary: exactly those a run may give start values to
(fmuengine's settable_variable_names, the rule simulations.params applies), of type Real,
Integer (FMI 3: Int*/UInt*; also Enumeration) or Boolean.

Integer parameters: grid and cases values must be whole numbers (a range must land on
whole numbers). Sampled designs treat ``low``/``high`` of an Integer parameter as whole,
inclusive bounds and give every integer between them equal weight: the unit sample u is
mapped to floor(low + u * (high - low + 1)), which keeps a Latin hypercube's strata;
Monte Carlo draws them uniformly (other distributions are refused for Integer
parameters). Boolean parameters can only be listed (grid or cases), never sampled.
"""

from __future__ import annotations

import enum
import itertools
import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np

from fmuengine.inspection import FMUSummary, VariableInfo, settable_variable_names
from simulations.studies import sampling
from simulations.studies.errors import InvalidStudyRequest, close_hint
from simulations.studies.errors import bounds_check as _check_bounds
from simulations.studies.errors import error_add as _add
from simulations.studies.errors import names_text as _names
from simulations.studies.errors import number_field as _number
from simulations.studies.errors import unknown_keys_refuse as _refuse_unknown_keys

if TYPE_CHECKING:
    from simulations.models import Model

Value = float | int | bool

# Seeds are stored and returned as JSON numbers: below 2**53 a JavaScript client reads them
# exactly too; a caller's own seed may be any 63-bit integer.
MAX_SEED = 2**63
_DRAWN_SEED_BITS = 52
# Cases whose errors are listed one by one before the rest are only counted.
_MAX_CASE_ERRORS = 10


class DesignKind(enum.StrEnum):
    GRID = "grid"
    CASES = "cases"
    LHS = "lhs"
    SOBOL = "sobol"
    HALTON = "halton"
    MONTE_CARLO = "monte_carlo"


class Distribution(enum.StrEnum):
    UNIFORM = "uniform"
    NORMAL = "normal"
    LOGNORMAL = "lognormal"


class ValueType(enum.StrEnum):
    """What a design's values for a variable are: its FMI type, as far as a design cares."""

    REAL = "real"
    INTEGER = "integer"
    BOOLEAN = "boolean"


_QMC_KINDS = (DesignKind.LHS, DesignKind.SOBOL, DesignKind.HALTON)
_SAMPLED_KINDS = (*_QMC_KINDS, DesignKind.MONTE_CARLO)
_REAL_TYPES = {"Real", "Float32", "Float64"}
_INTEGER_TYPES = {"Integer", "Enumeration"} | {
    f"{sign}Int{bits}" for sign in ("", "U") for bits in (8, 16, 32, 64)
}

_DESIGN_KEYS = {
    DesignKind.GRID: ("kind", "parameters", "parameter_order"),
    DesignKind.CASES: ("kind", "cases", "parameter_order"),
    **{
        kind: ("kind", "samples", "seed", "parameters", "parameter_order")
        for kind in _SAMPLED_KINDS
    },
}
_RANGE_KEYS = ("start", "stop", "num")
_BOX_KEYS = ("low", "high")
_DISTRIBUTION_KEYS = {
    Distribution.UNIFORM: ("distribution", "low", "high"),
    Distribution.NORMAL: ("distribution", "mean", "std", "low", "high"),
    Distribution.LOGNORMAL: ("distribution", "mean", "sigma"),
}
_REQUIRED_DISTRIBUTION_KEYS = {
    Distribution.UNIFORM: ("low", "high"),
    Distribution.NORMAL: ("mean", "std"),
    Distribution.LOGNORMAL: ("mean", "sigma"),
}


@dataclass(frozen=True)
class Design:
    """The cases of a study: ``cases[i]`` maps each of ``parameters`` to case i's value."""

    kind: DesignKind
    parameters: tuple[str, ...]  # in request order
    cases: tuple[dict[str, Value], ...]  # the actual values, plain Python numbers
    spec: dict[str, Any]  # the normalised request, seed and parameter_order included
    # Things the caller should know that are not errors (a Sobol' size off a power of 2).
    warnings: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        """What the API returns and stores as the study's design: the normalised spec, whose
        ``parameter_order`` names the parameters in order (cases are stored per case), plus
        the warnings when there are any."""
        document = dict(self.spec)
        if self.warnings:
            document["warnings"] = list(self.warnings)
        return document


def settable_variables(model: Model) -> dict[str, VariableInfo]:
    """The model's variables a design may vary, by name, in modelDescription order: those a
    run may give start values to (the rule simulations.params checks start_values with)."""
    summary = FMUSummary.from_json(model.summary)
    # settable_variable_names' rule is the same for both interfaces; any declared one will do.
    names = settable_variable_names(summary, fmi_type=summary.fmi_types[0])
    return {variable.name: variable for variable in summary.variables if variable.name in names}


def design_case_count(*, spec: Mapping[str, Any]) -> int:
    """How many cases ``spec`` has, without building them (dry runs, prices, limits).

    Checks the spec's shape (kinds, keys, numbers) but not the model's variables; raises
    InvalidStudyRequest on a malformed spec."""
    return _parse(spec).count


def design_build(
    *, spec: Mapping[str, Any], variables: Mapping[str, VariableInfo], max_cases: int
) -> Design:
    """The cases of ``spec`` for a model whose settable variables are ``variables`` (see
    settable_variables), refused with InvalidStudyRequest if it is malformed, varies what it
    cannot, or has more than ``max_cases`` cases (counted before anything is built)."""
    parsed = _parse(spec)
    errors: dict[str, list[str]] = {}
    types = _check_variables(parsed, variables, errors)
    if parsed.count > max_cases:
        where = "design.samples" if parsed.kind in _SAMPLED_KINDS else "design"
        _add(
            errors,
            where,
            f"This design has {parsed.count:,} cases; a study may have at most {max_cases:,}.",
        )
    if errors:
        raise InvalidStudyRequest(errors)
    return _BUILDERS[parsed.kind](parsed, types)


# --- the spec's shape ----------------------------------------------------------------------


@dataclass
class _Parsed:
    kind: DesignKind
    order: list[str]
    count: int
    parameters: dict[str, Any]  # per name: checked, numbers as given (grid, sampled kinds)
    cases: list[dict[str, Any]]  # the cases kind
    samples: int = 0
    seed: int | None = None


def _parse(spec: Mapping[str, Any]) -> _Parsed:
    errors: dict[str, list[str]] = {}
    if not isinstance(spec, Mapping):
        raise InvalidStudyRequest({"design": ["The design must be an object with a kind."]})
    kind_value: Any = spec.get("kind")
    try:
        kind = DesignKind(kind_value)
    except ValueError:
        choices = ", ".join(kind.value for kind in DesignKind)
        message = f"The kind must be one of {choices}, not {spec.get('kind')!r}."
        hint = close_hint(spec.get("kind"), DesignKind)
        raise InvalidStudyRequest({"design.kind": [message + hint]}) from None
    _refuse_unknown_keys(spec, _DESIGN_KEYS[kind], "design", errors)
    parsed = _Parsed(kind=kind, order=[], count=0, parameters={}, cases=[])
    if kind is DesignKind.GRID:
        _parse_grid(spec, parsed, errors)
    elif kind is DesignKind.CASES:
        _parse_cases(spec, parsed, errors)
    else:
        _parse_sampled(spec, parsed, errors)
    if "parameter_order" in spec and not errors:
        _apply_order(spec["parameter_order"], parsed, errors)
    if errors:
        raise InvalidStudyRequest(errors)
    return parsed


def _parameters(spec: Mapping[str, Any], errors: dict[str, list[str]]) -> Mapping[str, Any]:
    parameters = spec.get("parameters")
    if not isinstance(parameters, Mapping) or not parameters:
        _add(errors, "design.parameters", "Name at least one parameter: {name: ...}.")
        return {}
    return parameters


def _parse_grid(spec: Mapping[str, Any], parsed: _Parsed, errors: dict[str, list[str]]) -> None:
    count = 1
    for name, axis in _parameters(spec, errors).items():
        where = f"design.parameters.{name}"
        parsed.order.append(name)
        if isinstance(axis, list):
            if not axis:
                _add(errors, where, "Give at least one value.")
            elif not all(_is_value(value) for value in axis):
                _add(errors, where, "The values must be finite numbers or booleans.")
            count *= len(axis)
            parsed.parameters[name] = list(axis)
        elif isinstance(axis, Mapping):
            _refuse_unknown_keys(axis, _RANGE_KEYS, where, errors)
            start, stop = (_number(axis, key, where, errors) for key in ("start", "stop"))
            num = axis.get("num")
            if not _is_int(num) or num < 1:
                _add(errors, f"{where}.num", "num must be a whole number of points, at least 1.")
            else:
                count *= num
            parsed.parameters[name] = {"start": start, "stop": stop, "num": num}
        else:
            _add(errors, where, 'Give a list of values or a range {"start", "stop", "num"}.')
    parsed.count = count


def _parse_cases(spec: Mapping[str, Any], parsed: _Parsed, errors: dict[str, list[str]]) -> None:
    cases = spec.get("cases")
    if not isinstance(cases, list) or not cases:
        _add(errors, "design.cases", "Give a list of cases, each {parameter: value}.")
        return
    first = cases[0]
    if not isinstance(first, Mapping) or not first:
        _add(errors, "design.cases.0", "A case is an object {parameter: value}, not empty.")
        return
    parsed.order = list(first)
    expected = set(first)
    bad = 0
    for index, case in enumerate(cases):
        problem = None
        if not isinstance(case, Mapping):
            problem = "A case is an object {parameter: value}."
        elif set(case) != expected:
            problem = f"Every case sets the same parameters ({_names(parsed.order)})."
            problem += f" This one sets {_names(list(case))}."
        elif not all(_is_value(value) for value in case.values()):
            problem = "The values must be finite numbers or booleans."
        if problem:
            bad += 1
            if bad <= _MAX_CASE_ERRORS:
                _add(errors, f"design.cases.{index}", problem)
    if bad > _MAX_CASE_ERRORS:
        _add(errors, "design.cases", f"{bad} cases are invalid; the first ones are listed.")
    parsed.cases = cases
    parsed.count = len(cases)


def _parse_sampled(spec: Mapping[str, Any], parsed: _Parsed, errors: dict[str, list[str]]) -> None:
    samples = spec.get("samples")
    if not _is_int(samples) or samples < 1:
        _add(errors, "design.samples", "samples must be a whole number of cases, at least 1.")
    else:
        parsed.samples = parsed.count = samples
    seed = spec.get("seed")
    if seed is not None and (not _is_int(seed) or not 0 <= seed < MAX_SEED):
        _add(
            errors, "design.seed", f"The seed must be a whole number from 0 to 2**63 - 1: {seed!r}."
        )
    else:
        parsed.seed = seed
    for name, box in _parameters(spec, errors).items():
        where = f"design.parameters.{name}"
        parsed.order.append(name)
        if not isinstance(box, Mapping):
            expected = '{"low", "high"}' if parsed.kind in _QMC_KINDS else '{"distribution", ...}'
            _add(errors, where, f"Give the parameter's bounds as an object {expected}.")
        elif parsed.kind is DesignKind.MONTE_CARLO:
            parsed.parameters[name] = _parse_distribution(box, where, errors)
        else:
            _refuse_unknown_keys(box, _BOX_KEYS, where, errors)
            low, high = (_number(box, key, where, errors) for key in _BOX_KEYS)
            _check_bounds(low, high, where, errors)
            parsed.parameters[name] = {"low": low, "high": high}


def _parse_distribution(
    box: Mapping[str, Any], where: str, errors: dict[str, list[str]]
) -> dict[str, Any]:
    try:
        distribution = Distribution(box.get("distribution", Distribution.UNIFORM))
    except ValueError:
        choices = ", ".join(distribution.value for distribution in Distribution)
        name = box.get("distribution")
        hint = close_hint(name, Distribution)
        _add(errors, f"{where}.distribution", f"Choose one of {choices}, not {name!r}.{hint}")
        return {}
    _refuse_unknown_keys(box, _DISTRIBUTION_KEYS[distribution], where, errors)
    checked: dict[str, Any] = {"distribution": distribution.value}
    for key in _DISTRIBUTION_KEYS[distribution][1:]:
        if key in _REQUIRED_DISTRIBUTION_KEYS[distribution] or box.get(key) is not None:
            checked[key] = _number(box, key, where, errors)
    for key in ("std", "sigma"):
        if checked.get(key) is not None and checked[key] <= 0:
            _add(errors, f"{where}.{key}", f"{key} must be greater than 0.")
    if checked.get("low") is not None and checked.get("high") is not None:
        _check_bounds(checked["low"], checked["high"], where, errors)
    return checked


def _apply_order(order: Any, parsed: _Parsed, errors: dict[str, list[str]]) -> None:
    if not isinstance(order, list) or sorted(map(str, order)) != sorted(parsed.order):
        _add(
            errors,
            "design.parameter_order",
            f"parameter_order must list each parameter once: {_names(parsed.order)}.",
        )
        return
    parsed.order = list(order)


# --- the model's variables -----------------------------------------------------------------


def _check_variables(
    parsed: _Parsed, variables: Mapping[str, VariableInfo], errors: dict[str, list[str]]
) -> dict[str, ValueType]:
    types: dict[str, ValueType] = {}
    for name in parsed.order:
        where = "design.cases" if parsed.kind is DesignKind.CASES else f"design.parameters.{name}"
        variable = variables.get(name)
        if variable is None:
            hint = close_hint(name, variables)
            _add(
                errors,
                where,
                f"The model has no variable {name!r} whose start value can be set.{hint}",
            )
            continue
        value_type = _value_type(variable)
        if value_type is None:
            _add(
                errors,
                where,
                f"{name!r} is a {variable.type} variable; a design varies Real, Integer and "
                "Boolean variables only.",
            )
            continue
        types[name] = value_type
        if parsed.kind in _SAMPLED_KINDS:
            _check_sampled_type(name, value_type, parsed.parameters.get(name) or {}, where, errors)
        elif parsed.kind is DesignKind.GRID:
            axis = parsed.parameters[name]
            if isinstance(axis, Mapping) and value_type is ValueType.BOOLEAN:
                _add(errors, where, f"{name!r} is Boolean: list its values, e.g. [false, true].")
    return types


def _check_sampled_type(
    name: str,
    value_type: ValueType,
    box: Mapping[str, Any],
    where: str,
    errors: dict[str, list[str]],
) -> None:
    if value_type is ValueType.BOOLEAN:
        _add(
            errors, where, f"{name!r} is Boolean: it can be varied by a grid or cases, not sampled."
        )
    elif value_type is ValueType.INTEGER:
        distribution = box.get("distribution", Distribution.UNIFORM)
        if distribution != Distribution.UNIFORM:
            _add(
                errors,
                f"{where}.distribution",
                f"{name!r} is an Integer: it can only be drawn uniformly from low..high.",
            )
        for key in _BOX_KEYS:
            bound = box.get(key)
            if bound is not None and not float(bound).is_integer():
                _add(errors, f"{where}.{key}", f"{name!r} is an Integer: {key} must be whole.")


def _value_type(variable: VariableInfo) -> ValueType | None:
    if variable.type in _REAL_TYPES:
        return ValueType.REAL
    if variable.type in _INTEGER_TYPES:
        return ValueType.INTEGER
    if variable.type == "Boolean":
        return ValueType.BOOLEAN
    return None


def _converted(value: Any, value_type: ValueType) -> Value | None:
    """The value as the variable takes it, or None if it cannot take it."""
    if value_type is ValueType.BOOLEAN:
        return value if isinstance(value, bool) else None
    if isinstance(value, bool):
        return None
    if value_type is ValueType.INTEGER:
        return int(value) if float(value).is_integer() else None
    return float(value)


_TYPE_WORDS = {
    ValueType.REAL: "a number",
    ValueType.INTEGER: "a whole number",
    ValueType.BOOLEAN: "true or false",
}


# --- building the cases --------------------------------------------------------------------


def _build_grid(parsed: _Parsed, types: dict[str, ValueType]) -> Design:
    errors: dict[str, list[str]] = {}
    axes: list[list[Value]] = []
    normalised: dict[str, Any] = {}
    for name in parsed.order:
        axis, value_type = parsed.parameters[name], types[name]
        where = f"design.parameters.{name}"
        if isinstance(axis, list):
            values = [_converted(value, value_type) for value in axis]
            normalised[name] = values
        else:
            points = np.linspace(axis["start"], axis["stop"], axis["num"])
            values = points.tolist()
            if value_type is ValueType.INTEGER:
                whole = np.rint(points)
                if not np.allclose(points, whole, rtol=0, atol=1e-9):
                    _add(
                        errors, where, f"{name!r} is an Integer: this range has fractional points."
                    )
                values = [int(value) for value in whole]
            normalised[name] = {
                "start": float(axis["start"]),
                "stop": float(axis["stop"]),
                "num": axis["num"],
            }
        if any(value is None for value in values):
            _add(errors, where, f"{name!r} takes {_TYPE_WORDS[value_type]}.")
        axes.append(values)  # type: ignore[arg-type]  # None refused just above
    if errors:
        raise InvalidStudyRequest(errors)
    cases = tuple(
        dict(zip(parsed.order, values, strict=True)) for values in itertools.product(*axes)
    )
    spec = {"kind": parsed.kind.value, "parameters": normalised, "parameter_order": parsed.order}
    return Design(parsed.kind, tuple(parsed.order), cases, spec)


def _build_cases(parsed: _Parsed, types: dict[str, ValueType]) -> Design:
    errors: dict[str, list[str]] = {}
    cases: list[dict[str, Value]] = []
    bad = 0
    for index, case in enumerate(parsed.cases):
        converted = {name: _converted(case[name], types[name]) for name in parsed.order}
        for name, value in converted.items():
            if value is None:
                bad += 1
                if bad <= _MAX_CASE_ERRORS:
                    message = f"{name!r} takes {_TYPE_WORDS[types[name]]}, not {case[name]!r}."
                    _add(errors, f"design.cases.{index}.{name}", message)
        cases.append(converted)  # type: ignore[arg-type]  # None refused below
    if bad > _MAX_CASE_ERRORS:
        _add(errors, "design.cases", f"{bad} values are invalid; the first ones are listed.")
    if errors:
        raise InvalidStudyRequest(errors)
    spec = {"kind": parsed.kind.value, "cases": cases, "parameter_order": parsed.order}
    return Design(parsed.kind, tuple(parsed.order), tuple(cases), spec)


def _build_qmc(parsed: _Parsed, types: dict[str, ValueType]) -> Design:
    seed = _seed(parsed)
    unit, warning = sampling.unit_points(
        parsed.kind.value,
        dimensions=len(parsed.order),
        samples=parsed.samples,
        rng=np.random.default_rng(seed),
    )
    columns = sampling.box_columns(
        unit,
        lows=[parsed.parameters[name]["low"] for name in parsed.order],
        highs=[parsed.parameters[name]["high"] for name in parsed.order],
        integer=[types[name] is ValueType.INTEGER for name in parsed.order],
    )
    parameters = {
        name: _numbers_json(parsed.parameters[name], types[name]) for name in parsed.order
    }
    return _sampled_design(parsed, seed, parameters, columns, (warning,) if warning else ())


def _build_monte_carlo(parsed: _Parsed, types: dict[str, ValueType]) -> Design:
    """One column per parameter in order, each drawn in full before the next, so adding a
    parameter at the end leaves the earlier parameters' values unchanged."""
    seed = _seed(parsed)
    rng = np.random.default_rng(seed)
    errors: dict[str, list[str]] = {}
    columns: list[list[Value]] = []
    for name in parsed.order:
        integer = types[name] is ValueType.INTEGER
        draws = sampling.monte_carlo_draws(
            rng, parsed.parameters[name], integer=integer, size=parsed.samples
        )
        if not np.isfinite(draws).all():
            _add(errors, f"design.parameters.{name}", "Some draws are too large for a number.")
        columns.append(draws.tolist())
    if errors:
        raise InvalidStudyRequest(errors)
    parameters = {
        name: _numbers_json(parsed.parameters[name], types[name]) for name in parsed.order
    }
    return _sampled_design(parsed, seed, parameters, columns, ())


def _sampled_design(
    parsed: _Parsed,
    seed: int,
    parameters: dict[str, Any],
    columns: list[list[Value]],
    warnings: tuple[str, ...],
) -> Design:
    cases = tuple(dict(zip(parsed.order, row, strict=True)) for row in zip(*columns, strict=True))
    spec = {
        "kind": parsed.kind.value,
        "samples": parsed.samples,
        "seed": seed,
        "parameters": parameters,
        "parameter_order": parsed.order,
    }
    return Design(parsed.kind, tuple(parsed.order), cases, spec, warnings)


_BUILDERS = {
    DesignKind.GRID: _build_grid,
    DesignKind.CASES: _build_cases,
    DesignKind.LHS: _build_qmc,
    DesignKind.SOBOL: _build_qmc,
    DesignKind.HALTON: _build_qmc,
    DesignKind.MONTE_CARLO: _build_monte_carlo,
}


def _seed(parsed: _Parsed) -> int:
    """The caller's seed, or a fresh one from the OS's entropy (returned in the spec)."""
    return parsed.seed if parsed.seed is not None else secrets.randbits(_DRAWN_SEED_BITS)


def _numbers_json(box: Mapping[str, Any], value_type: ValueType) -> dict[str, Any]:
    """A sampled parameter's spec as stored: its numbers as the variable's type, no Nones."""
    convert = int if value_type is ValueType.INTEGER else float
    return {
        key: value if key == "distribution" else convert(value)
        for key, value in box.items()
        if value is not None
    }


# --- small helpers -------------------------------------------------------------------------


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_value(value: Any) -> bool:
    """A finite number or a boolean (whether the variable takes it is checked later)."""
    return isinstance(value, bool) or (isinstance(value, int | float) and math.isfinite(value))
