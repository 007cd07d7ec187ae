"""Pins fmuengine.extraction: an FMU is written to disk exactly as inspection saw it, and its
modelDescription.xml reaches fmpy (lxml) only after the upload's defused checks passed."""

import io
import os
import pickle
import stat
import struct
import zipfile
from pathlib import Path
from typing import cast

import pytest
from fmpy.model_description import read_model_description

from fmuengine.archive import ArchiveEntry, write_entries
from fmuengine.inspection import FMULimits, InvalidFMU, extract_fmu, read_model_description_safely
from fmuengine.tests.fmus.build import TEST_MODELS
from fmuengine.tests.fmus.handwritten import (
    BILLION_LAUGHS,
    COLLIDING_ARCHIVES,
    DUMMY_BINARY,
    EXTERNAL_ENTITY,
    FMI2_BOUNCING_BALL,
    FMI2_ENTRIES,
    build_archive,
)

LIMITS = FMULimits()


def tree(root: Path) -> tuple[dict[str, tuple[bytes, int]], dict[str, int]]:
    """Files (relative path -> bytes, mode) and folders (relative path -> mode) under root."""
    files: dict[str, tuple[bytes, int]] = {}
    folders: dict[str, int] = {}
    for parent, directory_names, file_names in os.walk(root):
        for name in directory_names:
            path = Path(parent, name)
            folders[path.relative_to(root).as_posix()] = stat.S_IMODE(path.lstat().st_mode)
        for name in file_names:
            path = Path(parent, name)
            assert path.is_file() and not path.is_symlink(), path
            files[path.relative_to(root).as_posix()] = (
                path.read_bytes(),
                stat.S_IMODE(path.lstat().st_mode),
            )
    return files, folders


def refuse_extraction(fmu: Path, target: Path, code: str, *words: str) -> InvalidFMU:
    with pytest.raises(InvalidFMU) as caught:
        extract_fmu(fmu, target, limits=LIMITS)
    error = caught.value
    assert error.code == code, error
    for word in words:
        assert word in error.message, error
    return error


# --- extract_fmu -------------------------------------------------------------------------------


def test_extract_writes_exactly_the_inspected_files_with_fixed_modes(tmp_path: Path) -> None:
    path = tmp_path / "model.fmu"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("modelDescription.xml", FMI2_BOUNCING_BALL)
        binary = zipfile.ZipInfo("binaries/linux64/BouncingBall.so")
        binary.create_system = 3
        # setuid and world-writable in the archive: modes from the archive are not copied.
        binary.external_attr = (stat.S_IFREG | 0o4777) << 16
        archive.writestr(binary, DUMMY_BINARY)
        archive.writestr("documentation/", b"")
        archive.writestr("resources/data/table.csv", b"1,2\n" * 1000)
        archive.writestr("resources/empty.txt", b"")
        archive.writestr("resources/", b"")
    target = tmp_path / "out"

    # A restrictive umask must not make the files unreadable to the runs' uids.
    previous_umask = os.umask(0o077)
    try:
        extract_fmu(path, target, limits=LIMITS)
    finally:
        os.umask(previous_umask)

    files, folders = tree(target)
    assert files == {
        "modelDescription.xml": (FMI2_BOUNCING_BALL.encode(), 0o644),
        "binaries/linux64/BouncingBall.so": (DUMMY_BINARY, 0o644),
        "resources/data/table.csv": (b"1,2\n" * 1000, 0o644),
        "resources/empty.txt": (b"", 0o644),
    }
    assert folders == dict.fromkeys(
        ["binaries", "binaries/linux64", "documentation", "resources", "resources/data"], 0o755
    )
    assert stat.S_IMODE(target.stat().st_mode) == 0o755


@pytest.mark.parametrize("case", COLLIDING_ARCHIVES, ids=list(COLLIDING_ARCHIVES))
def test_extract_refuses_colliding_entries_before_writing(tmp_path: Path, case: str) -> None:
    entries, names = COLLIDING_ARCHIVES[case]
    path = build_archive(tmp_path / "collision.fmu", entries)
    target = tmp_path / "out"

    refuse_extraction(path, target, "duplicate_entry", *names)
    assert not target.exists()


@pytest.mark.parametrize(
    "entry_name", ["../evil.so", "/tmp/evil.so", "resources\\..\\..\\evil.so", "./evil.so"]
)
def test_extract_refuses_unsafe_names_before_writing(tmp_path: Path, entry_name: str) -> None:
    path = build_archive(tmp_path / "slip.fmu", [*FMI2_ENTRIES, (entry_name, DUMMY_BINARY)])
    target = tmp_path / "sub" / "out"
    target.parent.mkdir()

    refuse_extraction(path, target, "unsafe_path", repr(entry_name))
    assert not target.exists()
    assert sorted(tmp_path.iterdir()) == [tmp_path / "slip.fmu", tmp_path / "sub"]


