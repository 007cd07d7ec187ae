"""Sandbox v2: what one tenant's model can do to another's run, to the machine, and to
its own bill. Each test is an attack a paying customer could mount, run for real as
root on this machine (namespaces, cgroups, seccomp), through the same runner the worker
uses, with one sandbox server reused across runs as in a worker process."""

from __future__ import annotations

import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fmuengine import runner, sandbox_client
from fmuengine.runner import SandboxLimits, SandboxOutcome, isolation_level
from fmuengine.tests.fmus.build import TEST_MODELS, build_fmu, shifted
from fmuengine.tests.sandbox_runs import load_result, run, sha256_of, slot_processes

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.usefixtures("slot_uids_of_this_test_process"),
    pytest.mark.skipif(
        "cgroups" not in isolation_level() or "namespaces" not in isolation_level(),
        reason="needs root with namespaces and cgroups (as in production)",
    ),
]

CAPPED = SandboxLimits(
    cpu_seconds=20,
    memory_bytes=256 << 20,
    file_size_bytes=128 << 20,
    max_processes=16,
    wall_timeout_seconds=20,
    disk_bytes=1 << 30,
)
SMALL_DISK = SandboxLimits(
    cpu_seconds=20,
    memory_bytes=768 << 20,
    file_size_bytes=16 << 20,
    max_processes=16,
    wall_timeout_seconds=20,
    disk_bytes=64 << 20,
)


@pytest.fixture(scope="module", autouse=True)
def run_root_of_this_module(tmp_path_factory):
    """A run root no other test process uses, so "nothing left" means this run's."""
    previous = sandbox_client.settings.run_root
    runner.configure(run_root=tmp_path_factory.mktemp("runs") / "sandbox")
    yield
    runner.configure(run_root=previous)


def scan(fmu_paths, text: str) -> SandboxOutcome:
    outcome = run(fmu_paths["memory_scan"], {"start_values": {"shifted_needle": shifted(text)}})
    assert outcome.status == "succeeded", outcome.log_tail
    outcome.cleanup()
    return outcome


# ---- 1. no byte of one tenant's run reaches another's -----------------------------------


def test_a_model_finds_nothing_of_another_tenants_run_in_all_its_readable_memory(
    fmu_paths, tmp_path
):
    marker = f"tenant-a-{secrets.token_hex(8)}"
    resource_name = f"resources/{marker}-name.csv"
    resource_text = f"{marker} stored, uncompressed resource text\n" * 40
    tenant_a = build_fmu(
        "bouncing_ball",
        tmp_path,
        extra_files={resource_name: resource_text.encode()},
        stored=True,  # the marker's bytes are in the FMU file as they are
        file_name=f"{marker}-model",
    )
    assert resource_text.encode() in tenant_a.read_bytes()
    load_result(run(fmu_paths["bouncing_ball"]))  # warm-up: the server's buffers are in use
    a_run = run(tenant_a)
    assert a_run.status == "succeeded"
    a_run_id = a_run.run_id
    load_result(a_run)

    for needle in (
        resource_text[:60],
        resource_name,
        f"{marker}-name",
        sha256_of(tenant_a),
        a_run_id,
        str(tenant_a),  # the path the worker gave the runner
    ):
        outcome = scan(fmu_paths, needle)
        assert "memory_scan: not found" in outcome.log_tail, needle

    # Positive control: the same scan finds what is this run's own.
    own = scan(fmu_paths, TEST_MODELS["memory_scan"].guid)
    assert "memory_scan: found" in own.log_tail


def test_a_run_while_another_tenants_run_is_being_prepared_sees_nothing_of_it(fmu_paths, tmp_path):
    """One more variant: tenant A's model is prepared (extracted and parsed) by the
    server's cache just before B's scan, on the same server, and A's run starts B's
    connection's next spare: nothing of A is in B's memory either."""
    marker = f"tenant-c-{secrets.token_hex(8)}"
    tenant = build_fmu(
        "inputs_params",
        tmp_path,
        extra_files={f"resources/{marker}.txt": (marker * 30).encode()},
        stored=True,
    )
    load_result(run(tenant, {"fmi_type": "CoSimulation"}))
    for needle in (marker, sha256_of(tenant)):
        assert "memory_scan: not found" in scan(fmu_paths, needle).log_tail


# ---- 2. one cap for all of a run's memory ------------------------------------------------


