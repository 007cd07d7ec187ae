"""Downloads: a response body streamed to a file object or written to a path."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import IO

import requests

from fmugateway_client.errors import TransportError

CHUNK_BYTES = 64 * 1024


def body_write(
    response: requests.Response, target: str | os.PathLike[str] | IO[bytes]
) -> Path | None:
    """Stream `response`'s body to a binary file object, or to a path: a regular file (or
    a new one) through a temporary file beside it, so that a broken download never leaves
    a half file under the final name; anything else (a device, a FIFO) directly. Returns
    the path (None for a file object)."""
    if not isinstance(target, str | os.PathLike):
        _copy_body(response, target)
        return None
    final = Path(target)
    if final.exists() and not final.is_file():
        # A device, FIFO or socket (-o /dev/null, -o /dev/stdout, a pipe): written to as
        # it is, as curl does. Renaming a file onto it would replace it, and run as root
        # turn /dev/null into a regular file.
        with final.open("wb") as handle:
            _copy_body(response, handle)
        return final
    partial = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        with partial.open("wb") as handle:
            _copy_body(response, handle)
        partial.replace(final)
    finally:
        partial.unlink(missing_ok=True)
    return final


def _copy_body(response: requests.Response, handle: IO[bytes]) -> None:
    try:
        for chunk in response.iter_content(chunk_size=CHUNK_BYTES):
            handle.write(chunk)
    except requests.RequestException as error:
        raise TransportError(f"the result download broke off: {error}") from error
