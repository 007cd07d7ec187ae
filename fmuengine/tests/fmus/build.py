"""Build the test FMUs from their C sources at test time (no binaries are committed).

Each FMU is one gcc call (`-shared -fPIC`) against the FMI headers that ship
with fmpy, a generated modelDescription.xml, and a zip. `build_all` is meant to
run once per test session (see the `fmu_paths` fixture in conftest.py).
"""

from __future__ import annotations

import subprocess
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import quoteattr

import fmpy

SOURCE_DIR = Path(__file__).parent / "src"
FMI_HEADERS_DIR = Path(fmpy.__file__).parent / "c-code"
BINARY_DIR_BY_FMI_VERSION = {
    "1.0": "binaries/linux64",
    "2.0": "binaries/linux64",
    "3.0": "binaries/x86_64-linux",
}


@dataclass(frozen=True)
class Variable:
    """One model variable; `value_reference` indexes the C model's array of its type."""

    name: str
    value_reference: int
    causality: str
    variability: str
    initial: str | None = None
    start: str | None = None
    type: str = "Real"
    derivative_of: str | None = None
    description: str = ""


@dataclass(frozen=True)
class TestModel:
    """What build.py needs to compile and describe one test FMU."""

    name: str
    source: str
    fmi_version: str
    interfaces: tuple[str, ...]
    variables: tuple[Variable, ...]
    description: str
    event_indicators: int = 0
    default_experiment: dict[str, str] = field(
        default_factory=lambda: {"startTime": "0", "stopTime": "3", "stepSize": "0.01"}
    )

    @property
    def guid(self) -> str:
        return f"{{fmu-gateway-test-{self.name}}}"


def _hostile(name: str, description: str, *extra: Variable) -> TestModel:
    steps = Variable("steps", 0, "output", "discrete", "calculated", description="doStep calls")
    return TestModel(
        name=name,
        source=f"{name}.c",
        fmi_version="2.0",
        interfaces=("CoSimulation",),
        variables=(steps, *extra),
        description=description,
        default_experiment={"startTime": "0", "stopTime": "1", "stepSize": "0.1"},
    )


BOUNCING_BALL_VARIABLES = (
    Variable("h", 0, "output", "continuous", "exact", "1", description="height"),
    Variable("der(h)", 2, "local", "continuous", "calculated", derivative_of="h"),
    Variable("v", 1, "output", "continuous", "exact", "0", description="velocity"),
    Variable("der(v)", 3, "local", "continuous", "calculated", derivative_of="v"),
    Variable("g", 4, "parameter", "fixed", "exact", "9.81", description="gravity"),
    Variable("e", 5, "parameter", "tunable", "exact", "0.7", description="restitution"),
)

