"""A run's result as a plain table, so callers need neither pandas nor numpy.

`to_numpy()` gives a structured array when numpy is installed (the `numpy` extra).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fmugateway_client.resources import Simulation

if TYPE_CHECKING:
    import numpy


@dataclass(frozen=True)
class Result:
    """Columns ("time" first), units by column, and rows of floats (None where not finite)."""

    columns: list[str]
    units: dict[str, str]
    data: list[list[float | None]]
    simulation: Simulation | None = field(default=None, compare=False)

    @classmethod
    def from_json(cls, body: dict[str, Any], simulation: Simulation | None = None) -> Result:
        return cls(
            columns=list(body["columns"]),
            units=dict(body.get("units") or {}),
            data=[list(row) for row in body["data"]],
            simulation=simulation,
        )

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self) -> Iterator[dict[str, float | None]]:
        for row in self.data:
            yield dict(zip(self.columns, row, strict=True))

    def __getitem__(self, column: str) -> list[float | None]:
        return self.column(column)

    def records(self) -> list[dict[str, float | None]]:
        """One dict per output point: [{"time": 0.0, "h": 1.0, ...}, ...]."""
        return list(self)

    def column(self, name: str) -> list[float | None]:
        try:
            index = self.columns.index(name)
        except ValueError:
            available = ", ".join(self.columns)
            raise KeyError(f"no column {name!r}; the result has {available}") from None
        return [row[index] for row in self.data]

    def to_numpy(self) -> numpy.ndarray:
        """A structured array with one float64 field per column (NaN where the API sent null)."""
        try:
            import numpy
        except ImportError as error:
            raise ImportError(
                "Result.to_numpy() needs numpy: pip install 'fmugateway-client[numpy]'"
            ) from error
        dtype = numpy.dtype([(name, numpy.float64) for name in self.columns])
        rows = [tuple(math.nan if value is None else value for value in row) for row in self.data]
        return numpy.array(rows, dtype=dtype)
