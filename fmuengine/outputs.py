"""The one boundary where what a sandboxed model wrote into its run dir is parsed.

result.npy, error.json and fmu.log are written by native code from strangers, so
every byte of them is hostile. An exception escaping from their parsing would
reach the runner as a platform fault, which is refunded: a model able to make
its own parser raise (a deeply nested error.json -> RecursionError, a .npy header
claiming a huge shape -> MemoryError, a code that is a list -> TypeError...)
would get its compute for free. So every reader here maps *any* `Exception` to
"invalid": `InvalidModelOutput` for the result, `None` for the error report, ""
for the log. Only `Exception` is caught: KeyboardInterrupt and SystemExit must
still stop the worker.

Sizes are checked before anything is read or allocated, and the result is
memory-mapped rather than loaded, so what a model writes bounds neither the
memory nor the time the worker spends on it.
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy.lib import format as npy_format

try:  # (3, 0) headers: np.save writes them for field names outside latin-1
    # Private to numpy, so not in its stubs (to mypy, an Any).
    from numpy.lib._format_impl import (  # type: ignore[attr-defined]
        _read_array_header as _numpy_read_array_header,
    )
except ImportError:  # pragma: no cover - another numpy layout: such results are refused
    _numpy_read_array_header = None

RESULT_FILE = "result.npy"
ERROR_FILE = "error.json"
LOG_FILE = "fmu.log"

MAX_ERROR_REPORT_BYTES = 4096
# A report is {"code": ..., "message": ...}: anything nested deeper is not one, and
# rejecting it before json.loads makes a RecursionError impossible.
MAX_JSON_DEPTH = 8
# numpy's own default limit for headers it parses with ast.literal_eval.
MAX_NPY_HEADER_BYTES = 10_000
MAX_MESSAGE_CHARS = 500
MAX_LOG_LINE_CHARS = 2000
# Rows of the time column compared at once: bounds the temporaries, not the result.
TIME_CHUNK_ROWS = 1 << 16

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# json.loads turns "\ud800" into a lone surrogate, which no UTF-8 encoder (the
# database's included) accepts: it would fail later, outside this boundary.
_SURROGATES = re.compile(r"[\ud800-\udfff]")
# Headers parsed before, by their bytes: numpy parses one with ast.literal_eval (~0.2 ms),
# and the cases of a batch write the same header again and again.
MAX_PARSED_HEADERS = 64
_parsed_headers: dict[bytes, tuple[tuple[int, ...], bool, np.dtype[Any]]] = {}
_HEADER_LENGTH_FORMATS = {(1, 0): "<H", (2, 0): "<I", (3, 0): "<I"}
_NUMERIC_KINDS = "biuf"


class InvalidModelOutput(Exception):
    """What the model left is not a valid result; `reason` is a short sentence for the
    user (never a server path)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def open_regular_file(path: Path) -> int | None:
    """Open a file the model may have replaced, or None: no symlink (O_NOFOLLOW), no
    FIFO or device (O_NONBLOCK keeps open() from waiting for a writer, then only a
    regular file is kept), and no hard link, which could make us read a file the
    model itself cannot read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except Exception:
        return None
    try:
        info = os.fstat(fd)
        plain = stat.S_ISREG(info.st_mode) and info.st_nlink == 1
    except Exception:
        plain = False
    if not plain:
        os.close(fd)
        return None
    return fd


def _read_up_to(fd: int, limit: int) -> bytes:
    """At most `limit` bytes from the fd's position, fewer only at end of file."""
    chunks: list[bytes] = []
    remaining = limit
    while remaining > 0:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _clean_text(text: str, limit: int) -> str:
    """Control characters and lone surrogates replaced, at most `limit` characters."""
    text = _CONTROL_CHARACTERS.sub(" ", _SURROGATES.sub("\ufffd", text))
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---- result.npy ------------------------------------------------------------------------


def read_result(path: Path, *, max_bytes: int) -> np.ndarray:
    """result.npy memory-mapped read-only, if it is a well-formed fmpy result table: a
    1-D structured array whose fields are numeric scalars, "time" first, finite and
    non-decreasing. Raises InvalidModelOutput otherwise, and nothing else.

    The header is checked against the file size before anything is mapped, so a
    header cannot make us allocate (or map) more than the model actually wrote. The
    array is mapped from the fd that was checked, not reopened by name (np.load with
    mmap_mode would), so the file cannot be swapped in between."""
    fd = open_regular_file(path)
    if fd is None:
        raise InvalidModelOutput("The run left no result file.")
    try:
        return _mapped_result(fd, max_bytes)
    except InvalidModelOutput:
        raise
    except Exception as error:
        raise InvalidModelOutput("The result file is not a valid result table.") from error
    finally:
        os.close(fd)  # the mapping keeps its own reference to the file