TEST_MODELS: dict[str, TestModel] = {
    model.name: model
    for model in (
        TestModel(
            name="bouncing_ball",
            source="bouncing_ball.c",
            fmi_version="2.0",
            interfaces=("ModelExchange", "CoSimulation"),
            variables=BOUNCING_BALL_VARIABLES,
            event_indicators=1,
            description="Bouncing ball (FMI 2.0 CS and ME)",
        ),
        TestModel(
            name="bouncing_ball3",
            source="bouncing_ball3.c",
            fmi_version="3.0",
            interfaces=("CoSimulation",),
            variables=(
                Variable("time", 0, "independent", "continuous", type="Float64"),
                Variable("h", 1, "output", "continuous", "exact", "1", "Float64"),
                Variable("v", 2, "output", "continuous", "exact", "0", "Float64"),
                Variable("g", 3, "parameter", "fixed", "exact", "9.81", "Float64"),
                Variable("e", 4, "parameter", "tunable", "exact", "0.7", "Float64"),
            ),
            description="Bouncing ball (FMI 3.0 CS)",
        ),
        TestModel(
            name="bouncing_ball1",
            source="bouncing_ball1.c",
            fmi_version="1.0",
            interfaces=("CoSimulation",),
            # FMI 1.0: parameters are variability="parameter" with causality="internal".
            variables=(
                Variable("h", 0, "output", "continuous", start="1", description="height"),
                Variable("v", 1, "output", "continuous", start="0", description="velocity"),
                Variable("g", 2, "internal", "parameter", start="9.81", description="gravity"),
                Variable("e", 3, "internal", "parameter", start="0.7", description="restitution"),
            ),
            description="Bouncing ball (FMI 1.0 CS stand-alone)",
            # FMI 1.0's DefaultExperiment has no stepSize.
            default_experiment={"startTime": "0", "stopTime": "3"},
        ),
        TestModel(
            name="inputs_params",
            source="inputs_params.c",
            fmi_version="2.0",
            interfaces=("ModelExchange", "CoSimulation"),
            variables=(
                Variable("x", 0, "local", "continuous", "exact", "0", description="state"),
                Variable("der(x)", 1, "local", "continuous", "calculated", derivative_of="x"),
                Variable("u", 2, "input", "continuous", start="0", description="input"),
                Variable("k", 3, "parameter", "tunable", "exact", "1", description="gain"),
                Variable("T", 4, "parameter", "fixed", "exact", "1", description="time constant"),
                Variable("y", 5, "output", "continuous", "calculated", description="y = x"),
            ),
            description="First-order lag der(x) = (k*u - x)/T (FMI 2.0 CS and ME)",
            default_experiment={"startTime": "0", "stopTime": "2", "stepSize": "0.01"},
        ),
        TestModel(
            name="case_behaviour",
            source="case_behaviour.c",
            fmi_version="2.0",
            interfaces=("CoSimulation",),
            variables=(
                Variable("x", 0, "output", "continuous", "exact", "1", description="state"),
                Variable("der(x)", 1, "local", "continuous", "calculated", derivative_of="x"),
                Variable("k", 2, "parameter", "tunable", "exact", "1", description="decay rate"),
                Variable("y", 3, "output", "continuous", "calculated", description="y = k*x"),
                Variable(
                    "mode",
                    0,
                    "parameter",
                    "fixed",
                    "exact",
                    "0",
                    "Integer",
                    description="0 normal, 1 crash, 2 endless loop, 3 memory hog, 4 junk output",
                ),
            ),
            description="der(x) = -k*x, or from t = 0.5 what its mode says (for batches)",
            default_experiment={"startTime": "0", "stopTime": "1", "stepSize": "0.01"},
        ),
        _hostile("segfault", "Writes through a null pointer in doStep"),
        _hostile("exit_early", "Calls _exit(3) in doStep"),
        _hostile("endless_loop", "Never returns from doStep"),
        _hostile("memory_hog", "Allocates and touches 4 GB in doStep"),
        _hostile("fork_bomb", "Forks in a loop in doStep"),
        _hostile(
            "open_socket",
            "Connects to 127.0.0.1:<port> in doStep",
            Variable("port", 0, "parameter", "fixed", "exact", "5432", "Integer"),
        ),
        _hostile(
            "memory_fill",
            "Holds memory RLIMIT_AS does not count (memfd, tmpfs, children) in doStep",
            Variable("how", 0, "parameter", "fixed", "exact", "1", "Integer"),
        ),
        _hostile(
            "disk_fill",
            "Writes many files, or a very deep directory tree, in doStep",
            Variable("how", 0, "parameter", "fixed", "exact", "1", "Integer"),
        ),
        _hostile(
            "output_forger",
            "Writes malformed error.json, result.npy or fmu.log and ends the process",
            Variable("how", 0, "parameter", "fixed", "exact", "1", "Integer"),
        ),
        _hostile("tamper_fmu", "Tries to change its own extracted FMU files in doStep"),
        _hostile(
            "memory_scan",
            "Scans its own process memory for a text in doStep",
            Variable("shifted_needle", 0, "parameter", "fixed", "exact", "", "String"),
        ),
        _hostile(
            "read_secrets",
            "Reads /etc/passwd, /proc/<probe_pid>/environ and its environment in doStep",
            Variable("probe_pid", 0, "parameter", "fixed", "exact", "1", "Integer"),
            Variable("env_name", 0, "parameter", "fixed", "exact", "SECRET_KEY", "String"),
        ),
    )
}


