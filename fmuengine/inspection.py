"""Checks an FMU without running it: at upload, and again whenever the sandbox extracts it.

An FMU is an untrusted ZIP archive of native code. Inspection reads only the ZIP central
directory and, from the archive, only modelDescription.xml, never more than the sizes it checked.
It refuses zip bombs, entry names that are unsafe or that two unzip tools could read as different
files, symlinks, DTDs and entities, and FMUs that have no binary this server can run. The work is
in :mod:`fmuengine.archive` (the ZIP container and its one name rule) and
:mod:`fmuengine.model_description` (the XML); this module joins them, and is where the rest of
the project imports from.

Extraction goes through :func:`extract_fmu`, never ``zipfile.extract``/``extractall``: those
repair names as they write ("./a" to "a", "a//b" to "a/b", ".." dropped), so two entries
inspection saw as different files could be written to one, the last one winning. extract_fmu
inspects the archive again and writes exactly the inspected entries, each to the path inspection
read it under and at most its inspected size. Likewise fmpy parses modelDescription.xml with
lxml, which expands entities; :func:`read_model_description_safely` gives it the file only after
the upload's defused checks passed on that very file.
"""

import os
import stat
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from fmuengine.archive import (
    MODEL_DESCRIPTION_NAME,
    ArchiveEntry,
    FMULimits,
    InvalidFMU,
    checked_archive,
    model_description_too_large,
    normalized_entry_path,
    read_model_description_bytes,
    write_entries,
)
from fmuengine.model_description import (
    CAUSALITIES,
    FMI_TYPES,
    PLATFORM_BINARIES,
    SOURCE_CODE_PLATFORM,
    FMUSummary,
    VariableInfo,
    output_variable_names,
    parse_model_description,
    settable_variable_names,
    summarise,
)

if TYPE_CHECKING:
    from fmpy.model_description import ModelDescription

__all__ = [
    "CAUSALITIES",
    "FMI_TYPES",
    "MODEL_DESCRIPTION_NAME",
    "PLATFORM_BINARIES",
    "SOURCE_CODE_PLATFORM",
    "FMULimits",
    "FMUSummary",
    "InvalidFMU",
    "VariableInfo",
    "extract_fmu",
    "inspect_fmu",
    "normalized_entry_path",
    "output_variable_names",
    "read_model_description_safely",
    "settable_variable_names",
]

# The machine the sandbox runs models on (FMI 1/2 platform name).
SERVER_PLATFORM = "linux64"
_DEFAULT_LIMITS = FMULimits()


def inspect_fmu(
    path: Path, *, limits: FMULimits = _DEFAULT_LIMITS, platform: str = SERVER_PLATFORM
) -> FMUSummary:
    """Check the FMU at ``path`` and summarise it, or raise InvalidFMU saying what is wrong.

    ``platform`` is the FMI 1/2 name of the machine that will run it; FMI 3 FMUs are looked up
    under the matching FMI 3 platform tuple.
    """
    with _inspected_archive(path, limits, platform) as (summary, _archive, _entries):
        return summary


def extract_fmu(fmu_path: Path, target_dir: Path, *, limits: FMULimits) -> None:
    """Inspect the FMU at ``fmu_path`` again, then write exactly its inspected entries under
    ``target_dir``; InvalidFMU if inspection refuses it or an entry's data is damaged.

    Inspecting again, rather than trusting the verdict given at upload, applies today's rules
    to the very bytes being extracted, read from the same open file. ``target_dir`` is created
    (0o755) if missing and should be empty: anything already at a path the FMU uses, a link
    included, is never followed or overwritten but raises FileExistsError. Folders get 0o755 and
    files 0o644, whatever the archive or the umask says: readable by the runs' uids, nothing
    executable, setuid or writable by others. After an error, what was written stays for the
    caller to remove; no file ever holds more than its inspected size.
    """
    with _inspected_archive(fmu_path, limits, SERVER_PLATFORM) as (_summary, archive, entries):
        write_entries(archive, entries, Path(target_dir))


def read_model_description_safely(unzip_dir: Path, *, limits: FMULimits) -> "ModelDescription":
    """fmpy's ModelDescription of the FMU extracted in ``unzip_dir`` (by :func:`extract_fmu`).

    fmpy parses with lxml, which would expand a "billion laughs" entity or read an external
    one. So the file is first read (capped, not through a link) and parsed with the upload's
    defused rules, which refuse any DOCTYPE; only then is fmpy asked, with validate=True. fmpy
    opens the file again by name: ``unzip_dir`` must be written only by trusted code (the
    sandbox extracts, then parses, before any model code runs), so that is the same file.
    """
    unzip_dir = Path(unzip_dir)
    parse_model_description(_read_extracted_model_description(unzip_dir, limits))
    from fmpy.model_description import read_model_description  # heavy: numpy, lxml

    return read_model_description(str(unzip_dir), validate=True)


@contextmanager
def _inspected_archive(
    path: Path, limits: FMULimits, platform: str
) -> Iterator[tuple[FMUSummary, zipfile.ZipFile, list[ArchiveEntry]]]:
    """The summary, open archive and checked entries of the FMU at ``path``: one code path for
    inspecting an upload and for extracting it, so both apply the same rules."""
    if platform not in PLATFORM_BINARIES:
        raise ValueError(
            f"unknown platform {platform!r}; expected one of {list(PLATFORM_BINARIES)}"
        )
    with checked_archive(Path(path), limits) as (archive, entries):
        root = parse_model_description(read_model_description_bytes(archive, entries, limits))
        file_names = {entry.path for entry in entries if not entry.is_dir}
        yield summarise(root, file_names, platform), archive, entries


def _read_extracted_model_description(unzip_dir: Path, limits: FMULimits) -> bytes:
    """The bytes of ``unzip_dir``/modelDescription.xml, at most the cap, never through a link."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        descriptor = os.open(unzip_dir / MODEL_DESCRIPTION_NAME, flags)
    except FileNotFoundError as exc:
        raise InvalidFMU(
            "missing_model_description",
            f"The extracted FMU in {unzip_dir} has no modelDescription.xml.",
        ) from exc
    with os.fdopen(descriptor, "rb") as stream:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise InvalidFMU(
                "missing_model_description",
                f"modelDescription.xml in {unzip_dir} is not a regular file.",
            )
        data = stream.read(limits.max_model_description_bytes + 1)
    if len(data) > limits.max_model_description_bytes:
        raise model_description_too_large(limits)
    return data
