"""Checks an uploaded FMU without unpacking or running it, and summarises its modelDescription.

An FMU is an untrusted ZIP archive of native code. This module reads only the ZIP central
directory and, from the archive, only modelDescription.xml (and at most
``max_model_description_bytes + 1`` bytes of it, whatever the directory declares). It refuses
zip bombs, zip-slip paths and symlinks, and FMUs that have no binary this server can run.

Why defusedxml and not ``fmpy.read_model_description``: fmpy parses with lxml's default parser,
which expands internal entities (a "billion laughs" file is expanded before we could refuse it)
and reports problems as bare ``Exception``s. Parsing with ``defusedxml.ElementTree`` and
``forbid_dtd=True`` refuses any DOCTYPE as soon as the parser meets it, so no entity, internal or
external, is ever declared, let alone expanded; and we decide each error's code and wording. Once
an FMU has passed this module, fmpy may read the same XML safely in the sandbox.

Extraction elsewhere must go through :mod:`zipfile` too: it stops each entry at the size this
module checked, so an entry that lies about its size fails its CRC check instead of filling a disk.
"""

import math
import re
import stat
import struct
import zipfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import defusedxml.ElementTree as DefusedElementTree
from defusedxml import DefusedXmlException

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

MODEL_DESCRIPTION_NAME = "modelDescription.xml"

# Interfaces FMU Gateway can simulate (through fmpy), in the order they are listed.
FMI_TYPES = ("CoSimulation", "ModelExchange")

# FMI 1/2 platform name -> (the FMI 3 platform tuple for the same machine, shared library suffix).
PLATFORM_BINARIES = {
    "linux64": ("x86_64-linux", ".so"),
    "linux32": ("x86-linux", ".so"),
    "win64": ("x86_64-windows", ".dll"),
    "win32": ("x86-windows", ".dll"),
    "darwin64": ("x86_64-darwin", ".dylib"),
}

SOURCE_CODE_PLATFORM = "c-code"

# Every causality a variable can have, FMI 1.0 ("internal") to 3.0 ("structuralParameter").
CAUSALITIES = (
    "parameter",
    "calculatedParameter",
    "structuralParameter",
    "input",
    "output",
    "local",
    "independent",
    "internal",
)

# fmiVersion values per release; maintenance releases (2.0.x, 3.0.x) keep the major.minor value
# but some tools write the full number. Betas and release candidates ("3.0-beta.2") are refused.
_FMI_VERSION_PATTERN = re.compile(r"^(?P<major_minor>[123]\.0)(?:\.\d+)?$")

# The standards require modelIdentifier to be a C identifier; it becomes a file name we look up.
_MODEL_IDENTIFIER_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

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

_FMI12_TYPE_ELEMENTS = ("Real", "Integer", "Boolean", "String", "Enumeration")
_FMI3_TYPE_ELEMENTS = (
    "Float32",
    "Float64",
    "Int8",
    "UInt8",
    "Int16",
    "UInt16",
    "Int32",
    "UInt32",
    "Int64",
    "UInt64",
    "Boolean",
    "String",
    "Binary",
    "Enumeration",
    "Clock",
)
_FMI3_FLOAT_TYPES = {"Float32", "Float64"}
_FMI3_PARAMETER_CAUSALITIES = {"parameter", "structuralParameter", "calculatedParameter"}

# How many fallback variables fmpy records when a model has no outputs.
_FMPY_FALLBACK_OUTPUT_COUNT = 5


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
class VariableInfo:
    """One model variable as the API lists it; FMI 3 aliases appear as variables of their own."""

    name: str
    causality: str
    variability: str
    type: str
    start: str | None
    unit: str | None
    description: str | None
    value_reference: int


