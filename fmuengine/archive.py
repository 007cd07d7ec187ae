"""The FMU's ZIP container: which entries an FMU may hold, under which paths, and reading them.

An FMU is an untrusted ZIP archive. Everything here reads only the central directory and, of
the entries' data, only what the directory declares, so zip bombs and lying entries cost nothing.

The name rule. ZIP stores names as free text, and unzip tools repair them as they extract:
zipfile drops a leading "/", "", "." and ".." components (so "./modelDescription.xml" and
"a//b" become "modelDescription.xml" and "a/b"), cuts a name at a NUL byte, and on Windows also
reads "\\" as a separator and drops a drive; case-insensitive file systems merge names that
differ in letter case. So an archive holding both "modelDescription.xml" and
"./modelDescription.xml" (or "ModelDescription.XML") is two files to a checker reading raw names
and one file, the last written, once extracted. The rule in :func:`normalized_entry_path` accepts
only names that need no repair, so an entry's path is its name; :func:`_refuse_collisions` then
refuses any two entries that any of those tools would put at the same place (equal paths, equal
ignoring case, or a file where another entry needs a folder). Inspection reads
modelDescription.xml and looks for binaries by these paths, and :func:`write_entries` writes each
entry to exactly its path, so what is inspected is what runs.
"""

import lzma
import os
import re
import stat
import struct
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

MODEL_DESCRIPTION_NAME = "modelDescription.xml"

_WINDOWS_DRIVE_PATTERN = re.compile(r"^[A-Za-z]:")

_READABLE_COMPRESSION_METHODS = {
    zipfile.ZIP_STORED,
    zipfile.ZIP_DEFLATED,
    zipfile.ZIP_BZIP2,
    zipfile.ZIP_LZMA,
}

# ZIP end-of-central-directory records (PKWARE APPNOTE 4.3.14-4.3.16).
_EOCD_SIGNATURE = b"PK\x05\x06"
_EOCD_SIZE = 22
_EOCD_MAX_COMMENT = 0xFFFF
_ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"
_ZIP64_LOCATOR_SIZE = 20
_ZIP64_EOCD_SIGNATURE = b"PK\x06\x06"
_ZIP64_EOCD_SIZE = 56
_LOCAL_HEADER_SIGNATURE = b"PK\x03\x04"

# Generous room per entry in the central directory (46 fixed bytes + name + extra + comment).
# Bounding the directory's size bounds how many entries zipfile will build objects for, even
# when the declared entry count lies.
_CENTRAL_DIRECTORY_BYTES_PER_ENTRY = 1024

# NAME_MAX of Linux file systems: a longer component cannot be extracted at all.
_MAX_NAME_COMPONENT_BYTES = 255
# Far longer than any exporter writes, and short enough that the extraction folder plus the
# entry's path stay under Linux's PATH_MAX (4096), so an accepted FMU can always be extracted.
_MAX_ENTRY_PATH_BYTES = 1024

# Extracted FMUs are read by the runs' uids; nothing in them is executable, setuid or writable
# by others, whatever the archive's mode bits say.
_DIRECTORY_MODE = 0o755
_FILE_MODE = 0o644
_COPY_CHUNK_BYTES = 1024**2

# What reading an entry's data raises when the data is damaged or does not match its headers
# (OSError: bz2's "Invalid data stream"). Writing is outside these handlers, so a full disk
# is never reported as a bad upload.
_ENTRY_READ_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    NotImplementedError,
    RuntimeError,
    OSError,
)


class InvalidFMU(Exception):
    """An upload that is not a usable FMU; the API turns it into a problem+json response.

    code: short machine code; message: one sentence saying exactly what is wrong;
    status: 400, or 413 when the FMU is too large.
    """

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    def __repr__(self) -> str:
        return f"InvalidFMU(code={self.code!r}, message={self.message!r}, status={self.status})"


@dataclass(frozen=True)
class FMULimits:
    """Caps that keep inspection (and later extraction) cheap whatever the archive claims."""

    max_entries: int = 10_000
    max_uncompressed_bytes: int = 2 * 1024**3
    max_compression_ratio: float = 200.0
    max_model_description_bytes: int = 20 * 1024**2
    # Entries that expand to less than this cannot hurt, and small files of padding or
    # repeated text legitimately compress better than max_compression_ratio.
    min_bytes_for_ratio_check: int = 1024**2