def test_extract_refuses_symlink_entries(tmp_path: Path) -> None:
    path = tmp_path / "link.fmu"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("modelDescription.xml", FMI2_BOUNCING_BALL)
        archive.writestr("binaries/linux64/BouncingBall.so", DUMMY_BINARY)
        link = zipfile.ZipInfo("resources/passwd")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")

    refuse_extraction(path, tmp_path / "out", "unsafe_path", "'resources/passwd'", "symbolic link")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_an_entry_longer_than_declared_fails_without_writing_past_its_size(
    tmp_path: Path, compression: int
) -> None:
    content = bytes(range(256)) * 40
    name = b"resources/data.bin"
    path = build_archive(
        tmp_path / "liar.fmu", [*FMI2_ENTRIES, (name.decode(), content)], compression
    )
    data = bytearray(path.read_bytes())
    local_header = data.find(name) - 30
    central_header = data.rfind(name) - 46
    assert data[local_header : local_header + 4] == b"PK\x03\x04"
    assert data[central_header : central_header + 4] == b"PK\x01\x02"
    declared = 100
    # Both headers claim 100 bytes; the data really holds 10 KiB (for deflate: its stream
    # really expands to 10 KiB, and for stored data the bytes follow regardless).
    struct.pack_into("<I", data, local_header + 22, declared)
    struct.pack_into("<I", data, central_header + 24, declared)
    if compression == zipfile.ZIP_STORED:
        struct.pack_into("<I", data, local_header + 18, declared)
        struct.pack_into("<I", data, central_header + 20, declared)
    path.write_bytes(bytes(data))
    target = tmp_path / "out"

    refuse_extraction(path, target, "corrupt_zip", "'resources/data.bin'")
    written = target / "resources" / "data.bin"
    assert written.stat().st_size <= declared


def test_writing_stops_at_the_checked_size_whatever_the_reader_returns(tmp_path: Path) -> None:
    # zipfile itself never returns more than the declared size; write_entries does not rely on it.
    class EndlessArchive:
        def open(self, info: zipfile.ZipInfo) -> io.BytesIO:
            return io.BytesIO(b"x" * (3 * 1024**2))

    info = zipfile.ZipInfo("resources/data.bin")
    info.file_size = 100

    with pytest.raises(InvalidFMU) as caught:
        archive = cast(zipfile.ZipFile, EndlessArchive())  # only open() is called
        write_entries(archive, [ArchiveEntry(info, info.filename)], tmp_path / "out")
    assert caught.value.code == "corrupt_zip"
    assert "longer than its declared size" in caught.value.message
    assert (tmp_path / "out" / "resources" / "data.bin").stat().st_size <= 100


def test_extract_never_writes_through_what_is_already_in_the_target(tmp_path: Path) -> None:
    path = build_archive(tmp_path / "model.fmu", FMI2_ENTRIES)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    target = tmp_path / "out"
    target.mkdir()
    (target / "modelDescription.xml").symlink_to(victim)

    with pytest.raises(FileExistsError):
        extract_fmu(path, target, limits=LIMITS)
    assert victim.read_text() == "keep"


# --- read_model_description_safely ---------------------------------------------------------------


@pytest.fixture
def lxml_parse_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every call to lxml's parse entry points (which still parse), by name."""
    from lxml import etree

    calls: list[str] = []

    def recording(name, original):
        def record(*args, **kwargs):
            calls.append(name)
            return original(*args, **kwargs)

        return record

    for name in ("parse", "fromstring", "XML", "XMLParser", "iterparse"):
        monkeypatch.setattr(etree, name, recording(name, getattr(etree, name)))
    return calls


@pytest.mark.parametrize("xml", [BILLION_LAUGHS, EXTERNAL_ENTITY], ids=["laughs", "external"])
def test_a_doctype_never_reaches_lxml(
    tmp_path: Path, fmu_paths: dict[str, Path], lxml_parse_calls: list[str], xml: str
) -> None:
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    (hostile / "modelDescription.xml").write_text(xml)

    with pytest.raises(InvalidFMU) as caught:
        read_model_description_safely(hostile, limits=LIMITS)
    assert caught.value.code == "xml_entities_forbidden"
    assert lxml_parse_calls == []

    # The recorder does see fmpy's parse once the checks pass, so the empty list above is real.
    extract_fmu(fmu_paths["bouncing_ball"], tmp_path / "good", limits=LIMITS)
    read_model_description_safely(tmp_path / "good", limits=LIMITS)
    assert "parse" in lxml_parse_calls


@pytest.mark.parametrize("name", list(TEST_MODELS))
def test_description_read_safely_equals_fmpys_own(
    tmp_path: Path, fmu_paths: dict[str, Path], name: str
) -> None:
    extract_fmu(fmu_paths[name], tmp_path / "out", limits=LIMITS)

    ours = read_model_description_safely(tmp_path / "out", limits=LIMITS)

    fmpys = read_model_description(str(fmu_paths[name]), validate=True)
    assert ours.modelName == fmpys.modelName
    assert pickle.dumps(ours) == pickle.dumps(fmpys)


def test_read_safely_caps_the_description_size(tmp_path: Path) -> None:
    (tmp_path / "modelDescription.xml").write_text(FMI2_BOUNCING_BALL)

    with pytest.raises(InvalidFMU) as caught:
        read_model_description_safely(tmp_path, limits=FMULimits(max_model_description_bytes=1024))
    assert (caught.value.code, caught.value.status) == ("model_description_too_large", 413)


def test_read_safely_without_a_description(tmp_path: Path) -> None:
    with pytest.raises(InvalidFMU) as caught:
        read_model_description_safely(tmp_path, limits=LIMITS)
    assert caught.value.code == "missing_model_description"
