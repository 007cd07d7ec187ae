"""Test databases for parallel test processes, migrated once: a template, then copies.

Migrating an empty PostgreSQL database takes a minute or more of CPU (dj-stripe's
migrations above all), and each xdist worker has a database of its own
(test_<name>_gw0, _gw1, ...; kept between runs by --reuse-db). A worker whose database
does not exist yet makes it as a copy of test_<name>_template (CREATE DATABASE ...
TEMPLATE: a file copy, about a second), which the first one to need it migrates; the
others wait on a PostgreSQL advisory lock meanwhile and only copy. The template is
migrated again (a no-op unless a migration was added) before each copy.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql


def _maintenance_connection(settings_dict: dict[str, Any]) -> psycopg.Connection:
    return psycopg.connect(
        dbname="postgres",
        host=settings_dict.get("HOST") or "127.0.0.1",
        port=settings_dict.get("PORT") or 5432,
        user=settings_dict.get("USER") or "postgres",
        password=settings_dict.get("PASSWORD") or None,
        autocommit=True,
    )


def _exists(cursor: psycopg.Cursor, name: str) -> bool:
    cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
    return cursor.fetchone() is not None


@contextmanager
def _locked(cursor: psycopg.Cursor, name: str) -> Iterator[None]:
    key = zlib.crc32(f"fmugateway test template {name}".encode())
    cursor.execute("SELECT pg_advisory_lock(%s)", [key])
    try:
        yield
    finally:
        cursor.execute("SELECT pg_advisory_unlock(%s)", [key])


def _migrate(connection: Any, name: str) -> None:
    """Migrate database `name` through Django's default connection, as create_test_db
    does (migrate with run_syncdb, then the cache table)."""
    from django.core.management import call_command

    real_name = connection.settings_dict["NAME"]
    connection.close()
    connection.settings_dict["NAME"] = name
    try:
        call_command("migrate", verbosity=0, interactive=False, run_syncdb=True)
        call_command("createcachetable", verbosity=0)
    finally:
        connection.close()
        connection.settings_dict["NAME"] = real_name


def copy_from_template(connection: Any) -> None:
    """Make this process's test database (TEST NAME) as a copy of the migrated template,
    unless it exists already (then pytest-django reuses it, migrating what is new)."""
    settings_dict = connection.settings_dict
    name = settings_dict["TEST"]["NAME"]
    template = f"test_{settings_dict['NAME']}_template"
    with _maintenance_connection(settings_dict) as maintenance, maintenance.cursor() as cursor:
        if _exists(cursor, name):
            return
        with _locked(cursor, template):
            if not _exists(cursor, template):
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(template)))
            _migrate(connection, template)
            cursor.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
