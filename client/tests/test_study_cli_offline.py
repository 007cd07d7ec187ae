"""Studies in the client without a gateway: `fmugw study create`'s options become the
design, base and summary the API takes; the Python request body; the progress bar."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from fmugateway_client import Study, StudyProgressBar
from fmugateway_client.bodies import study_request
from fmugateway_client.cli import UsageError, build_parser
from fmugateway_client.cli_studies import (
    parse_grid,
    parse_param,
    parse_statistics,
    study_arguments,
)


def create_args(*options: str):
    return build_parser().parse_args(["study", "create", "MODEL", *options])


# --grid text -> (name, axis)
GRIDS = {
    "a range": ("e=0.5:0.9:5", ("e", {"start": 0.5, "stop": 0.9, "num": 5})),
    "a range of integers": ("n=0:10:11", ("n", {"start": 0, "stop": 10, "num": 11})),
    "a negative range": ("g=-10:-9:2", ("g", {"start": -10, "stop": -9, "num": 2})),
    "values": ("h=1,2.5,1e3", ("h", [1, 2.5, 1000.0])),
    "one value": ("h=1", ("h", [1])),
    "booleans": ("active=true,false", ("active", [True, False])),
    "a name with brackets, spaces trimmed": (" a.b[1] = 1, 2 ", ("a.b[1]", [1, 2])),
}


@pytest.mark.parametrize(("text", "parsed"), GRIDS.values(), ids=list(GRIDS))
def test_a_grid_option_is_a_range_or_a_list(text, parsed):
    assert parse_grid(text) == parsed


# --param text, kind -> (name, box)
PARAMS = {
    "bounds": ("e=0.5:0.9", "lhs", ("e", {"low": 0.5, "high": 0.9})),
    "bounds, monte carlo: uniform": ("e=0.5:0.9", "monte_carlo", ("e", {"low": 0.5, "high": 0.9})),
    "uniform": (
        "e=uniform:0:1",
        "monte_carlo",
        ("e", {"distribution": "uniform", "low": 0, "high": 1}),
    ),
    "normal": (
        "g=normal:-9.81:0.1",
        "monte_carlo",
        ("g", {"distribution": "normal", "mean": -9.81, "std": 0.1}),
    ),
    "normal truncated both sides": (
        "g=normal:1:0.5:0:2",
        "monte_carlo",
        ("g", {"distribution": "normal", "mean": 1, "std": 0.5, "low": 0, "high": 2}),
    ),
    "normal truncated below only": (
        "g=normal:1:0.5:0:",
        "monte_carlo",
        ("g", {"distribution": "normal", "mean": 1, "std": 0.5, "low": 0}),
    ),
    "normal truncated above only": (
        "g=normal:1:0.5::3",
        "monte_carlo",
        ("g", {"distribution": "normal", "mean": 1, "std": 0.5, "high": 3}),
    ),
    "lognormal": (
        "k=lognormal:0:0.25",
        "monte_carlo",
        ("k", {"distribution": "lognormal", "mean": 0, "sigma": 0.25}),
    ),
}


@pytest.mark.parametrize(("text", "kind", "parsed"), PARAMS.values(), ids=list(PARAMS))
def test_a_param_option_is_bounds_or_a_distribution(text, kind, parsed):
    assert parse_param(text, kind=kind) == parsed


# (parser, text) -> words of the usage error
BAD: dict[str, tuple[Any, Any, str]] = {
    "grid without =": (parse_grid, "e", "NAME=..."),
    "grid with an empty value": (parse_grid, "e=", "NAME=..."),
    "grid range of two parts": (parse_grid, "e=0:1", "START:STOP:NUM"),
    "grid range with a fractional num": (parse_grid, "e=0:1:2.5", "at least 1"),
    "grid range of zero points": (parse_grid, "e=0:1:0", "at least 1"),
    "grid value not a number": (parse_grid, "e=0.5,high", "'high' is not a number"),
    "grid range start not a number": (parse_grid, "e=a:1:2", "'a' is not a number"),
    "param with one bound": (lambda text: parse_param(text, kind="lhs"), "e=0.5", "LOW:HIGH"),
    "param distribution for lhs": (
        lambda text: parse_param(text, kind="lhs"),
        "e=normal:0:1",
        "for --kind monte_carlo",
    ),
    "param normal without std": (
        lambda text: parse_param(text, kind="monte_carlo"),
        "e=normal:0",
        "e=normal:MEAN:STD:LOW:HIGH",
    ),
    "param lognormal with bounds": (
        lambda text: parse_param(text, kind="monte_carlo"),
        "e=lognormal:0:1:0:1",
        "e=lognormal:MEAN:SIGMA",
    ),
    "statistics of both forms": (parse_statistics, ["max", "h=min"], "not both"),
}


@pytest.mark.parametrize(("parse", "text", "words"), BAD.values(), ids=list(BAD))
def test_a_malformed_option_is_a_usage_error_that_says_the_syntax(parse, text, words):
    with pytest.raises(UsageError) as refused:
        parse(text)
    assert words in str(refused.value)


def test_statistics_are_for_every_output_or_per_output():
    assert parse_statistics([]) is None
    assert parse_statistics(["final", "max,min"]) == ["final", "max", "min"]
    assert parse_statistics(["h=max,time_of_max", "v=min", "h=final"]) == {
        "h": ["max", "time_of_max", "final"],
        "v": ["min"],
    }


def test_study_create_options_become_the_api_request():
    args = create_args(
        "--grid",
        "e=0.5:0.9:5",
        "--grid",
        "h=1,2,3",
        "--stop-time",
        "3",
        "--output-interval",
        "0.01",
        "--output",
        "h,v",
        "--set",
        "g=-9.81",
        "--stat",
        "final",
        "--stat",
        "max",
    )

    request = study_arguments(args)

    assert request == {
        "design": {
            "kind": "grid",
            "parameters": {"e": {"start": 0.5, "stop": 0.9, "num": 5}, "h": [1, 2, 3]},
        },
        "base": {
            "stop_time": 3.0,
            "output_interval": 0.01,
            "output": ["h", "v"],
            "start_values": {"g": -9.81},
        },
        "summary": ["final", "max"],
    }
    body = study_request("m1", **request)
    assert body == {"model": "m1", **request}
    assert json.loads(json.dumps(body)) == body
    assert list(body["design"]["parameters"]) == ["e", "h"]  # the order is the grid's order


def test_a_sampled_study_from_options():
    args = create_args(
        "--kind",
        "sobol",
        "--samples",
        "64",
        "--seed",
        "7",
        "--param",
        "e=0.5:0.9",
        "--param",
        "h=1:2",
    )
    assert study_arguments(args) == {
        "design": {
            "kind": "sobol",
            "samples": 64,
            "seed": 7,
            "parameters": {"e": {"low": 0.5, "high": 0.9}, "h": {"low": 1, "high": 2}},
        },
        "base": {},
        "summary": None,
    }
    unseeded = study_arguments(create_args("--kind", "lhs", "--samples", "8", "--param", "e=0:1"))
    assert "seed" not in unseeded["design"]  # the server draws one and returns it


def test_cases_come_from_a_csv_or_a_json_file_and_a_design_from_json(tmp_path):
    table = tmp_path / "cases.csv"
    table.write_text("e,h,active\n0.5,1,true\n\n0.7,2.5,false\n")
    assert study_arguments(create_args("--cases", str(table)))["design"] == {
        "kind": "cases",
        "cases": [{"e": 0.5, "h": 1, "active": True}, {"e": 0.7, "h": 2.5, "active": False}],
    }
    listed = tmp_path / "cases.json"
    listed.write_text('[{"e": 0.5}, {"e": 0.6}]')
    assert study_arguments(create_args("--cases", str(listed)))["design"]["cases"] == [
        {"e": 0.5},
        {"e": 0.6},
    ]
    design = tmp_path / "design.json"
    design.write_text(
        '{"kind": "halton", "samples": 4, "parameters": {"e": {"low": 0, "high": 1}}}'
    )
    assert study_arguments(create_args("--design", str(design)))["design"]["kind"] == "halton"

    table.write_text("e,h\n0.5\n")
    with pytest.raises(UsageError, match=r"cases\.csv:2: expected 2 values"):
        study_arguments(create_args("--cases", str(table)))
    design.write_text("[1]")
    with pytest.raises(UsageError, match="JSON object with a kind"):
        study_arguments(create_args("--design", str(design)))


# options -> words of the usage error
NOT_ONE_DESIGN = {
    "no design": ((), "one of --grid"),
    "two designs": (("--grid", "e=1", "--cases", "c.csv"), "not --grid and --cases"),
    "a param without a kind": (("--param", "e=0:1", "--samples", "4"), "needs --kind"),
    "a kind without samples": (("--kind", "lhs", "--param", "e=0:1"), "--samples"),
}


@pytest.mark.parametrize(("options", "words"), NOT_ONE_DESIGN.values(), ids=list(NOT_ONE_DESIGN))
def test_a_study_has_exactly_one_design(options, words):
    with pytest.raises(UsageError) as refused:
        study_arguments(create_args(*options))
    assert words in str(refused.value)


def test_the_python_request_converts_base_as_for_a_run_and_refuses_a_design_without_kind():
    body = study_request(
        "m1",
        design={"kind": "grid", "parameters": {"e": [0.5]}},
        base={"output": "h, v", "stop_time": 2, "input": {"time": (0, 1), "u": (1, 2)}},
        summary={"h": ("max",)},
    )
    assert body["base"] == {
        "output": ["h", "v"],
        "stop_time": 2,
        "input": {"time": [0, 1], "u": [1, 2]},
    }
    assert body["summary"] == {"h": ["max"]}
    assert study_request("m1", design={"kind": "lhs"}, summary="final")["summary"] == ["final"]
    assert "summary" not in study_request("m1", design={"kind": "lhs"})
    with pytest.raises(ValueError, match="kind"):
        study_request("m1", design={"parameters": {}})


def test_the_study_progress_bar_shows_cases_and_failures():
    stream = io.StringIO()
    bar = StudyProgressBar(stream, width=10)
    for status, ended, failed in (("queued", 0, 0), ("running", 5, 1), ("succeeded", 10, 2)):
        cases = {"total": 10, "succeeded": ended - failed, "failed": failed}
        bar(Study(None, {"id": "s", "status": status, "progress": ended / 10, "cases": cases}))  # type: ignore[arg-type]
    bar.close()
    frames = stream.getvalue().split("\r")[1:]
    assert frames[0].startswith("[          ]   0% queued    0/10 cases 0:00")
    assert frames[1].startswith("[#####     ]  50% running   5/10 cases, 1 failed")
    assert frames[2].startswith("[##########] 100% succeeded 10/10 cases, 2 failed")
    assert stream.getvalue().count("\n") == 1
