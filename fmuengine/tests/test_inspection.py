"""Pins what fmuengine.inspection accepts and refuses, on small FMUs written by hand
(fmuengine/tests/fmus/handwritten.py)."""

import json
import stat
import struct
import time
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
from fmuengine.tests.fmus.handwritten import (
    BILLION_LAUGHS,
    COLLIDING_ARCHIVES,
    DUMMY_BINARY,
    EVIL_DESCRIPTION,
    EXTERNAL_ENTITY,
    FMI1_CO_SIMULATION,
    FMI1_MODEL_EXCHANGE,
    FMI2_BOUNCING_BALL,
    FMI2_ENTRIES,
    FMI3_BOUNCING_BALL,
    build_archive,
    build_fmu,
    fmi2_fmu,
)


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
