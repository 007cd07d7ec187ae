"""modelDescription.xml of an FMU that passed the archive checks: parsed safely, summarised.

Why defusedxml and not ``fmpy.read_model_description``: fmpy parses with lxml's default parser,
which expands internal entities (a "billion laughs" file is expanded before we could refuse it)
and reports problems as bare ``Exception``s. Parsing with ``defusedxml.ElementTree`` and
``forbid_dtd=True`` refuses any DOCTYPE as soon as the parser meets it, so no entity, internal or
external, is ever declared, let alone expanded; and we decide each error's code and wording. Only
XML that passed :func:`parse_model_description` may be given to fmpy (see
``fmuengine.inspection.read_model_description_safely``).

Split from :mod:`fmuengine.inspection`, which re-exports the public names, so that each module
stays readable; nothing here touches the ZIP archive (that is :mod:`fmuengine.archive`).
"""

import math
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import defusedxml.ElementTree as DefusedElementTree
from defusedxml import DefusedXmlException

from fmuengine.archive import InvalidFMU

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

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
    default_experiment: dict[str, float | None]
    variables: list[VariableInfo]
    model_identifiers: dict[str, str]
    # The declared fmi_types whose binary for the inspected platform is in the archive.
    runnable_fmi_types: list[str]
    # Continuous states (FMI 2/3 ModelStructure), which fmpy records when a model has no outputs.
    continuous_state_names: list[str]

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict, variables as a list of dicts."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "FMUSummary":
        """The summary back from what to_json() stored."""
        fields = dict(data)
        fields["variables"] = [VariableInfo(**variable) for variable in data["variables"]]
        return cls(**fields)


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


# --- modelDescription.xml ----------------------------------------------------------------------


def parse_model_description(data: bytes) -> "Element":
    """The root element of ``data``, refusing any DTD or entity before it can be expanded."""
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


def summarise(root: "Element", file_names: set[str], platform: str) -> FMUSummary:
    """The summary of a parsed description, or InvalidFMU when the FMU cannot run on ``platform``.

    ``file_names`` are the archive's files by the paths they are extracted to
    (``ArchiveEntry.path``), so a binary counts only where extraction will put it.
    """
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


def _default_experiment(root: "Element") -> dict[str, float | None]:
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
        type_element: Element | None
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
