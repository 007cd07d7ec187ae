"""Per-case statistics of a study: which ones the request asks for, and their values.

A study of thousands of cases is read as one table, one row per case; the full traces stay
downloadable case by case. The request names statistics per output (``summary``), checked
here against the outputs the runs record; each case's trace (a numpy structured array with
a "time" field) becomes that row's columns, named like calls, ``final(h)``, ``max(v)``,
because output names may themselves contain dots and brackets (``der(h)``, ``a.b[1]``).

Time-weighted: ``mean`` is the trapezoidal integral over the time span (the last value when
the span is 0), ``std`` the square root of the time-weighted mean of the squared deviation
from that mean (trapezoidal too; 0 when the span is 0). ``integral`` is the trapezoidal
rule over time; an event's repeated time point is a zero-width interval and adds nothing.
``time_of_min``/``time_of_max`` are the first time the extreme is reached.

NaN-safe: a value that is not a finite number is returned as None (JSON null; PostgreSQL's
JSONB cannot hold NaN or Infinity). ``initial`` and ``final`` look at one point only; every
other statistic is None when any value of its output is NaN (the trace is not trusted
there), and all are None for an empty trace or an output the trace does not have.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from simulations.studies.errors import InvalidStudyRequest, close_hint


class Statistic(enum.StrEnum):
    FINAL = "final"
    INITIAL = "initial"
    MIN = "min"
    MAX = "max"
    MEAN = "mean"
    STD = "std"
    INTEGRAL = "integral"
    TIME_OF_MIN = "time_of_min"
    TIME_OF_MAX = "time_of_max"


@dataclass(frozen=True)
class SummarySpec:
    """Output -> the statistics computed of it, both in the order asked."""

    statistics: tuple[tuple[str, tuple[Statistic, ...]], ...]

    def columns(self) -> list[str]:
        """The summary table's statistic columns, e.g. ["final(h)", "max(h)", "final(v)"]."""
        return [
            column_name(output, statistic)
            for output, stats in self.statistics
            for statistic in stats
        ]

    def to_json(self) -> dict[str, Any]:
        """As stored (JSONB keeps no key order, so a list of outputs, not an object)."""
        return {
            "statistics": [
                {"output": output, "statistics": [statistic.value for statistic in stats]}
                for output, stats in self.statistics
            ]
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SummarySpec:
        """The spec back from to_json() ({} -> no statistics)."""
        return cls(
            statistics=tuple(
                (item["output"], tuple(Statistic(value) for value in item["statistics"]))
                for item in data.get("statistics", ())
            )
        )


def column_name(output: str, statistic: Statistic) -> str:
    return f"{statistic.value}({output})"


def summary_spec_parse(
    *, spec: list[str] | dict[str, list[str]] | None, outputs: Sequence[str]
) -> SummarySpec:
    """The request's ``summary`` checked against the outputs each case records.

    None: the final value of every output. A list of statistic names: those of every
    output. An object: output -> its statistics. Repeats are dropped; unknown statistics or
    outputs are refused with InvalidStudyRequest naming ``summary`` or ``summary.<output>``.
    """
    errors: dict[str, list[str]] = {}
    if spec is None:
        return SummarySpec(tuple((output, (Statistic.FINAL,)) for output in outputs))
    if isinstance(spec, list):
        statistics = _statistics(spec, "summary", errors)
        result = tuple((output, statistics) for output in outputs)
    elif isinstance(spec, Mapping) and spec:
        pairs = []
        for output, names in spec.items():
            where = f"summary.{output}"
            if output not in outputs:
                recorded = ", ".join(outputs)
                errors.setdefault(where, []).append(
                    f"{output!r} is not recorded by the cases (they record {recorded}; "
                    f"add it to base.output to record it).{close_hint(output, outputs)}"
                )
            pairs.append((output, _statistics(names, where, errors)))
        result = tuple(pairs)
    else:
        errors["summary"] = [
            'Give a list of statistics (e.g. ["final", "max"]) or an object of output -> '
            'statistics (e.g. {"h": ["max"]}).'
        ]
    if errors:
        raise InvalidStudyRequest(errors)
    return SummarySpec(result)


def _statistics(names: Any, where: str, errors: dict[str, list[str]]) -> tuple[Statistic, ...]:
    choices = ", ".join(statistic.value for statistic in Statistic)
    if not isinstance(names, list) or not names:
        errors.setdefault(where, []).append(f"Give a list of statistics, from {choices}.")
        return ()
    statistics: list[Statistic] = []
    for name in names:
        try:
            statistic = Statistic(name)
        except ValueError:
            hint = close_hint(name, Statistic)
            message = f"Unknown statistic {name!r}; choose from {choices}.{hint}"
            errors.setdefault(where, []).append(message)
            continue
        if statistic not in statistics:
            statistics.append(statistic)
    return tuple(statistics)


def summary_compute(*, trace: np.ndarray, spec: SummarySpec) -> dict[str, float | None]:
    """Column -> value for one case's trace (a structured array with a "time" field and a
    field per output); None where the value is not a finite number (see the module doc)."""
    fields = trace.dtype.names or ()
    time = np.asarray(trace["time"], dtype=np.float64) if "time" in fields else np.empty(0)
    row: dict[str, float | None] = {}
    for output, statistics in spec.statistics:
        if output in fields and len(time):
            values = np.asarray(trace[output], dtype=np.float64)
            whole = bool(np.isfinite(time).all() and not np.isnan(values).any())
        else:
            values, whole = np.empty(0), False
        for statistic in statistics:
            value: float | None = None
            if statistic in _POINTWISE and len(values):
                value = _POINTWISE[statistic](values)
            elif statistic in _OVER_TIME and whole:
                with np.errstate(over="ignore", invalid="ignore"):
                    value = _OVER_TIME[statistic](time, values)
            row[column_name(output, statistic)] = _finite(value)
    return row


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _mean(time: np.ndarray, values: np.ndarray) -> float:
    span = time[-1] - time[0]
    return float(np.trapezoid(values, time) / span) if span > 0 else float(values[-1])


def _std(time: np.ndarray, values: np.ndarray) -> float:
    span = time[-1] - time[0]
    if span <= 0:
        return 0.0
    deviation = values - _mean(time, values)
    return math.sqrt(max(float(np.trapezoid(deviation * deviation, time) / span), 0.0))


_POINTWISE: dict[Statistic, Callable[[np.ndarray], float]] = {
    Statistic.INITIAL: lambda values: float(values[0]),
    Statistic.FINAL: lambda values: float(values[-1]),
}
_OVER_TIME: dict[Statistic, Callable[[np.ndarray, np.ndarray], float]] = {
    Statistic.MIN: lambda time, values: float(values.min()),
    Statistic.MAX: lambda time, values: float(values.max()),
    Statistic.MEAN: _mean,
    Statistic.STD: _std,
    Statistic.INTEGRAL: lambda time, values: float(np.trapezoid(values, time)),
    Statistic.TIME_OF_MIN: lambda time, values: float(time[np.argmin(values)]),
    Statistic.TIME_OF_MAX: lambda time, values: float(time[np.argmax(values)]),
}