@dataclass(frozen=True)
class ArchiveEntry:
    """An entry that passed every check, and the relative path it is read and written under.

    ``path`` has no trailing "/", also for a directory entry; it is the entry's name.
    """

    info: zipfile.ZipInfo
    path: str

    @property
    def is_dir(self) -> bool:
        return self.info.is_dir()


@contextmanager
def checked_archive(
    path: Path, limits: FMULimits
) -> Iterator[tuple[zipfile.ZipFile, list[ArchiveEntry]]]:
    """The open archive at ``path`` and its checked entries, or InvalidFMU saying what is wrong.

    Inspection and extraction both start here, so both see the same entries under the same
    paths, and extraction checks the very file object it then reads from.
    """
    with Path(path).open("rb") as upload:
        _check_central_directory(upload, limits)
        try:
            archive = zipfile.ZipFile(upload)
        except (zipfile.BadZipFile, ValueError, EOFError, struct.error) as exc:
            # ValueError covers UnicodeDecodeError from a non-UTF-8 name flagged as UTF-8.
            raise InvalidFMU(
                "corrupt_zip",
                f"The upload is a damaged ZIP archive ({exc}); re-create the FMU and upload it "
                "again.",
            ) from exc
        with archive:
            yield archive, _checked_entries(archive.infolist(), limits)


def normalized_entry_path(name: str) -> str:
    """The relative path entry ``name`` is extracted to, or InvalidFMU("unsafe_path").

    ``name`` is the name as stored (``ZipInfo.orig_filename``; zipfile's ``filename`` is already
    cut at a NUL byte). Accepted are only names no unzip tool repairs: relative, "/"-separated,
    no "", "." or ".." component, no drive, backslash or control character, components of at
    most 255 bytes. Refusing rather than repairing means the path is the name itself (less a
    directory's trailing "/"), so there is one answer to "which file is this", whoever asks.
    """
    problem = _name_problem(name)
    if problem:
        raise InvalidFMU(
            "unsafe_path",
            f"The archive entry {name!r} {problem}; re-create the FMU with plain relative paths "
            "and no links.",
        )
    return _landing_path(name)


def read_model_description_bytes(
    archive: zipfile.ZipFile, entries: list[ArchiveEntry], limits: FMULimits
) -> bytes:
    """The bytes of the entry at path modelDescription.xml, never more than its checked size."""
    entry = next(
        (entry for entry in entries if entry.path == MODEL_DESCRIPTION_NAME and not entry.is_dir),
        None,
    )
    if entry is None:
        nested = [
            other.path
            for other in entries
            if other.path.endswith("/" + MODEL_DESCRIPTION_NAME) and other.path.count("/") == 1
        ]
        hint = (
            f" (found {nested[0]}: zip the FMU's contents, not the folder holding them)"
            if nested
            else ""
        )
        raise InvalidFMU(
            "missing_model_description",
            f"The FMU has no modelDescription.xml at the top of the archive{hint}; every FMU "
            "must have one.",
        )
    if entry.info.file_size > limits.max_model_description_bytes:
        raise model_description_too_large(limits)
    return b"".join(_entry_chunks(archive, entry))


def model_description_too_large(limits: FMULimits) -> InvalidFMU:
    cap = _human_bytes(limits.max_model_description_bytes)
    return InvalidFMU(
        "model_description_too_large",
        f"modelDescription.xml is larger than the {cap} FMU Gateway reads.",
        status=413,
    )


def write_entries(archive: zipfile.ZipFile, entries: list[ArchiveEntry], target_dir: Path) -> None:
    """Write ``entries`` (from :func:`checked_archive`) under ``target_dir``, and nothing else.

    Each entry goes to ``target_dir / entry.path``; folders are made here (0o755) rather than by
    zipfile, whose repairs of names are what the name rule exists to avoid. Files are created with
    O_EXCL | O_NOFOLLOW and folders with mkdir, which never follow a link, so whatever is already
    in ``target_dir`` (it should be empty) is never written through: it is a FileExistsError.
    A directory entry's data, if any, is not written. No file gets more than its checked size.
    """
    target_dir = Path(target_dir)
    if not target_dir.is_dir():
        _make_directory(target_dir)
    made: set[str] = set()
    for entry in entries:
        parts = entry.path.split("/")
        for depth in range(1, len(parts) + 1 if entry.is_dir else len(parts)):
            folder = "/".join(parts[:depth])
            if folder not in made:
                _make_directory(target_dir / folder)
                made.add(folder)
        if entry.is_dir:
            continue
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with os.fdopen(os.open(target_dir / entry.path, flags, _FILE_MODE), "wb") as sink:
            os.fchmod(sink.fileno(), _FILE_MODE)  # the umask may have cut bits off
            for chunk in _entry_chunks(archive, entry):
                sink.write(chunk)


