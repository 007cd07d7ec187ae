"""A study's columnar results: chunk files written with ChunkTables, read back merged in
case order (CSV, JSON, Parquet, one case's trace), in memory that does not grow with
the number of cases."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest

from simulations.models import Study, StudyCase, StudyCaseStatus, StudyChunk
from simulations.studies.tables import (
    ChunkTables,
    case_trace,
    chunk_tables_store,
    summary_columns,
    summary_iter_csv,
    summary_iter_json,
    summary_parquet_open,
    traces_iter_csv,
)
from simulations.tests.factories import ModelFactory
from testing.processes import PeakMemory

pytestmark = pytest.mark.django_db


def make_study(user, cases: int) -> Study:
    from simulations.studies.summary import Statistic, SummarySpec

    spec = SummarySpec((("h", (Statistic.FINAL, Statistic.MAX)),))
    study = Study.objects.create(
        owner=user,
        model=ModelFactory(owner=user),  # type: ignore[misc]  # factory_boy: a Model
        model_name="synthetic",
        base={},
        design={"kind": "cases"},
        parameters=["e", "n"],
        summary_spec=spec.to_json(),
        case_count=cases,
    )
    StudyCase.objects.bulk_create(
        (
            StudyCase(study=study, index=index, values={"e": index / 7, "n": index})
            for index in range(cases)
        ),
        batch_size=5000,
    )
    return study


def trace_of(index: int, rows: int) -> np.ndarray:
    trace = np.zeros(rows, dtype=[("time", "f8"), ("h", "f8"), ("v", "f8")])
    trace["time"] = np.linspace(0.0, 1.0, rows)
    trace["h"] = np.sin(trace["time"] * (index + 1)) / 3
    trace["v"] = index + trace["time"]
    return trace


def write_chunk(study: Study, number: int, indices: list[int], rows: int) -> None:
    """One chunk's files, as a worker writes them, and its cases recorded as ended."""
    chunk = StudyChunk.objects.create(study=study, number=number)
    with tempfile.TemporaryDirectory() as directory:
        tables = ChunkTables(
            directory=Path(directory),
            parameters=["e", "n"],
            statistics=["final(h)", "max(h)"],
            parameter_types={"e": "Real", "n": "Integer"},
        )
        for index in indices:
            trace = trace_of(index, rows) if rows else None
            statistics = {"final(h)": index / 3, "max(h)": index / 9} if rows else {}
            tables.add_case(
                index=index,
                status="succeeded" if rows else "failed",
                error_code="" if rows else "model_crashed",
                values={"e": index / 7, "n": index},
                statistics=statistics,
                trace=trace,
            )
        summary_name, trace_name = chunk_tables_store(
            study_id=study.pk, number=number, tables=tables
        )
    chunk.summary_name, chunk.trace_name = summary_name, trace_name
    chunk.save()
    StudyCase.objects.filter(study=study, index__in=indices).update(
        chunk=chunk, status=StudyCaseStatus.SUCCEEDED if rows else StudyCaseStatus.FAILED
    )


def csv_rows(chunks) -> list[list[str]]:
    return list(csv.reader(io.StringIO(b"".join(chunks).decode())))


def test_the_summary_merges_overlapping_chunks_and_unrun_cases_in_case_order(user):
    study = make_study(user, 12)
    # Chunk 2 took cases a lost chunk handed back (0, 1) after chunk 1 had taken 4..6.
    write_chunk(study, 1, [4, 5, 6], rows=5)
    write_chunk(study, 2, [0, 1, 7], rows=5)
    write_chunk(study, 3, [8, 9], rows=0)  # failed cases: summary rows, no trace
    StudyCase.objects.filter(study=study, index__in=[2, 3, 10, 11]).update(
        status=StudyCaseStatus.CANCELLED, error_code="cancelled"
    )
    rows = csv_rows(summary_iter_csv(study))
    assert (
        rows[0]
        == summary_columns(study)
        == ["index", "status", "error_code", "e", "n", "final(h)", "max(h)"]
    )
    assert [int(row[0]) for row in rows[1:]] == list(range(12))
    by_index = {int(row[0]): row for row in rows[1:]}
    assert by_index[5] == ["5", "succeeded", "", repr(5 / 7), "5", repr(5 / 3), repr(5 / 9)]
    assert float(by_index[5][3]) == 5 / 7  # repr(float) reads back to the same float
    assert by_index[8][1:3] == ["failed", "model_crashed"] and by_index[8][5:] == ["", ""]
    assert by_index[3][1:3] == ["cancelled", "cancelled"]
    assert by_index[3][3:5] == [repr(3 / 7), "3"]

    document = json.loads(b"".join(summary_iter_json(study)))
    assert [item["index"] for item in document] == list(range(12))
    assert document[5] == {
        "index": 5,
        "status": "succeeded",
        "error_code": "",
        "e": 5 / 7,
        "n": 5,
        "final(h)": 5 / 3,
        "max(h)": 5 / 9,
    }
    assert document[8]["final(h)"] is None

    with summary_parquet_open(study) as handle:
        table = pq.read_table(handle)
    assert table.column_names == summary_columns(study)
    assert table.column("index").to_pylist() == list(range(12))
    assert table.column("n").to_pylist() == list(range(12))
    assert table.column("e").to_pylist()[5] == 5 / 7


