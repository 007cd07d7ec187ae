"""`fmugw`: the FMU Gateway from a shell.

Exit codes: 0 done, 1 the API or the run failed, 2 usage (including "not logged in"),
3 payment required and not waiting for it (non-interactive), 130 interrupted.
Data (CSV, ids, JSON) goes to stdout; progress, notices and errors go to stderr.
"""

from __future__ import annotations

import argparse
import csv
import getpass
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from fmugateway_client import __version__
from fmugateway_client.client import Client
from fmugateway_client.config import (
    API_KEY_VARIABLE,
    URL_VARIABLE,
    current_credentials,
    save_credentials,
    stored_credentials,
)
from fmugateway_client.errors import FmuGatewayError, PaymentRequired, SimulationFailed
from fmugateway_client.resources import Simulation

EXIT_OK = 0
EXIT_API_ERROR = 1
EXIT_USAGE = 2
EXIT_PAYMENT_REQUIRED = 3
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A mistake on the command line that argparse cannot see (exit code 2)."""


class ProgressBar:
    """A one-line text bar on stderr, redrawn in place: `[#####     ]  50% running 0:03`."""

    def __init__(self, stream: IO[str], width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.started = time.monotonic()
        self.drawn = False

    def __call__(self, simulation: Simulation) -> None:
        fraction = 1.0 if simulation.succeeded else min(max(simulation.progress, 0.0), 1.0)
        filled = round(fraction * self.width)
        elapsed = int(time.monotonic() - self.started)
        self.stream.write(
            f"\r[{'#' * filled}{' ' * (self.width - filled)}] {fraction:4.0%} "
            f"{simulation.status:<9} {elapsed // 60}:{elapsed % 60:02d}"
        )
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except UsageError as error:
        print(f"fmugw: {error}", file=sys.stderr)
        return EXIT_USAGE
    except PaymentRequired as required:
        report_payment_required(required)
        return EXIT_PAYMENT_REQUIRED
    except SimulationFailed as failed:
        report_failed_run(failed)
        return EXIT_API_ERROR
    except FmuGatewayError as error:
        print(f"fmugw: {error}", file=sys.stderr)
        return EXIT_API_ERROR
    except KeyboardInterrupt:
        print("\nfmugw: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fmugw",
        description="Upload FMUs to an FMU Gateway, run simulations and fetch their results.",
        epilog=f"The server and key come from `fmugw login`, or from ${URL_VARIABLE} and "
        f"${API_KEY_VARIABLE}, which take precedence.",
    )
    parser.add_argument("--version", action="version", version=f"fmugw {__version__}")
    parser.add_argument("--json", action="store_true", help="print the API's JSON instead of text")
    # --json after the command too (`fmugw models --json`); SUPPRESS keeps the global one.
    json_option = argparse.ArgumentParser(add_help=False)
    json_option.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_command(name: str, **options: Any) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[json_option], **options)

    login = add_command("login", help="save the server URL and API key")
    login.add_argument("--url", help="server URL, e.g. https://fmugateway.example")
    login.add_argument("--key", help="API key (asked for without echo when left out)")
    login.set_defaults(handler=command_login)

    account = add_command("account", help="show e-mail, credit balance and price")
    account.set_defaults(handler=command_account)

    upload = add_command("upload", help="upload an .fmu; prints the model id")
    upload.add_argument("fmu", type=Path, help="path of the .fmu file")
    upload.set_defaults(handler=command_upload)

    models = add_command("models", help="list your models")
    models.set_defaults(handler=command_models)

    variables = add_command("variables", help="list a model's variables")
    variables.add_argument("model", help="model id")
    variables.add_argument("--causality", help="only input, output, parameter, ...")
    variables.set_defaults(handler=command_variables)

    run = add_command(
        "run",
        help="run a simulation and write its result CSV",
        description="Run MODEL and write the result CSV to -o (or stdout). Parameters not "
        "given come from the model's DefaultExperiment.",
    )
    run.add_argument("model", help="model id")
    add_run_parameters(run)
    run.add_argument("-o", "--out", type=Path, help="write the CSV here instead of stdout")
    run.add_argument(
        "--no-wait", action="store_true", help="print the run id once queued and return"
    )
    run.add_argument("--wait-timeout", type=float, help="stop waiting after this many seconds")
    run.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="draw a progress bar on stderr (default: when stderr is a terminal)",
    )
    run.add_argument(
        "--wait-for-payment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="on 402, show the checkout link, wait for the payment and retry "
        "(default: only when attached to a terminal; otherwise exit 3)",
    )
    run.add_argument(
        "--open-browser",
        action="store_true",
        help="also open the checkout link in a browser (only on a terminal)",
    )
    run.add_argument("--payment-token", help="pay with this token (from a paid checkout)")
    run.add_argument(
        "--idempotency-key",
        help="repeat a run request safely: the same key returns the same run, charged once",
    )
    run.set_defaults(handler=command_run)

    status = add_command("status", help="show a run's state")
    status.add_argument("run", help="run id")
    status.add_argument("--wait", type=float, default=0.0, help="hold up to N s for the end")
    status.set_defaults(handler=command_status)

    result = add_command("result", help="download a finished run's result CSV")
    result.add_argument("run", help="run id")
    result.add_argument("-o", "--out", type=Path, help="write the CSV here instead of stdout")
    result.add_argument("--variables", help="comma-separated columns (default: all)")
    result.set_defaults(handler=command_result)

    payment = add_command("payment", help="show a payment's state and, once paid, its token")
    payment.add_argument("payment", help="payment id (from a 402)")
    payment.set_defaults(handler=command_payment)

    cancel = add_command("cancel", help="cancel a queued or running run")
    cancel.add_argument("run", help="run id")
    cancel.set_defaults(handler=command_cancel)

    from fmugateway_client.cli_studies import add_study_commands

    study = add_command("study", help="run many cases of one model: sweeps, DOE")
    add_study_commands(study, parents=[json_option])
    return parser


# --- commands ---------------------------------------------------------------------------


def command_login(args: argparse.Namespace) -> int:
    saved = stored_credentials()
    url = args.url or _ask(f"Server URL [{saved.url}]: " if saved.url else "Server URL: ")
    url = url or saved.url
    api_key = args.key or getpass.getpass("API key: ").strip()
    if not url or not api_key:
        raise UsageError("login needs a server URL and an API key")
    with Client(url, api_key) as client:
        account = client.account()  # a wrong key or URL fails here, before anything is saved
    path = save_credentials(client.base_url, api_key)
    print(f"Logged in to {client.base_url} as {account.email}; saved in {path}", file=sys.stderr)
    return EXIT_OK


def command_account(args: argparse.Namespace) -> int:
    with connect() as client:
        account = client.account()
    if args.json:
        return print_json(account.raw)
    print(f"email           {account.email}")
    if account.balance:
        print(f"credit          {account.balance} ({account.credit_balance} runs)")
    else:  # a server from before credit was money
        print(f"credit balance  {account.credit_balance} runs")
    print(f"price per run   {account.price}")
    print(f"billing         {account.billing_mode}")
    return EXIT_OK


def command_upload(args: argparse.Namespace) -> int:
    if not args.fmu.is_file():
        raise UsageError(f"no such file: {args.fmu}")
    with connect() as client:
        model = client.upload_model(args.fmu)
    if args.json:
        return print_json(model.raw)
    print(model.id)
    print(
        f"uploaded {model.model_name} (FMI {model.fmi_version}, "
        f"{'/'.join(model.fmi_types)}, {model.variables_count} variables)",
        file=sys.stderr,
    )
    return EXIT_OK


def command_models(args: argparse.Namespace) -> int:
    with connect() as client:
        models = client.models()
    if args.json:
        return print_json([model.raw for model in models])
    print_table(
        ["id", "name", "fmi", "types", "variables", "uploaded"],
        [
            [
                model.id,
                model.model_name,
                model.fmi_version,
                "/".join(model.fmi_types),
                str(model.variables_count),
                f"{model.created_at:%Y-%m-%d %H:%M}" if model.created_at else "",
            ]
            for model in models
        ],
    )
    return EXIT_OK


def command_variables(args: argparse.Namespace) -> int:
    with connect() as client:
        variables = client.variables(args.model, causality=args.causality)
    if args.json:
        return print_json([variable.__dict__ for variable in variables])
    print_table(
        ["name", "causality", "variability", "type", "start", "unit", "description"],
        [
            [
                variable.name,
                variable.causality,
                variable.variability,
                variable.type,
                variable.start or "",
                variable.unit or "",
                variable.description or "",
            ]
            for variable in variables
        ],
    )
    return EXIT_OK


def command_run(args: argparse.Namespace) -> int:
    parameters = run_parameters(args)
    wait_for_payment = args.wait_for_payment
    if wait_for_payment is None:
        wait_for_payment = sys.stdin.isatty() and sys.stderr.isatty()
    show_progress = sys.stderr.isatty() if args.progress is None else args.progress
    with connect() as client:
        simulation = client.start_simulation(
            args.model,
            **parameters,
            on_payment_required="wait" if wait_for_payment else "raise",
            open_browser=args.open_browser,
            payment_token=args.payment_token,
            idempotency_key=args.idempotency_key,
        )
        if args.no_wait:
            if args.json:
                return print_json(simulation.raw)
            print(simulation.id)
            return EXIT_OK
        print(f"run {simulation.id} {simulation.status}", file=sys.stderr)
        bar = ProgressBar(sys.stderr) if show_progress else None
        try:
            simulation = client.wait(simulation, timeout=args.wait_timeout, progress=bar)
        finally:
            if bar:
                bar.close()
        if not simulation.succeeded:
            raise SimulationFailed(simulation)
        if args.json:  # the run's JSON on stdout; the CSV only where -o says
            if args.out:
                write_result(client, simulation.id, args.out, variables=None)
            return print_json(simulation.raw)
        write_result(client, simulation.id, args.out, variables=None)
    return EXIT_OK


def command_status(args: argparse.Namespace) -> int:
    with connect() as client:
        simulation = client.simulation(args.run, wait=args.wait)
    if args.json:
        return print_json(simulation.raw)
    line = f"{simulation.id} {simulation.status} {simulation.progress:.0%}"
    if simulation.error:
        line += f" {simulation.error.code}: {simulation.error.message}"
    print(line)
    return EXIT_OK


def command_result(args: argparse.Namespace) -> int:
    variables = [name.strip() for name in args.variables.split(",")] if args.variables else None
    with connect() as client:
        write_result(client, args.run, args.out, variables=variables)
    return EXIT_OK


def command_cancel(args: argparse.Namespace) -> int:
    with connect() as client:
        simulation = client.cancel(args.run)
    if args.json:
        return print_json(simulation.raw)
    print(f"{simulation.id} {simulation.status}")
    return EXIT_OK


def command_payment(args: argparse.Namespace) -> int:
    with connect() as client:
        payment = client.payment(args.payment)
    if args.json:
        return print_json(payment.raw)
    print(f"{payment.id} {payment.status} {payment.amount} {payment.currency}")
    if payment.token:
        expires = (
            f"{payment.token_expires_at:%Y-%m-%d %H:%M} UTC" if payment.token_expires_at else ""
        )
        print(f"token {payment.token} ({payment.token_status}, valid until {expires})")
    elif payment.status == "pending" and payment.checkout_url:
        print(f"pay at {payment.checkout_url}")
    return EXIT_OK


# --- helpers for the commands -----------------------------------------------------------


def add_run_parameters(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """A run's own options (`run`, and the base of every case of `study create`)."""
    parser.add_argument("--start-time", type=float)
    parser.add_argument("--stop-time", type=float)
    parser.add_argument("--output-interval", type=float)
    parser.add_argument("--step-size", type=float)
    parser.add_argument("--tolerance", type=float, dest="relative_tolerance", metavar="REL_TOL")
    parser.add_argument("--fmi-type", choices=["CoSimulation", "ModelExchange"])
    parser.add_argument("--solver", choices=["CVode", "Euler"])
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a start value (repeatable); numbers and true/false are sent as such",
    )
    parser.add_argument(
        "--input", type=Path, metavar="CSV", help="input signals: a CSV with time first"
    )
    parser.add_argument(
        "--output",
        action="append",
        default=[],
        metavar="NAMES",
        help="variables to record, comma-separated (repeatable); default: the outputs",
    )
    parser.add_argument("--timeout", type=float, help="the run's own time limit in seconds")


