"""Why a run did not succeed, whose fault that was, and so who pays: decided here only.

A run's `error_code` is one of the sandbox's codes (fmuengine.protocol.RunErrorCode, which
the engine's verdict gives) or one the app gives itself (AppRunErrorCode: failures around
the sandbox, not in it). Each has one fault, and the fault alone decides the money: the
platform's faults are refunded, the model's and the customer's are charged (the pricing
page promises exactly this). docs/support-runbook.md explains every code to support; a
test keeps it, and this table, complete.
"""

from __future__ import annotations

import enum
import logging
from types import MappingProxyType

from fmuengine.protocol import RunErrorCode

logger = logging.getLogger(__name__)


class Fault(enum.StrEnum):
    MODEL = "model"  # the customer's FMU: it failed, crashed, or used more than a run may
    USER = "user"  # the customer's request or action: parameters refused, a cancellation
    PLATFORM = "platform"  # ours: the sandbox, a worker machine, file storage


class AppRunErrorCode(enum.StrEnum):
    """The codes the app gives a run itself, beside the sandbox's RunErrorCode."""

    WORKER_LOST = "worker_lost"  # the worker stopped renewing the run's lease mid-run
    RESULT_STORAGE_FAILED = "result_storage_failed"  # the run succeeded; storing it did not


RUN_ERROR_FAULTS: MappingProxyType[str, Fault] = MappingProxyType(
    {
        RunErrorCode.MODEL_ERROR: Fault.MODEL,
        RunErrorCode.MODEL_CRASHED: Fault.MODEL,
        RunErrorCode.MODEL_EXITED: Fault.MODEL,
        RunErrorCode.INVALID_FMU: Fault.MODEL,
        RunErrorCode.INVALID_PARAMETERS: Fault.USER,
        RunErrorCode.INVALID_RESULT: Fault.MODEL,  # forged or malformed output is never ours
        RunErrorCode.MEMORY_LIMIT: Fault.MODEL,
        RunErrorCode.DISK_LIMIT: Fault.MODEL,
        RunErrorCode.FILE_SIZE_EXCEEDED: Fault.MODEL,
        RunErrorCode.CPU_TIME_EXCEEDED: Fault.MODEL,
        RunErrorCode.TIMEOUT: Fault.MODEL,  # the run's own `timeout` ran out
        RunErrorCode.CANCELLED: Fault.USER,
        RunErrorCode.SANDBOX_FAILED: Fault.PLATFORM,
        AppRunErrorCode.WORKER_LOST: Fault.PLATFORM,
        AppRunErrorCode.RESULT_STORAGE_FAILED: Fault.PLATFORM,
    }
)


def fault_of(code: str) -> Fault:
    """The fault of a run error code.

    A code missing from the table counts as the platform's: a failure nobody classified is
    ours to explain, not the customer's to pay for (and a test keeps the table complete).
    """
    try:
        return RUN_ERROR_FAULTS[code]
    except KeyError:
        logger.error("run error code %r has no fault in simulations.run_errors", code)
        return Fault.PLATFORM


def refund_due(code: str, *, started: bool = True) -> bool:
    """Whether a run that ended with `code` gets its charge back: iff the platform is at
    fault. A run that never started is refunded whatever ended it (a cancellation while
    queued): it used nothing to pay for.
    """
    return not started or fault_of(code) is Fault.PLATFORM
