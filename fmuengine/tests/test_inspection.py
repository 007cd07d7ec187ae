"""Pins what fmuengine.inspection accepts and refuses: FMUs are built here as small ZIPs by hand."""

import json
import stat
import struct
import time
import warnings
import zipfile
from pathlib import Path

import pytest

from fmuengine.inspection import (
    FMULimits,
    InvalidFMU,
    VariableInfo,
    inspect_fmu,
    normalized_entry_path,
    output_variable_names,
    settable_variable_names,
)

DUMMY_BINARY = b"\x7fELF not really a library"

FMI1_MODEL_EXCHANGE = """<?xml version="1.0" encoding="UTF-8"?>
<fmiModelDescription fmiVersion="1.0" modelName="bouncingBall" modelIdentifier="bouncingBall"
    guid="{8c4e810f-3df3-4a00-8276-176fa3c9f003}" numberOfContinuousStates="2"
    numberOfEventIndicators="1">
  <TypeDefinitions>
    <Type name="Length"><RealType quantity="Length" unit="m"/></Type>
  </TypeDefinitions>
  <DefaultExperiment startTime="0" stopTime="3" tolerance="1e-4"/>
  <ModelVariables>
    <ScalarVariable name="h" valueReference="0" description="height">
      <Real declaredType="Length" start="1" fixed="true"/>
    </ScalarVariable>
    <ScalarVariable name="der(h)" valueReference="1"><Real/></ScalarVariable>
    <ScalarVariable name="g" valueReference="2" variability="parameter">
      <Real start="-9.81" unit="m/s2"/>
    </ScalarVariable>
    <ScalarVariable name="count" valueReference="3" causality="output" variability="discrete">
      <Integer start="0"/>
    </ScalarVariable>
    <ScalarVariable name="pi" valueReference="4" variability="constant">
      <Real start="3.14"/>
    </ScalarVariable>
    <ScalarVariable name="u" valueReference="5" causality="input"><Boolean/></ScalarVariable>
  </ModelVariables>
</fmiModelDescription>
"""

FMI1_CO_SIMULATION = FMI1_MODEL_EXCHANGE.replace(
    "  <ModelVariables>",
    "  <Implementation><CoSimulation_StandAlone><Capabilities/></CoSimulation_StandAlone>"
    "</Implementation>\n  <ModelVariables>",
)

FMI2_BOUNCING_BALL = """<?xml version="1.0" encoding="UTF-8"?>
<fmiModelDescription fmiVersion="2.0" modelName="BouncingBall"
    guid="{1AE5E10D-9521-4DE3-80B9-D0EAAA7D5AF1}"
    description="This model calculates the trajectory of a bouncing ball"
    generationTool="handwritten" numberOfEventIndicators="1">
  <CoSimulation modelIdentifier="BouncingBall" canHandleVariableCommunicationStepSize="true"/>
  <ModelExchange modelIdentifier="BouncingBall"/>
  <TypeDefinitions>
    <SimpleType name="Position"><Real quantity="Position" unit="m"/></SimpleType>
    <SimpleType name="Velocity"><Real quantity="Velocity" unit="m/s"/></SimpleType>
  </TypeDefinitions>
  <DefaultExperiment startTime="0" stopTime="3" stepSize="0.01"/>
  <ModelVariables>
    <ScalarVariable name="time" valueReference="0" causality="independent"
        variability="continuous" description="Simulation time"><Real/></ScalarVariable>
    <ScalarVariable name="h" valueReference="1" causality="output" initial="exact"
        description="Position of the ball"><Real declaredType="Position" start="1"/>
    </ScalarVariable>
    <ScalarVariable name="der(h)" valueReference="2" causality="local" initial="calculated">
      <Real declaredType="Velocity" derivative="2"/>
    </ScalarVariable>
    <ScalarVariable name="v" valueReference="3" causality="output" initial="exact">
      <Real declaredType="Velocity" start="0" reinit="true"/>
    </ScalarVariable>
    <ScalarVariable name="der(v)" valueReference="4" initial="calculated">
      <Real unit="m/s2" derivative="4"/>
    </ScalarVariable>
    <ScalarVariable name="g" valueReference="5" causality="parameter" variability="fixed"
        initial="exact"><Real unit="m/s2" start="-9.81"/></ScalarVariable>
    <ScalarVariable name="e" valueReference="6" causality="parameter" variability="tunable">
      <Real start="0.7"/>
    </ScalarVariable>
    <ScalarVariable name="bounces" valueReference="7" causality="local" variability="discrete"
        initial="exact"><Integer start="0"/></ScalarVariable>
    <ScalarVariable name="v_min" valueReference="8" variability="constant">
      <Real start="0.1"/>
    </ScalarVariable>
    <ScalarVariable name="energy" valueReference="9" causality="calculatedParameter"
        variability="fixed"><Real/></ScalarVariable>
    <ScalarVariable name="active" valueReference="10" causality="input" variability="discrete">
      <Boolean start="true"/>
    </ScalarVariable>
  </ModelVariables>
  <ModelStructure>
    <Outputs><Unknown index="2"/><Unknown index="4"/></Outputs>
    <Derivatives><Unknown index="3"/><Unknown index="5"/></Derivatives>
  </ModelStructure>
</fmiModelDescription>
"""

