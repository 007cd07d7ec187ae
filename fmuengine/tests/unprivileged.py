"""Running a command as an unprivileged user when the checkout is private to root.

Tests that start a worker or a runner as another uid need that uid to reach the
interpreter, the venv and the project. A fresh clone made with `mktemp -d` is 0700, and
this machine's interpreter lives under /root (0700): such a process could not even
import numpy. So the command runs in a mount namespace of its own in which every dir
that blocks the way is replaced by a world-traversable view holding binds of just its
entries the command needs; nothing is copied, nothing changes on the host, and the
command itself runs as the given uid with no groups and no capabilities (setpriv).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _blocked(path: Path) -> tuple[Path, str | None] | None:
    """The first dir on the way to `path` (itself included) that other users cannot
    traverse, and the entry of it on the way (None when `path` is that dir)."""
    for directory in [*reversed(path.parents), path]:
        if directory.is_dir() and not os.stat(directory).st_mode & stat.S_IXOTH:
            if directory == path:
                return directory, None
            return directory, path.relative_to(directory).parts[0]
    return None


@contextmanager
def unprivileged_prefix(uid: int, needed: list[Path]) -> Iterator[tuple[str, ...]]:
    """A command prefix that runs the rest as uid/gid `uid` with every path in `needed`
    (and everything below it) reachable; the views are removed afterwards."""
    drop = ("setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--")
    entries: dict[Path, set[str]] = {}
    for path in needed:
        found = _blocked(path.resolve())
        if found is None:
            continue
        directory, entry = found
        entries.setdefault(directory, set()).update(
            os.listdir(directory) if entry is None else {entry}
        )
    if not entries:
        yield drop
        return
    views: list[Path] = []
    binds: list[str] = []  # source, target pairs, then view, blocked pairs
    covers: list[str] = []
    for directory, names in entries.items():
        view = Path(tempfile.mkdtemp(prefix="fmugw-view-"))
        view.chmod(0o755)
        views.append(view)
        for name in sorted(names):
            source = directory / name
            if source.is_dir() and not source.is_symlink():
                (view / name).mkdir()
            else:
                (view / name).touch()
            binds += [str(source), str(view / name)]
        covers += [str(view), str(directory)]
    script = (
        'while [ "$1" != "--covers" ]; do mount --bind "$1" "$2" || exit 1; shift 2; done; '
        'shift; while [ "$1" != "--run" ]; do mount --rbind "$1" "$2" || exit 1; shift 2; done; '
        'shift; cd "$PWD" 2>/dev/null; exec "$@"'  # the cwd again, through the views
    )
    try:
        yield ("unshare", "--mount", "--", "sh", "-c", script, "sh", *binds, "--covers",
               *covers, "--run", *drop)  # fmt: skip
    finally:
        for view in views:
            shutil.rmtree(view, ignore_errors=True)