# --- the central directory ---------------------------------------------------------------------


def _check_central_directory(upload: IO[bytes], limits: FMULimits) -> None:
    """Refuse non-ZIPs, and archives whose directory is too big, before zipfile reads it all."""
    upload.seek(0, 2)
    file_size = upload.tell()
    tail_size = min(file_size, _EOCD_SIZE + _EOCD_MAX_COMMENT)
    upload.seek(file_size - tail_size)
    tail = upload.read(tail_size)
    eocd_position = tail.rfind(_EOCD_SIGNATURE)
    if eocd_position < 0 or eocd_position + _EOCD_SIZE > len(tail):
        upload.seek(0)
        if upload.read(4) == _LOCAL_HEADER_SIGNATURE:
            raise InvalidFMU(
                "corrupt_zip",
                "The upload starts like a ZIP archive but has no central directory at its end, "
                "so it was truncated or damaged; upload the complete .fmu file again.",
            )
        raise InvalidFMU(
            "not_a_zip",
            "The upload is not a ZIP archive; an .fmu file is a ZIP archive containing "
            "modelDescription.xml and binaries/, so upload the .fmu file your tool exported.",
        )
    entry_count, directory_size = struct.unpack_from("<HI", tail, eocd_position + 10)
    if entry_count == 0xFFFF or directory_size == 0xFFFFFFFF:
        entry_count, directory_size = _read_zip64_directory_sizes(
            upload, file_size - tail_size + eocd_position
        )
    if entry_count > limits.max_entries:
        raise _too_many_entries(entry_count, limits)
    if directory_size > limits.max_entries * _CENTRAL_DIRECTORY_BYTES_PER_ENTRY:
        raise InvalidFMU(
            "too_many_entries",
            f"The ZIP central directory is {directory_size} bytes, more than an FMU with at most "
            f"{limits.max_entries} entries can need; remove files the model does not need.",
        )


def _read_zip64_directory_sizes(upload: IO[bytes], eocd_offset: int) -> tuple[int, int]:
    """Entry count and directory size from the ZIP64 record, read where zipfile reads it.

    zipfile expects the ZIP64 record right before its locator, itself right before the
    end-of-central-directory record, so that is the record whose numbers it will act on.
    """
    locator_offset = eocd_offset - _ZIP64_LOCATOR_SIZE
    record_offset = locator_offset - _ZIP64_EOCD_SIZE
    if record_offset >= 0:
        upload.seek(record_offset)
        record = upload.read(_ZIP64_EOCD_SIZE + _ZIP64_LOCATOR_SIZE)
        locator = record[_ZIP64_EOCD_SIZE:]
        if record[:4] == _ZIP64_EOCD_SIGNATURE and locator[:4] == _ZIP64_LOCATOR_SIGNATURE:
            entry_count, directory_size = struct.unpack_from("<QQ", record, 32)
            return entry_count, directory_size
    raise InvalidFMU(
        "corrupt_zip",
        "The upload is a damaged ZIP archive (its ZIP64 end record is missing); re-create the FMU "
        "and upload it again.",
    )


def _too_many_entries(entry_count: int, limits: FMULimits) -> InvalidFMU:
    return InvalidFMU(
        "too_many_entries",
        f"The FMU has {entry_count} files; FMU Gateway accepts at most {limits.max_entries}, "
        "so remove files the model does not need.",
    )


# --- entries -----------------------------------------------------------------------------------


