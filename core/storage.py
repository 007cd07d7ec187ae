"""Where stored files (uploaded FMUs, results) are kept: Django's default storage, local
or an S3-compatible bucket.

Infrastructure, not the simulations domain: it knows files by name, not what they hold.
Every read and write of a stored file goes through `default_storage` (so the same code
runs on MEDIA_ROOT in embedded mode and on a bucket shared by all machines), and every
storage failure becomes one error, `StorageUnavailable` (503), here. The S3 backend
itself is `core.object_storage.ObjectStorage`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO

from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, default_storage, storages

from core.errors import ServiceUnavailable
from core.problems import ProblemCode

logger = logging.getLogger(__name__)


class StorageUnavailable(ServiceUnavailable):
    """File storage could not be reached or refused the request: a 503, nothing changed.

    A class of its own because services catch a storage outage apart from other
    failures: a best-effort delete leaves the object for the next retention pass.
    """

    code = ProblemCode.STORAGE_UNAVAILABLE


def _storage_failures() -> tuple[type[BaseException], ...]:
    """What a storage outage raises: OSError locally, botocore's errors against a bucket."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (OSError, BotoCoreError, ClientError)


@contextmanager
def storage_errors(action: str) -> Iterator[None]:
    """Turn a storage failure inside the block into StorageUnavailable, logged once here.

    A missing object (FileNotFoundError) is not an outage and passes through unchanged.
    """
    try:
        yield
    except FileNotFoundError:
        raise
    except _storage_failures() as error:
        logger.warning("storage failed while %s: %s: %s", action, type(error).__name__, error)
        raise StorageUnavailable(
            f"File storage is unavailable ({action} failed); nothing was changed. "
            "Please retry in a minute."
        ) from error


# --- reads and writes -----------------------------------------------------------------------


class LocalFile(File):
    """A file on this machine's disk on its way to storage (an upload's or a run's temp file).

    It names its path so ObjectStorage can upload it part by part straight from disk instead
    of through parts held in memory. Not `temporary_file_path()`: FileSystemStorage would
    move a file that has one, taking it away from its owner.
    """

    file: IO[bytes]  # made from a file opened on disk, never None as File allows

    def local_path(self) -> str:
        return self.file.name


def stored_file_exists(*, name: str) -> bool:
    with storage_errors("checking a stored file"):
        return default_storage.exists(name)


def store_file(*, name: str, path: Path) -> str:
    """Copy a local file (an upload's or the sandbox's temp file) to storage under `name`.

    Replaces whatever is stored under that name: names are keyed by content or run id, so an
    existing object is the same file or a stale copy of it. Streams in parts; returns the name.
    """
    with storage_errors("storing a file"):
        if isinstance(storages["default"], FileSystemStorage) and default_storage.exists(name):
            # FileSystemStorage would pick another name rather than replace the file.
            default_storage.delete(name)
        with Path(path).open("rb") as handle:
            saved = default_storage.save(name, LocalFile(handle))
    if saved != name:
        raise StorageUnavailable(f"Storage stored {name!r} as {saved!r}; refusing to continue.")
    return saved


def stored_file_local_path(*, name: str) -> Path | None:
    """The file's path when storage is this machine's file system (no copy needed), else
    None: object storage has no local file."""
    storage = storages["default"]
    if not isinstance(storage, FileSystemStorage):
        return None
    with storage_errors("finding a stored file"):
        path = Path(storage.path(name))
        return path if path.is_file() else None


def stored_files_older_than(*, prefix: str, cutoff: datetime) -> Iterator[str]:
    """Names of stored files under `prefix` last written before `cutoff`, every level down.

    Object storage lists names with their times in pages; other backends are walked
    with listdir and asked for each file's time."""
    storage = storages["default"]
    with storage_errors("listing stored files"):
        if hasattr(storage, "iter_names_modified"):
            for name, modified in storage.iter_names_modified(prefix):
                if modified < cutoff:
                    yield name
            return
        pending = [prefix.rstrip("/")]
        while pending:
            directory = pending.pop()
            try:
                subdirectories, files = storage.listdir(directory)
            except FileNotFoundError:
                continue
            pending.extend(f"{directory}/{subdirectory}" for subdirectory in subdirectories)
            for file_name in files:
                name = f"{directory}/{file_name}"
                if storage.get_modified_time(name) < cutoff:
                    yield name


def open_stored_file(*, name: str):
    """Open a stored file for reading, in bounded memory whatever its size."""
    with storage_errors("opening a stored file"):
        return default_storage.open(name, "rb")


def delete_stored_file(*, name: str) -> None:
    """Delete a stored file; deleting one that is already gone is not an error."""
    with storage_errors("deleting a stored file"):
        default_storage.delete(name)


def probe_storage() -> None:
    """/readyz's storage check: write and delete a tiny object, since reachable is not
    enough; uploads need writable.

    Against a bucket the probe uses a client that does not retry, so a storage outage makes
    /readyz answer 503 within seconds.
    """
    probe = getattr(default_storage, "probe", None)
    if probe is not None:
        probe()
        return
    name = default_storage.save(f"readyz/{uuid.uuid4().hex}", ContentFile(b"ok"))
    default_storage.delete(name)
