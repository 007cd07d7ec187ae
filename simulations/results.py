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
from django.core.files import File
from django.core.files.storage import default_storage
from numpy.lib import format as npy_format

from fmugateway.problems import DomainError
from simulations.models import Simulation

ROWS_PER_CHUNK = 8192


class UnknownResultVariables(DomainError):
    status_code = 400
    code = "invalid-request"


def result_storage_name(simulation_id) -> str:
    return f"results/{simulation_id}.npy"


def store_result(*, simulation: Simulation, result_path: Path) -> dict:
    """Upload a validated result and describe it for the run row."""
    with result_path.open("rb") as handle:
        shape, _fortran, dtype = _read_npy_header(handle)
    rows = int(shape[0])
    columns = list(dtype.names or [])
    units = _units_for(simulation, columns)
    name = result_storage_name(simulation.pk)
    if default_storage.exists(name):
        default_storage.delete(name)
    with result_path.open("rb") as handle:
        saved = default_storage.save(name, File(handle))
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
    variables = {variable["name"]: variable for variable in simulation.model.variables}
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
        raise UnknownResultVariables(
            f"The result has no column {', '.join(map(repr, unknown))}; "
            f"it has {', '.join(available)}.",
            errors={"variables": [f"Unknown variable {name!r}." for name in unknown]},
        )
    return ["time", *[name for name in wanted if name != "time"]]


def _chunks(storage_name: str, columns: list[str]) -> Iterator[np.ndarray]:
    """The result's rows in chunks, as 2-D float arrays of the selected columns."""
    with default_storage.open(storage_name, "rb") as handle:
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


def iter_csv(simulation: Simulation, columns: list[str]) -> Iterator[bytes]:
    yield (",".join(_csv_header(simulation, columns)) + "\n").encode()
    for block in _chunks(simulation.result_name, columns):
        buffer = io.StringIO()
        np.savetxt(buffer, block, fmt="%.15g", delimiter=",")
        yield buffer.getvalue().encode()


def _csv_header(simulation: Simulation, columns: list[str]) -> list[str]:
    return [_csv_field(name) for name in columns]


def _csv_field(name: str) -> str:
    if any(character in name for character in ',"\n'):
        return '"' + name.replace('"', '""') + '"'
    return name


def iter_json(simulation: Simulation, columns: list[str]) -> Iterator[bytes]:
    units = {name: unit for name, unit in simulation.result_units.items() if name in columns}
    yield (
        '{"columns": ' + json.dumps(columns) + ', "units": ' + json.dumps(units) + ', "data": ['
    ).encode()
    first = True
    for block in _chunks(simulation.result_name, columns):
        rows = [",".join(_json_number(value) for value in row) for row in block.tolist()]
        text = "[" + "],[".join(rows) + "]"
        yield (text if first else "," + text).encode()
        first = False
    yield b"]}"


def _json_number(value: float) -> str:
    if not math.isfinite(value):
        return "null"
    return repr(value)


def delete_result(simulation: Simulation) -> None:
    if simulation.result_name:
        default_storage.delete(simulation.result_name)
