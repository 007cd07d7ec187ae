"""A study's design becomes its cases (simulations/studies/designs.py): the cases each kind
gives, the requests refused with the fields their 400 names, the case limit counted
before anything is built, and reproducibility from the stored spec.

No database and no FMU: the model is a row built in memory (ModelFactory.build(), the
hand-written FMI 2 bouncing ball: settable Real h, v, g, e, an Integer local `bounces`
with a start value, a Boolean input `active`; not settable: der(h), der(v), the constant
v_min, the calculated parameter energy).
"""

from __future__ import annotations

import json
import random
import warnings

import numpy as np
import pytest

from simulations.params import InvalidSimulationRequest, simulation_params
from simulations.studies.designs import (
    Design,
    DesignKind,
    design_build,
    design_case_count,
    settable_variables,
)
from simulations.studies.errors import InvalidStudyRequest
from simulations.tests.factories import ModelFactory

MODEL = ModelFactory.build()
VARIABLES = settable_variables(MODEL)


def build(spec: dict, max_cases: int = 10_000) -> Design:
    return design_build(spec=spec, variables=VARIABLES, max_cases=max_cases)


def column(design: Design, name: str) -> list:
    return [case[name] for case in design.cases]


def test_a_design_varies_exactly_the_variables_a_run_may_give_start_values_to():
    assert set(VARIABLES) == {"h", "v", "g", "e", "bounces", "active"}
    for variable in MODEL.summary["variables"]:
        name = variable["name"]
        value = False if variable["type"] == "Boolean" else 1
        try:
            simulation_params(model=MODEL, request={"start_values": {name: value}})
            run_accepts = True
        except InvalidSimulationRequest:
            run_accepts = False
        assert run_accepts == (name in VARIABLES), name


# spec -> the cases, in order
BUILT = {
    "grid: lists and a range, the first parameter slowest": (
        {"kind": "grid", "parameters": {"e": [0.5, 0.7], "h": {"start": 1, "stop": 2, "num": 3}}},
        [
            {"e": 0.5, "h": 1.0},
            {"e": 0.5, "h": 1.5},
            {"e": 0.5, "h": 2.0},
            {"e": 0.7, "h": 1.0},
            {"e": 0.7, "h": 1.5},
            {"e": 0.7, "h": 2.0},
        ],
    ),
    "grid: parameters in the order given": (
        {"kind": "grid", "parameters": {"h": [1, 2], "e": [0.5, 0.7]}},
        [
            {"h": 1.0, "e": 0.5},
            {"h": 1.0, "e": 0.7},
            {"h": 2.0, "e": 0.5},
            {"h": 2.0, "e": 0.7},
        ],
    ),
    "grid: a range of one point is its start (numpy.linspace)": (
        {"kind": "grid", "parameters": {"g": {"start": -9.81, "stop": 0, "num": 1}}},
        [{"g": -9.81}],
    ),
    "grid: a descending range": (
        {"kind": "grid", "parameters": {"g": {"start": 2, "stop": 0, "num": 3}}},
        [{"g": 2.0}, {"g": 1.0}, {"g": 0.0}],
    ),
    "grid: integers and booleans as the variables take them": (
        {
            "kind": "grid",
            "parameters": {"bounces": {"start": 0, "stop": 4, "num": 3}, "active": [True, False]},
        },
        [
            {"bounces": 0, "active": True},
            {"bounces": 0, "active": False},
            {"bounces": 2, "active": True},
            {"bounces": 2, "active": False},
            {"bounces": 4, "active": True},
            {"bounces": 4, "active": False},
        ],
    ),
    "grid: a whole float for an integer": (
        {"kind": "grid", "parameters": {"bounces": [1.0, 3]}},
        [{"bounces": 1}, {"bounces": 3}],
    ),
    "cases: as given, numbers as the variables take them": (
        {"kind": "cases", "cases": [{"e": 1, "bounces": 2.0}, {"e": 0.25, "bounces": 7}]},
        [{"e": 1.0, "bounces": 2}, {"e": 0.25, "bounces": 7}],
    ),
}


@pytest.mark.parametrize(("spec", "cases"), BUILT.values(), ids=list(BUILT))
def test_a_design_gives_its_cases_in_order(spec, cases):
    design = build(spec)

    assert design.cases == tuple(cases)
    assert design.parameters == tuple(cases[0])
    assert design_case_count(spec=spec) == len(cases)
    # Values are the variables' Python types (bool is an int: compare the types exactly).
    for built, expected in zip(design.cases, cases, strict=True):
        assert {k: type(v) for k, v in built.items()} == {k: type(v) for k, v in expected.items()}


