"""The client's parts that need no gateway: login storage, argument parsing, retries."""

from __future__ import annotations

import io
import json
import stat
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fmugateway_client import Client, RateLimited, ServerError, Simulation, TransportError
from fmugateway_client.cli import (
    ProgressBar,
    UsageError,
    parse_start_values,
    read_input_csv,
)
from fmugateway_client.config import current_credentials, save_credentials


def test_login_is_saved_for_its_owner_only_and_the_environment_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("FMUGW_URL", raising=False)
    monkeypatch.delenv("FMUGW_API_KEY", raising=False)

    path = save_credentials("https://gw.example", "fmu_abc_secret")

    assert path == tmp_path / "fmugw" / "config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert current_credentials().url == "https://gw.example"
    monkeypatch.setenv("FMUGW_API_KEY", "fmu_from_env")
    assert current_credentials().api_key == "fmu_from_env"
    assert current_credentials().url == "https://gw.example"


def test_start_values_and_input_csv_are_parsed_as_the_api_wants(tmp_path):
    assert parse_start_values(["k=2", "e=0.8", "on=true", "name=pump 1", "x=1e3"]) == {
        "k": 2,
        "e": 0.8,
        "on": True,
        "name": "pump 1",
        "x": 1000.0,
    }
    with pytest.raises(UsageError):
        parse_start_values(["k"])

    signals = tmp_path / "u.csv"
    signals.write_text("time,u\n0,0\n1,1.5\n\n2,-2\n")
    assert read_input_csv(signals) == {"time": [0.0, 1.0, 2.0], "u": [0.0, 1.5, -2.0]}
    signals.write_text("t,u\n0,0\n")
    with pytest.raises(UsageError, match="first column must be 'time'"):
        read_input_csv(signals)


def test_the_progress_bar_redraws_one_line():
    stream = io.StringIO()
    bar = ProgressBar(stream, width=10)
    for status, progress in (("queued", 0.0), ("running", 0.5), ("succeeded", 1.0)):
        bar(Simulation.from_json({"id": "r", "status": status, "progress": progress}))
    bar.close()
    frames = stream.getvalue().split("\r")[1:]
    assert frames[1].startswith("[#####     ]  50% running")
    assert frames[2].startswith("[##########] 100% succeeded")
    assert stream.getvalue().endswith("\n") and stream.getvalue().count("\n") == 1


class ScriptedServer:
    """A local HTTP server answering from a script: [(status, headers, body), ...]."""

    def __init__(self, answers: list[tuple[int, dict[str, str], str]]) -> None:
        self.answers = answers
        self.requests: list[str] = []
        self.idempotency_keys: list[str | None] = []
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self) -> None:
                scripted.requests.append(f"{self.command} {self.path}")
                scripted.idempotency_keys.append(self.headers.get("Idempotency-Key"))
                if self.headers.get("Content-Length"):
                    self.rfile.read(int(self.headers["Content-Length"]))
                status, headers, body = scripted.answers.pop(0)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body.encode())))
                self.end_headers()
                self.wfile.write(body.encode())

            do_GET = do_POST = answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def scripted_server() -> Iterator[
    Callable[[list[tuple[int, dict[str, str], str]]], ScriptedServer]
]:
    started: list[ScriptedServer] = []

    def start(answers: list[tuple[int, dict[str, str], str]]) -> ScriptedServer:
        server = ScriptedServer(answers)
        started.append(server)
        return server

    yield start
    for server in started:
        server.server.shutdown()
        server.server.server_close()


ACCOUNT = json.dumps(
    {"email": "a@example.com", "credit_balance": 0, "price": {}, "billing_mode": "off"}
)
JSON = {"Content-Type": "application/json"}
PROBLEM = {"Content-Type": "application/problem+json"}


def test_gets_are_retried_on_503_and_429_then_succeed(scripted_server):
    server = scripted_server(
        [
            (503, PROBLEM, json.dumps({"title": "Service unavailable", "status": 503})),
            (429, {**PROBLEM, "Retry-After": "0"}, json.dumps({"status": 429})),
            (200, JSON, ACCOUNT),
        ]
    )
    client = Client(server.url + "/api/v1/", "fmu_key", retries=2)
    assert client.account().email == "a@example.com"
    assert server.requests == ["GET /api/v1/account"] * 3


def test_a_run_request_is_retried_with_the_same_idempotency_key(scripted_server):
    queued = json.dumps({"id": "r1", "status": "queued", "progress": 0})
    server = scripted_server([(502, {}, ""), (202, JSON, queued)])
    client = Client(server.url, "fmu_key", retries=2)
    assert client.start_simulation("m", stop_time=1.0).id == "r1"
    assert server.requests == ["POST /api/v1/simulations"] * 2
    first, retry = server.idempotency_keys
    assert first and first == retry


def test_an_upload_is_not_retried(scripted_server, tmp_path):
    server = scripted_server([(503, {"Content-Type": "text/html"}, "<h1>Bad gateway</h1>")])
    client = Client(server.url, "fmu_key", retries=2)
    fmu = tmp_path / "m.fmu"
    fmu.write_bytes(b"PK")
    with pytest.raises(ServerError) as failed:
        client.upload_model(fmu)
    assert failed.value.status == 503
    assert "Bad gateway" in failed.value.detail  # a non-problem body still says something
    assert server.requests == ["POST /api/v1/models"]


def test_retries_give_up_with_the_last_typed_error(scripted_server):
    server = scripted_server([(429, {**PROBLEM, "Retry-After": "0"}, "{}")] * 2)
    client = Client(server.url, "fmu_key", retries=1)
    with pytest.raises(RateLimited) as throttled:
        client.account()
    assert throttled.value.retry_after == 0.0


def test_an_unreachable_server_is_a_transport_error():
    client = Client("http://127.0.0.1:9", "fmu_key", retries=0, timeout=2)
    with pytest.raises(TransportError):
        client.account()
    with pytest.raises(ValueError, match="http"):
        Client("gw.example", "fmu_key")