def _checked_entries(entries: list[zipfile.ZipInfo], limits: FMULimits) -> list[ArchiveEntry]:
    """Refuse entries that could escape the extraction folder, fool us, or expand too far."""
    if len(entries) > limits.max_entries:
        raise _too_many_entries(len(entries), limits)
    _refuse_collisions(entries)
    checked: list[ArchiveEntry] = []
    total_uncompressed = 0
    total_compressed = 0
    for entry in entries:
        path = normalized_entry_path(entry.orig_filename)
        if stat.S_ISLNK(entry.external_attr >> 16):
            raise InvalidFMU(
                "unsafe_path",
                f"The archive entry {entry.filename!r} is a symbolic link, which could point "
                "outside the FMU's folder; re-create the FMU with plain relative paths and no "
                "links.",
            )
        if entry.flag_bits & 0x1:
            raise InvalidFMU(
                "encrypted_entry",
                f"The archive entry {entry.filename!r} is encrypted; upload an FMU without a "
                "password.",
            )
        if entry.compress_type not in _READABLE_COMPRESSION_METHODS:
            raise InvalidFMU(
                "unsupported_compression",
                f"The archive entry {entry.filename!r} uses ZIP compression method "
                f"{entry.compress_type}; re-create the FMU with standard (deflate) compression.",
            )
        if _ratio_too_high(entry.file_size, entry.compress_size, limits):
            raise InvalidFMU(
                "zip_bomb",
                f"The archive entry {entry.filename!r} expands from {entry.compress_size} to "
                f"{entry.file_size} bytes, more than {limits.max_compression_ratio:g} times, "
                "which is how zip bombs look; FMU Gateway refuses it.",
            )
        total_uncompressed += entry.file_size
        total_compressed += entry.compress_size
        checked.append(ArchiveEntry(entry, path))
    if total_uncompressed > limits.max_uncompressed_bytes:
        raise InvalidFMU(
            "fmu_too_large_uncompressed",
            f"The FMU would unpack to {_human_bytes(total_uncompressed)}, more than the "
            f"{_human_bytes(limits.max_uncompressed_bytes)} FMU Gateway accepts.",
            status=413,
        )
    if entries and _ratio_too_high(total_uncompressed, total_compressed, limits):
        largest = max(entries, key=lambda entry: entry.file_size)
        raise InvalidFMU(
            "zip_bomb",
            f"The archive expands from {total_compressed} to {total_uncompressed} bytes, more "
            f"than {limits.max_compression_ratio:g} times (largest entry {largest.filename!r}), "
            "which is how zip bombs look; FMU Gateway refuses it.",
        )
    return checked


def _name_problem(name: str) -> str | None:
    """Why ``name`` breaks the name rule (see normalized_entry_path), or None."""
    if not name:
        return "has an empty name"
    if any(unicodedata.category(character) == "Cc" for character in name):
        return "contains a NUL or control character, which unzip tools cut or change"
    slashed = name.replace("\\", "/")
    parts = slashed.removesuffix("/").split("/")
    if slashed.startswith("/"):
        return "has an absolute path, which could write outside the FMU's folder"
    if _WINDOWS_DRIVE_PATTERN.match(slashed):
        return "has a Windows drive path, which could write outside the FMU's folder"
    if ".." in parts:
        return "has a '..' path component, which could write outside the FMU's folder"
    if "\\" in name:
        return "contains a backslash, which Windows unzip tools read as a folder separator"
    if "" in parts or "." in parts:
        return "has an empty or '.' path component, which unzip tools drop"
    if any(len(part.encode()) > _MAX_NAME_COMPONENT_BYTES for part in parts):
        return f"has a path component longer than {_MAX_NAME_COMPONENT_BYTES} bytes"
    if len(name.encode()) > _MAX_ENTRY_PATH_BYTES:
        return f"is longer than {_MAX_ENTRY_PATH_BYTES} bytes"
    return None


def _landing_path(name: str) -> str:
    """Where an unzip tool that repairs names would write entry ``name`` (relative, no "/" at
    the end): cut at NUL, "\\" read as "/", a drive and "", "." and ".." components dropped,
    as zipfile.extract does on Linux or Windows.

    For a name the rule accepts this is the name itself; for others it is where that name would
    really land, so that _refuse_collisions can name both entries of a collision even when one
    of them would also be refused for its spelling.
    """
    slashed = name.split("\x00", 1)[0].replace("\\", "/")
    slashed = _WINDOWS_DRIVE_PATTERN.sub("", slashed, count=1)
    return "/".join(part for part in slashed.split("/") if part not in {"", ".", ".."})


def _folded(path: str) -> str:
    """``path`` as a case-insensitive file system compares it (NFC as macOS composes, casefold)."""
    return unicodedata.normalize("NFC", path).casefold()