def _attributes(**attributes: str | None) -> str:
    return "".join(
        f" {name}={quoteattr(value)}" for name, value in attributes.items() if value is not None
    )


def _fmi1_model_description(model: TestModel) -> str:
    """FMI 1.0 Co-Simulation (stand-alone): the modelIdentifier is an attribute of the root,
    and <Implementation> is what makes it a Co-Simulation FMU."""
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        "<fmiModelDescription"
        + _attributes(
            fmiVersion="1.0",
            modelName=model.name,
            modelIdentifier=model.name,
            guid=model.guid,
            description=model.description,
            generationTool="FMU Gateway test build",
            variableNamingConvention="structured",
            numberOfContinuousStates="0",
            numberOfEventIndicators=str(model.event_indicators),
        )
        + ">",
        "  <DefaultExperiment" + _attributes(**model.default_experiment) + "/>",
        "  <ModelVariables>",
    ]
    for variable in model.variables:
        type_attributes = _attributes(
            start=variable.start, fixed="true" if variable.start is not None else None
        )
        lines.append(
            "    <ScalarVariable"
            + _attributes(
                name=variable.name,
                valueReference=str(variable.value_reference),
                description=variable.description or None,
                variability=variable.variability,
                causality=variable.causality,
            )
            + f"><{variable.type}{type_attributes}/></ScalarVariable>"
        )
    lines.append("  </ModelVariables>")
    lines.append("  <Implementation>")
    lines.append("    <CoSimulation_StandAlone>")
    lines.append(
        "      <Capabilities"
        + _attributes(
            canHandleVariableCommunicationStepSize="true",
            canHandleEvents="true",
            canRejectSteps="false",
            canInterpolateInputs="false",
            maxOutputDerivativeOrder="0",
            canRunAsynchronuously="false",
            canSignalEvents="false",
            canBeInstantiatedOnlyOncePerProcess="false",
            canNotUseMemoryManagementFunctions="true",
        )
        + "/>"
    )
    lines.append("    </CoSimulation_StandAlone>")
    lines.append("  </Implementation>")
    lines.append("</fmiModelDescription>")
    return "\n".join(lines) + "\n"


def _fmi2_model_description(model: TestModel) -> str:
    index_by_name = {variable.name: index for index, variable in enumerate(model.variables, 1)}
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        "<fmiModelDescription"
        + _attributes(
            fmiVersion="2.0",
            modelName=model.name,
            guid=model.guid,
            description=model.description,
            generationTool="FMU Gateway test build",
            variableNamingConvention="structured",
            numberOfEventIndicators=str(model.event_indicators),
        )
        + ">",
    ]
    for interface in model.interfaces:
        extra = {"canHandleVariableCommunicationStepSize": "true"}
        lines.append(
            f"  <{interface}"
            + _attributes(
                modelIdentifier=model.name, **(extra if interface == "CoSimulation" else {})
            )
            + "/>"
        )
    lines.append("  <DefaultExperiment" + _attributes(**model.default_experiment) + "/>")
    lines.append("  <ModelVariables>")
    for variable in model.variables:
        type_attributes = _attributes(
            start=variable.start,
            derivative=str(index_by_name[variable.derivative_of])
            if variable.derivative_of
            else None,
        )
        lines.append(
            "    <ScalarVariable"
            + _attributes(
                name=variable.name,
                valueReference=str(variable.value_reference),
                description=variable.description or None,
                causality=variable.causality,
                variability=variable.variability,
                initial=variable.initial if variable.causality != "input" else None,
            )
            + f"><{variable.type}{type_attributes}/></ScalarVariable>"
        )
    lines.append("  </ModelVariables>")

    states = {variable.derivative_of for variable in model.variables if variable.derivative_of}
    outputs = [index_by_name[v.name] for v in model.variables if v.causality == "output"]
    derivatives = [index_by_name[v.name] for v in model.variables if v.derivative_of]
    initial_unknowns = [
        index_by_name[v.name]
        for v in model.variables
        if v.initial in ("calculated", "approx")
        and (v.causality == "output" or v.derivative_of or v.name in states)
    ]
    lines.append("  <ModelStructure>")
    for section, indices in (
        ("Outputs", outputs),
        ("Derivatives", derivatives),
        ("InitialUnknowns", initial_unknowns),
    ):
        if indices:
            lines.append(f"    <{section}>")
            lines.extend(f'      <Unknown index="{index}"/>' for index in indices)
            lines.append(f"    </{section}>")
    lines.append("  </ModelStructure>")
    lines.append("</fmiModelDescription>")
    return "\n".join(lines) + "\n"