FMI3_BOUNCING_BALL = """<?xml version="1.0" encoding="UTF-8"?>
<fmiModelDescription fmiVersion="3.0" modelName="BouncingBall3"
    instantiationToken="{8c4e810f-3df3-4a00-8276-176fa3c9f008}" generationTool="handwritten">
  <CoSimulation modelIdentifier="BouncingBall3" canHandleVariableCommunicationStepSize="true"/>
  <ModelExchange modelIdentifier="BouncingBall3"/>
  <ScheduledExecution modelIdentifier="BouncingBall3"/>
  <TypeDefinitions>
    <Float64Type name="Position" quantity="Position" unit="m"/>
  </TypeDefinitions>
  <DefaultExperiment startTime="0" stopTime="3" stepSize="0.01" tolerance="1e-6"/>
  <ModelVariables>
    <Float64 name="time" valueReference="0" causality="independent" variability="continuous"/>
    <Float64 name="h" valueReference="1" causality="output" variability="continuous"
        initial="exact" declaredType="Position" start="1" description="Position of the ball">
      <Alias name="height" description="Alias of h"/>
    </Float64>
    <Float64 name="der(h)" valueReference="2" causality="local" initial="calculated"
        derivative="1" unit="m/s"/>
    <Float64 name="g" valueReference="5" causality="parameter" variability="fixed"
        start="-9.81" unit="m/s2"/>
    <Int32 name="bounces" valueReference="7" causality="output" initial="calculated"/>
    <Float64 name="k" valueReference="8" causality="parameter" start="2"/>
    <Boolean name="flag" valueReference="9" causality="input" start="false"/>
    <String name="label" valueReference="10" causality="parameter" variability="fixed">
      <Start value="ball"/>
    </String>
    <UInt64 name="seed" valueReference="11" causality="structuralParameter" variability="fixed"
        start="42"/>
  </ModelVariables>
  <ModelStructure>
    <Output valueReference="1"/>
    <Output valueReference="7"/>
    <ContinuousStateDerivative valueReference="2"/>
  </ModelStructure>
</fmiModelDescription>
"""


def build_archive(
    path: Path,
    entries: list[tuple[str, str | bytes]],
    compression: int = zipfile.ZIP_DEFLATED,
) -> Path:
    """Write ``entries`` (archive name, content) as a ZIP at ``path``, names exactly as given.

    A list, not a dict, so that an archive can hold one name twice, as ZIP allows.
    """
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w", compression=compression) as archive:
        warnings.filterwarnings("ignore", "Duplicate name", UserWarning)
        for name, content in entries:
            archive.writestr(zipfile.ZipInfo(name), content, compress_type=compression)
    return path


def build_fmu(
    path: Path,
    files: dict[str, str | bytes],
    compression: int = zipfile.ZIP_DEFLATED,
) -> Path:
    """Write ``files`` (archive name -> content) as a ZIP at ``path``."""
    return build_archive(path, list(files.items()), compression)


def fmi2_fmu(
    tmp_path: Path, model_description: str = FMI2_BOUNCING_BALL, /, **extra: str | bytes
) -> Path:
    files = {
        "modelDescription.xml": model_description,
        "binaries/linux64/BouncingBall.so": DUMMY_BINARY,
        **extra,
    }
    return build_fmu(tmp_path / "model.fmu", files)


