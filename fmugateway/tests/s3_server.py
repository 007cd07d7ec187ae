"""A real S3-compatible HTTP server for tests: moto's server mode, on a free local port.

It runs in the test process (moto keeps its buckets in this process's memory), so a test can
stop it — the port closes, clients get "connection refused" — and start it again on the same
port with every object still there.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import boto3
import requests
from botocore.config import Config
from moto.server import ThreadedMotoServer

from fmugateway.tests.live_server import free_port

ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key"
REGION = "us-east-1"


class S3TestServer:
    """moto's ThreadedMotoServer whose stop() really closes the listening socket."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._server: ThreadedMotoServer | None = None

    def start(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.stop()
        # ThreadedMotoServer.stop() leaves the socket bound and listening: connections would
        # queue instead of being refused, which is not what a stopped server does.
        # (Its _server, BaseWSGIServer | None, is set once started.)
        self._server._server.server_close()  # type: ignore[union-attr]
        self._server = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
            config=Config(retries={"total_max_attempts": 1}),
        )

    def create_bucket(self) -> Bucket:
        name = f"fmugw-test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return Bucket(server=self, name=name)

    def reset(self) -> None:
        """Forget every bucket (moto's own reset endpoint), so memory does not pile up."""
        requests.post(f"{self.endpoint_url}/moto-api/reset", timeout=30)


@dataclass
class Bucket:
    server: S3TestServer
    name: str

    def environment(self) -> dict[str, str]:
        """The variables that switch a web or worker process onto this bucket."""
        return {
            "AWS_STORAGE_BUCKET_NAME": self.name,
            "AWS_S3_ENDPOINT_URL": self.server.endpoint_url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_S3_REGION_NAME": REGION,
        }

    def tigris_environment(self) -> dict[str, str]:
        """The same, under the names `fly storage create` sets as secrets."""
        return {
            "BUCKET_NAME": self.name,
            "AWS_ENDPOINT_URL_S3": self.server.endpoint_url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
        }

    def storage_options(self) -> dict[str, str]:
        """OPTIONS for settings.STORAGES, to put this test process on the bucket too."""
        return {
            "bucket_name": self.name,
            "endpoint_url": self.server.endpoint_url,
            "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY,
            "region_name": REGION,
        }

    def object_keys(self, prefix: str = "") -> list[str]:
        """Every object key under prefix, read straight from the server (not through Django)."""
        pages = self.server.client().get_paginator("list_objects_v2")
        return sorted(
            item["Key"]
            for page in pages.paginate(Bucket=self.name, Prefix=prefix)
            for item in page.get("Contents", [])
        )

    def read(self, key: str) -> bytes:
        return self.server.client().get_object(Bucket=self.name, Key=key)["Body"].read()

    def size(self, key: str) -> int:
        return self.server.client().head_object(Bucket=self.name, Key=key)["ContentLength"]