@dataclass(frozen=True)
class FMUSummary:
    """What the API stores and shows about an FMU that passed inspection."""

    model_name: str
    fmi_version: str
    guid: str
    generation_tool: str | None
    description: str | None
    fmi_types: list[str]
    platforms: list[str]
    default_experiment: dict
    variables: list[VariableInfo]
    model_identifiers: dict[str, str]
    # The declared fmi_types whose binary for the inspected platform is in the archive.
    runnable_fmi_types: list[str]
    # Continuous states (FMI 2/3 ModelStructure), which fmpy records when a model has no outputs.
    continuous_state_names: list[str]

    def to_json(self) -> dict:
        """A JSON-serialisable dict, variables as a list of dicts."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "FMUSummary":
        """The summary back from what to_json() stored."""
        fields = dict(data)
        fields["variables"] = [VariableInfo(**variable) for variable in data["variables"]]
        return cls(**fields)


def inspect_fmu(
    path: Path, *, limits: FMULimits = FMULimits(), platform: str = "linux64"
) -> FMUSummary:
    """Check the FMU at ``path`` and summarise it, or raise InvalidFMU saying what is wrong.

    ``platform`` is the FMI 1/2 name of the machine that will run it; FMI 3 FMUs are looked up
    under the matching FMI 3 platform tuple.
    """
    if platform not in PLATFORM_BINARIES:
        raise ValueError(
            f"unknown platform {platform!r}; expected one of {list(PLATFORM_BINARIES)}"
        )
    path = Path(path)
    with path.open("rb") as upload:
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
            entries = archive.infolist()
            _check_entries(entries, limits)
            model_description_xml = _read_model_description(archive, limits)
    root = _parse_model_description(model_description_xml)
    file_names = {entry.filename for entry in entries if not entry.is_dir()}
    return _summarise(root, file_names, platform)


def settable_variable_names(summary: FMUSummary, *, fmi_type: str) -> set[str]:
    """Names a run may give start values to, so the API can refuse others before paying.

    The rule mirrors when fmpy sets start values (before initialisation):
    - FMI 2/3: causality parameter or input (FMI 3 also structuralParameter), or causality local or
      output with a start value and variability other than constant (initial exact/approx:
      e.g. states). Calculated parameters and the independent variable are never settable.
    - FMI 1: causality input, or any non-constant variable with a start value (parameters are
      variability="parameter" there).
    The rule is the same for both interfaces; ``fmi_type`` must be one the FMU declares.
    """
    if fmi_type not in summary.fmi_types:
        raise ValueError(f"{fmi_type!r} is not declared by this FMU ({summary.fmi_types})")
    if summary.fmi_version == "1.0":
        return {
            variable.name
            for variable in summary.variables
            if variable.causality == "input"
            or (variable.start is not None and variable.variability != "constant")
        }
    parameter_causalities = {"parameter", "input"}
    if summary.fmi_version == "3.0":
        parameter_causalities.add("structuralParameter")
    return {
        variable.name
        for variable in summary.variables
        if variable.causality in parameter_causalities
        or (
            variable.causality in {"local", "output"}
            and variable.start is not None
            and variable.variability != "constant"
        )
    }


def output_variable_names(summary: FMUSummary) -> list[str]:
    """The variables fmpy records when a run names none, in modelDescription order.

    Outputs (causality "output" in every FMI version); failing that, the first five continuous
    states; failing that, the first five variables.
    """
    outputs = [variable.name for variable in summary.variables if variable.causality == "output"]
    if outputs:
        return outputs
    if summary.continuous_state_names:
        return summary.continuous_state_names[:_FMPY_FALLBACK_OUTPUT_COUNT]
    return [variable.name for variable in summary.variables[:_FMPY_FALLBACK_OUTPUT_COUNT]]


# --- the archive -------------------------------------------------------------------------------


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


def _check_entries(entries: list[zipfile.ZipInfo], limits: FMULimits) -> None:
    """Refuse entries that could escape the extraction folder, fool us, or expand too far."""
    if len(entries) > limits.max_entries:
        raise _too_many_entries(len(entries), limits)
    seen_names: set[str] = set()
    total_uncompressed = 0
    total_compressed = 0
    for entry in entries:
        _check_entry_path(entry)
        if entry.filename in seen_names:
            raise InvalidFMU(
                "duplicate_entry",
                f"The archive holds {entry.filename!r} more than once, so what is checked may not "
                "be what runs; re-create the FMU.",
            )
        seen_names.add(entry.filename)
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


def _check_entry_path(entry: zipfile.ZipInfo) -> None:
    """Refuse names that would land outside the folder the FMU is extracted into, and symlinks."""
    # zipfile cuts names at a NUL byte; the original name tells us one was there.
    raw_name = entry.orig_filename
    name = raw_name.replace("\\", "/")
    reason = None
    if not name or "\x00" in name:
        reason = "has an empty or NUL-containing name"
    elif name.startswith("/"):
        reason = "has an absolute path"
    elif _WINDOWS_DRIVE_PATTERN.match(name):
        reason = "has a Windows drive path"
    elif ".." in name.split("/"):
        reason = "has a '..' path component"
    elif stat.S_ISLNK(entry.external_attr >> 16):
        reason = "is a symbolic link"
    if reason:
        raise InvalidFMU(
            "unsafe_path",
            f"The archive entry {raw_name!r} {reason}, which could write outside the FMU's "
            "folder; re-create the FMU with plain relative paths and no links.",
        )


def _ratio_too_high(uncompressed: int, compressed: int, limits: FMULimits) -> bool:
    if uncompressed < limits.min_bytes_for_ratio_check:
        return False
    return uncompressed > limits.max_compression_ratio * max(compressed, 1)


def _read_model_description(archive: zipfile.ZipFile, limits: FMULimits) -> bytes:
    """The bytes of modelDescription.xml, never more than the cap whatever the directory says."""
    try:
        entry = archive.getinfo(MODEL_DESCRIPTION_NAME)
    except KeyError:
        entry = None
    if entry is None or entry.is_dir():
        nested = [
            name
            for name in archive.namelist()
            if name.endswith("/" + MODEL_DESCRIPTION_NAME) and name.count("/") == 1
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
    cap = _human_bytes(limits.max_model_description_bytes)
    too_large = InvalidFMU(
        "model_description_too_large",
        f"modelDescription.xml is larger than the {cap} FMU Gateway reads.",
        status=413,
    )
    if entry.file_size > limits.max_model_description_bytes:
        raise too_large
    try:
        with archive.open(entry) as model_description_file:
            data = model_description_file.read(limits.max_model_description_bytes + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise InvalidFMU(
            "corrupt_zip",
            f"modelDescription.xml cannot be read from the archive ({exc}); re-create the FMU.",
        ) from exc
    if len(data) > limits.max_model_description_bytes:
        raise too_large
    return data


# --- modelDescription.xml ----------------------------------------------------------------------


def _parse_model_description(data: bytes) -> "Element":
    try:
        root = DefusedElementTree.fromstring(
            data, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except DefusedXmlException as exc:
        raise InvalidFMU(
            "xml_entities_forbidden",
            "modelDescription.xml contains a DOCTYPE, entity or external reference declaration, "
            "which FMU Gateway refuses because it can expand without bound or read other files; "
            "remove the <!DOCTYPE ...> block.",
        ) from exc
    except (DefusedElementTree.ParseError, LookupError) as exc:
        # LookupError: an encoding Python does not know, e.g. encoding="foo".
        raise InvalidFMU(
            "invalid_model_description",
            f"modelDescription.xml is not well-formed XML: {exc}.",
        ) from exc
    if root.tag != "fmiModelDescription":
        raise _invalid(f"its root element is <{root.tag}>, not <fmiModelDescription>")
    return root


def _invalid(problem: str) -> InvalidFMU:
    return InvalidFMU("invalid_model_description", f"modelDescription.xml is invalid: {problem}.")


def _summarise(root: "Element", file_names: set[str], platform: str) -> FMUSummary:
    fmi_version = _fmi_version(root)
    model_name = _required_attribute(root, "modelName", "<fmiModelDescription>")
    guid_attribute = "instantiationToken" if fmi_version == "3.0" else "guid"
    guid = _required_attribute(root, guid_attribute, "<fmiModelDescription>")
    model_identifiers = _model_identifiers(root, fmi_version)
    fmi_types = [fmi_type for fmi_type in FMI_TYPES if fmi_type in model_identifiers]
    variables, derivative_of = _variables(root, fmi_version)
    platforms = _platforms(file_names)
    runnable_fmi_types = [
        fmi_type
        for fmi_type in fmi_types
        if _binary_path(fmi_version, platform, model_identifiers[fmi_type]) in file_names
    ]
    if not runnable_fmi_types:
        raise _no_binary_for_platform(fmi_version, platform, model_identifiers, platforms)
    return FMUSummary(
        model_name=model_name,
        fmi_version=fmi_version,
        guid=guid,
        generation_tool=root.get("generationTool"),
        description=root.get("description"),
        fmi_types=fmi_types,
        platforms=platforms,
        default_experiment=_default_experiment(root),
        variables=variables,
        model_identifiers=model_identifiers,
        runnable_fmi_types=runnable_fmi_types,
        continuous_state_names=_continuous_state_names(root, fmi_version, variables, derivative_of),
    )


def _fmi_version(root: "Element") -> str:
    declared = root.get("fmiVersion")
    if declared is None:
        raise InvalidFMU(
            "unsupported_fmi_version",
            "modelDescription.xml has no fmiVersion attribute; FMU Gateway supports FMI 1.0, 2.0 "
            "and 3.0.",
        )
    match = _FMI_VERSION_PATTERN.match(declared.strip())
    if match is None:
        raise InvalidFMU(
            "unsupported_fmi_version",
            f'modelDescription.xml declares fmiVersion="{declared}"; FMU Gateway supports FMI '
            "1.0, 2.0 and 3.0 (not pre-releases).",
        )
    return match["major_minor"]


def _required_attribute(element: "Element", attribute: str, where: str) -> str:
    value = element.get(attribute)
    if value is None or not value.strip():
        raise _invalid(f"{where} has no {attribute} attribute")
    return value


def _model_identifiers(root: "Element", fmi_version: str) -> dict[str, str]:
    """Declared interface -> modelIdentifier, for the interfaces FMU Gateway can run."""
    if fmi_version == "1.0":
        # FMI 1.0 has one interface per FMU: Co-Simulation ones carry an <Implementation>.
        fmi_type = "CoSimulation" if root.find("Implementation") is not None else "ModelExchange"
        identifiers = {
            fmi_type: _required_attribute(root, "modelIdentifier", "<fmiModelDescription>")
        }
    else:
        identifiers = {}
        for fmi_type in FMI_TYPES:
            interface = root.find(fmi_type)
            if interface is not None:
                identifiers[fmi_type] = _required_attribute(
                    interface, "modelIdentifier", f"<{fmi_type}>"
                )
    if not identifiers:
        raise InvalidFMU(
            "unsupported_fmi_type",
            "modelDescription.xml declares neither CoSimulation nor ModelExchange; FMU Gateway "
            "runs only those interfaces.",
        )
    for identifier in identifiers.values():
        if not _MODEL_IDENTIFIER_PATTERN.match(identifier):
            raise _invalid(f'modelIdentifier="{identifier}" is not a valid C identifier')
    return identifiers


def _default_experiment(root: "Element") -> dict:
    experiment = root.find("DefaultExperiment")
    attributes = {
        "start_time": "startTime",
        "stop_time": "stopTime",
        "step_size": "stepSize",
        "tolerance": "tolerance",
    }
    summary: dict[str, float | None] = dict.fromkeys(attributes)
    if experiment is None:
        return summary
    for key, attribute in attributes.items():
        raw_value = experiment.get(attribute)
        if raw_value is None:
            continue
        try:
            value = float(raw_value)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise _invalid(f'<DefaultExperiment {attribute}="{raw_value}"> is not a finite number')
        summary[key] = value
    return summary


def _declared_type_units(root: "Element") -> dict[str, str]:
    """Type name -> unit from TypeDefinitions, so variables of a declared type get its unit.

    FMI 1: <Type name><RealType unit/>; FMI 2: <SimpleType name><Real unit/>;
    FMI 3: <Float64Type name unit/>.
    """
    units: dict[str, str] = {}
    type_definitions = root.find("TypeDefinitions")
    if type_definitions is None:
        return units
    for type_definition in type_definitions:
        name = type_definition.get("name")
        unit = type_definition.get("unit") or next(
            (child.get("unit") for child in type_definition if child.get("unit")), None
        )
        if name and unit:
            units[name] = unit
    return units


def _variables(root: "Element", fmi_version: str) -> tuple[list[VariableInfo], list[str | None]]:
    """The model variables in modelDescription order, and each one's `derivative` attribute.

    FMI 3 aliases follow all variables, as fmpy lists them; they have no derivative entry.
    """
    model_variables = root.find("ModelVariables")
    if model_variables is None:
        return [], []
    units_by_declared_type = _declared_type_units(root)
    variables: list[VariableInfo] = []
    derivative_of: list[str | None] = []
    aliases: list[VariableInfo] = []
    if fmi_version == "3.0":
        elements = [element for element in model_variables if element.tag in _FMI3_TYPE_ELEMENTS]
    else:
        elements = model_variables.findall("ScalarVariable")
    for position, element in enumerate(elements, start=1):
        name = element.get("name")
        if not name:
            raise _invalid(f"model variable number {position} has no name")
        where = f'variable "{name}"'
        raw_value_reference = element.get("valueReference")
        try:
            value_reference = int(raw_value_reference or "")
        except ValueError:
            raise _invalid(
                f'{where} has valueReference="{raw_value_reference}", not an integer'
            ) from None
        if fmi_version == "3.0":
            type_element = element
            variable_type = element.tag
            causality = element.get("causality", "local")
            variability = element.get("variability") or _fmi3_default_variability(
                variable_type, causality
            )
            start = _fmi3_start(element)
        else:
            type_element = next(
                (child for child in element if child.tag in _FMI12_TYPE_ELEMENTS), None
            )
            if type_element is None:
                raise _invalid(f"{where} has no Real, Integer, Boolean, String or Enumeration")
            variable_type = type_element.tag
            causality = element.get("causality", "internal" if fmi_version == "1.0" else "local")
            variability = element.get("variability", "continuous")
            start = type_element.get("start")
        declared_type = type_element.get("declaredType")
        unit = type_element.get("unit") or units_by_declared_type.get(declared_type or "")
        variable = VariableInfo(
            name=name,
            causality=causality,
            variability=variability,
            type=variable_type,
            start=start,
            unit=unit,
            description=element.get("description"),
            value_reference=value_reference,
        )
        variables.append(variable)
        derivative_of.append(type_element.get("derivative"))
        for alias in element.findall("Alias") if fmi_version == "3.0" else []:
            alias_name = alias.get("name")
            if not alias_name:
                raise _invalid(f"an alias of {where} has no name")
            aliases.append(
                VariableInfo(
                    name=alias_name,
                    causality=causality,
                    variability=variability,
                    type=variable_type,
                    start=start,
                    unit=unit,
                    description=alias.get("description") or variable.description,
                    value_reference=value_reference,
                )
            )
    return variables + aliases, derivative_of


def _fmi3_default_variability(variable_type: str, causality: str) -> str:
    """FMI 3.0 defaults: fixed for parameters, continuous for floats, discrete otherwise."""
    if causality in _FMI3_PARAMETER_CAUSALITIES:
        return "fixed"
    return "continuous" if variable_type in _FMI3_FLOAT_TYPES else "discrete"


def _fmi3_start(element: "Element") -> str | None:
    """FMI 3 start value as written; String/Binary starts are <Start value> children (first one)."""
    if element.tag in {"String", "Binary"}:
        start_element = element.find("Start")
        return start_element.get("value") if start_element is not None else None
    return element.get("start")


def _continuous_state_names(
    root: "Element",
    fmi_version: str,
    variables: list[VariableInfo],
    derivative_of: list[str | None],
) -> list[str]:
    """States named by ModelStructure's derivatives; bad references are skipped, not fatal.

    FMI 2: Derivatives/Unknown@index (1-based) -> a Real whose `derivative` is the state's index.
    FMI 3: ContinuousStateDerivative@valueReference -> a variable whose `derivative` is the
    state's valueReference. FMI 1 has no model structure.
    """
    model_structure = root.find("ModelStructure")
    if model_structure is None or fmi_version == "1.0":
        return []
    primary_variables = variables[: len(derivative_of)]
    state_names: list[str] = []
    if fmi_version == "2.0":
        for unknown in model_structure.findall("Derivatives/Unknown"):
            derivative_index = _positive_int(unknown.get("index"))
            if derivative_index is None or derivative_index > len(primary_variables):
                continue
            state_index = _positive_int(derivative_of[derivative_index - 1])
            if state_index is not None and state_index <= len(primary_variables):
                state_names.append(primary_variables[state_index - 1].name)
        return state_names
    position_by_value_reference: dict[int, int] = {}
    for position, variable in enumerate(primary_variables):
        position_by_value_reference.setdefault(variable.value_reference, position)
    for derivative in model_structure.findall("ContinuousStateDerivative"):
        derivative_position = position_by_value_reference.get(
            _non_negative_int(derivative.get("valueReference")) or -1
        )
        if derivative_position is None:
            continue
        state_reference = _non_negative_int(derivative_of[derivative_position])
        state_position = position_by_value_reference.get(
            state_reference if state_reference is not None else -1
        )
        if state_position is not None:
            state_names.append(primary_variables[state_position].name)
    return state_names


def _non_negative_int(raw_value: str | None) -> int | None:
    try:
        value = int(raw_value or "")
    except ValueError:
        return None
    return value if value >= 0 else None


def _positive_int(raw_value: str | None) -> int | None:
    value = _non_negative_int(raw_value)
    return value if value else None


# --- binaries ----------------------------------------------------------------------------------


def _platforms(file_names: set[str]) -> list[str]:
    """Platform folders under binaries/ that hold files, plus "c-code" when sources/ has files."""
    platforms = {
        parts[1]
        for parts in (name.split("/") for name in file_names)
        if len(parts) >= 3 and parts[0] == "binaries" and parts[1]
    }
    ordered = sorted(platforms)
    if any(name.startswith("sources/") for name in file_names):
        ordered.append(SOURCE_CODE_PLATFORM)
    return ordered


def _platform_folder(fmi_version: str, platform: str) -> str:
    return PLATFORM_BINARIES[platform][0] if fmi_version == "3.0" else platform


def _binary_path(fmi_version: str, platform: str, model_identifier: str) -> str:
    suffix = PLATFORM_BINARIES[platform][1]
    return f"binaries/{_platform_folder(fmi_version, platform)}/{model_identifier}{suffix}"


def _no_binary_for_platform(
    fmi_version: str, platform: str, model_identifiers: dict[str, str], platforms: list[str]
) -> InvalidFMU:
    folder = _platform_folder(fmi_version, platform)
    wanted = f"{platform} ({PLATFORM_BINARIES[platform][0]} for FMI 3)"
    binary_platforms = [name for name in platforms if name != SOURCE_CODE_PLATFORM]
    has_sources = SOURCE_CODE_PLATFORM in platforms
    if folder in binary_platforms:
        expected = " or ".join(
            sorted({_binary_path(fmi_version, platform, i) for i in model_identifiers.values()})
        )
        message = (
            f"This FMU has a binaries/{folder}/ folder but not {expected}, the library named "
            "after its modelIdentifier; re-export the FMU so the names match."
        )
    elif binary_platforms:
        message = (
            f"This FMU has binaries for {', '.join(binary_platforms)} only; FMU Gateway runs "
            f"{wanted} binaries."
        )
        if has_sources:
            message += " Its C sources are not compiled here; upload an FMU compiled for that."
    elif has_sources:
        message = f"This FMU contains only C sources; upload an FMU compiled for {wanted}."
    else:
        message = f"This FMU contains no binaries; upload an FMU compiled for {wanted}."
    return InvalidFMU("no_binary_for_platform", message)


def _human_bytes(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    scaled = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        scaled /= 1024
        if scaled < 1024 or unit == "GiB":
            break
    return f"{scaled:.1f} {unit}"
