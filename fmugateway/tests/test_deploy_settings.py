"""Production settings pass Django's deployment checklist, and refuse per-machine state."""

import os
import subprocess
import sys

from django.conf import settings

PRODUCTION_ENVIRONMENT = {
    "SECRET_KEY": "x7!kq-production-like-secret-key-with-plenty-of-entropy-3f9a0c2e1b",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/fmugateway",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
    "SITE_URL": "https://fmugateway.fly.dev",
    "FLY_APP_NAME": "fmugateway",
    "BUCKET_NAME": "fmugateway-files",
    "AWS_ENDPOINT_URL_S3": "https://fly.storage.tigris.dev",
    "AWS_REGION": "auto",
}


def manage(*args: str, environment: dict[str, str]) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ["PATH"], "VAR_DIR": str(settings.VAR_DIR)}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=settings.BASE_DIR,
        env={**base, **environment},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_deploy_is_clean_with_production_settings():
    result = manage(
        "check", "--deploy", "--fail-level", "WARNING", environment=PRODUCTION_ENVIRONMENT
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNING" not in result.stderr


def test_refuses_sqlite_on_fly():
    environment = {k: v for k, v in PRODUCTION_ENVIRONMENT.items() if k != "DATABASE_URL"}
    result = manage("check", environment=environment)
    assert result.returncode != 0
    assert "Refusing to start on Fly.io with SQLite" in result.stderr


def test_refuses_the_filesystem_broker_on_fly():
    environment = {k: v for k, v in PRODUCTION_ENVIRONMENT.items() if k != "CELERY_BROKER_URL"}
    result = manage("check", environment=environment)
    assert result.returncode != 0
    assert "filesystem broker" in result.stderr


def test_refuses_local_file_storage_on_fly():
    environment = {k: v for k, v in PRODUCTION_ENVIRONMENT.items() if k != "BUCKET_NAME"}
    result = manage("check", environment=environment)
    assert result.returncode != 0
    assert "Refusing to start on Fly.io with local file storage" in result.stderr


def test_a_shared_database_requires_an_explicit_secret_key():
    environment = {k: v for k, v in PRODUCTION_ENVIRONMENT.items() if k != "SECRET_KEY"}
    result = manage("check", environment=environment)
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr
