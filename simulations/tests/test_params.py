"""A run request checked against its model (simulations/params.py), table-driven: which
requests are refused with a 400 naming which fields, and what the accepted ones become.

No database and no FMU to run: the model is a row built in memory (ModelFactory.build(),
the hand-written FMI 2 bouncing ball: outputs h and v, parameters g (fixed) and e
(tunable), a Boolean input `active`, a constant v_min, a calculated parameter energy;
default experiment 0..3 s).
"""

from __future__ import annotations

import math

import pytest

from simulations.params import InvalidSimulationRequest, simulation_params
from simulations.tests.factories import ModelFactory

INPUT = {"time": [0.0, 1.0, 2.0], "active": [1, 0, 1]}

# request -> {field: words its message has}: refused with 400, naming exactly these fields
REFUSED = {
    "unknown fmi_type": ({"fmi_type": "Banana"}, {"fmi_type": "not Banana"}),
    "stop before start": ({"start_time": 2, "stop_time": 1}, {"stop_time": "must be after"}),
    "stop equal to start": ({"start_time": 1, "stop_time": 1}, {"stop_time": "must be after"}),
    "stop before the default start": ({"stop_time": -1}, {"stop_time": "must be after"}),
    "too many output points": (
        {"stop_time": 3, "output_interval": 1e-9},
        {"output_interval": "the limit is"},
    ),
    "a solver for co-simulation": ({"solver": "Euler"}, {"solver": "ModelExchange runs"}),
    "a start value of no variable": ({"start_values": {"nope": 1}}, {"start_values": "'nope'"}),
    "a start value of a derivative": (
        {"start_values": {"der(h)": 1}},
        {"start_values": "cannot be given a start value"},
    ),
    "a start value of a constant": (
        {"start_values": {"v_min": 1}},
        {"start_values": "cannot be given a start value"},
    ),
    "a start value of a calculated parameter": (
        {"start_values": {"energy": 1}},
        {"start_values": "cannot be given a start value"},
    ),
    "an output of no variable": ({"output": ["h", "missing"]}, {"output": "'missing'"}),
    "a timeout over the longest": ({"timeout": 100_000}, {"timeout": "longest a run may take"}),
    "input without time": ({"input": {"active": [1, 0]}}, {"input": '"time" column'}),
    "input time not a list": ({"input": {"time": 3, "active": [1]}}, {"input": '"time" column'}),
    "input time not finite": (
        {"input": {"time": [0, math.inf], "active": [1, 0]}},
        {"input": "finite numbers"},
    ),
    "input time a boolean": (
        {"input": {"time": [False, True], "active": [1, 0]}},
        {"input": "finite numbers"},
    ),
    "input time decreasing": (
        {"input": {"time": [0, 2, 1], "active": [1, 0, 1]}},
        {"input": "must not decrease"},
    ),
    "input column of no variable": (
        {"input": {"time": [0, 1], "g2": [1, 2]}},
        {"input": "no variable 'g2'"},
    ),
    "input column not an input": (
        {"input": {"time": [0, 1], "g": [1, 2]}},
        {"input": "not an input"},
    ),
    "input column too short": (
        {"input": {"time": [0, 1, 2], "active": [1, 0]}},
        {"input": "one value per time (3)"},
    ),
    "input column with a NaN": (
        {"input": {"time": [0, 1], "active": [1, math.nan]}},
        {"input": "finite numbers"},
    ),
    "input with time only": ({"input": {"time": [0, 1]}}, {"input": "no input variable"}),
    "several fields at once": (
        {"stop_time": -1, "output": ["nope"], "timeout": 100_000},
        {"stop_time": "must be after", "output": "'nope'", "timeout": "longest"},
    ),
}


@pytest.mark.parametrize(("request_body", "refused"), REFUSED.values(), ids=list(REFUSED))
def test_a_request_the_model_cannot_run_is_refused_naming_its_fields(request_body, refused):
    with pytest.raises(InvalidSimulationRequest) as caught:
        simulation_params(model=ModelFactory.build(), request=request_body)

    error = caught.value
    assert error.status_code == 400
    assert error.code == "invalid-request"
    assert set(error.errors) == set(refused)
    for field, words in refused.items():
        assert words in " ".join(error.errors[field]), (field, error.errors[field])


def test_a_model_that_cannot_run_as_co_simulation_here_says_how_it_can():
    model = ModelFactory.build(runnable_fmi_types=["ModelExchange"])
    with pytest.raises(InvalidSimulationRequest) as caught:
        simulation_params(model=model, request={"fmi_type": "CoSimulation"})
    assert caught.value.errors == {
        "fmi_type": ["This model can run as ModelExchange here, not CoSimulation."]
    }


def test_a_model_without_a_runnable_binary_defaults_to_its_first_type_and_is_refused():
    model = ModelFactory.build(runnable_fmi_types=[])
    with pytest.raises(InvalidSimulationRequest) as caught:
        simulation_params(model=model, request={})
    assert list(caught.value.errors) == ["fmi_type"]


# request -> what the run's parameters hold (the rest: defaults)
ACCEPTED = {
    "nothing: the default experiment": ({}, {"fmi_type": "CoSimulation", "stop_time": 3.0}),
    "start and stop": ({"start_time": 1, "stop_time": 2}, {"start_time": 1.0, "stop_time": 2.0}),
    "a stop after the default start": ({"stop_time": 0.5}, {"start_time": 0.0, "stop_time": 0.5}),
    "model exchange with a solver": (
        {"fmi_type": "ModelExchange", "solver": "Euler"},
        {"fmi_type": "ModelExchange", "solver": "Euler"},
    ),
    "start values of parameters, states and inputs": (
        {"start_values": {"e": 0.5, "g": -3.7, "h": 2, "active": False}},
        {"start_values": {"e": 0.5, "g": -3.7, "h": 2, "active": False}},
    ),
    "outputs": ({"output": ["h"]}, {"output": ["h"]}),
    "an output interval at the limit": (
        {"stop_time": 3, "output_interval": 3 / 2_000_000},
        {"output_interval": 3 / 2_000_000},
    ),
    "an input table": ({"input": INPUT}, {"input": INPUT}),
    "the longest timeout": ({"timeout": 600}, {"timeout": 600.0}),
}
DEFAULTS = {
    "fmi_type": "CoSimulation",
    "start_time": 0.0,
    "stop_time": 3.0,
    "output_interval": None,
    "step_size": None,
    "relative_tolerance": None,
    "solver": "CVode",
    "start_values": {},
    "input": None,
    "output": None,
    "timeout": 120.0,
}


@pytest.mark.parametrize(("request_body", "expected"), ACCEPTED.values(), ids=list(ACCEPTED))
def test_an_accepted_request_becomes_complete_parameters(request_body, expected):
    params = simulation_params(model=ModelFactory.build(), request=request_body)
    assert params == {**DEFAULTS, **expected}