# spec -> {field: words of its message}: refused with 400 naming exactly these fields
REFUSED = {
    "not an object": ([1, 2], {"design": "an object"}),
    "no kind": ({"parameters": {"e": [1]}}, {"design.kind": "must be one of"}),
    "a misspelt kind": ({"kind": "grdi"}, {"design.kind": "Did you mean 'grid'?"}),
    "a misspelt field": (
        {"kind": "grid", "parameters": {"e": [1]}, "paramters": {}},
        {"design.paramters": "Did you mean 'parameters'?"},
    ),
    "grid without parameters": ({"kind": "grid"}, {"design.parameters": "at least one"}),
    "grid: an empty list": (
        {"kind": "grid", "parameters": {"e": []}},
        {"design.parameters.e": "at least one value"},
    ),
    "grid: a string value": (
        {"kind": "grid", "parameters": {"e": [0.5, "0.7"]}},
        {"design.parameters.e": "finite numbers"},
    ),
    "grid: a NaN": (
        {"kind": "grid", "parameters": {"e": [float("nan")]}},
        {"design.parameters.e": "finite numbers"},
    ),
    "grid: num 0": (
        {"kind": "grid", "parameters": {"h": {"start": 1, "stop": 2, "num": 0}}},
        {"design.parameters.h.num": "at least 1"},
    ),
    "grid: num fractional": (
        {"kind": "grid", "parameters": {"h": {"start": 1, "stop": 2, "num": 2.5}}},
        {"design.parameters.h.num": "whole number"},
    ),
    "grid: a range without stop, misspelt": (
        {"kind": "grid", "parameters": {"h": {"start": 1, "sotp": 2, "num": 2}}},
        {"design.parameters.h.stop": "Give stop", "design.parameters.h.sotp": "'stop'?"},
    ),
    "grid: an infinite start": (
        {"kind": "grid", "parameters": {"h": {"start": float("-inf"), "stop": 2, "num": 2}}},
        {"design.parameters.h.start": "finite number"},
    ),
    "grid: a scalar": ({"kind": "grid", "parameters": {"h": 1}}, {"design.parameters.h": "a list"}),
    "grid: no such variable, close to one": (
        {"kind": "grid", "parameters": {"bounce": [1]}},
        {"design.parameters.bounce": "Did you mean 'bounces'?"},
    ),
    "grid: a derivative": (
        {"kind": "grid", "parameters": {"der(h)": [1]}},
        {"design.parameters.der(h)": "whose start value can be set"},
    ),
    "grid: a calculated parameter": (
        {"kind": "grid", "parameters": {"energy": [1]}},
        {"design.parameters.energy": "whose start value can be set"},
    ),
    "grid: a constant": (
        {"kind": "grid", "parameters": {"v_min": [1]}},
        {"design.parameters.v_min": "whose start value can be set"},
    ),
    "grid: a fraction for an integer": (
        {"kind": "grid", "parameters": {"bounces": [1, 1.5]}},
        {"design.parameters.bounces": "a whole number"},
    ),
    "grid: a range with fractional points for an integer": (
        {"kind": "grid", "parameters": {"bounces": {"start": 0, "stop": 1, "num": 3}}},
        {"design.parameters.bounces": "fractional points"},
    ),
    "grid: a number for a boolean": (
        {"kind": "grid", "parameters": {"active": [0, 1]}},
        {"design.parameters.active": "true or false"},
    ),
    "grid: a boolean for a real": (
        {"kind": "grid", "parameters": {"e": [True]}},
        {"design.parameters.e": "a number"},
    ),
    "grid: a range for a boolean": (
        {"kind": "grid", "parameters": {"active": {"start": 0, "stop": 1, "num": 2}}},
        {"design.parameters.active": "list its values"},
    ),
    "cases: none": ({"kind": "cases", "cases": []}, {"design.cases": "a list of cases"}),
    "cases: an empty case": ({"kind": "cases", "cases": [{}]}, {"design.cases.0": "not empty"}),
    "cases: different parameters": (
        {"kind": "cases", "cases": [{"e": 1, "h": 2}, {"e": 1}, {"e": 1, "g": 1}]},
        {"design.cases.1": "This one sets e.", "design.cases.2": "This one sets e, g."},
    ),
    "cases: a value that is not a number": (
        {"kind": "cases", "cases": [{"e": 1}, {"e": None}]},
        {"design.cases.1": "finite numbers"},
    ),
    "cases: a fraction for an integer": (
        {"kind": "cases", "cases": [{"bounces": 1}, {"bounces": 2.5}]},
        {"design.cases.1.bounces": "a whole number, not 2.5"},
    ),
    "cases: no such variable": (
        {"kind": "cases", "cases": [{"x": 1}]},
        {"design.cases": "no variable 'x'"},
    ),
    "cases: an order that is not the parameters": (
        {"kind": "cases", "cases": [{"e": 1, "h": 1}], "parameter_order": ["e", "g"]},
        {"design.parameter_order": "each parameter once"},
    ),
    "lhs: no samples": (
        {"kind": "lhs", "parameters": {"e": {"low": 0, "high": 1}}},
        {"design.samples": "at least 1"},
    ),
    "lhs: zero samples, a negative seed": (
        {"kind": "lhs", "samples": 0, "seed": -1, "parameters": {"e": {"low": 0, "high": 1}}},
        {"design.samples": "at least 1", "design.seed": "0 to 2**63 - 1"},
    ),
    "sobol: a seed that is a string": (
        {"kind": "sobol", "samples": 4, "seed": "7", "parameters": {"e": {"low": 0, "high": 1}}},
        {"design.seed": "whole number"},
    ),
    "halton: low not below high": (
        {"kind": "halton", "samples": 4, "parameters": {"e": {"low": 1, "high": 1}}},
        {"design.parameters.e.high": "greater than low"},
    ),
    "lhs: a list instead of bounds": (
        {"kind": "lhs", "samples": 4, "parameters": {"e": [0, 1]}},
        {"design.parameters.e": '{"low", "high"}'},
    ),
    "lhs: a distribution is for monte_carlo": (
        {"kind": "lhs", "samples": 4, "parameters": {"e": {"low": 0, "high": 1, "std": 1}}},
        {"design.parameters.e.std": "Unknown field"},
    ),
    "lhs: a boolean": (
        {"kind": "lhs", "samples": 4, "parameters": {"active": {"low": 0, "high": 1}}},
        {"design.parameters.active": "not sampled"},
    ),
    "lhs: fractional bounds for an integer": (
        {"kind": "lhs", "samples": 4, "parameters": {"bounces": {"low": 0.5, "high": 3}}},
        {"design.parameters.bounces.low": "must be whole"},
    ),
    "monte_carlo: an unknown distribution": (
        {"kind": "monte_carlo", "samples": 4, "parameters": {"e": {"distribution": "norml"}}},
        {"design.parameters.e.distribution": "Did you mean 'normal'?"},
    ),
    "monte_carlo: std 0 and sigma negative": (
        {
            "kind": "monte_carlo",
            "samples": 4,
            "parameters": {
                "e": {"distribution": "normal", "mean": 1, "std": 0},
                "g": {"distribution": "lognormal", "mean": 0, "sigma": -1},
            },
        },
        {
            "design.parameters.e.std": "greater than 0",
            "design.parameters.g.sigma": "greater than 0",
        },
    ),
    "monte_carlo: a normal without mean": (
        {
            "kind": "monte_carlo",
            "samples": 4,
            "parameters": {"e": {"distribution": "normal", "std": 1}},
        },
        {"design.parameters.e.mean": "Give mean"},
    ),
    "monte_carlo: a truncation that is empty": (
        {
            "kind": "monte_carlo",
            "samples": 4,
            "parameters": {
                "e": {"distribution": "normal", "mean": 0, "std": 1, "low": 2, "high": 1}
            },
        },
        {"design.parameters.e.high": "greater than low"},
    ),
    "monte_carlo: a lognormal has no bounds": (
        {
            "kind": "monte_carlo",
            "samples": 4,
            "parameters": {"e": {"distribution": "lognormal", "mean": 0, "sigma": 1, "low": 0}},
        },
        {"design.parameters.e.low": "Unknown field"},
    ),
    "monte_carlo: a normal integer": (
        {
            "kind": "monte_carlo",
            "samples": 4,
            "parameters": {"bounces": {"distribution": "normal", "mean": 3, "std": 1}},
        },
        {"design.parameters.bounces.distribution": "only be drawn uniformly"},
    ),
    "monte_carlo: draws beyond a float": (
        {
            "kind": "monte_carlo",
            "samples": 4,
            "seed": 1,
            "parameters": {"e": {"distribution": "lognormal", "mean": 700, "sigma": 100}},
        },
        {"design.parameters.e": "too large"},
    ),
}


