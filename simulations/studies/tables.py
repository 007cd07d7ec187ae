"""A study's results as columnar files: per chunk one summary file and one trace file
(Parquet, in default storage), and the readers that serve them.

Why files per chunk, not rows: a 10,000-case study of 1,000 points per case is ten
million trace rows, far too many for the database, and too many to hold in memory while
serving them. A chunk writes its two files once, when its cases have ended (no file is
ever appended to, which object storage cannot do); readers stream them back.

    summary file  index, status, error_code, <parameters...>, <statistics...>
                  one row per case the chunk ran, in case order
    trace file    case, time, <outputs...>
                  each case's trace as its own row group, in case order, so one case
                  reads without the rest (its row group is found from the statistics)

The readers merge the chunks' files in case order (chunks claim the queued cases in
order, so their ranges rarely overlap, but a chunk whose worker died hands its cases to
a later one): a file is opened only when the merge reaches its first case, and read in
batches, so memory is bounded by the chunks that overlap, never by the number of cases.
Cases that no chunk file holds (cancelled before they ran, or failed with their worker)
come from the database in the same order. CSV numbers are written as `repr(float)`, which
reads back to the same float.
"""

from __future__ import annotations

import heapq
import json
import math
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from django.db.models import Max, Min, Q

from core.storage import open_stored_file, store_file
from simulations.models import Study, StudyCase
from simulations.studies.summary import SummarySpec

SUMMARY_FIXED_COLUMNS = ["index", "status", "error_code"]
ROWS_PER_BATCH = 8192
TRACE_ROW_GROUP_ROWS = 65_536
CASES_PER_QUERY = 2000


def _parameter_type(fmi_type: str) -> pa.DataType:
    """A parameter's column type by the FMI type of its variable (FMI 1-3 names); Real,
    Float64 and anything unknown are floats."""
    if fmi_type in ("Integer", "Enumeration") or fmi_type.startswith(("Int", "UInt")):
        return pa.int64()
    if fmi_type == "Boolean":
        return pa.bool_()
    return pa.float64()


def chunk_file_names(*, study_id, number: int) -> tuple[str, str]:
    """The storage names of a chunk's summary and trace files (a chunk number is never
    reused within a study, so a retried case's new chunk writes new files)."""
    prefix = study_files_prefix(study_id)
    return (
        f"{prefix}chunk-{number:06d}-summary.parquet",
        f"{prefix}chunk-{number:06d}-trace.parquet",
    )


def study_files_prefix(study_id) -> str:
    return f"studies/{study_id}/"


def summary_columns(study: Study) -> list[str]:
    """["index", "status", "error_code", *parameters, *statistic columns]."""
    return [*SUMMARY_FIXED_COLUMNS, *study.parameters, *statistic_columns(study)]


def statistic_columns(study: Study) -> list[str]:
    return list(SummarySpec.from_json(study.summary_spec).columns())


# --- writing: one chunk's two files ----------------------------------------------------------