def load_result(path: Path, *, max_bytes: int) -> np.ndarray:
    """`read_result`'s checks, with the table read into memory instead of mapped: for a
    batch, which keeps each case's trace and removes its file at once. What is allocated
    is what the file holds (its header checked against its size first), at most
    `max_bytes`. Raises InvalidModelOutput, and nothing else."""
    fd = open_regular_file(path)
    if fd is None:
        raise InvalidModelOutput("The run left no result file.")
    try:
        return _loaded_result(fd, max_bytes)
    except InvalidModelOutput:
        raise
    except Exception as error:
        raise InvalidModelOutput("The result file is not a valid result table.") from error
    finally:
        os.close(fd)


def parse_result(data: bytes, *, max_bytes: int) -> np.ndarray:
    """`read_result`'s checks on a result's bytes (a batch's case, read from its job's
    results file), the table copied out of them. Raises InvalidModelOutput only."""
    try:
        return _parsed_result(data, max_bytes)
    except InvalidModelOutput:
        raise
    except Exception as error:
        raise InvalidModelOutput("The result file is not a valid result table.") from error


def _parsed_result(data: bytes, max_bytes: int) -> np.ndarray:
    header_end, rows, dtype = _checked_table(io.BytesIO(data), len(data), max_bytes)
    result = np.frombuffer(data, dtype=dtype, count=rows, offset=header_end).copy()
    _check_times(result["time"])
    return result


def _checked_table(stream: BinaryIO, size: int, max_bytes: int) -> tuple[int, int, np.dtype[Any]]:
    """(data offset, rows, dtype) of an untrusted .npy result of `size` bytes, read from
    `stream`: within the size limit, laid out as a result table (_check_table_layout),
    and exactly as long as its header says. The one check the three readers share."""
    if size > max_bytes:
        raise InvalidModelOutput("The result file is larger than the run's file size limit.")
    header_end, shape, fortran_order, dtype = _read_npy_header(stream, size)
    _check_table_layout(shape, fortran_order, dtype)
    rows = shape[0]
    if header_end + rows * dtype.itemsize != size:
        raise InvalidModelOutput("The result file's size does not match its header.")
    return header_end, rows, dtype


def _loaded_result(fd: int, max_bytes: int) -> np.ndarray:
    with os.fdopen(fd, "rb", closefd=False) as stream:
        header_end, rows, dtype = _checked_table(stream, os.fstat(fd).st_size, max_bytes)
        result = np.empty(rows, dtype=dtype)
        stream.seek(header_end)
        if stream.readinto(result.view(np.uint8).data) != rows * dtype.itemsize:
            raise InvalidModelOutput("The result file's size does not match its header.")
    _check_times(result["time"])
    return result


def _mapped_result(fd: int, max_bytes: int) -> np.ndarray:
    with os.fdopen(fd, "rb", closefd=False) as stream:
        header_end, rows, dtype = _checked_table(stream, os.fstat(fd).st_size, max_bytes)
        result = np.memmap(stream, dtype=dtype, mode="r", offset=header_end, shape=(rows,))
    _check_times(result["time"])
    return result


def _read_npy_header(
    stream: BinaryIO, size: int
) -> tuple[int, tuple[int, ...], bool, np.dtype[Any]]:
    """(end of header, shape, fortran_order, dtype), the header's length checked
    before numpy reads it (numpy reads it whole, then compares it with its limit)."""
    version = npy_format.read_magic(stream)
    length_format = _HEADER_LENGTH_FORMATS.get(version)
    if length_format is None:
        raise InvalidModelOutput("The result file has an unknown .npy version.")
    length_size = struct.calcsize(length_format)
    (length,) = struct.unpack(length_format, stream.read(length_size))
    header_end = npy_format.MAGIC_LEN + length_size + length
    if length > MAX_NPY_HEADER_BYTES or header_end > size:
        raise InvalidModelOutput("The result file's header is too large.")
    stream.seek(0)
    raw = stream.read(header_end)
    known = _parsed_headers.get(raw)
    if known is not None:  # the same bytes as an earlier result's (a batch's cases)
        return (header_end, *known)
    stream.seek(npy_format.MAGIC_LEN)
    if version == (1, 0):
        header = npy_format.read_array_header_1_0(stream, max_header_size=MAX_NPY_HEADER_BYTES)
    elif version == (2, 0):
        header = npy_format.read_array_header_2_0(stream, max_header_size=MAX_NPY_HEADER_BYTES)
    elif _numpy_read_array_header is not None:
        header = _numpy_read_array_header(stream, version, max_header_size=MAX_NPY_HEADER_BYTES)
    else:  # pragma: no cover
        raise InvalidModelOutput("The result file has an unknown .npy version.")
    if stream.tell() != header_end:
        raise InvalidModelOutput("The result file's header is malformed.")
    if len(_parsed_headers) >= MAX_PARSED_HEADERS:
        _parsed_headers.clear()
    _parsed_headers[raw] = header
    return (header_end, *header)


