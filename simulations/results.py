"""Results live in storage as the sandbox's .npy array; clients get CSV or JSON, streamed.

Rows are read from storage in chunks, so serving a result costs the same memory for ten
rows as for ten million.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from django.conf import settings
from numpy.lib import format as npy_format

from core.errors import Conflict, DomainError
from core.problems import ProblemCode
from core.storage import open_stored_file, store_file
from simulations.models import Simulation

ROWS_PER_CHUNK = 8192


def result_storage_name(simulation_id) -> str:
    return f"results/{simulation_id}.npy"


def store_result(*, simulation: Simulation, result_path: Path) -> dict:
    """Upload a validated result and describe it for the run row."""
    with result_path.open("rb") as handle:
        shape, _fortran, dtype = _read_npy_header(handle)
    rows = int(shape[0])
    columns = list(dtype.names or [])
    units = _units_for(simulation, columns)
    saved = store_file(name=result_storage_name(simulation.pk), path=result_path)
    return {
        "result_name": saved,
        "result_rows": rows,
        "result_columns": columns,
        "result_units": units,
    }


def _read_npy_header(handle) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = npy_format.read_magic(handle)
    if version == (1, 0):
        return npy_format.read_array_header_1_0(handle)
    return npy_format.read_array_header_2_0(handle)


def _units_for(simulation: Simulation, columns: list[str]) -> dict[str, str]:
    model = simulation.model
    assert model is not None, "a run's result is stored while its model is kept"
    variables = {variable["name"]: variable for variable in model.variables}
    units = {}
    for column in columns:
        unit = variables.get(column, {}).get("unit")
        if column == "time":
            unit = "s"
        if unit:
            units[column] = unit
    return units


def selected_columns(simulation: Simulation, variables: str | None) -> list[str]:
    """time first, then the requested variables (all by default), refusing unknown names."""
    available = [column for column in simulation.result_columns if column != "time"]
    if not variables:
        return ["time", *available]
    wanted = [name.strip() for name in variables.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise DomainError(
            f"The result has no column {', '.join(map(repr, unknown))}; "
            f"it has {', '.join(available)}.",
            errors={"variables": [f"Unknown variable {name!r}." for name in unknown]},
        )
    return ["time", *[name for name in wanted if name != "time"]]


def check_result_available(simulation: Simulation) -> None:
    """Refuse a run with no result to serve: result-expired (410) once retention deleted it,
    a conflict (409) while it has none (not finished, or failed)."""
    if simulation.result_deleted_at is not None:
        raise DomainError(
            f"The result was deleted on {simulation.result_deleted_at:%Y-%m-%d}: results are "
            f"kept for {settings.RESULT_RETENTION_DAYS} days after their run finishes.",
            code=ProblemCode.RESULT_EXPIRED,
        )
    if not simulation.result_name:
        raise Conflict(f"The simulation has no result ({simulation.status}).")


def open_result(simulation: Simulation):
    """Open a run's stored result for streaming, or say why there is none.

    Opened before the response starts, so a storage outage is a 503, not a cut-off 200.
    """
    check_result_available(simulation)
    return open_stored_file(name=simulation.result_name)


def _chunks(stored, columns: list[str]) -> Iterator[np.ndarray]:
    """The result's rows in chunks, as 2-D float arrays of the selected columns."""
    with stored as handle:
        shape, fortran_order, dtype = _read_npy_header(handle)
        if fortran_order or len(shape) != 1:
            raise ValueError("unexpected result layout")
        remaining = shape[0]
        while remaining:
            count = min(ROWS_PER_CHUNK, remaining)
            data = handle.read(count * dtype.itemsize)
            if len(data) != count * dtype.itemsize:
                raise ValueError("result file is truncated")
            rows = np.frombuffer(data, dtype=dtype, count=count)
            yield np.column_stack([rows[name].astype(np.float64) for name in columns])
            remaining -= count


def iter_csv(simulation: Simulation, columns: list[str], stored) -> Iterator[bytes]:
    """CSV of an opened result (see open_result), a chunk of rows at a time."""
    yield (",".join(_csv_header(simulation, columns)) + "\n").encode()
    for block in _chunks(stored, columns):
        buffer = io.StringIO()
        np.savetxt(buffer, block, fmt="%.15g", delimiter=",")
        yield buffer.getvalue().encode()


def _csv_header(simulation: Simulation, columns: list[str]) -> list[str]:
    return [_csv_field(name) for name in columns]


def _csv_field(name: str) -> str:
    if any(character in name for character in ',"\n'):
        return '"' + name.replace('"', '""') + '"'
    return name


def iter_json(simulation: Simulation, columns: list[str], stored) -> Iterator[bytes]:
    """JSON of an opened result (see open_result), a chunk of rows at a time."""
    units = {name: unit for name, unit in simulation.result_units.items() if name in columns}
    yield (
        '{"columns": ' + json.dumps(columns) + ', "units": ' + json.dumps(units) + ', "data": ['
    ).encode()
    first = True
    for block in _chunks(stored, columns):
        rows = [",".join(_json_number(value) for value in row) for row in block.tolist()]
        text = "[" + "],[".join(rows) + "]"
        yield (text if first else "," + text).encode()
        first = False
    yield b"]}"


def _json_number(value: float) -> str:
    if not math.isfinite(value):
        return "null"
    return repr(value)
