"""Studies: many cases of one model in one request, paid once (a parameter sweep or a
design of experiments), and the handle to follow one (`Study`).

A study is a base run request (every field of a run but the model), a design (which
start values each case sets: "grid", "cases", "lhs", "sobol", "halton" or
"monte_carlo") and the statistics kept per case ("summary"). The server validates and
prices it as a whole; the answer to a study without credit is one 402 for all its cases.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from fmugateway_client.errors import FmuGatewayError
from fmugateway_client.resources import SimulationError, parse_amount, parse_time
from fmugateway_client.result import Result

if TYPE_CHECKING:
    from fmugateway_client.client import Client

STUDY_FINISHED_STATUSES = frozenset({"succeeded", "cancelled"})
# GET /studies/{id} answers at once (no long poll): poll from this interval, growing by
# POLL_GROWTH up to POLL_MAX_SECONDS while nothing changes, back to the start on progress.
POLL_START_SECONDS = 0.5
POLL_GROWTH = 1.5
POLL_MAX_SECONDS = 10.0
PAGE_SIZE = 100


class StudyTimeout(FmuGatewayError, TimeoutError):
    """The study had not finished when the caller stopped waiting; it goes on."""

    def __init__(self, study: Study, waited_seconds: float) -> None:
        self.study = study
        super().__init__(
            f"Study {study.id} still {study.status} ({study.progress:.0%} of "
            f"{study.counts.total} cases ended) after {waited_seconds:.0f} s"
        )


@dataclass(frozen=True)
class StudyPrice:
    """The price of the whole study and of one case; `amount` stays a Decimal."""

    cents: int
    amount: Decimal
    per_case_cents: int
    currency: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StudyPrice:
        return cls(
            cents=int(data.get("cents") or 0),
            amount=parse_amount(data.get("amount")) or Decimal(0),
            per_case_cents=int(data.get("per_case_cents") or 0),
            currency=str(data.get("currency") or ""),
        )

    def __str__(self) -> str:
        if self.currency.lower() == "usd":
            return f"${self.amount}"
        return f"{self.amount} {self.currency.upper()}"


@dataclass(frozen=True)
class StudyCaseCounts:
    total: int = 0
    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StudyCaseCounts:
        names = ("total", "queued", "running", "succeeded", "failed", "cancelled")
        return cls(**{name: int(data.get(name) or 0) for name in names})

    @property
    def ended(self) -> int:
        return self.succeeded + self.failed + self.cancelled


@dataclass(frozen=True)
class StudyQuote:
    """What ?dry_run=true answers: the case count, the price, and the design as the server
    normalised it (its seed included: send `design` back to get exactly these cases)."""

    cases: int
    price: StudyPrice
    design: dict[str, Any]
    parameters: list[str]
    summary: dict[str, Any]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StudyQuote:
        return cls(
            cases=int(data.get("cases") or 0),
            price=StudyPrice.from_json(data.get("price") or {}),
            design=dict(data.get("design") or {}),
            parameters=list(data.get("parameters") or []),
            summary=dict(data.get("summary") or {}),
            raw=data,
        )


@dataclass(frozen=True)
class StudyCase:
    """One case: its parameter values, status, error (failed), and statistics."""

    index: int
    parameters: dict[str, Any]
    status: str  # queued, running, succeeded, failed, cancelled
    error: SimulationError | None
    summary: dict[str, float | None]
    result_url: str | None
    result_rows: int | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StudyCase:
        error = data.get("error")
        return cls(
            index=int(data["index"]),
            parameters=dict(data.get("parameters") or {}),
            status=data.get("status") or "",
            error=SimulationError.from_json(error) if isinstance(error, dict) else None,
            summary=dict(data.get("summary") or {}),
            result_url=data.get("result_url"),
            result_rows=data.get("result_rows"),
            raw=data,
        )


StudyProgress = Callable[["Study"], None]


class Study:
    """A study on the server, as last seen (`refresh()` looks again), with what can be done
    with it. Made by Client.create_study and Client.study; `raw` is the last JSON seen."""

    def __init__(self, client: Client, data: dict[str, Any]) -> None:
        self.client = client
        self._update(data)

    def _update(self, data: dict[str, Any]) -> None:
        self.raw = data
        self.id: str = data["id"]
        self.model: str | None = data.get("model")
        self.model_name: str = data.get("model_name") or ""
        self.status: str = data.get("status") or ""
        self.design: dict[str, Any] = dict(data.get("design") or {})
        self.parameters: list[str] = list(data.get("parameters") or [])
        self.base: dict[str, Any] = dict(data.get("base") or {})
        self.summary_spec: dict[str, Any] = dict(data.get("summary") or {})
        self.counts = StudyCaseCounts.from_json(data.get("cases") or {})
        self.progress: float = float(data.get("progress") or 0.0)
        self.price = StudyPrice.from_json(data.get("price") or {})
        self.charge: dict[str, Any] = dict(data.get("charge") or {})
        self.created_at: datetime | None = parse_time(data.get("created_at"))
        self.started_at: datetime | None = parse_time(data.get("started_at"))
        self.finished_at: datetime | None = parse_time(data.get("finished_at"))
        self.urls: dict[str, str] = dict(data.get("urls") or {})

    def __repr__(self) -> str:
        return (
            f"<Study {self.id} {self.status} {self.counts.ended}/{self.counts.total} cases "
            f"({self.counts.failed} failed)>"
        )

    @property
    def finished(self) -> bool:
        return self.status in STUDY_FINISHED_STATUSES

    @property
    def succeeded(self) -> bool:
        """Every case has ended and the study was not cancelled (some may have failed)."""
        return self.status == "succeeded"

    def refresh(self) -> Study:
        self._update(self.client._json("GET", f"studies/{self.id}"))
        return self

    def wait(
        self,
        *,
        timeout: float | None = None,
        progress: bool | StudyProgress = False,
        poll_interval: float = POLL_START_SECONDS,
    ) -> Study:
        """Poll until the study has finished (succeeded or cancelled) and return it.

        `progress`: True draws a bar on stderr; a callable is called with the study at
        each look. Polls back off from `poll_interval` to POLL_MAX_SECONDS while nothing
        changes. Raises StudyTimeout after `timeout` seconds (the study goes on)."""
        bar = StudyProgressBar(sys.stderr) if progress is True else None
        report: StudyProgress | None = bar or (progress if callable(progress) else None)
        started = time.monotonic()
        interval = poll_interval
        try:
            while True:
                if report:
                    report(self)
                if self.finished:
                    return self
                waited = time.monotonic() - started
                if timeout is not None and waited >= timeout:
                    raise StudyTimeout(self, waited)
                pause = interval if timeout is None else min(interval, timeout - waited)
                time.sleep(max(pause, 0.0))
                ended = self.counts.ended
                self.refresh()
                if self.counts.ended > ended:
                    interval = poll_interval
                else:
                    interval = min(interval * POLL_GROWTH, POLL_MAX_SECONDS)
        finally:
            if bar:
                bar.close()

    def cases(self, *, status: str | None = None) -> Iterator[StudyCase]:
        """The cases in index order, fetched a page at a time; `status` filters
        (e.g. "failed")."""
        offset = 0
        while True:
            params: dict[str, Any] = {"limit": PAGE_SIZE, "offset": offset}
            if status:
                params["status"] = status
            page = self.client._json("GET", f"studies/{self.id}/cases", params=params)
            results = page.get("results") or []
            yield from (StudyCase.from_json(item) for item in results)
            offset += len(results)
            if not page.get("next") or not results:
                return

    def summary(self, *, as_frame: bool | None = None) -> Any:
        """One row per case: index, status, error_code, the parameters, the statistics
        (None where the server has no finite value).

        As a list of dicts, or as a pandas DataFrame (NaN for None) with as_frame=True;
        as_frame=None gives a DataFrame when pandas is importable, else the list."""
        rows = self.client._json("GET", f"studies/{self.id}/summary", params={"format": "json"})
        if as_frame is False:
            return rows
        try:
            import pandas  # type: ignore[import-untyped]
        except ImportError as error:
            if as_frame:
                raise ImportError("Study.summary(as_frame=True) needs pandas") from error
            return rows
        columns = list(rows[0]) if rows else ["index", "status", "error_code", *self.parameters]
        return pandas.DataFrame.from_records(rows, columns=columns)

    def download_summary(
        self, path: str | os.PathLike[str] | IO[bytes], *, format: str | None = None
    ) -> Path | None:
        """Stream the summary table to a path or binary file: "csv", "json" or "parquet"
        (default: the path's suffix, else csv). Returns the path (None for a file object)."""
        chosen = format or _format_of(path) or "csv"
        if chosen not in ("csv", "json", "parquet"):
            raise ValueError(f'format is "csv", "json" or "parquet", not {chosen!r}')
        return self.client._download(f"studies/{self.id}/summary", {"format": chosen}, path)

    def case_result(self, index: int) -> Result:
        """A succeeded case's full trace as a Result table (Conflict if it has none)."""
        body = self.client._json(
            "GET", f"studies/{self.id}/cases/{int(index)}/result", params={"format": "json"}
        )
        return Result.from_json(body)

    def download_case_result(
        self, index: int, path: str | os.PathLike[str] | IO[bytes]
    ) -> Path | None:
        """Stream a succeeded case's trace as CSV (header `time,<var>,...`) to a path or
        binary file. Returns the path (None for a file object)."""
        return self.client._download(
            f"studies/{self.id}/cases/{int(index)}/result", {"format": "csv"}, path
        )

    def cancel(self) -> Study:
        """Cancel the cases that have not ended (queued ones are refunded)."""
        self._update(self.client._json("POST", f"studies/{self.id}/cancel"))
        return self

    def delete(self) -> None:
        """Delete the study and its results."""
        self.client._request("DELETE", f"studies/{self.id}")


class StudyProgressBar:
    """`[#######       ]  45% running 450/1000 cases, 3 failed 0:12` on one redrawn line."""

    def __init__(self, stream: IO[str], width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.started = time.monotonic()
        self.drawn = False

    def __call__(self, study: Study) -> None:
        fraction = 1.0 if study.succeeded else min(max(study.progress, 0.0), 1.0)
        filled = round(fraction * self.width)
        elapsed = int(time.monotonic() - self.started)
        counts = study.counts
        failed = f", {counts.failed} failed" if counts.failed else ""
        self.stream.write(
            f"\r[{'#' * filled}{' ' * (self.width - filled)}] {fraction:4.0%} "
            f"{study.status:<9} {counts.ended}/{counts.total} cases{failed} "
            f"{elapsed // 60}:{elapsed % 60:02d}"
        )
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def _format_of(path: str | os.PathLike[str] | IO[bytes]) -> str | None:
    if not isinstance(path, str | os.PathLike):
        return None
    suffix = Path(path).suffix.lower().lstrip(".")
    return suffix if suffix in ("csv", "json", "parquet") else None
