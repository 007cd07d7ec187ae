"""`fmugw study ...`: many cases of one model from a shell.

    fmugw study create model.fmu --grid e=0.5:0.9:5 --grid h=1,2,3 --output h \\
        --stat final --stat max --wait -o summary.csv
    fmugw study create MODEL_ID --kind lhs --samples 256 --seed 7 \\
        --param e=0.5:0.9 --param h=1:2
    fmugw study create MODEL_ID --kind monte_carlo --samples 1000 \\
        --param e=uniform:0.5:0.9 --param g=normal:-9.81:0.1 --param k=lognormal:0:0.25
    fmugw study status ID | summary ID -o table.parquet | cases ID | result ID INDEX |
        cancel ID | list

Design options (one kind per study):
  --grid NAME=START:STOP:NUM   a linear range (numpy.linspace: NUM points, both ends)
  --grid NAME=V1,V2,...        a list of values (numbers or true/false)
  --kind lhs|sobol|halton|monte_carlo --samples N [--seed S] --param NAME=SPEC:
     lhs/sobol/halton: SPEC is LOW:HIGH
     monte_carlo: LOW:HIGH or uniform:LOW:HIGH, normal:MEAN:STD[:LOW:HIGH] (truncated;
     leave a bound empty, e.g. normal:1:0.1:0:), lognormal:MEAN:SIGMA
  --cases FILE                 explicit cases: a CSV with a header of parameter names,
                               or a JSON list of {name: value}
  --design FILE                the design as JSON (- reads stdin)
Statistics: --stat final --stat max (each output), or --stat h=max,time_of_max (one output).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fmugateway_client.cli import (
    EXIT_API_ERROR,
    EXIT_OK,
    UsageError,
    add_run_parameters,
    connect,
    parse_scalar,
    print_json,
    print_table,
    run_parameters,
)
from fmugateway_client.studies import Study

SAMPLED_KINDS = ("lhs", "sobol", "halton", "monte_carlo")
DISTRIBUTIONS = {
    "uniform": ("low", "high"),
    "normal": ("mean", "std"),
    "lognormal": ("mean", "sigma"),
}


def add_study_commands(
    study: argparse.ArgumentParser, *, parents: Sequence[argparse.ArgumentParser] = ()
) -> None:
    """`study create|status|summary|cases|result|cancel|list`; `parents` give each its
    shared options (--json after the command)."""
    study.description = "Run many cases of one model in one paid request."
    subparsers = study.add_subparsers(dest="study_command", required=True, metavar="STUDY_COMMAND")

    def add(name: str, **options: Any) -> argparse.ArgumentParser:
        return subparsers.add_parser(name, parents=list(parents), **options)

    create = add(
        "create",
        help="start a study (see `fmugw study create --help`)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    create.add_argument("model", help="model id, or the path of an .fmu to upload first")
    design = create.add_argument_group("design")
    design.add_argument("--grid", action="append", default=[], metavar="NAME=VALUES")
    design.add_argument("--kind", choices=SAMPLED_KINDS, help="a sampled design's kind")
    design.add_argument("--samples", type=int, help="how many cases a sampled design draws")
    design.add_argument("--seed", type=int, help="the same seed gives the same cases")
    design.add_argument("--param", action="append", default=[], metavar="NAME=SPEC")
    design.add_argument("--cases", type=Path, metavar="FILE", help="explicit cases (CSV/JSON)")
    design.add_argument("--design", metavar="FILE", help="the design as JSON (- for stdin)")
    create.add_argument("--stat", action="append", default=[], metavar="STAT|OUTPUT=STATS")
    add_run_parameters(create.add_argument_group("every case's run"))
    create.add_argument("--dry-run", action="store_true", help="count and price; start nothing")
    create.add_argument("--wait", action="store_true", help="wait, then write the summary")
    create.add_argument("-o", "--out", type=Path, help="with --wait: the summary file")
    create.add_argument("--wait-timeout", type=float, help="stop waiting after N seconds")
    create.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    create.add_argument("--wait-for-payment", action=argparse.BooleanOptionalAction, default=None)
    create.add_argument("--open-browser", action="store_true")
    create.add_argument("--payment-token", help="pay with this token (from a paid checkout)")
    create.add_argument("--idempotency-key", help="the same key returns the same study")
    create.set_defaults(handler=command_study_create)

    status = add("status", help="a study's state and case counts")
    status.add_argument("study", help="study id")
    status.set_defaults(handler=command_study_status)

    summary = add("summary", help="one row per case: parameters, statistics")
    summary.add_argument("study", help="study id")
    summary.add_argument("-o", "--out", type=Path, help="file (.csv, .json, .parquet)")
    summary.add_argument("--format", choices=["csv", "json", "parquet"])
    summary.set_defaults(handler=command_study_summary)

    cases = add("cases", help="list a study's cases")
    cases.add_argument("study", help="study id")
    cases.add_argument("--status", help="only cases in this state, e.g. failed")
    cases.set_defaults(handler=command_study_cases)

    result = add("result", help="one case's full trace as CSV")
    result.add_argument("study", help="study id")
    result.add_argument("index", type=int, help="the case's index")
    result.add_argument("-o", "--out", type=Path, help="write the CSV here instead of stdout")
    result.set_defaults(handler=command_study_result)

    cancel = add("cancel", help="cancel the cases that have not ended")
    cancel.add_argument("study", help="study id")
    cancel.set_defaults(handler=command_study_cancel)

    listing = add("list", help="your studies, newest first")
    listing.add_argument("--status", help="only studies in this state")
    listing.set_defaults(handler=command_study_list)


# --- the request from the command line ---------------------------------------------------


def design_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The design the options describe; exactly one kind of design."""
    given = [
        name
        for name, present in (
            ("--grid", bool(args.grid)),
            ("--kind/--param", bool(args.kind or args.param)),
            ("--cases", args.cases is not None),
            ("--design", args.design is not None),
        )
        if present
    ]
    if len(given) != 1:
        raise UsageError(
            "describe the design with one of --grid, --kind with --param, --cases or --design"
            + (f", not {' and '.join(given)}" if given else "")
        )
    if args.grid:
        return {"kind": "grid", "parameters": dict(parse_grid(text) for text in args.grid)}
    if args.cases is not None:
        return {"kind": "cases", "cases": read_cases(args.cases)}
    if args.design is not None:
        return read_design(args.design)
    if not args.kind or not args.param or args.samples is None:
        raise UsageError("a sampled design needs --kind, --samples and at least one --param")
    design: dict[str, Any] = {"kind": args.kind, "samples": args.samples}
    if args.seed is not None:
        design["seed"] = args.seed
    design["parameters"] = dict(parse_param(text, kind=args.kind) for text in args.param)
    return design