def _check_table_layout(shape: tuple[int, ...], fortran_order: bool, dtype: np.dtype[Any]) -> None:
    if (
        fortran_order
        or len(shape) != 1
        or type(shape[0]) is not int
        or shape[0] < 0
        or dtype.hasobject
        or not dtype.names
        or dtype.fields is None  # never once it has names: narrows the type for mypy
        or dtype.names[0] != "time"
    ):
        raise InvalidModelOutput(
            'The result is not a table of numbers with "time" as its first column.'
        )
    for name in dtype.names:
        field_type = dtype.fields[name][0]
        if field_type.kind not in _NUMERIC_KINDS or field_type.shape:
            raise InvalidModelOutput("The result has a column that is not a plain number.")


def _check_times(times: np.ndarray) -> None:
    """Finite and non-decreasing, compared (not subtracted: unsigned differences wrap)
    chunk by chunk, so memory stays bounded however long the mapped column is."""
    previous = None
    for start in range(0, len(times), TIME_CHUNK_ROWS):
        chunk = np.asarray(times[start : start + TIME_CHUNK_ROWS])
        if (
            not np.isfinite(chunk).all()
            or (chunk[1:] < chunk[:-1]).any()
            or (previous is not None and chunk[0] < previous)
        ):
            raise InvalidModelOutput("The result's time column is not finite and increasing.")
        previous = chunk[-1]


# ---- error.json ------------------------------------------------------------------------


def read_error_report(path: Path, *, allowed_codes: frozenset[str]) -> tuple[str, str] | None:
    """(code, cleaned message) from the model's own account of its failure, or None
    when it is absent or not a small {"code": <allowed>, "message": <str>} object;
    the caller then uses its default label. A label only: never a verdict."""
    try:
        return _error_report(path, allowed_codes)
    except Exception:
        return None


def _error_report(path: Path, allowed_codes: frozenset[str]) -> tuple[str, str] | None:
    fd = open_regular_file(path)
    if fd is None:
        return None
    try:
        data = _read_up_to(fd, MAX_ERROR_REPORT_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_ERROR_REPORT_BYTES:
        return None
    text = data.decode("utf-8")
    if _nesting_too_deep(text, MAX_JSON_DEPTH):
        return None
    report = json.loads(text)
    if not isinstance(report, dict):
        return None
    code, message = report.get("code"), report.get("message")
    if not isinstance(code, str) or code not in allowed_codes or not isinstance(message, str):
        return None
    message = " ".join(_CONTROL_CHARACTERS.sub(" ", message).split())
    return code, _clean_text(message, MAX_MESSAGE_CHARS)


def _nesting_too_deep(text: str, limit: int) -> bool:
    """Whether JSON text nests arrays/objects deeper than `limit` (brackets inside
    strings do not count), or closes more than it opened. json.loads recurses once per
    level, so this is what keeps it far below the recursion limit."""
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
            if depth < 0:
                return True
    return False


# ---- fmu.log ---------------------------------------------------------------------------


def read_log_tail(path: Path, *, max_bytes: int = 64 * 1024, max_lines: int = 50) -> str:
    """The log's last lines (from at most its last `max_bytes`), control characters
    replaced and each line at most MAX_LOG_LINE_CHARS; "" if absent or unreadable."""
    try:
        fd = open_regular_file(path)
        if fd is None:
            return ""
        try:
            size = os.fstat(fd).st_size
            os.lseek(fd, max(0, size - max_bytes), os.SEEK_SET)
            data = _read_up_to(fd, max_bytes)
        finally:
            os.close(fd)
        lines = data.decode("utf-8", "replace").splitlines()
        lines = lines[-max_lines:] if max_lines > 0 else []
        return "\n".join(_clean_text(line, MAX_LOG_LINE_CHARS) for line in lines)
    except Exception:
        return ""