def _refuse_collisions(entries: list[zipfile.ZipInfo]) -> None:
    """Refuse two entries an unzip tool or file system could write to the same place.

    That is: equal landing paths (exact duplicates, "./a" and "a", "a//b" and "a/b", "a" and
    "a" + NUL + "x"), paths equal ignoring case ("Binaries/m.so" and "binaries/m.so"), a folder
    spelled two ways ("Resources/x" and "resources/y": one folder on a case-insensitive file
    system), or a file where another entry needs a folder ("a" and "a/b"). Checked over the whole
    archive before any single name is judged, so the message names both entries, in any order.
    """
    by_path: dict[str, zipfile.ZipInfo] = {}
    folders: dict[str, tuple[str, zipfile.ZipInfo]] = {}
    for entry in entries:
        path = _landing_path(entry.orig_filename)
        if not path:
            continue  # lands on the extraction folder itself; the name rule refuses it
        key = _folded(path)
        if key in by_path:
            raise _collision(by_path[key], entry)
        by_path[key] = entry
        parts = path.split("/")
        for depth in range(1, len(parts) + 1 if entry.is_dir() else len(parts)):
            folder = "/".join(parts[:depth])
            first_spelling, first_entry = folders.setdefault(_folded(folder), (folder, entry))
            if first_spelling != folder:
                raise InvalidFMU(
                    "duplicate_entry",
                    f"The archive entries {first_entry.orig_filename!r} and "
                    f"{entry.orig_filename!r} spell the folder {first_spelling!r} two ways "
                    f"({folder!r}), which a case-insensitive file system merges into one; "
                    "re-create the FMU.",
                )
    for key, (folder, entry) in folders.items():
        file_entry = by_path.get(key)
        if file_entry is not None and not file_entry.is_dir():
            file_path = _landing_path(file_entry.orig_filename)
            case = "" if file_path == folder else f" ({folder!r}, in other letter case)"
            raise InvalidFMU(
                "duplicate_entry",
                f"The archive entry {file_entry.orig_filename!r} is a file, but "
                f"{entry.orig_filename!r} needs a folder at that path{case}; re-create the FMU.",
            )


def _collision(first: zipfile.ZipInfo, second: zipfile.ZipInfo) -> InvalidFMU:
    first_name, second_name = first.orig_filename, second.orig_filename
    path = _landing_path(first_name)
    if first_name == second_name:
        problem = f"holds {first_name!r} twice, and unzip tools keep only one of the copies"
    elif path == _landing_path(second_name):
        problem = f"entries {first_name!r} and {second_name!r} are both extracted to {path!r}"
    else:
        problem = (
            f"entries {first_name!r} and {second_name!r} differ only in letter case, which a "
            "case-insensitive file system stores as one file"
        )
    return InvalidFMU(
        "duplicate_entry",
        f"The archive {problem}, so what FMU Gateway checks may not be what runs; re-create "
        "the FMU.",
    )


def _ratio_too_high(uncompressed: int, compressed: int, limits: FMULimits) -> bool:
    if uncompressed < limits.min_bytes_for_ratio_check:
        return False
    return uncompressed > limits.max_compression_ratio * max(compressed, 1)


# --- entry data --------------------------------------------------------------------------------


def _entry_chunks(archive: zipfile.ZipFile, entry: ArchiveEntry) -> Iterator[bytes]:
    """The entry's data in chunks: exactly its checked size, or InvalidFMU("corrupt_zip").

    zipfile already stops at the size in the central directory and checks the CRC at the end
    (and that the local header names the same file), so an entry whose data is longer than
    declared fails instead of filling a disk; counting here as well keeps that promise
    independent of zipfile's internals.
    """
    remaining = entry.info.file_size
    try:
        source = archive.open(entry.info)
    except _ENTRY_READ_ERRORS as exc:
        raise _unreadable(entry, exc) from exc
    with source:
        while True:
            try:
                chunk = source.read(min(_COPY_CHUNK_BYTES, remaining + 1))
            except _ENTRY_READ_ERRORS as exc:
                raise _unreadable(entry, exc) from exc
            if not chunk:
                break
            if len(chunk) > remaining:
                raise _unreadable(entry, "longer than its declared size")
            remaining -= len(chunk)
            yield chunk
    if remaining:
        raise _unreadable(entry, f"{remaining} bytes shorter than its declared size")


def _unreadable(entry: ArchiveEntry, reason: object) -> InvalidFMU:
    return InvalidFMU(
        "corrupt_zip",
        f"The archive entry {entry.info.filename!r} cannot be read ({reason}); re-create the FMU.",
    )


def _make_directory(path: Path) -> None:
    os.mkdir(path, _DIRECTORY_MODE)
    # mkdir's mode is cut by the umask; open without following links to set it exactly.
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchmod(descriptor, _DIRECTORY_MODE)
    finally:
        os.close(descriptor)


def _human_bytes(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    scaled = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        scaled /= 1024
        if scaled < 1024 or unit == "GiB":
            break
    return f"{scaled:.1f} {unit}"