class ChunkTables:
    """One chunk's tables, filled as its cases end and written as two local Parquet files.

    The summary rows are few (at most a chunk's cases) and kept until the end. Traces are
    buffered and written TRACE_ROW_GROUP_ROWS at a time, as one row group of many cases:
    a row group per case cost ~0.5 ms of the worker's CPU per case (a 3 s bouncing-ball
    case simulates in ~3.7 ms), which a study pays on its critical path. So a chunk holds
    at most a row group's worth of traces plus one case's; a case is read back with its
    row group (case_trace), at most that many rows.
    """

    def __init__(
        self,
        *,
        directory: Path,
        parameters: list[str],
        statistics: list[str],
        parameter_types: dict[str, str] | None = None,
    ) -> None:
        self.directory = Path(directory)
        types = parameter_types or {}
        self.summary_schema = pa.schema(
            [
                ("index", pa.int64()),
                ("status", pa.string()),
                ("error_code", pa.string()),
                *[(name, _parameter_type(types.get(name, ""))) for name in parameters],
                *[(name, pa.float64()) for name in statistics],
            ]
        )
        self.rows: dict[str, list[Any]] = {name: [] for name in self.summary_schema.names}
        self.trace_path = self.directory / "trace.parquet"
        self.summary_path = self.directory / "summary.parquet"
        self._trace_writer: pq.ParquetWriter | None = None
        self._trace_schema: pa.Schema | None = None
        self._pending: list[tuple[int, np.ndarray]] = []
        self._pending_rows = 0
        self.cases = 0

    def add_case(
        self,
        *,
        index: int,
        status: str,
        error_code: str,
        values: dict[str, Any],
        statistics: Mapping[str, float | None],
        trace: np.ndarray | None,
    ) -> int:
        """Record one ended case; returns the number of trace rows written for it."""
        row = {"index": index, "status": status, "error_code": error_code, **values, **statistics}
        for name in self.summary_schema.names:
            value = row.get(name)
            if isinstance(value, float) and not math.isfinite(value):
                value = None if math.isnan(value) else value
            self.rows[name].append(value)
        self.cases += 1
        if trace is None or trace.dtype.names is None:
            return 0
        if self._trace_schema is None:
            names = [name for name in trace.dtype.names if name != "time"]
            self._trace_schema = pa.schema(
                [("case", pa.int64()), ("time", pa.float64()), *[(n, pa.float64()) for n in names]]
            )
        self._pending.append((index, trace))
        self._pending_rows += len(trace)
        if self._pending_rows >= TRACE_ROW_GROUP_ROWS:
            self._flush_traces()
        return len(trace)

    def _flush_traces(self) -> None:
        """The buffered traces as one row group, in the order their cases ended."""
        if not self._pending or self._trace_schema is None:
            return
        columns: dict[str, np.ndarray] = {
            "case": np.concatenate(
                [np.full(len(trace), index, dtype=np.int64) for index, trace in self._pending]
            )
        }
        for field in self._trace_schema.names[1:]:
            columns[field] = np.concatenate(
                [
                    np.asarray(trace[field], dtype=np.float64)
                    if field in (trace.dtype.names or ())
                    # A column this case did not record (no model does): NaN.
                    else np.full(len(trace), np.nan)
                    for _index, trace in self._pending
                ]
            )
        table = pa.table(columns, schema=self._trace_schema)
        if self._trace_writer is None:
            self._trace_writer = pq.ParquetWriter(self.trace_path, self._trace_schema)
        self._trace_writer.write_table(table, row_group_size=max(1, len(table)))
        self._pending, self._pending_rows = [], 0

    def close(self) -> tuple[Path, Path | None]:
        """Write the summary file and finish the trace file; (summary, trace or None)."""
        self._flush_traces()
        if self._trace_writer is not None:
            self._trace_writer.close()
        table = pa.table(self.rows, schema=self.summary_schema)
        # In case order, whatever order the cases ended in (readers merge by case).
        table = table.sort_by("index")
        pq.write_table(table, self.summary_path)
        return self.summary_path, (self.trace_path if self._trace_writer is not None else None)


def chunk_tables_store(*, study_id, number: int, tables: ChunkTables) -> tuple[str, str]:
    """Write a chunk's files to storage; returns (summary_name, trace_name or "")."""
    summary_path, trace_path = tables.close()
    summary_name, trace_name = chunk_file_names(study_id=study_id, number=number)
    stored_summary = store_file(name=summary_name, path=summary_path)
    stored_trace = store_file(name=trace_name, path=trace_path) if trace_path else ""
    return stored_summary, stored_trace


# --- reading: merged in case order --------------------------------------------------------------


def _chunk_ranges(study: Study, field: str) -> list[tuple[int, int, str]]:
    """(first case, last case, file name) of each chunk that stored the file, by first case."""
    rows = (
        study.chunks.exclude(**{field: ""})
        .annotate(first=Min("cases__index"), last=Max("cases__index"))
        .values_list("first", "last", field)
    )
    return sorted((first, last, name) for first, last, name in rows if first is not None)