@pytest.mark.parametrize(("spec", "refused"), REFUSED.values(), ids=list(REFUSED))
def test_a_design_that_cannot_be_built_is_refused_naming_its_fields(spec, refused):
    with pytest.raises(InvalidStudyRequest) as caught:
        build(spec)

    error = caught.value
    assert error.status_code == 400
    assert error.code == "invalid-request"
    assert error.extra == {"errors": error.errors}
    assert set(error.errors) == set(refused)
    for field, words in refused.items():
        assert words in " ".join(error.errors[field]), (field, error.errors[field])


def test_many_bad_cases_are_listed_up_to_ten_and_counted():
    cases = [{"e": 1}] + [{"h": 1}] * 25
    with pytest.raises(InvalidStudyRequest) as caught:
        build({"kind": "cases", "cases": cases})
    assert len(caught.value.errors) == 11
    assert caught.value.errors["design.cases"] == [
        "25 cases are invalid; the first ones are listed."
    ]


def test_the_case_limit_is_counted_before_any_case_is_built():
    axis = {"start": 0, "stop": 1, "num": 10**9}
    huge = {"kind": "grid", "parameters": {"e": axis, "h": axis, "g": axis}}

    assert design_case_count(spec=huge) == 10**27
    with pytest.raises(InvalidStudyRequest) as caught:
        build(huge)  # materialising one axis alone would take 8 GB
    assert caught.value.errors == {
        "design": [
            f"This design has {10**27:,} cases; a study may have at most 10,000.",
        ]
    }