def test_one_case_trace_and_the_long_table(user):
    study = make_study(user, 6)
    write_chunk(study, 1, [3, 4, 5], rows=4)
    write_chunk(study, 2, [0, 1, 2], rows=4)
    trace = case_trace(study, 4)
    assert trace is not None
    expected = trace_of(4, 4)
    assert list(trace.dtype.names) == ["time", "h", "v"]
    for name in ("time", "h", "v"):
        np.testing.assert_array_equal(trace[name], expected[name])
    assert case_trace(study, 99) is None

    rows = csv_rows(traces_iter_csv(study))
    assert rows[0] == ["case", "time", "h", "v"]
    assert [int(row[0]) for row in rows[1:]] == [case for case in range(6) for _ in range(4)]
    first = rows[1 + 4 * 2 : 1 + 4 * 3]  # case 2's rows
    assert [float(row[2]) for row in first] == list(trace_of(2, 4)["h"])


def rss_growth_while(process: psutil.Process, chunks) -> tuple[int, int]:
    """(bytes streamed, peak RSS growth while streaming)."""
    before = process.memory_info().rss
    size = 0
    with PeakMemory(process) as memory:
        for piece in chunks:
            size += len(piece)
    return size, memory.peak - before


def test_a_100000_row_summary_streams_in_constant_memory(user):
    study = make_study(user, 100_000)
    for number, start in enumerate(range(0, 100_000, 5_000), start=1):
        write_chunk(study, number, list(range(start, start + 5_000)), rows=0)
    process = psutil.Process()
    size, growth = rss_growth_while(process, summary_iter_csv(study))
    assert size > 100_000 * 20
    assert growth < 50 * 1024**2, f"memory grew {growth / 1024**2:.0f} MB"


def test_a_1000000_row_long_table_streams_in_constant_memory(user):
    study = make_study(user, 1_000)
    for number, start in enumerate(range(0, 1_000, 100), start=1):
        write_chunk(study, number, list(range(start, start + 100)), rows=1_000)
    process = psutil.Process()
    lines = 0

    def counted(chunks):
        nonlocal lines
        for piece in chunks:
            lines += piece.count(b"\n")
            yield piece

    _size, growth = rss_growth_while(process, counted(traces_iter_csv(study)))
    assert lines == 1 + 1_000_000
    assert growth < 50 * 1024**2, f"memory grew {growth / 1024**2:.0f} MB"


def test_chunk_files_no_chunk_records_are_swept_after_the_grace_period(user):
    import os
    import time

    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from simulations.services import storage_orphans_delete

    study = make_study(user, 3)
    write_chunk(study, 1, [0, 1, 2], rows=3)
    chunk = StudyChunk.objects.get(study=study)
    orphan = default_storage.save(
        f"studies/{study.pk}/chunk-000002-summary.parquet", ContentFile(b"x")
    )
    for name in (chunk.summary_name, chunk.trace_name, orphan):
        then = time.time() - 3 * 3600
        os.utime(default_storage.path(name), (then, then))
    assert storage_orphans_delete() == 1
    assert not default_storage.exists(orphan)
    assert default_storage.exists(chunk.summary_name) and default_storage.exists(chunk.trace_name)


@pytest.mark.s3
def test_the_tables_are_written_to_and_read_from_object_storage(user, s3_storage):
    """A bucket has no local path: Parquet reads the files through ranged GETs."""
    study = make_study(user, 4)
    write_chunk(study, 1, [2, 3], rows=5)
    write_chunk(study, 2, [0, 1], rows=5)
    chunk = StudyChunk.objects.get(study=study, number=1)
    assert set(s3_storage.object_keys()) >= {chunk.summary_name, chunk.trace_name}
    rows = csv_rows(summary_iter_csv(study))
    assert [int(row[0]) for row in rows[1:]] == [0, 1, 2, 3]
    trace = case_trace(study, 3)
    assert trace is not None
    np.testing.assert_array_equal(trace["h"], trace_of(3, 5)["h"])
    assert len(csv_rows(traces_iter_csv(study))) == 1 + 4 * 5
