"""Fixtures shared by the simulations tests."""

import pytest

OBJECT_STORAGE_BACKEND = "core.object_storage.ObjectStorage"


@pytest.fixture(scope="session")
def s3_server():
    """One S3-compatible server (moto) for the session; see fmugateway/tests/s3_server.py."""
    from fmugateway.tests.s3_server import S3TestServer

    server = S3TestServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server):
    """A new, empty bucket for one test, emptied and removed afterwards."""
    bucket = s3_server.create_bucket()
    yield bucket
    if s3_server.running:
        client = s3_server.client()
        for key in bucket.object_keys():
            client.delete_object(Bucket=bucket.name, Key=key)
        client.delete_bucket(Bucket=bucket.name)


@pytest.fixture
def s3_storage(settings, s3_bucket):
    """Put this test process's default storage on the bucket too; returns the bucket."""
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": OBJECT_STORAGE_BACKEND, "OPTIONS": s3_bucket.storage_options()},
    }
    return s3_bucket