def assert_refused(path: Path, code: str, *words: str, status: int = 400, **kwargs) -> InvalidFMU:
    with pytest.raises(InvalidFMU) as caught:
        inspect_fmu(path, **kwargs)
    error = caught.value
    assert error.code == code, error
    assert error.status == status, error
    for word in words:
        assert word in error.message, error
    return error


# --- happy paths -------------------------------------------------------------------------------


def test_fmi1_model_exchange_summary(tmp_path: Path) -> None:
    path = build_fmu(
        tmp_path / "ball.fmu",
        {
            "modelDescription.xml": FMI1_MODEL_EXCHANGE,
            "binaries/linux64/bouncingBall.so": DUMMY_BINARY,
        },
    )

    summary = inspect_fmu(path)

    assert summary.fmi_version == "1.0"
    assert summary.model_name == "bouncingBall"
    assert summary.guid == "{8c4e810f-3df3-4a00-8276-176fa3c9f003}"
    assert summary.generation_tool is None
    assert summary.fmi_types == ["ModelExchange"]
    assert summary.runnable_fmi_types == ["ModelExchange"]
    assert summary.model_identifiers == {"ModelExchange": "bouncingBall"}
    assert summary.platforms == ["linux64"]
    assert summary.default_experiment == {
        "start_time": 0.0,
        "stop_time": 3.0,
        "step_size": None,
        "tolerance": 1e-4,
    }
    variables = {variable.name: variable for variable in summary.variables}
    assert list(variables) == ["h", "der(h)", "g", "count", "pi", "u"]
    # FMI 1.0 defaults: causality internal, variability continuous; unit from the declared type.
    assert variables["h"] == VariableInfo(
        name="h",
        causality="internal",
        variability="continuous",
        type="Real",
        start="1",
        unit="m",
        description="height",
        value_reference=0,
    )
    assert variables["g"].variability == "parameter"
    assert variables["g"].unit == "m/s2"
    assert (variables["count"].causality, variables["count"].type) == ("output", "Integer")
    assert variables["u"].start is None
    assert settable_variable_names(summary, fmi_type="ModelExchange") == {"h", "g", "count", "u"}
    assert output_variable_names(summary) == ["count"]


def test_fmi1_co_simulation_is_recognised_by_its_implementation_element(tmp_path: Path) -> None:
    path = build_fmu(
        tmp_path / "ball.fmu",
        {
            "modelDescription.xml": FMI1_CO_SIMULATION,
            "binaries/linux64/bouncingBall.so": DUMMY_BINARY,
        },
    )

    summary = inspect_fmu(path)

    assert summary.fmi_types == ["CoSimulation"]
    assert summary.model_identifiers == {"CoSimulation": "bouncingBall"}


def test_fmi2_summary(tmp_path: Path) -> None:
    extra: dict[str, str | bytes] = {
        "binaries/win64/BouncingBall.dll": DUMMY_BINARY,
        "sources/model.c": "int x;",
        "documentation/": b"",
    }
    path = fmi2_fmu(tmp_path, **extra)

    summary = inspect_fmu(path)

    assert summary.fmi_version == "2.0"
    assert summary.model_name == "BouncingBall"
    assert summary.guid == "{1AE5E10D-9521-4DE3-80B9-D0EAAA7D5AF1}"
    assert summary.generation_tool == "handwritten"
    assert summary.description == "This model calculates the trajectory of a bouncing ball"
    assert summary.fmi_types == ["CoSimulation", "ModelExchange"]
    assert summary.runnable_fmi_types == ["CoSimulation", "ModelExchange"]
    assert summary.platforms == ["linux64", "win64", "c-code"]
    assert summary.default_experiment == {
        "start_time": 0.0,
        "stop_time": 3.0,
        "step_size": 0.01,
        "tolerance": None,
    }
    variables = {variable.name: variable for variable in summary.variables}
    assert len(summary.variables) == 11
    assert variables["h"] == VariableInfo(
        name="h",
        causality="output",
        variability="continuous",
        type="Real",
        start="1",
        unit="m",
        description="Position of the ball",
        value_reference=1,
    )
    # Defaults for FMI 2.0: causality local, variability continuous.
    assert (variables["der(v)"].causality, variables["der(v)"].variability) == (
        "local",
        "continuous",
    )
    assert variables["der(v)"].unit == "m/s2"
    assert variables["der(h)"].unit == "m/s"
    assert variables["bounces"].type == "Integer"
    assert variables["active"] == VariableInfo(
        name="active",
        causality="input",
        variability="discrete",
        type="Boolean",
        start="true",
        unit=None,
        description=None,
        value_reference=10,
    )
    assert summary.continuous_state_names == ["h", "v"]
    assert settable_variable_names(summary, fmi_type="CoSimulation") == {
        "h",
        "v",
        "g",
        "e",
        "bounces",
        "active",
    }
    assert output_variable_names(summary) == ["h", "v"]

    as_json = json.loads(json.dumps(summary.to_json()))
    assert as_json["variables"][1]["name"] == "h"
    assert as_json["variables"][1]["value_reference"] == 1
    assert as_json["fmi_types"] == ["CoSimulation", "ModelExchange"]


