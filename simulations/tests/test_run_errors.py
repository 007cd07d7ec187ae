"""Every run error code has one fault, and only the platform's faults are refunded."""

import logging

import pytest

from fmuengine.protocol import RunErrorCode
from simulations.run_errors import RUN_ERROR_FAULTS, AppRunErrorCode, Fault, fault_of, refund_due

EVERY_CODE = [*RunErrorCode, *AppRunErrorCode]


def test_every_run_error_code_has_a_fault_and_the_app_reuses_no_engine_code():
    assert sorted(RUN_ERROR_FAULTS) == sorted(EVERY_CODE)
    assert not {code.value for code in RunErrorCode} & {code.value for code in AppRunErrorCode}


@pytest.mark.parametrize("code", EVERY_CODE)
def test_a_run_is_refunded_iff_the_platform_is_at_fault(code):
    assert refund_due(code) is (fault_of(code) is Fault.PLATFORM)


def test_the_platform_faults_are_the_sandbox_the_worker_and_storage():
    platform = {code for code in EVERY_CODE if fault_of(code) is Fault.PLATFORM}
    assert platform == {"sandbox_failed", "worker_lost", "result_storage_failed"}
    assert fault_of("cancelled") is Fault.USER
    assert fault_of("invalid_result") is Fault.MODEL  # forged output is charged


def test_a_run_cancelled_before_it_started_is_refunded_but_not_one_cancelled_running():
    assert refund_due(RunErrorCode.CANCELLED, started=False)
    assert not refund_due(RunErrorCode.CANCELLED)


def test_an_unclassified_code_counts_as_the_platforms_and_is_logged(caplog):
    with caplog.at_level(logging.ERROR, logger="simulations.run_errors"):
        assert fault_of("no_such_code") is Fault.PLATFORM
    assert "no_such_code" in caplog.text
