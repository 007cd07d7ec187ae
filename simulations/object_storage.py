"""Transitional alias of core.object_storage.ObjectStorage, the S3 storage backend.

simulations/tests/conftest.py still names the backend by this path (conftest files are
the test-support work's to change); once it names core.object_storage.ObjectStorage,
this module goes.
"""

from core.object_storage import ObjectStorage

__all__ = ["ObjectStorage"]