def test_fmi2_lists_only_interfaces_whose_binary_exists_as_runnable(tmp_path: Path) -> None:
    model_description = FMI2_BOUNCING_BALL.replace(
        '<ModelExchange modelIdentifier="BouncingBall"/>',
        '<ModelExchange modelIdentifier="BouncingBallME"/>',
    )

    summary = inspect_fmu(fmi2_fmu(tmp_path, model_description))

    assert summary.fmi_types == ["CoSimulation", "ModelExchange"]
    assert summary.runnable_fmi_types == ["CoSimulation"]
    assert summary.model_identifiers == {
        "CoSimulation": "BouncingBall",
        "ModelExchange": "BouncingBallME",
    }


def test_settable_names_refuse_an_interface_the_fmu_does_not_declare(tmp_path: Path) -> None:
    model_description = FMI2_BOUNCING_BALL.replace(
        '<ModelExchange modelIdentifier="BouncingBall"/>', ""
    )
    summary = inspect_fmu(fmi2_fmu(tmp_path, model_description))

    with pytest.raises(ValueError, match="ModelExchange"):
        settable_variable_names(summary, fmi_type="ModelExchange")


def test_outputs_fall_back_to_states_like_fmpy_when_a_model_has_none(tmp_path: Path) -> None:
    model_description = FMI2_BOUNCING_BALL.replace('causality="output"', 'causality="local"')

    summary = inspect_fmu(fmi2_fmu(tmp_path, model_description))

    assert output_variable_names(summary) == ["h", "v"]


def test_fmi3_summary(tmp_path: Path) -> None:
    path = build_fmu(
        tmp_path / "ball3.fmu",
        {
            "modelDescription.xml": FMI3_BOUNCING_BALL,
            "binaries/x86_64-linux/BouncingBall3.so": DUMMY_BINARY,
            "binaries/x86_64-windows/BouncingBall3.dll": DUMMY_BINARY,
        },
    )

    summary = inspect_fmu(path)

    assert summary.fmi_version == "3.0"
    assert summary.guid == "{8c4e810f-3df3-4a00-8276-176fa3c9f008}"
    # ScheduledExecution is declared but not something FMU Gateway runs.
    assert summary.fmi_types == ["CoSimulation", "ModelExchange"]
    assert summary.runnable_fmi_types == ["CoSimulation", "ModelExchange"]
    assert summary.platforms == ["x86_64-linux", "x86_64-windows"]
    assert summary.default_experiment["tolerance"] == 1e-6
    variables = {variable.name: variable for variable in summary.variables}
    assert [variable.name for variable in summary.variables][-1] == "height"
    assert variables["h"] == VariableInfo(
        name="h",
        causality="output",
        variability="continuous",
        type="Float64",
        start="1",
        unit="m",
        description="Position of the ball",
        value_reference=1,
    )
    assert variables["height"].value_reference == 1
    assert variables["height"].description == "Alias of h"
    # FMI 3.0 defaults: local causality; fixed for parameters, continuous for floats, else discrete.
    assert (variables["der(h)"].variability, variables["der(h)"].unit) == ("continuous", "m/s")
    assert (variables["bounces"].type, variables["bounces"].variability) == ("Int32", "discrete")
    assert variables["k"].variability == "fixed"
    assert (variables["flag"].variability, variables["flag"].start) == ("discrete", "false")
    assert (variables["label"].type, variables["label"].start) == ("String", "ball")
    assert (variables["seed"].type, variables["seed"].causality) == (
        "UInt64",
        "structuralParameter",
    )
    assert summary.continuous_state_names == ["h"]
    assert output_variable_names(summary) == ["h", "bounces", "height"]
    assert settable_variable_names(summary, fmi_type="ModelExchange") == {
        "h",
        "height",
        "g",
        "k",
        "flag",
        "label",
        "seed",
    }


