"""Small FMUs written by hand, as ZIPs: model descriptions (FMI 1, 2, 3), hostile XML and
archives whose entries collide, with the helpers that write them. No compiler needed.

The compiled test models (real binaries that run) are in build.py; these have a dummy
binary, for inspecting and extracting, never for running.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

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
