"""The problems simulations' services raise (each a DomainError: an HTTP status and a code)."""

from __future__ import annotations

from core.errors import DomainError
from fmuengine.inspection import InvalidFMU


class FMURejected(DomainError):
    """An upload that is not a usable FMU (the code says which check failed)."""

    def __init__(self, invalid: InvalidFMU) -> None:
        super().__init__(invalid.message, code=invalid.code.replace("_", "-"))
        self.status_code = invalid.status


class ModelInUse(DomainError):
    status_code = 409
    code = "model-in-use"


class SimulationConflict(DomainError):
    status_code = 409
    code = "conflict"


class IdempotencyKeyReused(DomainError):
    status_code = 409
    code = "idempotency-key-reused"
