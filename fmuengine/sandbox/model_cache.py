"""The server's record of the last few FMUs it prepared (extracted, description parsed).

Extracting and parsing cost more than simulating a small model, and repeated runs of
one model (a sweep) are the common case. The server itself never opens an FMU: a
confined job (a spare jail like any run's, see monitor.py and simulate.prepare_model)
checks the file against its sha256 key, extracts it with the upload's name rule, parses
the description behind the upload's XML checks and pickles it; the monitor copies that
tree, bounded, into a root-owned dir here. A run then sees its model's copy read-only
at /model. What this class holds is keys and paths only.

Each server owns one directory under `root`, locked while it lives; directories of
servers that died without cleaning up are removed by the next server to start.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections import OrderedDict

from fmuengine.fsutil import remove_tree

MODEL_CACHE_ENTRIES = 8
MODEL_CACHE_MAX_TOTAL_BYTES = 1 << 30
MODEL_KEY_PATTERN = re.compile(r"[0-9a-f]{64}")


def _bytes_under(directory: str) -> int:
    total = 0
    for parent, _directories, names in os.walk(directory):
        for name in names:
            total += os.lstat(os.path.join(parent, name)).st_size
    return total


class ServerDirectory:
    """`<root>/server-<pid>-<token>/`: the spare root and scratch mount points, the
    cache's entries; flocked while its server lives."""

    def __init__(self, root: str) -> None:
        os.makedirs(root, mode=0o700, exist_ok=True)
        for name in os.listdir(root):
            self._remove_if_abandoned(os.path.join(root, name))
        self.path = os.path.join(root, f"server-{os.getpid()}-{os.urandom(4).hex()}")
        os.mkdir(self.path, 0o711)
        self._lock_fd = os.open(os.path.join(self.path, ".lock"), os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        self.root_point = os.path.join(self.path, "root")
        self.scratch_point = os.path.join(self.path, "scratch")
        self.cgroup_locks = os.path.join(self.path, "cgroups")
        for point in (self.root_point, self.scratch_point, self.cgroup_locks):
            os.mkdir(point, 0o700)

    @staticmethod
    def _remove_if_abandoned(directory: str) -> None:
        try:
            fd = os.open(os.path.join(directory, ".lock"), os.O_RDWR | os.O_NOFOLLOW)
        except OSError:
            if os.path.isdir(directory) and not os.path.islink(directory):
                remove_tree(directory)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # its server is alive
        finally:
            os.close(fd)
        remove_tree(directory)

    def close(self) -> None:
        remove_tree(self.path)
        os.close(self._lock_fd)


class ModelCache:
    """Prepared models by key, least recently run evicted first beyond the limits."""

    def __init__(self, directory: str | None) -> None:
        self.directory = directory
        self.entries: OrderedDict[str, str] = OrderedDict()
        self.sizes: dict[str, int] = {}

    def get(self, key: str | None) -> str | None:
        """The prepared dir for `key`, if there is one (and marks it recently used)."""
        if key is None or key not in self.entries:
            return None
        self.entries.move_to_end(key)
        return self.entries[key]

    def usable_key(self, key: str | None) -> bool:
        return (
            self.directory is not None
            and key is not None
            and bool(MODEL_KEY_PATTERN.fullmatch(key))
        )

    def target(self, key: str) -> str:
        """Where a preparation's tree is copied to (absent until then)."""
        assert self.directory is not None
        target = os.path.join(self.directory, f"{key}.preparing")
        remove_tree(target)
        return target

    def add(self, key: str, prepared: str) -> str:
        assert self.directory is not None
        size = _bytes_under(prepared)
        while self.entries and (
            len(self.entries) >= MODEL_CACHE_ENTRIES
            or sum(self.sizes.values()) + size > MODEL_CACHE_MAX_TOTAL_BYTES
        ):
            evicted_key, evicted = self.entries.popitem(last=False)
            del self.sizes[evicted_key]
            remove_tree(evicted)
        directory = os.path.join(self.directory, key)
        os.rename(prepared, directory)
        self.entries[key] = directory
        self.sizes[key] = size
        return directory