def test_the_limit_is_inclusive_and_names_samples_for_sampled_designs():
    grid = {"kind": "grid", "parameters": {"e": {"start": 0, "stop": 1, "num": 10}}}
    assert len(build(grid, max_cases=10).cases) == 10
    sampled = {"kind": "lhs", "samples": 11, "parameters": {"e": {"low": 0, "high": 1}}}
    with pytest.raises(InvalidStudyRequest) as caught:
        build(sampled, max_cases=10)
    assert list(caught.value.errors) == ["design.samples"]


def test_a_malformed_spec_cannot_be_counted():
    with pytest.raises(InvalidStudyRequest) as caught:
        design_case_count(spec={"kind": "lhs", "samples": -5, "parameters": {}})
    assert set(caught.value.errors) == {"design.samples", "design.parameters"}


SAMPLED = {
    kind: {
        "kind": kind,
        "samples": 16,
        "parameters": {"e": {"low": 0.5, "high": 0.9}, "g": {"low": -10, "high": -9}},
    }
    for kind in ("lhs", "sobol", "halton")
}
SAMPLED["monte_carlo"] = {
    "kind": "monte_carlo",
    "samples": 16,
    "parameters": {
        "e": {"distribution": "uniform", "low": 0.5, "high": 0.9},
        "g": {"distribution": "normal", "mean": -9.81, "std": 0.1},
        "h": {"distribution": "lognormal", "mean": 0, "sigma": 0.25},
    },
}


@pytest.mark.parametrize("spec", SAMPLED.values(), ids=list(SAMPLED))
def test_a_sampled_design_without_a_seed_draws_one_and_the_stored_spec_rebuilds_it(spec):
    design = build(spec)
    seed = design.spec["seed"]
    assert isinstance(seed, int) and 0 <= seed < 2**53
    assert build(spec).spec["seed"] != seed  # a fresh one each time

    # As stored in JSONB: through JSON, the keys of every object in another order.
    stored = json.loads(json.dumps(design.to_json(), allow_nan=False), object_pairs_hook=shuffled)
    stored.pop("warnings", None)
    rebuilt = build(stored)

    assert rebuilt.cases == design.cases
    assert rebuilt.parameters == design.parameters == tuple(spec["parameters"])
    assert rebuilt.spec == design.spec
    assert len(design.cases) == 16
    json.dumps(design.cases, allow_nan=False)


def shuffled(pairs: list) -> dict:
    pairs = list(pairs)
    random.Random(len(pairs)).shuffle(pairs)
    pairs.reverse()
    return dict(pairs)


@pytest.mark.parametrize("spec", SAMPLED.values(), ids=list(SAMPLED))
def test_the_same_seed_gives_the_same_design_and_another_seed_another(spec):
    first = build({**spec, "seed": 7})
    assert build({**spec, "seed": 7}).cases == first.cases
    assert build({**spec, "seed": 8}).cases != first.cases
    assert first.spec["seed"] == 7


def test_lhs_puts_one_point_in_each_stratum_of_each_parameter():
    design = build({**SAMPLED["lhs"], "seed": 3})
    for name, (low, high) in {"e": (0.5, 0.9), "g": (-10, -9)}.items():
        strata = np.floor((np.array(column(design, name)) - low) / (high - low) * 16)
        assert sorted(strata.tolist()) == list(range(16)), name