def test_fmi3_needs_the_fmi3_platform_folder(tmp_path: Path) -> None:
    path = build_fmu(
        tmp_path / "ball3.fmu",
        {
            "modelDescription.xml": FMI3_BOUNCING_BALL,
            "binaries/linux64/BouncingBall3.so": DUMMY_BINARY,
        },
    )

    assert_refused(path, "no_binary_for_platform", "linux64", "x86_64-linux")


# --- archives that are not FMUs, or are hostile ------------------------------------------------


@pytest.mark.parametrize(
    "content", [b"", b"just some text\n", b"\x89PNG\r\n\x1a\n" + bytes(100)], ids=repr
)
def test_non_zip_upload_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "upload.fmu"
    path.write_bytes(content)

    assert_refused(path, "not_a_zip", "not a ZIP archive", ".fmu")


def test_truncated_zip_is_reported_as_damaged(tmp_path: Path) -> None:
    complete = fmi2_fmu(tmp_path).read_bytes()
    path = tmp_path / "truncated.fmu"
    path.write_bytes(complete[: len(complete) // 2])

    assert_refused(path, "corrupt_zip", "truncated")


def test_zip_bomb_entry_is_refused_from_declared_sizes(tmp_path: Path) -> None:
    path = tmp_path / "bomb.fmu"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("modelDescription.xml", FMI2_BOUNCING_BALL)
        archive.writestr("binaries/linux64/BouncingBall.so", DUMMY_BINARY)
        megabyte_of_zeros = bytes(1024**2)
        with archive.open("resources/zeros.bin", "w", force_zip64=True) as entry:
            for _ in range(100):
                entry.write(megabyte_of_zeros)
    assert path.stat().st_size < 1024**2

    assert_refused(path, "zip_bomb", "resources/zeros.bin")


def test_small_highly_compressible_files_are_not_mistaken_for_bombs(tmp_path: Path) -> None:
    path = fmi2_fmu(tmp_path, **{"resources/padding.bin": bytes(64 * 1024)})

    assert inspect_fmu(path).model_name == "BouncingBall"


def test_whole_archive_ratio_is_capped_too(tmp_path: Path) -> None:
    path = fmi2_fmu(tmp_path, **{f"resources/zeros{i}.bin": bytes(300 * 1024) for i in range(4)})
    limits = FMULimits(min_bytes_for_ratio_check=1024**2)

    assert_refused(path, "zip_bomb", "resources/zeros", limits=limits)


def test_too_large_uncompressed_is_413(tmp_path: Path) -> None:
    path = fmi2_fmu(tmp_path, **{"resources/table.csv": b"1,2,3\n" * 2000})

    assert_refused(
        path,
        "fmu_too_large_uncompressed",
        "10.0 KiB",
        status=413,
        limits=FMULimits(max_uncompressed_bytes=10 * 1024),
    )


def test_too_many_entries(tmp_path: Path) -> None:
    path = fmi2_fmu(tmp_path, **{f"resources/{i}.txt": b"x" for i in range(10)})

    assert_refused(path, "too_many_entries", "12", "5", limits=FMULimits(max_entries=5))


def test_entry_count_is_checked_even_when_the_end_record_lies(tmp_path: Path) -> None:
    path = fmi2_fmu(tmp_path, **{f"resources/{i}.txt": b"x" for i in range(10)})
    data = bytearray(path.read_bytes())
    eocd = data.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", data, eocd + 8, 1, 1)  # entries on this disk, entries in total
    path.write_bytes(bytes(data))

    assert_refused(path, "too_many_entries", "12", limits=FMULimits(max_entries=5))


def test_oversized_central_directory_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = fmi2_fmu(tmp_path, **{"resources/" + "n" * 3000: b"x"})

    assert_refused(path, "too_many_entries", "central directory", limits=FMULimits(max_entries=3))


@pytest.mark.parametrize(
    ("entry_name", "reason"),
    [
        ("../evil.so", "'..'"),
        ("binaries/linux64/../../../evil.so", "'..'"),
        ("/abs.so", "absolute"),
        ("C:\\Windows\\evil.dll", "drive"),
        ("..\\..\\evil.so", "'..'"),
        ("resources\\evil.txt", "backslash"),
        ("resources/a\nb.txt", "control character"),
        ("resources/a\x7fb.txt", "control character"),
        ("./resources/a.txt", "'.'"),
        ("resources//a.txt", "empty"),
        ("resources/" + "n" * 256, "255 bytes"),
        ("resources/" + "n/" * 600 + "a.txt", "1024 bytes"),
    ],
)
def test_zip_slip_paths_are_refused(tmp_path: Path, entry_name: str, reason: str) -> None:
    path = fmi2_fmu(tmp_path, **{entry_name: DUMMY_BINARY})
    with zipfile.ZipFile(path) as archive:
        assert entry_name in archive.namelist()  # the hostile name really is in the archive

    error = assert_refused(path, "unsafe_path", reason)
    assert repr(entry_name) in error.message


def test_symlink_entry_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "link.fmu"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("modelDescription.xml", FMI2_BOUNCING_BALL)
        link = zipfile.ZipInfo("binaries/linux64/BouncingBall.so")
        link.create_system = 3  # Unix, so the mode bits below are meaningful
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")

    assert_refused(path, "unsafe_path", "binaries/linux64/BouncingBall.so", "symbolic link")


def test_duplicate_entries_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "twice.fmu"
    with zipfile.ZipFile(path, "w") as archive, pytest.warns(UserWarning, match="Duplicate"):
        archive.writestr("modelDescription.xml", FMI2_BOUNCING_BALL)
        archive.writestr("binaries/linux64/BouncingBall.so", DUMMY_BINARY)
        archive.writestr("modelDescription.xml", FMI3_BOUNCING_BALL)

    assert_refused(path, "duplicate_entry", "'modelDescription.xml'", "twice")


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("modelDescription.xml", "modelDescription.xml"),
        ("binaries/linux64/m.so", "binaries/linux64/m.so"),
        ("documentation/", "documentation"),
        ("resources/caf\u00e9 data.txt", "resources/caf\u00e9 data.txt"),
        ("resources/..data/...", "resources/..data/..."),
    ],
)
def test_an_accepted_name_is_extracted_under_itself(name: str, path: str) -> None:
    assert normalized_entry_path(name) == path


