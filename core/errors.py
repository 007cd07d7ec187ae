"""The exceptions services raise when a business rule says no; the API answers each as the
problem+json of its ProblemCode (core.handlers), and the portal shows its detail.

Few classes, many codes: a class exists where callers catch that kind of failure apart from
the others (a conflict, a backing service that is down), and the code says precisely which
one it is. An app subclasses only to carry data of its own (billing's PaymentRequired and
its payment link) or to pin a code that callers catch by type (core.storage's
StorageUnavailable).
"""

from __future__ import annotations

from typing import ClassVar

from core.problems import ProblemCode


class DomainError(Exception):
    """A refusal with a code, a sentence for the caller, and extra problem+json members.

    The HTTP status and title come from the code, so they can never disagree with it.
    """

    code: ProblemCode = ProblemCode.INVALID_REQUEST
    # The status every code of this class answers with (None: any).
    status_of_codes: ClassVar[int | None] = None

    def __init__(self, detail: str, *, code: ProblemCode | None = None, **extra: object) -> None:
        super().__init__(detail)
        # ProblemCode(...) also refuses a code that is not in the catalogue. (A lookup by
        # value: mypy checks it against ProblemCode.__new__, which makes the members.)
        self.code = ProblemCode(code or type(self).code)  # type: ignore[call-arg]
        if self.status_of_codes is not None and self.code.status != self.status_of_codes:
            raise ValueError(f"{type(self).__name__} cannot carry {self.code!r}")
        self.detail = detail
        self.status_code: int = self.code.status
        self.extra = extra


class Conflict(DomainError):
    """The request is valid but the object's state forbids it now (already finished, in
    use, a reused idempotency key, a charge already refunded ...)."""

    code = ProblemCode.CONFLICT
    status_of_codes = 409


class ServiceUnavailable(DomainError):
    """A backing service (file storage, the payment provider) failed: nothing was changed,
    and the same request may succeed in a moment."""

    code = ProblemCode.UNAVAILABLE
    status_of_codes = 503
