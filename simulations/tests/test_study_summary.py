"""A study's per-case statistics (simulations/studies/summary.py): the request's `summary`
checked against the recorded outputs, and each statistic of a trace against values
computed by hand. Pure numpy: no database, no FMU.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from simulations.studies.errors import InvalidStudyRequest
from simulations.studies.summary import (
    Statistic,
    SummarySpec,
    summary_compute,
    summary_spec_parse,
)

OUTPUTS = ["h", "v", "der(h)"]
EVERY = list(Statistic)


def spec_of(**statistics: list[str]) -> SummarySpec:
    return SummarySpec(
        tuple(
            (output, tuple(Statistic(name) for name in names))
            for output, names in statistics.items()
        )
    )


# request's summary -> the columns, in order
PARSED = {
    "nothing: the final value of every output": (None, ["final(h)", "final(v)", "final(der(h))"]),
    "a list: for every output": (
        ["max", "time_of_max"],
        [
            "max(h)",
            "time_of_max(h)",
            "max(v)",
            "time_of_max(v)",
            "max(der(h))",
            "time_of_max(der(h))",
        ],
    ),
    "per output, in the order asked": (
        {"v": ["min"], "h": ["integral", "mean", "std"]},
        ["min(v)", "integral(h)", "mean(h)", "std(h)"],
    ),
    "a repeat is dropped": ({"h": ["max", "max", "final"]}, ["max(h)", "final(h)"]),
    "an output with brackets": ({"der(h)": ["initial"]}, ["initial(der(h))"]),
}


@pytest.mark.parametrize(("request_summary", "columns"), PARSED.values(), ids=list(PARSED))
def test_the_requested_statistics_become_named_columns(request_summary, columns):
    spec = summary_spec_parse(spec=request_summary, outputs=OUTPUTS)

    assert spec.columns() == columns
    # Stored as JSONB (no key order) and read back: the same columns in the same order.
    stored = json.loads(json.dumps(spec.to_json()))
    assert SummarySpec.from_json(stored) == spec


def test_a_study_stored_without_statistics_reads_as_none():
    assert SummarySpec.from_json({}).columns() == []


# request's summary -> {field: words of its message}
REFUSED = {
    "an unknown statistic, close to one": (["maximum"], {"summary": "Did you mean 'max'?"}),
    "an unknown statistic of one output": (
        {"h": ["final", "avg"]},
        {"summary.h": "Unknown statistic 'avg'"},
    ),
    "an output the cases do not record": (
        {"hh": ["max"]},
        {"summary.hh": "not recorded by the cases (they record h, v, der(h)"},
    ),
    "an output close to a recorded one": ({"der(v)": ["max"]}, {"summary.der(v)": "'der(h)'?"}),
    "an empty list": ([], {"summary": "Give a list of statistics"}),
    "an empty object": ({}, {"summary": "Give a list of statistics"}),
    "an output without statistics": ({"h": []}, {"summary.h": "Give a list"}),
    "a statistic that is not a list": ({"h": "max"}, {"summary.h": "Give a list"}),
    "a string": ("final", {"summary": "Give a list"}),
    "two fields at once": (
        {"h": ["nope"], "x": ["max"]},
        {"summary.h": "'nope'", "summary.x": "not recorded"},
    ),
}


@pytest.mark.parametrize(("request_summary", "refused"), REFUSED.values(), ids=list(REFUSED))
def test_a_summary_naming_what_does_not_exist_is_refused_naming_its_field(request_summary, refused):
    with pytest.raises(InvalidStudyRequest) as caught:
        summary_spec_parse(spec=request_summary, outputs=OUTPUTS)
    assert caught.value.status_code == 400
    assert set(caught.value.errors) == set(refused)
    for field, words in refused.items():
        assert words in " ".join(caught.value.errors[field]), caught.value.errors[field]


def trace(time: list[float], dtype: str = "f8", **columns: list) -> np.ndarray:
    fields = [("time", "f8"), *((name, dtype) for name in columns)]
    return np.array(list(zip(time, *columns.values(), strict=True)), dtype=fields)


STD_OF_TRIANGLE = math.sqrt(3.75 / 4)  # the squared deviations' trapezoid, over the span
# trace -> statistic -> value, computed by hand
COMPUTED = {
    "a triangle: rises, holds, falls over a longer step": (
        trace([0, 1, 2, 4], h=[0, 2, 2, 0]),
        {
            "initial": 0.0,
            "final": 0.0,
            "min": 0.0,
            "max": 2.0,
            "time_of_min": 0.0,  # the first time the minimum is reached
            "time_of_max": 1.0,
            "integral": 1 + 2 + 2,  # trapezoids of width 1, 1 and 2
            "mean": 5 / 4,
            "std": STD_OF_TRIANGLE,
        },
    ),
    "an event: the time repeats, the value jumps": (
        trace([0, 1, 1, 2], h=[1, 1, -1, -1]),
        {
            "initial": 1.0,
            "final": -1.0,
            "min": -1.0,
            "time_of_min": 1.0,
            "time_of_max": 0.0,
            "integral": 0.0,  # +1 before, nothing at the jump, -1 after
            "mean": 0.0,
            "std": 1.0,
        },
    ),
    "one point: span 0": (
        trace([3], h=[7]),
        {"final": 7.0, "min": 7.0, "integral": 0.0, "mean": 7.0, "std": 0.0, "time_of_max": 3.0},
    ),
    "points at one time only: the last value": (
        trace([1, 1], h=[2, 5]),
        {"initial": 2.0, "final": 5.0, "mean": 5.0, "integral": 0.0, "std": 0.0},
    ),
    "a Boolean output: the fraction of time it is true": (
        trace([0, 1, 2], dtype="?", h=[False, True, True]),
        {"mean": 0.75, "integral": 1.5, "max": 1.0, "time_of_max": 1.0, "final": 1.0},
    ),
    "an Integer output": (
        trace([0, 2], dtype="i4", h=[3, 5]),
        {"mean": 4.0, "integral": 8.0, "min": 3.0},
    ),
    "a NaN: only the points themselves stand": (
        trace([0, 1, 2], h=[0, math.nan, 2]),
        {
            "initial": 0.0,
            "final": 2.0,
            "min": None,
            "max": None,
            "mean": None,
            "std": None,
            "integral": None,
            "time_of_min": None,
            "time_of_max": None,
        },
    ),
    "a NaN at the end": (trace([0, 1], h=[1, math.nan]), {"initial": 1.0, "final": None}),
    "an infinity: no number to store": (
        trace([0, 1], h=[1, math.inf]),
        {"max": None, "integral": None, "min": 1.0, "time_of_max": 1.0, "final": None},
    ),
    "an integral beyond a float": (
        trace([0, 1e300], h=[1e300, 1e300]),
        {"integral": None, "mean": None, "max": 1e300},
    ),
    "no points": (trace([], h=[]), dict.fromkeys(EVERY, None)),
}


@pytest.mark.parametrize(("case_trace", "expected"), COMPUTED.values(), ids=list(COMPUTED))
def test_each_statistic_of_a_trace_is_the_value_computed_by_hand(case_trace, expected):
    spec = spec_of(h=list(expected))

    row = summary_compute(trace=case_trace, spec=spec)

    assert list(row) == [f"{statistic}(h)" for statistic in expected]
    for statistic, value in expected.items():
        got = row[f"{statistic}(h)"]
        if value is None:
            assert got is None, statistic
        else:
            assert type(got) is float and got == pytest.approx(value, rel=1e-12), statistic
    json.dumps(row, allow_nan=False)


def test_several_outputs_each_get_their_statistics_in_order():
    case_trace = trace([0, 1, 2], h=[1, 2, 3], v=[0, -1, 0])
    spec = summary_spec_parse(
        spec={"v": ["min", "time_of_min"], "h": ["final"]}, outputs=["h", "v"]
    )

    assert summary_compute(trace=case_trace, spec=spec) == {
        "min(v)": -1.0,
        "time_of_min(v)": 1.0,
        "final(h)": 3.0,
    }


def test_an_output_missing_from_the_trace_has_no_values():
    spec = spec_of(h=["final", "max"], v=["final"])
    row = summary_compute(trace=trace([0, 1], h=[1, 2]), spec=spec)
    assert row == {"final(h)": 2.0, "max(h)": 2.0, "final(v)": None}
