"""Which isolation measures this machine lets the sandbox apply, probed once at start.

Modes, strongest first (the first three need the namespaces the kernel grants):
- root with CAP_SYS_ADMIN: namespaces + a slot uid per run (production);
- not root, user namespaces allowed: the same namespaces, the model as 65534 of a user
  namespace (a developer's machine);
- root without namespaces: a slot uid only (the model sees the host's files and network);
- otherwise nothing but rlimits.
On top: per-run cgroups (root, v1 or v2), a disk quota (the scratch tmpfs, needs a mount
namespace) and the seccomp allowlist. The server reports the measures it applies; the
runner refuses to run below what it is configured to require (fail closed).
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Any

from fmuengine.protocol import Measure
from fmuengine.sandbox import seccomp
from fmuengine.sandbox.jail import (
    CLONE_NEWUSER,
    MS_PRIVATE,
    MS_REC,
    PR_SET_NO_NEW_PRIVS,
    RUN_NAMESPACES,
    mount,
    prctl,
    unshare,
    write_user_namespace_maps,
)

ISOLATION_NAMESPACES = "namespaces"
ISOLATION_USER_NAMESPACES = "user-namespaces"
ISOLATION_SETUID = "setuid"
ISOLATION_NONE = "none"


def probe_in_child(attempt: Any) -> bool:
    """Run `attempt` in a forked child (it may change namespaces); True if it succeeded."""
    pid = os.fork()
    if pid == 0:
        try:
            attempt()
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def _probe_namespaces() -> None:
    unshare(RUN_NAMESPACES)
    mount(None, "/", None, MS_REC | MS_PRIVATE, None)
    mount("tmpfs", "/tmp", "tmpfs", 0, "size=1m")  # noqa: S108  the scratch tmpfs needs this


def _probe_user_namespaces() -> None:
    uid, gid = os.geteuid(), os.getegid()
    unshare(CLONE_NEWUSER | RUN_NAMESPACES)
    write_user_namespace_maps(uid, gid)
    mount(None, "/", None, MS_REC | MS_PRIVATE, None)
    mount("tmpfs", "/tmp", "tmpfs", 0, "size=1m")  # noqa: S108


def _probe_setuid() -> None:
    os.setgroups([])
    os.setresgid(65534, 65534, 65534)
    os.setresuid(65534, 65534, 65534)


def _probe_seccomp() -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    if not seccomp.seccomp_supported():
        raise OSError(errno.ENOSYS, "no seccomp filter for this architecture")
    seccomp.install_seccomp_filter()


def probe_mode() -> str:
    """The strongest mode this process can set up for its runs."""
    if os.geteuid() == 0 and probe_in_child(_probe_namespaces):
        return ISOLATION_NAMESPACES
    if os.geteuid() != 0 and probe_in_child(_probe_user_namespaces):
        return ISOLATION_USER_NAMESPACES
    if os.geteuid() == 0 and probe_in_child(_probe_setuid):
        return ISOLATION_SETUID
    return ISOLATION_NONE


def probe_measures(mode: str, cgroups_reason: str | None) -> tuple[frozenset[str], dict[str, str]]:
    """The measures applied in `mode`, and why each missing one is missing."""
    measures = {Measure.RLIMITS.value}
    missing: dict[str, str] = {}
    if mode == ISOLATION_NAMESPACES:
        measures |= {Measure.NAMESPACES, Measure.SETUID, Measure.DISK_QUOTA}
    elif mode == ISOLATION_USER_NAMESPACES:
        measures |= {Measure.USER_NAMESPACES, Measure.DISK_QUOTA}
        missing[Measure.NAMESPACES] = "not root: user namespaces only"
        missing[Measure.SETUID] = "not root: the model runs as the caller's uid"
    elif mode == ISOLATION_SETUID:
        measures.add(Measure.SETUID)
        missing[Measure.NAMESPACES] = "the kernel refused to create namespaces"
        missing[Measure.DISK_QUOTA] = "no mount namespace for a per-run tmpfs"
    else:
        for measure in (Measure.NAMESPACES, Measure.SETUID, Measure.DISK_QUOTA):
            missing[measure] = "not root and no user namespaces"
    if cgroups_reason is None:
        measures.add(Measure.CGROUPS)
    else:
        missing[Measure.CGROUPS] = cgroups_reason
    if probe_in_child(_probe_seccomp):
        measures.add(Measure.SECCOMP)
    else:
        missing[Measure.SECCOMP] = f"seccomp filter cannot be installed on {os.uname().machine}"
    return frozenset(str(measure) for measure in measures), {str(k): v for k, v in missing.items()}


def python_library_dirs() -> list[str]:
    """Dirs on sys.path the model process may need to read (lazy imports, fmpy's XML
    schemas), except the project itself, its ancestors, and what /usr already covers."""
    project_root = Path(__file__).resolve().parent.parent.parent
    found: list[Path] = []
    for entry in sys.path:
        if not entry:
            continue
        path = Path(entry).resolve()
        if not path.is_dir() or path == project_root or path in project_root.parents:
            continue
        if path.is_relative_to("/usr") or path == Path("/"):
            continue
        found.append(path)
    kept: list[str] = []
    for path in sorted(set(found), key=lambda candidate: len(candidate.parts)):
        if not any(path.is_relative_to(parent) for parent in kept):
            kept.append(str(path))
    return kept