def parse_grid(text: str) -> tuple[str, Any]:
    """NAME=START:STOP:NUM (a range) or NAME=V1,V2,... (values)."""
    name, values = _assignment(text, "--grid")
    if ":" in values:
        parts = values.split(":")
        if len(parts) != 3:
            raise UsageError(f"--grid {text!r}: a range is NAME=START:STOP:NUM")
        start, stop, num = parts
        return name, {
            "start": _number(start, text),
            "stop": _number(stop, text),
            "num": _count(num, text),
        }
    return name, [_value(part, text) for part in values.split(",")]


def parse_param(text: str, *, kind: str) -> tuple[str, dict[str, Any]]:
    """NAME=LOW:HIGH; for monte_carlo also uniform:LOW:HIGH, normal:MEAN:STD[:LOW:HIGH],
    lognormal:MEAN:SIGMA."""
    name, spec = _assignment(text, "--param")
    parts = spec.split(":")
    distribution = parts[0] if parts[0] in DISTRIBUTIONS else None
    if distribution and kind != "monte_carlo":
        raise UsageError(f"--param {text!r}: a distribution is for --kind monte_carlo")
    if distribution is None:
        if len(parts) != 2:
            raise UsageError(f"--param {text!r}: give NAME=LOW:HIGH")
        return name, {"low": _number(parts[0], text), "high": _number(parts[1], text)}
    numbers = parts[1:]
    keys = DISTRIBUTIONS[distribution]
    optional = ("low", "high") if distribution == "normal" else ()
    if not len(keys) <= len(numbers) <= len(keys) + len(optional):
        raise UsageError(
            f"--param {text!r}: give {name}={distribution}:"
            + ":".join(key.upper() for key in (*keys, *optional))
        )
    box: dict[str, Any] = {"distribution": distribution}
    for key, number in zip((*keys, *optional), numbers, strict=False):
        if number.strip() or key not in optional:
            box[key] = _number(number, text)
    return name, box