def run_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """The run's fields from add_run_parameters' options (None: the model's default)."""
    return {
        "start_time": args.start_time,
        "stop_time": args.stop_time,
        "output_interval": args.output_interval,
        "step_size": args.step_size,
        "relative_tolerance": args.relative_tolerance,
        "fmi_type": args.fmi_type,
        "solver": args.solver,
        "start_values": parse_start_values(args.set) or None,
        "input": read_input_csv(args.input) if args.input else None,
        "output": [n.strip() for part in args.output for n in part.split(",") if n.strip()] or None,
        "timeout": args.timeout,
    }


def connect() -> Client:
    credentials = current_credentials()
    if not credentials.url or not credentials.api_key:
        raise UsageError(
            f"not logged in: run `fmugw login`, or set {URL_VARIABLE} and {API_KEY_VARIABLE}"
        )
    try:
        return Client(credentials.url, credentials.api_key)
    except ValueError as error:
        raise UsageError(str(error)) from error


def write_result(
    client: Client, run_id: str, out: Path | None, *, variables: list[str] | None
) -> None:
    if out is None:
        client.result_csv(run_id, sys.stdout.buffer, variables=variables)
        sys.stdout.flush()
        return
    client.result_csv(run_id, out, variables=variables)
    print(f"wrote {out}", file=sys.stderr)


