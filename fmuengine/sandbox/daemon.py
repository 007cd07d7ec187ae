"""Starting the sandbox: `python -m fmuengine.sandbox`.

Two ways, one server per runner connection either way:
- `--fd N`: the runner started this process itself (as its child, with an empty
  environment) and talks over the socket N. This is `make run` and the tests.
- `--listen PATH`: a daemon started as root by the container's entrypoint beside an
  unprivileged Celery worker. It imports fmpy once, accepts connections on a unix socket
  from the uids it is told to trust (checked with SO_PEERCRED), and forks one server per
  connection. It reads nothing from a connection itself; it holds no secret (its
  environment is the entrypoint's, without the app's).
Either way the server forks its zygote before it reads its first command.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import logging
import os
import signal
import socket
import struct
import sys
from pathlib import Path

from fmuengine.protocol import Measure, describe_measures
from fmuengine.sandbox import seccomp
from fmuengine.sandbox.cgroups import CgroupSupport, cgroup_unavailable_reason, detect_cgroups
from fmuengine.sandbox.isolation import probe_measures, probe_mode, python_library_dirs
from fmuengine.sandbox.model_cache import ServerDirectory
from fmuengine.sandbox.monitor import JailSetup
from fmuengine.sandbox.server import SandboxServer, ServerConfig

logger = logging.getLogger("fmuengine.sandbox")

# Imported before serving, so every job's fork already has them.
PRELOADED_MODULES = (
    "numpy",
    "zipfile",
    "encodings.cp437",
    "lxml.etree",
    "defusedxml.ElementTree",
    "fmpy.fmi1",
    "fmpy.fmi2",
    "fmpy.fmi3",
    "fmpy.model_description",
    "fmpy.simulation",
    "fmpy.sundials",
    "fmpy.validation",
    "fmuengine.inspection",
    "fmuengine.sandbox.simulate",
)
DEFAULT_STATE_DIR = "/var/lib/fmugw-sandbox"


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fmuengine.sandbox")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--fd", type=int, help="serve one runner on this connected socket")
    where.add_argument("--listen", help="serve runners connecting to this unix socket")
    parser.add_argument("--allow-uid", type=int, action="append", default=[])
    parser.add_argument("--run-root", required=True, help="where runners make run dirs")
    parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="root-only: cache, jails")
    parser.add_argument("--slot-uid-base", type=int, default=1_879_048_192)
    parser.add_argument("--slot-count", type=int, default=256)
    return parser.parse_args(argv)


# What _load() probed once: the jail mode, cgroups (None without), measures, missing ones.
_Loaded = tuple[str, CgroupSupport | None, frozenset[str], dict[str, str]]


def _load() -> _Loaded:
    """Everything done once, before any connection: imports, probes."""
    # Numerical libraries must not start thread pools in a process that forks per job.
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = "1"
    for module in PRELOADED_MODULES:
        importlib.import_module(module)
    mode = probe_mode()
    cgroups = detect_cgroups() if os.geteuid() == 0 else None
    reason = None
    if cgroups is None:
        reason = "not root" if os.geteuid() != 0 else cgroup_unavailable_reason()
    if cgroups is not None:
        # What monitors killed with their server left (their owner pid is in the name).
        cgroups.sweep(owner_gone=True)
    measures, missing = probe_measures(mode, reason)
    if Measure.SECCOMP in measures:
        seccomp.prepare_seccomp_filter()  # built once, inherited by every job
    # Keep the garbage collector of every forked job off the server's objects: each
    # page it touches would be copied (copy-on-write) and cost time.
    gc.collect()
    gc.freeze()
    return mode, cgroups, measures, missing


def _serve_connection(
    fd: int,
    arguments: argparse.Namespace,
    loaded: _Loaded,
) -> None:
    mode, cgroups, measures, missing = loaded
    directory = None
    if Measure.DISK_QUOTA in measures:
        directory = ServerDirectory(arguments.state_dir)
    setup = JailSetup(
        mode=mode,
        library_dirs=python_library_dirs(),
        root_point=directory.root_point if directory else None,
        scratch_point=directory.scratch_point if directory else None,
        cgroups=cgroups,
        seccomp=Measure.SECCOMP in measures,
        cgroup_pool_dir=directory.cgroup_locks if directory else None,
        server_pid=os.getpid(),
    )
    config = ServerConfig(
        run_root=arguments.run_root,
        slot_uid_base=arguments.slot_uid_base,
        slot_count=arguments.slot_count,
    )
    server = SandboxServer(fd, setup, config, directory, measures, missing)
    try:
        server.serve()
    finally:
        if cgroups is not None:
            cgroups.sweep(owner_gone=True, owner=os.getpid())
        if directory is not None:
            directory.close()


def _listen(arguments: argparse.Namespace, loaded: _Loaded) -> None:
    path = arguments.listen
    # Bound under another name and renamed into place once listening: the socket's
    # existence means the daemon is ready (the entrypoint waits for it).
    preparing = f"{path}.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(preparing)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(preparing)
    os.chmod(preparing, 0o666)  # who may talk is decided by SO_PEERCRED below  # noqa: S103
    listener.listen(16)
    os.replace(preparing, path)
    signal.signal(signal.SIGTERM, lambda *_: _stop_listening(path))
    allowed = set(arguments.allow_uid)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # servers are reaped by the kernel
    logger.warning(
        "sandbox daemon listening on %s for uids %s; isolation %s",
        path,
        sorted(allowed),
        describe_measures(loaded[2]),
    )
    while True:
        connection, _ = listener.accept()
        credentials = connection.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
        )
        _pid, uid, _gid = struct.unpack("3i", credentials)
        if uid not in allowed:
            logger.warning("refused a connection from uid %d", uid)
            connection.close()
            continue
        pid = os.fork()
        if pid == 0:
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            code = 0
            try:
                _serve_connection(connection.detach(), arguments, loaded)
            except BaseException:
                logger.exception("sandbox server failed")
                code = 1
            os._exit(code)
        connection.close()


def _stop_listening(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    arguments = _arguments(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    os.makedirs(arguments.state_dir, mode=0o700, exist_ok=True)
    Path(arguments.state_dir).chmod(0o711)
    loaded = _load()
    if arguments.listen:
        _listen(arguments, loaded)
    else:
        _serve_connection(arguments.fd, arguments, loaded)
