"""Uploads stream to a temporary file and are hashed as they arrive: none is held in memory."""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.core.files.uploadhandler import TemporaryFileUploadHandler

from core.errors import DomainError
from core.problems import ProblemCode


class UploadTooLarge(DomainError):
    """The portal's upload page catches it by type: it arrives while the body is parsed."""

    code = ProblemCode.UPLOAD_TOO_LARGE


class HashingUploadHandler(TemporaryFileUploadHandler):
    """Every file goes to disk with its sha256 computed on the way.

    Oversize bodies are refused by RequestSizeLimitMiddleware before they are read; this
    stops a file that is over the cap inside a body that is not.
    """

    def new_file(self, *args, **kwargs) -> None:
        super().new_file(*args, **kwargs)
        self.sha256 = hashlib.sha256()
        self.received = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        self.received += len(raw_data)
        if self.received > settings.FMU_MAX_UPLOAD_BYTES:
            self.file.close()
            raise UploadTooLarge(_too_large_message(settings.FMU_MAX_UPLOAD_BYTES))
        self.sha256.update(raw_data)
        self.file.write(raw_data)

    def file_complete(self, file_size: int):
        uploaded = super().file_complete(file_size)
        # TemporaryFileUploadHandler always returns its file (never None), to which this adds
        # an attribute no UploadedFile declares: simulations.api reads upload.sha256.
        uploaded.sha256 = self.sha256.hexdigest()  # type: ignore[union-attr]
        return uploaded


def _too_large_message(limit: int) -> str:
    return f"The upload is larger than the {limit // (1024 * 1024)} MB limit for an FMU."