def parse_statistics(texts: Sequence[str]) -> list[str] | dict[str, list[str]] | None:
    """--stat final --stat max (every output) or --stat h=max,min (one output each)."""
    if not texts:
        return None
    per_output = [text for text in texts if "=" in text]
    if per_output and len(per_output) != len(texts):
        raise UsageError("--stat is either STAT (every output) or OUTPUT=STATS, not both")
    if not per_output:
        return [name.strip() for text in texts for name in text.split(",") if name.strip()]
    statistics: dict[str, list[str]] = {}
    for text in texts:
        output, names = _assignment(text, "--stat")
        statistics.setdefault(output, []).extend(n.strip() for n in names.split(",") if n.strip())
    return statistics


def read_cases(path: Path) -> list[dict[str, Any]]:
    """A CSV whose header names the parameters (one row per case), or a JSON list."""
    try:
        text = path.read_text()
    except OSError as error:
        raise UsageError(f"cannot read --cases {path}: {error.strerror}") from error
    if path.suffix.lower() == ".json":
        cases = _json(text, f"--cases {path}")
        if not isinstance(cases, list):
            raise UsageError(f"--cases {path}: the JSON must be a list of {{name: value}}")
        return cases
    rows = [row for row in csv.reader(text.splitlines()) if any(cell.strip() for cell in row)]
    if len(rows) < 2:
        raise UsageError(f"--cases {path}: a header of parameter names, then a row per case")
    header = [name.strip() for name in rows[0]]
    cases = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise UsageError(f"--cases {path}:{line}: expected {len(header)} values")
        cases.append(
            {name: parse_scalar(cell.strip()) for name, cell in zip(header, row, strict=True)}
        )
    return cases


