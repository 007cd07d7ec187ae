"""Where a download goes: a regular file is replaced whole (never half-written), anything
else (a device, a FIFO) is written to as it is, as curl does. Renaming the download onto
`-o /dev/null` run as root turned the system's /dev/null into a regular file."""

from __future__ import annotations

import io
import os
import stat
import threading

import pytest
import requests
from fmugateway_client.downloads import body_write

BODY = b"time,h\n0.0,1.0\n" * 1000


def response_of(body: bytes) -> requests.Response:
    response = requests.Response()
    response.status_code = 200
    response.raw = io.BytesIO(body)
    return response


def test_a_new_path_gets_the_body(tmp_path):
    target = tmp_path / "result.csv"
    assert body_write(response_of(BODY), target) == target
    assert target.read_bytes() == BODY
    assert [path.name for path in tmp_path.iterdir()] == ["result.csv"]  # no .part left


def test_an_existing_regular_file_is_replaced_whole(tmp_path):
    target = tmp_path / "result.csv"
    target.write_bytes(b"old and longer than nothing" * 10_000)
    body_write(response_of(BODY), target)
    assert target.read_bytes() == BODY


def test_a_fifo_is_written_to_and_stays_a_fifo(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = bytearray()

    def drain() -> None:
        # Opening blocks until the download opens the other end (never, if it renamed a
        # file onto the FIFO: the thread is a daemon, the assertions below fail).
        with open(fifo, "rb") as reader:
            received.extend(reader.read())

    draining = threading.Thread(target=drain, daemon=True)
    draining.start()
    body_write(response_of(BODY), fifo)
    draining.join(timeout=10)
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert bytes(received) == BODY


def test_a_character_device_is_written_to_and_stays_a_device(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root (make test runs as root)")
    null = tmp_path / "null"
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # /dev/null's numbers
    body_write(response_of(BODY), null)
    assert stat.S_ISCHR(null.stat().st_mode)
    assert list(tmp_path.iterdir()) == [null]
