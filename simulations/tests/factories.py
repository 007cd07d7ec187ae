"""Models and runs for tests.

- `ModelFactory`: a row only (no stored file), summarised from a hand-written FMI 2
  bouncing ball (fmuengine/tests/fmus/handwritten.py): enough for pages, params, admin.
- `UploadedModelFactory(owner=..., fmu=path)` / `upload_model(owner, path)`: a real FMU
  stored and recorded through the upload service, as the API does it.
- `SimulationFactory`: a queued run by default; traits `running`, `lease_expired` (a
  running run whose worker was lost), `succeeded` (with a stored result table of
  `result_rows` rows: time, h, v) and `failed`.
"""

from __future__ import annotations

import functools
import hashlib
import io
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import cast

import factory
import numpy as np
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from accounts.tests.factories import UserFactory
from simulations.models import Model, Simulation, SimulationStatus


@functools.cache
def handwritten_summary() -> dict:
    """The inspection summary (JSON) of fmuengine's hand-written FMI 2 bouncing ball."""
    from fmuengine.inspection import inspect_fmu
    from fmuengine.tests.fmus.handwritten import fmi2_fmu

    with tempfile.TemporaryDirectory() as directory:
        return inspect_fmu(fmi2_fmu(Path(directory))).to_json()


class ModelFactory(factory.django.DjangoModelFactory):
    """A model row without a stored file: BouncingBall (FMI 2.0, CS and ME, linux64)."""

    class Meta:
        model = Model

    owner = factory.SubFactory(UserFactory)
    file_name = "BouncingBall.fmu"
    sha256 = factory.Sequence(lambda n: hashlib.sha256(f"model {n}".encode()).hexdigest())
    size = 4096
    storage_name = factory.LazyAttribute(
        lambda model: f"fmus/{model.sha256[:2]}/{model.sha256}.fmu"
    )
    summary = factory.LazyFunction(handwritten_summary)
    model_name = factory.LazyAttribute(lambda model: model.summary["model_name"])
    description = factory.LazyAttribute(lambda model: model.summary.get("description") or "")
    fmi_version = factory.LazyAttribute(lambda model: model.summary["fmi_version"])
    guid = factory.LazyAttribute(lambda model: model.summary.get("guid") or "")
    generation_tool = factory.LazyAttribute(
        lambda model: model.summary.get("generation_tool") or ""
    )
    fmi_types = factory.LazyAttribute(lambda model: list(model.summary["fmi_types"]))
    runnable_fmi_types = factory.LazyAttribute(
        lambda model: list(model.summary["runnable_fmi_types"])
    )
    platforms = factory.LazyAttribute(lambda model: list(model.summary["platforms"]))
    default_experiment = factory.LazyAttribute(
        lambda model: dict(model.summary.get("default_experiment") or {})
    )


def upload_model(owner, path: Path) -> Model:
    """Upload an FMU as the API does (checked, stored once per content, recorded for owner),
    from a temporary copy: storage may consume the file it is given."""
    from simulations import services

    data = Path(path).read_bytes()
    with tempfile.TemporaryDirectory() as directory:
        upload = Path(directory) / Path(path).name
        upload.write_bytes(data)
        return services.model_upload(
            owner=owner,
            file_path=upload,
            file_name=Path(path).name,
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
        )


class UploadedModelFactory(factory.django.DjangoModelFactory):
    """`UploadedModelFactory(owner=user, fmu=fmu_paths["bouncing_ball"])`: see upload_model."""

    class Meta:
        model = Model

    owner = factory.SubFactory(UserFactory)

    @classmethod
    def _create(cls, model_class, owner, fmu, **kwargs):
        if kwargs:
            raise TypeError(f"an uploaded model is what its FMU says, not {sorted(kwargs)}")
        return upload_model(owner, fmu)


def result_table(rows: int) -> np.ndarray:
    """A result as the sandbox leaves it: time and two outputs, `rows` rows."""
    table = np.zeros(rows, dtype=[("time", "f8"), ("h", "f8"), ("v", "f8")])
    table["time"] = np.linspace(0, 100, rows)
    table["h"] = np.sin(table["time"])
    table["v"] = np.cos(table["time"])
    return table


def store_result_table(simulation: Simulation, rows: int) -> None:
    """Save a result of `rows` rows to storage for this run, as a finished run has one."""
    from simulations.results import result_storage_name

    buffer = io.BytesIO()
    np.save(buffer, result_table(rows))
    simulation.result_name = default_storage.save(
        result_storage_name(simulation.pk), ContentFile(buffer.getvalue())
    )
    simulation.result_rows = rows
    simulation.result_columns = ["time", "h", "v"]
    simulation.result_units = {"time": "s"}
    simulation.save(update_fields=["result_name", "result_rows", "result_columns", "result_units"])


class SimulationFactory(factory.django.DjangoModelFactory):
    """A queued run of a database-only model (pass `model=None, model_name=...` for none)."""

    class Meta:
        model = Simulation
        skip_postgeneration_save = True

    class Params:
        running = factory.Trait(
            status=SimulationStatus.RUNNING,
            attempts=1,
            started_at=factory.LazyFunction(lambda: timezone.now() - timedelta(seconds=5)),
            lease_expires_at=factory.LazyFunction(lambda: timezone.now() + timedelta(minutes=2)),
        )
        # Its worker took it, then died: the lease ran out with the run still "running".
        lease_expired = factory.Trait(
            status=SimulationStatus.RUNNING,
            attempts=1,
            started_at=factory.LazyFunction(lambda: timezone.now() - timedelta(minutes=5)),
            lease_expires_at=factory.LazyFunction(lambda: timezone.now() - timedelta(seconds=1)),
        )
        succeeded = factory.Trait(
            status=SimulationStatus.SUCCEEDED,
            attempts=1,
            progress=1.0,
            started_at=factory.LazyFunction(lambda: timezone.now() - timedelta(seconds=2)),
            finished_at=factory.LazyFunction(timezone.now),
            result_rows=10,
        )
        failed = factory.Trait(
            status=SimulationStatus.FAILED,
            attempts=1,
            started_at=factory.LazyFunction(lambda: timezone.now() - timedelta(seconds=2)),
            finished_at=factory.LazyFunction(timezone.now),
            error_code="model_crashed",
            error_message="The model crashed with SIGSEGV (segmentation fault).",
        )

    owner = factory.SubFactory(UserFactory)
    model = factory.SubFactory(ModelFactory, owner=factory.SelfAttribute("..owner"))
    model_name = factory.LazyAttribute(lambda run: run.model.model_name if run.model else "ball")
    params = factory.LazyFunction(lambda: {"timeout": 10})
    status = SimulationStatus.QUEUED
    charge = factory.LazyFunction(lambda: {"kind": "free"})

    @factory.post_generation
    def stored_result(obj, create, extracted, **kwargs):
        """A succeeded run gets its result table in storage (result_rows rows)."""
        if create and obj.status == SimulationStatus.SUCCEEDED and obj.result_rows:
            store_result_table(obj, obj.result_rows)


def run_with_result(owner, rows: int, **fields) -> Simulation:
    """A succeeded run without a model whose result (time, h, v) is already in storage."""
    run = SimulationFactory(
        owner=owner, model=None, model_name="big", succeeded=True, result_rows=rows, **fields
    )
    return cast(Simulation, run)  # factory_boy's Factory() makes the model