@pytest.mark.parametrize(
    ("how", "what"),
    [(1, "memfd (or unnamed tmpfs files)"), (2, "tmpfs files"), (3, "children")],
)
def test_memory_a_run_holds_in_any_form_is_capped_and_the_other_slot_runs_on(fmu_paths, how, what):
    with ThreadPoolExecutor(max_workers=2) as pool:
        hostile = pool.submit(run, fmu_paths["memory_fill"], {"start_values": {"how": how}}, CAPPED)
        time.sleep(0.2)
        good = pool.submit(run, fmu_paths["bouncing_ball"])
        hostile_outcome, good_outcome = hostile.result(), good.result()

    assert (hostile_outcome.status, hostile_outcome.error_code) == ("failed", "memory_limit"), (
        what,
        hostile_outcome.message,
        hostile_outcome.log_tail,
    )
    assert "256 MiB" in hostile_outcome.message
    assert "holds 4096 MB" not in hostile_outcome.log_tail
    assert "children held" not in hostile_outcome.log_tail
    assert len(load_result(good_outcome)) == 301
    assert slot_processes() == []


def test_memfd_create_itself_is_refused_inside_the_sandbox(fmu_paths):
    outcome = run(fmu_paths["memory_fill"], {"start_values": {"how": 1}}, CAPPED)

    assert "memfd_create: Operation not permitted" in outcome.log_tail


# ---- 3. one quota for all of a run's disk ------------------------------------------------


def leftovers() -> list[str]:
    """What runs left under the run root and the sandbox's state (the cache's prepared
    models and the live servers' own dirs excepted), and scratch mounts on the host."""
    root = sandbox_client.settings.run_root
    found = [entry.name for entry in root.iterdir() if entry.name.startswith("run-")]
    for server_dir in (root / "models").glob("server-*"):
        for scratch in (server_dir / "scratch", server_dir / "root"):
            found.extend(str(path) for path in scratch.iterdir())
    mounts = Path("/proc/self/mountinfo").read_text()
    found.extend(line for line in mounts.splitlines() if str(root) in line)
    return found


@pytest.mark.parametrize(
    ("how", "log_line"),
    [(1, "disk_fill: stopped after"), (2, "disk_fill: tree stopped at level")],
)
def test_a_run_is_stopped_at_its_disk_quota_and_leaves_nothing_on_disk(fmu_paths, how, log_line):
    free_before = os.statvfs(sandbox_client.settings.run_root).f_bavail

    outcome = run(fmu_paths["disk_fill"], {"start_values": {"how": how}}, SMALL_DISK)

    assert (outcome.status, outcome.error_code) == ("failed", "disk_limit"), (
        outcome.message,
        outcome.log_tail,
    )
    assert "64 MiB" in outcome.message
    assert log_line in outcome.log_tail
    if how == 1:
        files = int(outcome.log_tail.split("stopped after ")[1].split()[0])
        assert files <= 64 // 15  # 15 MB each: the quota, not the file size limit, stopped it
    assert leftovers() == []
    free_after = os.statvfs(sandbox_client.settings.run_root).f_bavail
    block = os.statvfs(sandbox_client.settings.run_root).f_frsize
    assert (free_before - free_after) * block < 32 << 20  # nothing of it is on the host's disk


# ---- 4. what a model writes cannot make its run the platform's fault ---------------------


@pytest.mark.parametrize(
    ("how", "expected_code"),
    [
        (1, "model_error"),  # error.json nested 100,000 deep
        (2, "model_error"),  # nested 2,000 deep: fits in the 4 KB read, broke json.loads
        (3, "invalid_result"),  # result.npy claiming 10^12 rows
        (4, "invalid_result"),  # a 5,000-level tree and result.npy a directory
        (5, "model_error"),  # result.npy a FIFO, error.json a symlink to /proc/self/environ
        (6, "invalid_result"),  # a 10 MB binary log, no result
    ],
)
def test_malformed_model_output_is_the_models_failure_never_a_refunded_platform_fault(
    fmu_paths, how, expected_code
):
    outcome = run(fmu_paths["output_forger"], {"start_values": {"how": how}}, SMALL_DISK)

    assert (outcome.status, outcome.error_code) == ("failed", expected_code), (
        outcome.message,
        outcome.log_tail,
    )
    assert len(outcome.log_tail) <= 50 * 2001
    assert leftovers() == []


def test_a_job_after_a_memory_kill_on_the_same_server_is_judged_on_its_own(fmu_paths):
    """A server's jobs reuse a few cgroups: counters of an earlier job must not leak."""
    first = run(fmu_paths["memory_fill"], {"start_values": {"how": 2}}, CAPPED)
    assert first.error_code == "memory_limit"

    crashed = [run(fmu_paths["segfault"], limits=CAPPED) for _ in range(3)]
    good = [run(fmu_paths["bouncing_ball"]) for _ in range(3)]

    assert [outcome.error_code for outcome in crashed] == ["model_crashed"] * 3
    for outcome in good:
        assert len(load_result(outcome)) == 301