# zipfile (like other unzip tools) writes "./a", "a//b" and "a/./b" to "a" and "a/b", so two
# such entries are inspected as two files and extracted as one: the last one written wins. On a
# case-insensitive file system the same goes for names that differ only in letter case.
EVIL_DESCRIPTION = FMI2_BOUNCING_BALL.replace('modelName="BouncingBall"', 'modelName="Evil"')
FMI2_ENTRIES: list[tuple[str, str | bytes]] = [
    ("modelDescription.xml", FMI2_BOUNCING_BALL),
    ("binaries/linux64/BouncingBall.so", DUMMY_BINARY),
]
COLLIDING_ARCHIVES: dict[str, tuple[list[tuple[str, str | bytes]], tuple[str, ...]]] = {
    "dot-slash after": (
        [*FMI2_ENTRIES, ("./modelDescription.xml", EVIL_DESCRIPTION)],
        ("'modelDescription.xml'", "'./modelDescription.xml'"),
    ),
    "dot-slash before": (
        [("./modelDescription.xml", EVIL_DESCRIPTION), *FMI2_ENTRIES],
        ("'modelDescription.xml'", "'./modelDescription.xml'"),
    ),
    "double slash": (
        [*FMI2_ENTRIES, ("binaries//linux64/BouncingBall.so", b"other")],
        ("'binaries/linux64/BouncingBall.so'", "'binaries//linux64/BouncingBall.so'"),
    ),
    "dot component": (
        [*FMI2_ENTRIES, ("binaries/./linux64/BouncingBall.so", b"other")],
        ("'binaries/linux64/BouncingBall.so'", "'binaries/./linux64/BouncingBall.so'"),
    ),
    "folder case": (
        [("Binaries/linux64/BouncingBall.so", b"other"), *FMI2_ENTRIES],
        ("'Binaries/linux64/BouncingBall.so'", "'binaries/linux64/BouncingBall.so'"),
    ),
    "description case": (
        [*FMI2_ENTRIES, ("ModelDescription.XML", EVIL_DESCRIPTION)],
        ("'modelDescription.xml'", "'ModelDescription.XML'"),
    ),
    "exact duplicate": (
        [*FMI2_ENTRIES, ("binaries/linux64/BouncingBall.so", b"other")],
        ("'binaries/linux64/BouncingBall.so'", "twice"),
    ),
    "file and folder": (
        [*FMI2_ENTRIES, ("resources/a", b"file"), ("resources/a/b", b"file below")],
        ("'resources/a'", "'resources/a/b'"),
    ),
    "folder and file": (
        [*FMI2_ENTRIES, ("resources/a/b", b"file below"), ("resources/A", b"file")],
        ("'resources/a/b'", "'resources/A'"),
    ),
    "folder entry and file": (
        [*FMI2_ENTRIES, ("resources/a/", b""), ("resources/a", b"file")],
        ("'resources/a/'", "'resources/a'"),
    ),
    "folder spelled two ways": (
        [*FMI2_ENTRIES, ("Resources/x.txt", b"x"), ("resources/y.txt", b"y")],
        ("'Resources/x.txt'", "'resources/y.txt'"),
    ),
}