def parse_start_values(assignments: Sequence[str]) -> dict[str, float | int | bool | str]:
    """NAME=VALUE pairs; numbers and true/false become JSON numbers and booleans."""
    values: dict[str, float | int | bool | str] = {}
    for assignment in assignments:
        name, separator, text = assignment.partition("=")
        if not separator or not name.strip():
            raise UsageError(f"--set takes NAME=VALUE, not {assignment!r}")
        values[name.strip()] = parse_scalar(text.strip())
    return values


def parse_scalar(text: str) -> float | int | bool | str:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, int | float | str) else text


def read_input_csv(path: Path) -> dict[str, list[float]]:
    """A CSV with a header `time,<input>,...` as the API's {"time": [...], ...} columns."""
    try:
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
    except OSError as error:
        raise UsageError(f"cannot read --input {path}: {error.strerror}") from error
    if not rows or not rows[0] or rows[0][0].strip() != "time":
        raise UsageError(f"--input {path}: the first column must be 'time'")
    header = [name.strip() for name in rows[0]]
    columns: dict[str, list[float]] = {name: [] for name in header}
    for line_number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise UsageError(f"--input {path}:{line_number}: expected {len(header)} values")
        try:
            for name, cell in zip(header, row, strict=True):
                columns[name].append(float(cell))
        except ValueError as error:
            raise UsageError(f"--input {path}:{line_number}: {error}") from error
    return columns


