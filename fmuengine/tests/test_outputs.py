"""Pins fmuengine.outputs: whatever a model leaves in its run dir is parsed without any
exception but InvalidModelOutput escaping (else the run would be a refunded platform
fault), without blocking, and within bounded memory."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import struct
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fmuengine.outputs import (
    ERROR_FILE,
    LOG_FILE,
    MAX_ERROR_REPORT_BYTES,
    RESULT_FILE,
    InvalidModelOutput,
    load_result,
    open_regular_file,
    parse_result,
    read_error_report,
    read_log_tail,
    read_result,
)

CODES = frozenset({"model_error", "out_of_memory", "invalid_parameters"})
MAX_BYTES = 64 << 20
TABLE = np.array(
    [(0.0, 1.0, 0.0), (0.5, 0.2, -4.9), (0.5, 0.2, 4.9), (1.0, 0.8, 1.0)],
    dtype=[("time", "<f8"), ("h", "<f8"), ("v", "<f4")],
)


@contextlib.contextmanager
def must_not_block(seconds: int = 5):
    def give_up(signum, frame):
        raise TimeoutError("blocked")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def npy_bytes(array: np.ndarray, version: tuple[int, int] | None = None) -> bytes:
    path = Path(tempfile.mkdtemp()) / "a.npy"
    with open(path, "wb") as stream:
        np.lib.format.write_array(stream, array, version=version, allow_pickle=False)
    return path.read_bytes()


def npy_with_header(header: str, body: bytes = b"", version=(1, 0), pad_to: int = 64) -> bytes:
    """A .npy file with any header text: the lies a hostile model can write."""
    length_format = "<H" if version == (1, 0) else "<I"
    prefix = 8 + struct.calcsize(length_format)
    raw = header.encode("latin1")
    raw += b" " * (-(prefix + len(raw) + 1) % pad_to) + b"\n"
    return b"\x93NUMPY" + bytes(version) + struct.pack(length_format, len(raw)) + raw + body


def header(descr: str = "[('time', '<f8')]", shape: str = "(2,)", fortran: bool = False) -> str:
    return f"{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape}, }}"


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def assert_invalid(path: Path, max_bytes: int = MAX_BYTES) -> str:
    """Invalid to every reader (mapped for a run, loaded, or parsed from its bytes for a
    batch's case), twice (the second time with the header's parse remembered), for the
    same reason."""

    def parse(path: Path, max_bytes: int) -> np.ndarray:
        return parse_result(path.read_bytes(), max_bytes=max_bytes)

    readers: list[Callable[..., np.ndarray]] = [read_result, load_result, load_result]
    info = os.lstat(path) if os.path.lexists(path) else None
    if info is not None and stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
        readers.append(parse)
    reasons = set()
    for reader in readers:
        with must_not_block(), pytest.raises(InvalidModelOutput) as raised:
            reader(path, max_bytes=max_bytes)
        reasons.add(raised.value.reason)
    [reason] = reasons
    assert reason and str(path.parent) not in reason
    return reason


# ---- result.npy ------------------------------------------------------------------------


@pytest.mark.parametrize("version", [None, (1, 0), (2, 0)])
def test_a_valid_result_round_trips_memory_mapped(tmp_path, version):
    path = write(tmp_path, RESULT_FILE, npy_bytes(TABLE, version))

    result = read_result(path, max_bytes=MAX_BYTES)

    assert isinstance(result, np.memmap) and result.mode == "r"
    assert result.dtype == TABLE.dtype
    np.testing.assert_array_equal(result, TABLE)
    with pytest.raises(ValueError, match="read-only"):
        result["h"][0] = 2.0


@pytest.mark.parametrize("version", [None, (1, 0), (2, 0)])
def test_a_valid_result_loads_into_memory(tmp_path, version):
    path = write(tmp_path, RESULT_FILE, npy_bytes(TABLE, version))

    result = load_result(path, max_bytes=MAX_BYTES)
    path.unlink()

    assert not isinstance(result, np.memmap) and result.flags.owndata
    assert result.dtype == TABLE.dtype
    np.testing.assert_array_equal(result, TABLE)


def test_a_result_with_non_latin1_column_names_is_read(tmp_path):
    table = np.zeros(3, dtype=[("time", "<f8"), ("温度", "<i4")])
    table["time"] = [0, 1, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy warns that it writes format 3.0
        path = write(tmp_path, RESULT_FILE, npy_bytes(table))

    np.testing.assert_array_equal(read_result(path, max_bytes=MAX_BYTES), table)


def test_an_empty_table_and_integer_or_equal_times_are_valid(tmp_path):
    empty = write(tmp_path, "empty.npy", npy_bytes(TABLE[:0]))
    assert len(read_result(empty, max_bytes=MAX_BYTES)) == 0
    table = np.array([(0, 1), (0, 2), (3, 3)], dtype=[("time", "<u8"), ("x", "|b1")])
    integers = write(tmp_path, "int.npy", npy_bytes(table))
    np.testing.assert_array_equal(read_result(integers, max_bytes=MAX_BYTES), table)


def test_a_long_result_is_checked_across_chunk_boundaries(tmp_path):
    table = np.zeros(200_000, dtype=[("time", "<f8"), ("x", "<f8")])
    table["time"] = np.arange(200_000)
    good = write(tmp_path, "good.npy", npy_bytes(table))
    assert len(read_result(good, max_bytes=MAX_BYTES)) == 200_000
    table["time"][1 << 16] = 0.0  # first row of the second chunk goes back
    assert "time" in assert_invalid(write(tmp_path, "bad.npy", npy_bytes(table)))


def test_a_result_larger_than_the_limit_is_refused(tmp_path):
    data = npy_bytes(TABLE)
    path = write(tmp_path, RESULT_FILE, data)

    assert len(read_result(path, max_bytes=len(data))) == len(TABLE)
    assert "limit" in assert_invalid(path, max_bytes=len(data) - 1)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(npy_with_header(header(shape="(10**12,)")), id="shape-expression"),
        pytest.param(npy_with_header(header(shape="(1000000000000,)")), id="shape-10**12"),
        pytest.param(npy_with_header(header(shape="(10000000,)")), id="shape-10**7"),
        pytest.param(npy_with_header(header(shape="(-1,)"), b"\0" * 8), id="negative-shape"),
        pytest.param(npy_with_header(header(shape="(True,)"), b"\0" * 8), id="bool-shape"),
        pytest.param(npy_bytes(TABLE) + b"\0" * TABLE.itemsize, id="trailing-row"),
        pytest.param(npy_bytes(TABLE) + b"\0", id="trailing-byte"),
        pytest.param(npy_bytes(TABLE)[:-1], id="truncated"),
        pytest.param(npy_bytes(TABLE)[:20], id="truncated-header"),
        pytest.param(b"", id="empty-file"),
        pytest.param(b"\x93NUMPY\x01", id="only-magic"),
        pytest.param(b"not a numpy file at all, just text\n" * 10, id="not-npy"),
        pytest.param(npy_bytes(TABLE).replace(b"\x01\x00", b"\x04\x00", 1), id="version-4"),
        pytest.param(
            npy_with_header(header(shape="(1,)"), b"\0" * 8, version=(2, 0), pad_to=20_032),
            id="header-over-numpy-max",
        ),
        pytest.param(
            b"\x93NUMPY\x02\x00" + struct.pack("<I", 0xFFFFFFF0) + b"{",
            id="header-length-4GiB",
        ),
        pytest.param(npy_with_header(header(descr="'|O'", shape="(1,)"), b"\0" * 8), id="object"),
        pytest.param(
            npy_with_header(
                header(descr="[('time', '<f8'), ('x', '|O')]", shape="(1,)"), b"\0" * 16
            ),
            id="object-field",
        ),
        pytest.param(npy_with_header(header(fortran=True)), id="fortran-order"),
        pytest.param(npy_bytes(np.zeros((2, 2), dtype=TABLE.dtype)), id="2-d"),
        pytest.param(npy_bytes(np.zeros((), dtype=TABLE.dtype)), id="0-d"),
        pytest.param(npy_bytes(np.arange(4.0)), id="not-structured"),
        pytest.param(npy_bytes(np.zeros(2, [("h", "<f8"), ("time", "<f8")])), id="time-not-first"),
        pytest.param(npy_bytes(np.zeros(2, [("t", "<f8"), ("h", "<f8")])), id="no-time"),
        pytest.param(npy_bytes(np.zeros(2, [("time", "<f8"), ("h", "<f8", (3,))])), id="sub-array"),
        pytest.param(npy_bytes(np.zeros(2, [("time", "<f8"), ("s", "S4")])), id="bytes-field"),
        pytest.param(npy_bytes(np.zeros(2, [("time", "<c16")])), id="complex-time"),
        pytest.param(
            npy_bytes(np.zeros(2, [("time", "<f8"), ("p", [("x", "<f8")])])), id="nested-struct"
        ),
        pytest.param(
            npy_with_header(header(descr="[" * 3000 + "]" * 3000), b"\0" * 8), id="deep-descr"
        ),
        pytest.param(npy_with_header("{" + "'a': 1, " * 900 + "}", b"\0" * 8), id="wrong-keys"),
    ],
)
def test_a_lying_or_malformed_result_is_invalid(tmp_path, data):
    assert_invalid(write(tmp_path, RESULT_FILE, data))


@pytest.mark.parametrize("bad_time", [np.nan, np.inf, -np.inf, 0.25])
def test_times_must_be_finite_and_non_decreasing(tmp_path, bad_time):
    table = TABLE.copy()
    table["time"][2] = bad_time

    assert "time" in assert_invalid(write(tmp_path, RESULT_FILE, npy_bytes(table)))


def test_decreasing_unsigned_times_are_invalid(tmp_path):
    table = np.array([(5, 0.0), (1, 0.0)], dtype=[("time", "<u1"), ("x", "<f8")])

    assert_invalid(write(tmp_path, RESULT_FILE, npy_bytes(table)))


def test_a_result_that_is_not_a_plain_file_is_invalid(tmp_path):
    real = write(tmp_path, "real.npy", npy_bytes(TABLE))
    assert len(read_result(real, max_bytes=MAX_BYTES)) == len(TABLE)

    symlink = tmp_path / "symlink" / RESULT_FILE
    symlink.parent.mkdir()
    symlink.symlink_to(real)
    hard_link = tmp_path / "hard_link" / RESULT_FILE
    hard_link.parent.mkdir()
    os.link(real, hard_link)
    fifo = tmp_path / "fifo" / RESULT_FILE
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    directory = tmp_path / "directory" / RESULT_FILE
    directory.mkdir(parents=True)

    for path in (symlink, hard_link, fifo, directory, tmp_path / "missing" / RESULT_FILE):
        assert_invalid(path)
    with must_not_block():
        assert open_regular_file(fifo) is None
        assert open_regular_file(hard_link) is None


def test_open_regular_file_opens_a_plain_file_read_only(tmp_path):
    fd = open_regular_file(write(tmp_path, "plain", b"data"))
    assert fd is not None
    try:
        assert os.read(fd, 10) == b"data"
        with pytest.raises(OSError):
            os.write(fd, b"x")
    finally:
        os.close(fd)


# ---- error.json ------------------------------------------------------------------------


def report(tmp_path: Path, data: bytes | str | object) -> tuple[str, str] | None:
    if isinstance(data, str):
        data = data.encode()
    elif not isinstance(data, bytes):
        data = json.dumps(data).encode()
    with must_not_block():
        return read_error_report(write(tmp_path, ERROR_FILE, data), allowed_codes=CODES)


def test_a_normal_report_gives_its_code_and_message(tmp_path):
    message = 'Variable x has no start [value]: {see} "docs"'
    assert report(tmp_path, {"code": "out_of_memory", "message": message}) == (
        "out_of_memory",
        message,
    )


def test_extra_keys_and_shallow_nesting_are_fine(tmp_path):
    data = {"code": "model_error", "message": "m", "detail": [[[{"a": [1]}]]]}
    assert report(tmp_path, data) == ("model_error", "m")


def test_the_message_is_cleaned(tmp_path):
    message = "  first\x00line\r\n\tsecond \x1b[31mred\x7f \ud800 " + "x" * 1000
    reported = report(tmp_path, {"code": "model_error", "message": message})
    assert reported is not None
    code, cleaned = reported

    assert code == "model_error"
    assert cleaned.startswith("first line second [31mred \ufffd xxx")
    assert len(cleaned) == 500 and cleaned.endswith("…")
    cleaned.encode("utf-8")  # what the database will do with it


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="100000-deep"),
        pytest.param(b"[" * 2000 + b"]" * 2000, id="2000-deep-within-size"),
        pytest.param(
            b'{"code": "model_error", "message": "m", "x": '
            + b"[" * 100_000
            + b"]" * 100_000
            + b"}",
            id="100000-deep-in-a-dict",
        ),
        pytest.param(
            b'{"code": "model_error", "message": "m", "x": ' + b"[" * 8 + b"]" * 8 + b"}",
            id="9-deep-in-a-dict",
        ),
        pytest.param(b"]]]]" + b"[" * 2000, id="unbalanced"),
        pytest.param(
            json.dumps({"code": "model_error", "message": "m" * (1 << 20)}).encode(), id="1MB"
        ),
        pytest.param(
            json.dumps({"code": "model_error", "message": "m"}).encode()
            + b" " * MAX_ERROR_REPORT_BYTES,
            id="one-byte-over",
        ),
        pytest.param(b'{"code": "model_error", "message": "\xff\xfe"}', id="invalid-utf8"),
        pytest.param(b'{"code": "model_error", "message": "\xed\xa0\x80"}', id="utf8-surrogate"),
        pytest.param(b'{"code": "model_error",\x00 "message": "m"}', id="nul-byte"),
        pytest.param(b'\xef\xbb\xbf{"code": "model_error", "message": "m"}', id="bom"),
        pytest.param(["model_error", "m"], id="a-list"),
        pytest.param("model_error", id="a-string"),
        pytest.param(b"", id="empty"),
        pytest.param({"code": "platform_error", "message": "m"}, id="unknown-code"),
        pytest.param({"code": [], "message": "m"}, id="code-a-list"),
        pytest.param({"code": {"a": 1}, "message": "m"}, id="code-a-dict"),
        pytest.param({"code": "model_error", "message": ["m"]}, id="message-a-list"),
        pytest.param({"code": "model_error", "message": None}, id="message-null"),
        pytest.param({"code": "model_error"}, id="no-message"),
        pytest.param('{"code": "model_error", "message": 1' + "0" * 4050 + "}", id="huge-int"),
    ],
)
def test_a_malformed_report_gives_none(tmp_path, data):
    assert report(tmp_path, data) is None


def test_deep_nesting_is_refused_before_json_loads_sees_it(tmp_path, monkeypatch):
    """Not merely a RecursionError caught afterwards: json.loads never recurses deeply."""
    parsed: list[str] = []
    loads = json.loads

    def recording_loads(text):
        parsed.append(text)
        return loads(text)

    monkeypatch.setattr(json, "loads", recording_loads)

    assert report(tmp_path, b"[" * 2000 + b"]" * 2000) is None
    assert report(tmp_path, b"{" * 2000) is None
    assert parsed == []
    assert report(tmp_path, {"code": "model_error", "message": "m"}) == ("model_error", "m")
    assert len(parsed) == 1


def test_brackets_inside_strings_do_not_count_as_nesting(tmp_path):
    message = '[[[[[[[[[[[[{{{{{{{{{{ \\" [[[[[[[[[[ \\\\'
    assert report(tmp_path, f'{{"code": "model_error", "message": "{message}"}}') == (
        "model_error",
        '[[[[[[[[[[[[{{{{{{{{{{ " [[[[[[[[[[ \\',
    )


def test_a_report_that_is_not_a_plain_file_gives_none(tmp_path):
    real = write(tmp_path, "real.json", b'{"code": "model_error", "message": "m"}')
    symlink = tmp_path / "symlink.json"
    symlink.symlink_to(real)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    (tmp_path / "dir.json").mkdir()

    with must_not_block():
        for path in (symlink, fifo, tmp_path / "dir.json", tmp_path / "missing.json"):
            assert read_error_report(path, allowed_codes=CODES) is None


# ---- fmu.log ---------------------------------------------------------------------------


def log_tail(tmp_path: Path, data: bytes, **limits) -> str:
    with must_not_block():
        return read_log_tail(write(tmp_path, LOG_FILE, data), **limits)


def test_the_log_tail_is_its_last_lines_cleaned(tmp_path):
    data = b"".join(b"line %d\r\n" % n for n in range(100)) + b"last \x1b[0m\x00 \xff"
    tail = log_tail(tmp_path, data)

    lines = tail.split("\n")
    assert len(lines) == 50
    assert lines[0] == "line 51" and lines[-1] == "last  [0m  \ufffd"


def test_binary_garbage_gives_a_bounded_clean_string(tmp_path):
    tail = log_tail(tmp_path, os.urandom(200_000))

    assert len(tail) <= 64 * 1024
    assert not any(char < " " and char not in "\t\n" for char in tail)  # tabs are kept
    tail.encode("utf-8")


def test_a_10MB_log_gives_only_its_bounded_tail(tmp_path):
    assert log_tail(tmp_path, b"x" * (10 << 20)) == "x" * 1999 + "…"
    tail = log_tail(tmp_path, b"y" * (10 << 20) + b"\n" + b"z" * 100, max_bytes=1000)
    assert tail == "y" * 899 + "\n" + "z" * 100


def test_a_log_that_is_not_a_plain_file_gives_nothing(tmp_path):
    symlink = tmp_path / LOG_FILE
    symlink.symlink_to("/etc/passwd")
    fifo = tmp_path / "fifo.log"
    os.mkfifo(fifo)

    with must_not_block():
        assert read_log_tail(symlink) == ""
        assert read_log_tail(fifo) == ""
        assert read_log_tail(tmp_path / "missing.log") == ""
        assert read_log_tail(tmp_path) == ""


# ---- properties ------------------------------------------------------------------------


def mutated(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    array = bytearray(data)
    for position, value in edits:
        array[position % len(array)] = value
    return bytes(array[:cut] if cut is not None else array)


VALID_NPY = npy_bytes(TABLE)
npy_like = st.one_of(
    st.binary(max_size=4096),
    st.builds(
        mutated,
        st.just(VALID_NPY),
        st.lists(st.tuples(st.integers(0, len(VALID_NPY) - 1), st.integers(0, 255)), max_size=8),
        st.one_of(st.none(), st.integers(0, len(VALID_NPY))),
    ),
    st.builds(
        lambda text: npy_with_header(text, b"\0" * 32),
        st.text(st.characters(max_codepoint=255), max_size=300),
    ),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)
report_like = st.one_of(
    st.binary(max_size=5000),
    st.builds(lambda value: json.dumps(value).encode(), json_values),
    st.builds(
        lambda code, message: json.dumps({"code": code, "message": message}).encode(),
        st.one_of(st.sampled_from(sorted(CODES)), json_values),
        json_values,
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(npy=npy_like, error_json=report_like, log=st.binary(max_size=5000))
def test_random_outputs_never_raise_anything_else(npy, error_json, log):
    with tempfile.TemporaryDirectory() as directory:
        run_dir = Path(directory)
        for name, data in ((RESULT_FILE, npy), (ERROR_FILE, error_json), (LOG_FILE, log)):
            (run_dir / name).write_bytes(data)
        with must_not_block():
            try:
                result = read_result(run_dir / RESULT_FILE, max_bytes=MAX_BYTES)
            except InvalidModelOutput as error:
                assert error.reason
            else:
                assert result.dtype.names is not None
                assert result.dtype.names[0] == "time"
                loaded = load_result(run_dir / RESULT_FILE, max_bytes=MAX_BYTES)
                np.testing.assert_array_equal(loaded, result)
                np.testing.assert_array_equal(parse_result(npy, max_bytes=MAX_BYTES), result)
            parsed = read_error_report(run_dir / ERROR_FILE, allowed_codes=CODES)
            assert parsed is None or (parsed[0] in CODES and len(parsed[1]) <= 500)
            assert isinstance(read_log_tail(run_dir / LOG_FILE), str)