def _merge_in_case_order(
    ranges: list[tuple[int, int, str]],
    open_rows,
    extra: Iterator[tuple[int, Any]] | None = None,
) -> Iterator[Any]:
    """Items of every file (and `extra`), each file's items already in case order, merged
    by case; a file is opened only when the merge reaches its first case."""
    heap: list[tuple[int, int, Any, Iterator[tuple[int, Any]]]] = []
    order = 0

    def push(iterator: Iterator[tuple[int, Any]]) -> None:
        nonlocal order
        for case, item in iterator:
            heapq.heappush(heap, (case, order, item, iterator))
            order += 1
            return

    if extra is not None:
        push(extra)
    pending = list(reversed(ranges))
    while heap or pending:
        while pending and (not heap or pending[-1][0] <= heap[0][0]):
            push(open_rows(pending.pop()[2]))
        if not heap:
            continue
        _case, _order, item, iterator = heapq.heappop(heap)
        yield item
        push(iterator)


def _parquet_batches(name: str, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    with open_stored_file(name=name) as stored:
        parquet = pq.ParquetFile(stored)
        yield from parquet.iter_batches(batch_size=ROWS_PER_BATCH, columns=columns)


def summary_iter_rows(study: Study) -> Iterator[list[Any]]:
    """Every case's summary row (summary_columns order), in case order."""
    columns = summary_columns(study)

    def file_rows(name: str) -> Iterator[tuple[int, list[Any]]]:
        for batch in _parquet_batches(name):
            available = set(batch.schema.names)
            lists = [
                batch.column(column).to_pylist() if column in available else [None] * batch.num_rows
                for column in columns
            ]
            for row in zip(*lists, strict=True):
                yield row[0], list(row)

    def database_rows() -> Iterator[tuple[int, list[Any]]]:
        # Cases no chunk file holds: never run (cancelled), or lost with their worker.
        cases = (
            StudyCase.objects.filter(study=study)
            .filter(Q(chunk__isnull=True) | Q(chunk__summary_name=""))
            .order_by("index")
            .values_list("index", "status", "error_code", "values", "summary")
        )
        for index, status, error_code, values, summary in cases.iterator(CASES_PER_QUERY):
            statistics = [
                (summary or {}).get(name) for name in columns[3 + len(study.parameters) :]
            ]
            parameters = [values.get(name) for name in study.parameters]
            yield index, [index, status, error_code, *parameters, *statistics]

    yield from _merge_in_case_order(
        _chunk_ranges(study, "summary_name"), file_rows, extra=database_rows()
    )


def summary_iter_csv(study: Study) -> Iterator[bytes]:
    """The summary as CSV, streamed: a header, then one line per case."""
    yield _csv_line(summary_columns(study))
    yield from _buffered(_csv_line(row) for row in summary_iter_rows(study))


def summary_iter_json(study: Study) -> Iterator[bytes]:
    """The summary as a JSON array of objects (NaN and infinities as null), streamed."""
    columns = summary_columns(study)
    yield b"["
    first = True
    lines = []
    for row in summary_iter_rows(study):
        item = {name: _json_number(value) for name, value in zip(columns, row, strict=True)}
        lines.append(("" if first else ",") + json.dumps(item))
        first = False
        if len(lines) >= 256:
            yield "".join(lines).encode()
            lines = []
    if lines:
        yield "".join(lines).encode()
    yield b"]"


def summary_parquet_open(study: Study) -> BinaryIO:
    """A temporary file holding the whole summary as one Parquet file, at position 0.

    Written batch by batch from the merged rows, so building it costs one batch of
    memory; the caller streams it and closes it (which deletes it)."""
    columns = summary_columns(study)
    parameter_count = len(study.parameters)
    handle = tempfile.TemporaryFile()  # noqa: SIM115 (the caller closes it)
    writer: pq.ParquetWriter | None = None
    schema: pa.Schema | None = None
    batch: list[list[Any]] = []

    def flush() -> None:
        nonlocal writer, schema
        if schema is None:
            schema = _summary_schema_of(study, columns, parameter_count, batch)
        table = pa.table(
            {name: [row[i] for row in batch] for i, name in enumerate(columns)}, schema=schema
        )
        if writer is None:
            writer = pq.ParquetWriter(handle, schema)
        writer.write_table(table)
        batch.clear()

    for row in summary_iter_rows(study):
        batch.append(row)
        if len(batch) >= ROWS_PER_BATCH:
            flush()
    if batch or writer is None:
        flush()
    assert writer is not None
    writer.close()
    handle.seek(0)
    return handle  # type: ignore[return-value]


def _summary_schema_of(study, columns, parameter_count, rows) -> pa.Schema:
    """The stored files' schema (parameter types kept), else one inferred from values."""
    for _first, _last, name in _chunk_ranges(study, "summary_name")[:1]:
        with open_stored_file(name=name) as stored:
            stored_schema = pq.ParquetFile(stored).schema_arrow
        return pa.schema(
            [
                stored_schema.field(c) if c in stored_schema.names else pa.field(c, pa.float64())
                for c in columns
            ]
        )
    fields = [("index", pa.int64()), ("status", pa.string()), ("error_code", pa.string())]
    for position, name in enumerate(columns[3:], start=3):
        kind = pa.float64()
        if (
            position < 3 + parameter_count
            and rows
            and all(
                isinstance(row[position], int) and not isinstance(row[position], bool)
                for row in rows
            )
        ):
            kind = pa.int64()
        fields.append((name, kind))
    return pa.schema(fields)


def case_trace(study: Study, index: int) -> np.ndarray | None:
    """One case's whole trace as a structured array (time, outputs...), or None when no
    stored trace holds it (not run, failed, or its files are gone)."""
    name = (
        StudyCase.objects.filter(study=study, index=index)
        .values_list("chunk__trace_name", flat=True)
        .first()
    )
    if not name:
        return None
    with open_stored_file(name=name) as stored:
        parquet = pq.ParquetFile(stored)
        case_column = parquet.schema_arrow.get_field_index("case")
        groups = [
            group
            for group in range(parquet.num_row_groups)
            if _row_group_may_hold(parquet.metadata.row_group(group).column(case_column), index)
        ]
        if not groups:
            return None
        table = parquet.read_row_groups(groups)
    table = table.filter(pc.equal(table.column("case"), index))
    if table.num_rows == 0:
        return None
    names = [name for name in table.schema.names if name != "case"]
    array = np.zeros(table.num_rows, dtype=[(name, "f8") for name in names])
    for name in names:
        array[name] = table.column(name).to_numpy(zero_copy_only=False)
    return array


def _row_group_may_hold(column_meta, index: int) -> bool:
    statistics = column_meta.statistics
    if statistics is None or not statistics.has_min_max:
        return True
    return statistics.min <= index <= statistics.max


def traces_columns(study: Study) -> list[str] | None:
    """The long table's columns (case, time, outputs...), from the first trace file."""
    for _first, _last, name in _chunk_ranges(study, "trace_name")[:1]:
        with open_stored_file(name=name) as stored:
            return list(pq.ParquetFile(stored).schema_arrow.names)
    return None


def traces_iter_csv(study: Study) -> Iterator[bytes]:
    """The long table of every case's trace as CSV (case, time, outputs...), in case order."""
    columns = traces_columns(study)
    if columns is None:
        yield b"case,time\n"
        return
    yield _csv_line(columns)

    def file_cases(name: str) -> Iterator[tuple[int, list[bytes]]]:
        # One item per case: the lines of its rows, which a batch may split.
        current: int | None = None
        lines: list[bytes] = []
        for batch in _parquet_batches(name, columns):
            lists = [batch.column(column).to_pylist() for column in columns]
            for row in zip(*lists, strict=True):
                if row[0] != current and lines:
                    assert current is not None
                    yield current, lines
                    lines = []
                current = row[0]
                lines.append(_csv_line(row))
                if len(lines) >= ROWS_PER_BATCH:  # a long case: emit it in pieces
                    yield current, lines
                    lines = []
        if lines and current is not None:
            yield current, lines

    for lines in _merge_in_case_order(_chunk_ranges(study, "trace_name"), file_cases):
        yield b"".join(lines)


# --- formatting ---------------------------------------------------------------------------------


def _csv_field(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if not math.isnan(value) else ""
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if any(character in text for character in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _csv_line(values: Iterable[Any]) -> bytes:
    return (",".join(_csv_field(value) for value in values) + "\n").encode()


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _buffered(lines: Iterable[bytes], size: int = 64 * 1024) -> Iterator[bytes]:
    """Join small lines into pieces of about `size` bytes (fewer, larger writes)."""
    pending: list[bytes] = []
    length = 0
    for line in lines:
        pending.append(line)
        length += len(line)
        if length >= size:
            yield b"".join(pending)
            pending, length = [], 0
    if pending:
        yield b"".join(pending)