def read_design(source: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as error:
        raise UsageError(f"cannot read --design {source}: {error.strerror}") from error
    design = _json(text, f"--design {source}")
    if not isinstance(design, dict):
        raise UsageError(f"--design {source}: the design is a JSON object with a kind")
    return design


def study_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """Client.create_study's keyword arguments (but the model and payment ones)."""
    return {
        "design": design_from_args(args),
        "base": {name: value for name, value in run_parameters(args).items() if value is not None},
        "summary": parse_statistics(args.stat),
    }


# --- commands ----------------------------------------------------------------------------


def command_study_create(args: argparse.Namespace) -> int:
    request = study_arguments(args)
    if args.out and not args.wait:
        raise UsageError("-o is the summary written after --wait")
    if args.model.lower().endswith(".fmu") and not Path(args.model).is_file():
        raise UsageError(f"no such file: {args.model}")
    wait_for_payment = args.wait_for_payment
    if wait_for_payment is None:
        wait_for_payment = sys.stdin.isatty() and sys.stderr.isatty()
    with connect() as client:
        if args.dry_run:
            quote = client.create_study(args.model, dry_run=True, **request)
            if args.json:
                return print_json(quote.raw)
            print(f"{quote.cases} cases, {quote.price} ({quote.price.per_case_cents} cents a case)")
            return EXIT_OK
        study = client.create_study(
            args.model,
            **request,
            idempotency_key=args.idempotency_key,
            payment_token=args.payment_token,
            on_payment_required="wait" if wait_for_payment else "raise",
            open_browser=args.open_browser,
        )
        if not args.wait:
            if args.json:
                return print_json(study.raw)
            print(study.id)
            print(
                f"study {study.id} {study.status}: {study.counts.total} cases, {study.price}",
                file=sys.stderr,
            )
            return EXIT_OK
        print(f"study {study.id} {study.status}: {study.counts.total} cases", file=sys.stderr)
        show_progress = sys.stderr.isatty() if args.progress is None else args.progress
        study.wait(timeout=args.wait_timeout, progress=show_progress)
        report_ended(study)
        if args.json:
            if args.out:
                write_summary(study, args.out, None)
            return print_json(study.raw)
        write_summary(study, args.out, None)
    return EXIT_OK if study.succeeded else EXIT_API_ERROR


def command_study_status(args: argparse.Namespace) -> int:
    with connect() as client:
        study = client.study(args.study)
    if args.json:
        return print_json(study.raw)
    counts = study.counts
    print(
        f"{study.id} {study.status} {study.progress:.0%} {counts.ended}/{counts.total} cases "
        f"(succeeded {counts.succeeded}, failed {counts.failed}, cancelled {counts.cancelled}, "
        f"running {counts.running}, queued {counts.queued})"
    )
    return EXIT_OK


def command_study_summary(args: argparse.Namespace) -> int:
    with connect() as client:
        write_summary(client.study(args.study), args.out, args.format)
    return EXIT_OK


def command_study_cases(args: argparse.Namespace) -> int:
    with connect() as client:
        cases = list(client.study(args.study).cases(status=args.status))
    if args.json:
        return print_json([case.raw for case in cases])
    print_table(
        ["index", "status", "parameters", "error"],
        [
            [
                str(case.index),
                case.status,
                " ".join(f"{name}={value}" for name, value in case.parameters.items()),
                f"{case.error.code}: {case.error.message}" if case.error else "",
            ]
            for case in cases
        ],
    )
    return EXIT_OK


def command_study_result(args: argparse.Namespace) -> int:
    with connect() as client:
        study = client.study(args.study)
        target = args.out if args.out else sys.stdout.buffer
        study.download_case_result(args.index, target)
    if args.out:
        print(f"wrote {args.out}", file=sys.stderr)
    return EXIT_OK


def command_study_cancel(args: argparse.Namespace) -> int:
    with connect() as client:
        study = client.study(args.study).cancel()
    if args.json:
        return print_json(study.raw)
    print(f"{study.id} {study.status}")
    return EXIT_OK


def command_study_list(args: argparse.Namespace) -> int:
    with connect() as client:
        studies = client.studies(status=args.status)
    if args.json:
        return print_json([study.raw for study in studies])
    print_table(
        ["id", "model", "status", "cases", "failed", "created"],
        [
            [
                study.id,
                study.model_name,
                study.status,
                f"{study.counts.ended}/{study.counts.total}",
                str(study.counts.failed),
                f"{study.created_at:%Y-%m-%d %H:%M}" if study.created_at else "",
            ]
            for study in studies
        ],
    )
    return EXIT_OK


# --- helpers -----------------------------------------------------------------------------


def write_summary(study: Study, out: Path | None, format: str | None) -> None:
    if out is None:
        if format == "parquet":
            raise UsageError("Parquet is binary: write it to a file with -o")
        study.download_summary(sys.stdout.buffer, format=format or "csv")
        sys.stdout.flush()
        return
    study.download_summary(out, format=format)
    print(f"wrote {out}", file=sys.stderr)


def report_ended(study: Study) -> None:
    counts = study.counts
    line = f"study {study.id} {study.status}: {counts.succeeded} of {counts.total} cases succeeded"
    if counts.failed:
        line += f", {counts.failed} failed (fmugw study cases {study.id} --status failed)"
    if counts.cancelled:
        line += f", {counts.cancelled} cancelled"
    print(line, file=sys.stderr)


def _assignment(text: str, option: str) -> tuple[str, str]:
    name, separator, value = text.partition("=")
    if not separator or not name.strip() or not value.strip():
        raise UsageError(f"{option} takes NAME=..., not {text!r}")
    return name.strip(), value.strip()


def _number(text: str, whole: str) -> float | int:
    value = parse_scalar(text.strip())
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"{whole!r}: {text!r} is not a number")
    return value


def _count(text: str, whole: str) -> int:
    value = _number(text, whole)
    if not isinstance(value, int) or value < 1:
        raise UsageError(f"{whole!r}: NUM is a whole number of points, at least 1")
    return value


def _value(text: str, whole: str) -> float | int | bool:
    value = parse_scalar(text.strip())
    if not isinstance(value, int | float):  # bool is an int
        raise UsageError(f"{whole!r}: {text!r} is not a number or true/false")
    return value


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as error:
        raise UsageError(f"{where}: not JSON ({error})") from error
