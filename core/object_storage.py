"""The S3-compatible storage backend (Tigris on Fly, AWS S3, MinIO): see settings.STORAGES.

Imported only when a bucket is configured, so embedded mode never loads boto3.
"""

from __future__ import annotations

import io
import threading
import uuid
from typing import IO, Any

from django.core.files import File
from storages.backends.s3 import S3Storage
from storages.utils import clean_name, setting

MEGABYTE = 1024 * 1024
# One ranged GET fills a buffer of this size: a read never holds more than this in memory.
READ_RANGE_BYTES = 4 * MEGABYTE
# Multipart uploads: 8 MB parts, 4 at a time (s3transfer's default is 10; a file object's
# parts are each held in memory while they are in flight).
UPLOAD_PART_BYTES = 8 * MEGABYTE
UPLOAD_PARTS_IN_FLIGHT = 4


class ObjectStorage(S3Storage):
    """django-storages' S3 backend, with reads that stream and timeouts that fail fast.

    S3Storage opens a file for reading by downloading the whole object into a temporary file
    (in memory unless AWS_S3_MAX_MEMORY_SIZE is set) before the first byte is returned; a
    result of a million rows would be fetched whole before a client sees any of it. Here a
    read is a series of ranged GETs, READ_RANGE_BYTES at a time.
    """

    def __init__(self, **options) -> None:
        from botocore.config import Config

        super().__init__(**options)
        fail_fast = Config(
            connect_timeout=setting("AWS_S3_CONNECT_TIMEOUT", 5),
            read_timeout=setting("AWS_S3_READ_TIMEOUT", 60),
            retries={"max_attempts": 3, "mode": "standard"},
            signature_version=self.signature_version or "s3v4",
            # boto3 >= 1.36 adds CRC checksums to every upload by default, which not every
            # S3-compatible service accepts; send them only where the API requires them.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        # Options the deployment set explicitly (AWS_S3_CLIENT_CONFIG) win over these.
        self.client_config: Config = fail_fast.merge(self.client_config)
        self._session = None
        self._session_lock = threading.Lock()
        self._probe_client = None

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        for name in ("_session", "_session_lock", "_probe_client"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._session = None
        self._session_lock = threading.Lock()
        self._probe_client = None

    @property
    def connection(self):
        """This thread's S3 resource, made from one boto3 session shared by all threads.

        django-storages makes a session per thread, and each session loads the S3 service
        model again (about 13 MB, measured): with gunicorn's 8 threads, up to 100 MB a process.
        Resources are not thread-safe, so each thread still gets its own, made under a lock
        (sessions are not thread-safe either).
        """
        connection = getattr(self._connections, "connection", None)
        if connection is None:
            with self._session_lock:
                if self._session is None:
                    self._session = self._create_session()
                connection = self._session.resource(
                    "s3",
                    region_name=self.region_name,
                    use_ssl=self.use_ssl,
                    endpoint_url=self.endpoint_url,
                    config=self.client_config,
                    verify=self.verify,
                )
            self._connections.connection = connection
        return connection

    def get_default_settings(self) -> dict:
        defaults = super().get_default_settings()
        if defaults["transfer_config"] is None:
            defaults["transfer_config"] = upload_transfer_config()
        return defaults

    def _save(self, name: str, content: File) -> str:
        """Upload a file that is on local disk from its path, others as django-storages does.

        Given a file object, s3transfer reads each multipart part into memory (about 60 MB
        for a 200 MB file, measured); given a path it reads every part lazily from disk.
        """
        local_path = getattr(content, "local_path", None)  # see core.storage.LocalFile
        if local_path is None:
            return super()._save(name, content)
        cleaned_name = clean_name(name)
        key = self._normalize_name(cleaned_name)
        self.bucket.Object(key).upload_file(
            local_path(),
            ExtraArgs=self._get_write_parameters(key, content),
            Config=self.transfer_config,
        )
        return cleaned_name

    def iter_names_modified(self, prefix: str):
        """(name, last modified) of every object under `prefix`, from the listing itself
        (a page of 1,000 per request) rather than a HEAD request per object."""
        location = f"{self.location.strip('/')}/" if self.location else ""
        for item in self.bucket.objects.filter(Prefix=self._normalize_name(clean_name(prefix))):
            yield item.key[len(location) :], item.last_modified

    def _open(self, name: str, mode: str = "rb") -> File:
        if any(flag in mode for flag in "wa+"):
            return super()._open(name, mode)  # S3File: writes go up as a multipart upload
        key = self._normalize_name(clean_name(name))
        raw = RangedObjectReader(
            client=self.connection.meta.client, bucket=self.bucket_name, key=key
        )
        binary = io.BufferedReader(raw, buffer_size=READ_RANGE_BYTES)
        stream: IO[Any] = binary if "b" in mode else io.TextIOWrapper(binary, encoding="utf-8")
        return File(stream, name=name)

    def probe(self) -> None:
        """Put and delete a tiny object with a client that neither retries nor waits long."""
        client = self._readiness_client()
        key = self._normalize_name(f"readyz/{uuid.uuid4().hex}")
        client.put_object(Bucket=self.bucket_name, Key=key, Body=b"ok")
        client.delete_object(Bucket=self.bucket_name, Key=key)

    def _readiness_client(self):
        from botocore.config import Config

        with self._session_lock:
            if self._session is None:
                self._session = self._create_session()
            if self._probe_client is None:
                config = self.client_config.merge(
                    Config(
                        connect_timeout=2,
                        read_timeout=5,
                        retries={"total_max_attempts": 1, "mode": "standard"},
                    )
                )
                self._probe_client = self._session.client(
                    "s3",
                    region_name=self.region_name,
                    use_ssl=self.use_ssl,
                    endpoint_url=self.endpoint_url,
                    config=config,
                    verify=self.verify,
                )
            return self._probe_client


def upload_transfer_config():
    """Multipart uploads in 8 MB parts, at most 4 of them in memory at once."""
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(
        multipart_threshold=UPLOAD_PART_BYTES,
        multipart_chunksize=UPLOAD_PART_BYTES,
        max_concurrency=UPLOAD_PARTS_IN_FLIGHT,
    )
    # Not a constructor argument of boto3's TransferConfig, but honoured by s3transfer.
    config.max_in_memory_upload_chunks = UPLOAD_PARTS_IN_FLIGHT
    return config


class RangedObjectReader(io.RawIOBase):
    """A stored object, read by ranged GETs of at most the caller's buffer size.

    No HTTP response stays open between reads, so a slow client downloading a large result
    does not hold a connection to storage; If-Match pins every range to the version first seen.
    """

    def __init__(self, *, client, bucket: str, key: str) -> None:
        from botocore.exceptions import ClientError

        super().__init__()
        self._client = client
        self._bucket = bucket
        self._key = key
        try:
            head = client.head_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                raise FileNotFoundError(f"No stored file {key!r}") from error
            raise
        self._size = int(head["ContentLength"])
        self._etag = head.get("ETag")
        self._position = 0

    @property
    def size(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer) -> int:
        wanted = min(len(buffer), self._size - self._position)
        if wanted <= 0:
            return 0
        arguments = {
            "Bucket": self._bucket,
            "Key": self._key,
            "Range": f"bytes={self._position}-{self._position + wanted - 1}",
        }
        if self._etag:
            arguments["IfMatch"] = self._etag
        body = self._client.get_object(**arguments)["Body"]
        view = memoryview(buffer).cast("B")
        received = 0
        try:
            while received < wanted:
                data = body.read(min(wanted - received, 256 * 1024))
                if not data:
                    break
                view[received : received + len(data)] = data
                received += len(data)
        finally:
            body.close()
        if received != wanted:
            raise OSError(f"stored file {self._key!r} ended after {received} of {wanted} bytes")
        self._position += received
        return received
