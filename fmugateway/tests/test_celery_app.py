"""How the Celery worker treats its database connection between tasks."""

import pytest

# celery-types 0.26 stubs only DjangoFixup; celery/fixups/django.py defines this one too.
from celery.fixups.django import DjangoWorkerFixup  # type: ignore[attr-defined]
from celery.signals import task_postrun, task_prerun
from django.db import connection

from fmugateway.celery import app as celery_app


class FakeTask:
    """What the fixup and the signals look at: a (hashable) sender with a request."""

    class request:
        is_eager = False


@pytest.mark.django_db(transaction=True)
def test_a_worker_keeps_its_database_connection_from_task_to_task():
    # The fixup a worker installs, given the same signals a worker sends around tasks.
    fixup = DjangoWorkerFixup(celery_app)
    task = FakeTask()
    # A connection of its own, younger than CONN_MAX_AGE: one this test process opened
    # earlier (tests run in any order, in parallel processes) may be due for closing.
    connection.close()
    connection.ensure_connection()
    first_connection = connection.connection

    for _ in range(20):
        fixup.on_task_prerun(sender=task)
        task_prerun.send(sender=task, task_id="t", task=task, args=(), kwargs={})
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        fixup.on_task_postrun(sender=task)
        task_postrun.send(sender=task, task_id="t", task=task, args=(), kwargs={}, retval=None)

    assert connection.connection is first_connection


@pytest.mark.django_db(transaction=True)
def test_a_broken_connection_is_replaced_before_the_next_task():
    task = FakeTask()
    connection.ensure_connection()
    broken = connection.connection
    broken.close()  # as if the server had dropped it

    task_prerun.send(sender=task, task_id="t", task=task, args=(), kwargs={})
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)

    assert connection.connection is not broken
