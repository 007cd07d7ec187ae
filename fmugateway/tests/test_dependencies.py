"""Dependencies by intent: requirements*.in declare them, `make lock` pins them in *.txt.

requirements.in and requirements-dev.in list the direct dependencies; requirements.txt and
requirements-dev.txt are compiled from them (uv pip compile) and hold every package pinned.
These tests catch a .in edited without `make lock`, a .txt edited by hand out of step with
its .in, and a dev set that would change a runtime pin.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)$")


def direct_dependencies(in_file: str) -> dict[str, Requirement]:
    """The requirements a .in file declares itself (not those of its -r/-c files)."""
    declared: dict[str, Requirement] = {}
    for raw in (ROOT / in_file).read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name not in declared, f"{in_file}: {requirement.name} declared twice"
        declared[name] = requirement
    return declared


def included_files(in_file: str, option: str) -> list[str]:
    return [
        line.split(None, 1)[1].strip()
        for line in (ROOT / in_file).read_text().splitlines()
        if line.startswith(f"{option} ")
    ]


def compiled(txt_file: str) -> tuple[dict[str, str], dict[str, set[str]]]:
    """{name: version} of a compiled file, and {name: what pulled it in} (uv's annotations)."""
    pins: dict[str, str] = {}
    sources: dict[str, set[str]] = {}
    current = None
    for raw in (ROOT / txt_file).read_text().splitlines():
        if not raw.strip():
            continue
        if not raw.startswith((" ", "#")):
            match = PIN.match(raw.strip())
            assert match, f"{txt_file}: not an exact pin without extras: {raw!r}"
            current = canonicalize_name(match["name"])
            assert current not in pins, f"{txt_file}: {match['name']} pinned twice"
            pins[current] = match["version"]
            sources[current] = set()
        elif current is not None and raw.startswith(" "):
            note = raw.strip().lstrip("#").strip()
            note = note.removeprefix("via").strip()
            if note:
                sources[current].add(note)
    return pins, sources


RUNTIME = direct_dependencies("requirements.in")
DEV = direct_dependencies("requirements-dev.in")
RUNTIME_PINS, RUNTIME_SOURCES = compiled("requirements.txt")
DEV_PINS, DEV_SOURCES = compiled("requirements-dev.txt")


def test_the_dev_set_builds_on_the_runtime_set_and_is_constrained_by_its_pins():
    assert included_files("requirements-dev.in", "-r") == ["requirements.in"]
    assert included_files("requirements-dev.in", "-c") == ["requirements.txt"]
    assert not included_files("requirements.in", "-r")
    assert not included_files("requirements.in", "-c")


def test_no_dependency_is_declared_in_both_files():
    assert not RUNTIME.keys() & DEV.keys()


@pytest.mark.parametrize(
    ("in_file", "declared", "pins"),
    [
        ("requirements.in", RUNTIME, RUNTIME_PINS),
        ("requirements.in", RUNTIME, DEV_PINS),
        ("requirements-dev.in", DEV, DEV_PINS),
    ],
    ids=["runtime-in-runtime-txt", "runtime-in-dev-txt", "dev-in-dev-txt"],
)
def test_every_direct_dependency_is_pinned_within_what_it_declares(in_file, declared, pins):
    missing = sorted(name for name in declared if name not in pins)
    assert not missing, f"declared in {in_file} but not pinned: {missing}; run `make lock`"
    outside = sorted(
        f"{name}=={pins[name]} (wants {requirement.specifier})"
        for name, requirement in declared.items()
        if not requirement.specifier.contains(pins[name], prereleases=True)
    )
    assert not outside, f"{in_file}: {outside}; run `make lock`"


@pytest.mark.parametrize(
    ("txt_file", "in_file", "declared", "sources"),
    [
        ("requirements.txt", "requirements.in", RUNTIME, RUNTIME_SOURCES),
        ("requirements-dev.txt", "requirements-dev.in", DEV, DEV_SOURCES),
    ],
    ids=["runtime", "dev"],
)
def test_the_compiled_file_was_compiled_from_todays_in_file(txt_file, in_file, declared, sources):
    """What the .txt says came from the .in is exactly what the .in declares."""
    from_in_file = {name for name, notes in sources.items() if f"-r {in_file}" in notes}
    assert from_in_file == set(declared), (
        f"{txt_file} is out of step with {in_file}: "
        f"only in the .txt {sorted(from_in_file - set(declared))}, "
        f"only in the .in {sorted(set(declared) - from_in_file)}; run `make lock`"
    )
    pulled_in_by_nothing = sorted(name for name, notes in sources.items() if not notes)
    assert not pulled_in_by_nothing, (
        f"{txt_file}: pins that nothing pulls in (added by hand?): {pulled_in_by_nothing}; "
        f"declare direct dependencies in {in_file}, then `make lock`"
    )


def test_the_dev_set_pins_every_runtime_package_at_the_runtime_version():
    changed = {
        name: (version, DEV_PINS.get(name))
        for name, version in RUNTIME_PINS.items()
        if DEV_PINS.get(name) != version
    }
    assert not changed, f"requirements-dev.txt changes runtime pins (runtime, dev): {changed}"


def test_the_s3_tests_get_moto_without_the_whole_of_aws():
    """moto[server] would bring every service's backend; the S3 server needs none of them."""
    assert DEV["moto"].extras == {"s3"}
    for needed in ("moto", "flask", "flask-cors", "werkzeug"):
        assert needed in DEV_PINS
    for unneeded in ("cfn-lint", "aws-xray-sdk", "docker", "joserfc", "sympy"):
        assert unneeded not in DEV_PINS