@pytest.mark.parametrize("case", COLLIDING_ARCHIVES, ids=list(COLLIDING_ARCHIVES))
def test_entries_extracted_to_the_same_place_are_refused(tmp_path: Path, case: str) -> None:
    entries, names = COLLIDING_ARCHIVES[case]
    path = build_archive(tmp_path / "collision.fmu", entries)

    assert_refused(path, "duplicate_entry", *names)


def test_a_nul_byte_cannot_hide_a_second_model_description(tmp_path: Path) -> None:
    # zipfile cuts names at NUL, so "modelDescription.xml\0.txt" is extracted as the description.
    path = build_archive(
        tmp_path / "nul.fmu", [*FMI2_ENTRIES, ("modelDescription.xml_.txt", EVIL_DESCRIPTION)]
    )
    data = path.read_bytes().replace(b"modelDescription.xml_.txt", b"modelDescription.xml\0.txt")
    path.write_bytes(data)
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist().count("modelDescription.xml") == 2

    assert_refused(
        path, "duplicate_entry", "'modelDescription.xml'", "'modelDescription.xml\\x00.txt'"
    )


def test_model_description_read_is_capped_whatever_the_directory_says(tmp_path: Path) -> None:
    assert_refused(
        fmi2_fmu(tmp_path),
        "model_description_too_large",
        "1.0 KiB",
        status=413,
        limits=FMULimits(max_model_description_bytes=1024),
    )


def test_model_description_lying_about_its_size_is_not_trusted(tmp_path: Path) -> None:
    path = build_fmu(
        tmp_path / "liar.fmu",
        {"modelDescription.xml": FMI2_BOUNCING_BALL, "binaries/linux64/BouncingBall.so": b"x"},
        compression=zipfile.ZIP_STORED,
    )
    data = bytearray(path.read_bytes())
    declared_size = len(FMI2_BOUNCING_BALL.encode())
    central_header = data.find(b"PK\x01\x02")
    local_header = data.find(b"PK\x03\x04")
    # Claim 100 bytes in both headers; the entry really holds the whole file.
    assert struct.unpack_from("<I", data, central_header + 24)[0] == declared_size
    struct.pack_into("<II", data, central_header + 20, 100, 100)
    struct.pack_into("<II", data, local_header + 18, 100, 100)
    path.write_bytes(bytes(data))

    assert_refused(path, "corrupt_zip", "modelDescription.xml")


# --- modelDescription.xml ----------------------------------------------------------------------


def test_missing_model_description(tmp_path: Path) -> None:
    path = build_fmu(tmp_path / "empty.fmu", {"binaries/linux64/BouncingBall.so": DUMMY_BINARY})

    assert_refused(path, "missing_model_description", "modelDescription.xml")