def test_sobol_off_a_power_of_two_says_so_without_a_python_warning():
    spec = {"kind": "sobol", "samples": 12, "seed": 1, "parameters": {"e": {"low": 0, "high": 1}}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        off = build(spec)
        on = build({**spec, "samples": 16})
    assert off.warnings == (
        "Sobol' points are balanced only in powers of 2; these are the first 12 of 16. "
        "samples = 8 or 16 keeps the balance.",
    )
    assert off.to_json()["warnings"] == list(off.warnings)
    assert on.warnings == () and "warnings" not in on.to_json()
    assert off.cases == on.cases[:12]
    # 16 Sobol' points: one in each sixteenth of [0, 1).
    assert sorted(np.floor(np.array(column(on, "e")) * 16).tolist()) == list(range(16))


@pytest.mark.parametrize("kind", ["lhs", "sobol", "halton"])
def test_sampled_values_stay_within_their_bounds(kind):
    design = build({**SAMPLED[kind], "samples": 100})
    assert all(0.5 <= value < 0.9 for value in column(design, "e"))
    assert all(-10 <= value < -9 for value in column(design, "g"))


def test_an_integer_parameter_is_sampled_with_equal_weight_on_its_inclusive_bounds():
    design = build(
        {"kind": "lhs", "samples": 4, "seed": 5, "parameters": {"bounces": {"low": 0, "high": 3}}}
    )
    values = column(design, "bounces")
    assert sorted(values) == [0, 1, 2, 3]  # a Latin hypercube: each integer once
    assert all(type(value) is int for value in values)
    assert design.spec["parameters"] == {"bounces": {"low": 0, "high": 3}}

    drawn = build(
        {
            "kind": "monte_carlo",
            "samples": 400,
            "seed": 5,
            "parameters": {"bounces": {"low": 2, "high": 4}},
        }
    )
    values = column(drawn, "bounces")
    assert set(values) == {2, 3, 4}
    assert drawn.spec["parameters"]["bounces"] == {"distribution": "uniform", "low": 2, "high": 4}


def test_monte_carlo_draws_follow_their_distributions():
    samples = 20_000
    design = build(
        {
            "kind": "monte_carlo",
            "samples": samples,
            "seed": 11,
            "parameters": {
                "e": {"distribution": "uniform", "low": 0.5, "high": 0.9},
                "g": {"distribution": "normal", "mean": -9.81, "std": 0.2},
                "h": {"distribution": "lognormal", "mean": 0.0, "sigma": 0.5},
                "v": {"distribution": "normal", "mean": 0, "std": 1, "low": -0.5, "high": 2},
            },
        },
        max_cases=samples,
    )
    e, g, h, v = (np.array(column(design, name)) for name in ("e", "g", "h", "v"))
    tolerance = 5 / np.sqrt(samples)  # five standard errors of a unit-variance mean
    assert e.min() >= 0.5 and e.max() < 0.9
    assert abs(e.mean() - 0.7) < 0.4 * tolerance
    assert abs(g.mean() + 9.81) < 0.2 * tolerance
    assert abs(g.std() - 0.2) < 0.01
    assert abs(np.log(h).mean()) < 0.5 * tolerance and abs(np.log(h).std() - 0.5) < 0.01
    assert v.min() >= -0.5 and v.max() <= 2  # truncated, not clipped:
    # The truncated normal's mean, (phi(-0.5) - phi(2)) / (Phi(2) - Phi(-0.5)) by hand:
    # (0.35207 - 0.05399) / (0.97725 - 0.30854) = 0.44574
    assert abs(v.mean() - 0.44574) < tolerance
    assert (v == -0.5).sum() == 0


def test_a_monte_carlo_parameter_added_at_the_end_leaves_the_others_unchanged():
    spec = {
        "kind": "monte_carlo",
        "samples": 8,
        "seed": 3,
        "parameters": {"e": {"low": 0.5, "high": 0.9}},
    }
    longer = {**spec, "parameters": {**spec["parameters"], "g": {"low": -10, "high": -9}}}
    assert column(build(longer), "e") == column(build(spec), "e")


def test_the_normalised_spec_is_what_the_api_returns():
    design = build(
        {
            "kind": "grid",
            "parameters": {"bounces": [1.0, 2], "h": {"start": 1, "stop": 2, "num": 2}},
        }
    )
    assert design.kind is DesignKind.GRID
    assert design.to_json() == {
        "kind": "grid",
        "parameters": {"bounces": [1, 2], "h": {"start": 1.0, "stop": 2.0, "num": 2}},
        "parameter_order": ["bounces", "h"],
    }
    assert build(design.to_json()).cases == design.cases
