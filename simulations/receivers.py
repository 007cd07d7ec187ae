"""Stored files follow their rows: whichever way a model or a run is deleted, its file goes too.

Receivers, not only services, because rows are also deleted by cascades (an account deleted)
and by the admin. Files are released after commit: a rolled-back delete keeps its file.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from simulations import services
from simulations.models import Model, Simulation


@receiver(post_delete, sender=Model, dispatch_uid="simulations.release_stored_fmu")
def release_stored_fmu(sender, instance: Model, **kwargs) -> None:
    sha256, storage_name = instance.sha256, instance.storage_name
    transaction.on_commit(
        lambda: services.stored_fmu_release(sha256=sha256, storage_name=storage_name)
    )


@receiver(post_delete, sender=Simulation, dispatch_uid="simulations.release_stored_result")
def release_stored_result(sender, instance: Simulation, **kwargs) -> None:
    if instance.result_name:
        storage_name = instance.result_name
        transaction.on_commit(lambda: services.stored_result_release(storage_name=storage_name))