def test_model_description_inside_a_folder_gets_a_hint(tmp_path: Path) -> None:
    path = build_fmu(
        tmp_path / "nested.fmu",
        {
            "BouncingBall/modelDescription.xml": FMI2_BOUNCING_BALL,
            "BouncingBall/binaries/linux64/BouncingBall.so": DUMMY_BINARY,
        },
    )

    assert_refused(path, "missing_model_description", "BouncingBall/modelDescription.xml")


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE fmiModelDescription [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<fmiModelDescription fmiVersion="2.0" modelName="&lol9;" guid="x">
  <CoSimulation modelIdentifier="BouncingBall"/>
</fmiModelDescription>
"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE fmiModelDescription [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<fmiModelDescription fmiVersion="2.0" modelName="x" guid="x" description="&secret;">
  <CoSimulation modelIdentifier="BouncingBall"/>
</fmiModelDescription>
"""


def test_billion_laughs_is_refused_without_expanding(tmp_path: Path) -> None:
    path = fmi2_fmu(tmp_path, BILLION_LAUGHS)

    started = time.perf_counter()
    assert_refused(path, "xml_entities_forbidden", "DOCTYPE")
    assert time.perf_counter() - started < 1.0


def test_external_entity_is_refused_and_not_read(tmp_path: Path) -> None:
    path = fmi2_fmu(tmp_path, EXTERNAL_ENTITY)

    error = assert_refused(path, "xml_entities_forbidden", "entity")
    assert "root:" not in error.message


def test_any_doctype_is_refused_even_without_entities(tmp_path: Path) -> None:
    model_description = FMI2_BOUNCING_BALL.replace(
        "<fmiModelDescription ",
        '<!DOCTYPE fmiModelDescription SYSTEM "http://example.invalid/fmi.dtd">\n'
        "<fmiModelDescription ",
        1,
    )

    assert_refused(fmi2_fmu(tmp_path, model_description), "xml_entities_forbidden", "DOCTYPE")


@pytest.mark.parametrize(
    ("xml", "reason"),
    [
        ("<fmiModelDescription fmiVersion='2.0'", "not well-formed XML"),
        ("<?xml version='1.0' encoding='no-such-codec'?><a/>", "no-such-codec"),
        ("<model fmiVersion='2.0'/>", "<model>"),
    ],
)
def test_unparseable_model_description_gives_the_parser_reason(
    tmp_path: Path, xml: str, reason: str
) -> None:
    assert_refused(fmi2_fmu(tmp_path, xml), "invalid_model_description", reason)


@pytest.mark.parametrize("version", ["4.0", "3.0-beta.2", "2"])
def test_unsupported_fmi_version_is_named(tmp_path: Path, version: str) -> None:
    model_description = FMI2_BOUNCING_BALL.replace('fmiVersion="2.0"', f'fmiVersion="{version}"')

    assert_refused(fmi2_fmu(tmp_path, model_description), "unsupported_fmi_version", f'"{version}"')


def test_maintenance_release_versions_are_read_as_their_major_minor(tmp_path: Path) -> None:
    model_description = FMI2_BOUNCING_BALL.replace('fmiVersion="2.0"', 'fmiVersion="2.0.4"')

    assert inspect_fmu(fmi2_fmu(tmp_path, model_description)).fmi_version == "2.0"


def test_model_identifier_must_be_a_c_identifier(tmp_path: Path) -> None:
    model_description = FMI2_BOUNCING_BALL.replace(
        '<CoSimulation modelIdentifier="BouncingBall"',
        '<CoSimulation modelIdentifier="../../lib/evil"',
    )

    assert_refused(fmi2_fmu(tmp_path, model_description), "invalid_model_description", "../../")


# --- binaries ----------------------------------------------------------------------------------


def test_windows_only_fmu_names_its_platforms(tmp_path: Path) -> None:
    path = build_fmu(
        tmp_path / "win.fmu",
        {
            "modelDescription.xml": FMI2_BOUNCING_BALL,
            "binaries/win64/BouncingBall.dll": DUMMY_BINARY,
            "binaries/darwin64/BouncingBall.dylib": DUMMY_BINARY,
        },
    )

    error = assert_refused(path, "no_binary_for_platform", "darwin64, win64 only", "linux64")
    assert "x86_64-linux" in error.message


def test_source_only_fmu_is_refused(tmp_path: Path) -> None:
    path = build_fmu(
        tmp_path / "src.fmu",
        {"modelDescription.xml": FMI2_BOUNCING_BALL, "sources/model.c": "int main;"},
    )

    assert_refused(path, "no_binary_for_platform", "only C sources", "linux64")


def test_binary_named_unlike_the_model_identifier_is_refused(tmp_path: Path) -> None:
    path = build_fmu(
        tmp_path / "misnamed.fmu",
        {
            "modelDescription.xml": FMI2_BOUNCING_BALL,
            "binaries/linux64/Other.so": DUMMY_BINARY,
        },
    )

    assert_refused(path, "no_binary_for_platform", "binaries/linux64/BouncingBall.so")