def report_payment_required(required: PaymentRequired) -> None:
    # The server's detail goes on to explain the HTTP retry; its first sentence is the why.
    reason = required.detail.split(". ")[0].rstrip(".")
    lines = [f"fmugw: {required.status} {required.title}: {reason}."]
    if required.checkout_url:
        lines.append(f"Pay here: {required.checkout_url}")
    if required.payment_id:
        lines.append(
            "Once paid, `fmugw payment "
            f"{required.payment_id}` (or the success page) shows the payment's token: run "
            "again with --payment-token TOKEN, or with --wait-for-payment to have fmugw wait "
            "for the payment and retry by itself."
        )
    print("\n".join(lines), file=sys.stderr)


def report_failed_run(failed: SimulationFailed) -> None:
    simulation = failed.simulation
    print(f"fmugw: run {simulation.id} {simulation.status}", file=sys.stderr)
    if simulation.error:
        print(f"  {simulation.error.code}: {simulation.error.message}", file=sys.stderr)
        if simulation.error.log_tail:
            print("  log tail:", file=sys.stderr)
            for line in simulation.error.log_tail.splitlines()[-20:]:
                print(f"    {line}", file=sys.stderr)


def print_json(data: Any) -> int:
    print(json.dumps(data, indent=2, default=str))
    return EXIT_OK


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(row[index]) for row in [header, *rows]) for index in range(len(header))]
    for row in [header, *rows]:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())


def _ask(prompt: str) -> str:
    try:
        return input(prompt).strip()
    except EOFError:
        return ""


if __name__ == "__main__":
    raise SystemExit(main())