def _fmi3_model_description(model: TestModel) -> str:
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        "<fmiModelDescription"
        + _attributes(
            fmiVersion="3.0",
            modelName=model.name,
            instantiationToken=model.guid,
            description=model.description,
            generationTool="FMU Gateway test build",
        )
        + ">",
        "  <CoSimulation"
        + _attributes(modelIdentifier=model.name, canHandleVariableCommunicationStepSize="true")
        + "/>",
        "  <DefaultExperiment" + _attributes(**model.default_experiment) + "/>",
        "  <ModelVariables>",
    ]
    for variable in model.variables:
        lines.append(
            f"    <{variable.type}"
            + _attributes(
                name=variable.name,
                valueReference=str(variable.value_reference),
                causality=variable.causality,
                variability=variable.variability,
                initial=variable.initial,
                start=variable.start,
            )
            + "/>"
        )
    lines.append("  </ModelVariables>")
    lines.append("  <ModelStructure>")
    lines.extend(
        f'    <Output valueReference="{v.value_reference}"/>'
        for v in model.variables
        if v.causality == "output"
    )
    lines.append("  </ModelStructure>")
    lines.append("</fmiModelDescription>")
    return "\n".join(lines) + "\n"


def shifted(text: str) -> str:
    """How memory_scan takes the text it looks for (`shifted_needle`): every character one
    up, so that the text itself need not be anywhere in the calling process."""
    return "".join(chr(ord(character) + 1) for character in text)


def build_fmu(
    name: str,
    out_dir: Path,
    *,
    extra_files: dict[str, bytes] | None = None,
    stored: bool = False,
    file_name: str | None = None,
) -> Path:
    """Compile test model `name` and package it as `out_dir/<file_name or name>.fmu`,
    with `extra_files` (archive name -> bytes) added; `stored` keeps every entry
    uncompressed, so its bytes appear as they are in the FMU file."""
    model = TEST_MODELS[name]
    staging_dir = Path(out_dir) / f"{file_name or name}.build"
    binary_dir = staging_dir / BINARY_DIR_BY_FMI_VERSION[model.fmi_version]
    binary_dir.mkdir(parents=True, exist_ok=True)
    library = binary_dir / f"{name}.so"
    compilation = subprocess.run(
        [
            "gcc",
            "-shared",
            "-fPIC",
            "-O2",
            "-Wall",
            "-Wextra",
            "-I",
            str(FMI_HEADERS_DIR),
            f'-DMODEL_GUID="{model.guid}"',
            str(SOURCE_DIR / model.source),
            "-o",
            str(library),
            "-lm",
        ],
        capture_output=True,
        text=True,
    )
    if compilation.returncode != 0:
        raise RuntimeError(f"gcc failed for {model.source}:\n{compilation.stderr}")
    description = {
        "1.0": _fmi1_model_description,
        "2.0": _fmi2_model_description,
        "3.0": _fmi3_model_description,
    }[model.fmi_version](model)
    fmu_path = Path(out_dir) / f"{file_name or name}.fmu"
    compression = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(fmu_path, "w", compression) as archive:
        archive.writestr("modelDescription.xml", description)
        archive.write(library, f"{BINARY_DIR_BY_FMI_VERSION[model.fmi_version]}/{name}.so")
        for entry_name, data in (extra_files or {}).items():
            archive.writestr(entry_name, data)
    return fmu_path


def build_all(out_dir: Path) -> dict[str, Path]:
    """Build every test FMU into `out_dir` (in parallel: gcc dominates)."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=4) as pool:
        paths = pool.map(lambda name: build_fmu(name, out_dir), TEST_MODELS)
        return dict(zip(TEST_MODELS, paths, strict=True))
