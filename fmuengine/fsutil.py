"""File operations on trees a model may have shaped: bounded, fd-based, never raising.

A model controls the names, depth and kinds of what it writes. `shutil.rmtree` recurses
once per directory level (a 1,100-level tree raised RecursionError and left the run
dir on disk for good), so removal falls back to `rm -rf --one-file-system`, which walks
iteratively and does not cross into mounts. Copies open every file with O_NOFOLLOW and
O_NONBLOCK (no symlink, FIFO or device is ever followed or waited on) and stop at a
byte budget, so what is copied out of a run is as bounded as the run itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import stat
import subprocess

logger = logging.getLogger(__name__)

COPY_CHUNK_BYTES = 1 << 20


def remove_tree(path: str | os.PathLike[str]) -> bool:
    """Delete `path` and everything below it; True when it is gone. Never raises."""
    path = os.fspath(path)
    try:
        shutil.rmtree(path)
        return True
    except FileNotFoundError:
        return True
    except BaseException as error:
        if isinstance(error, KeyboardInterrupt | SystemExit):
            raise
        first_error = error
    try:
        subprocess.run(
            ["rm", "-rf", "--one-file-system", "--", path],
            check=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )
    except (OSError, subprocess.SubprocessError) as error:
        logger.error("cannot remove %s: %s (after %r)", path, error, first_error)
        return False
    gone = not os.path.lexists(path)
    if not gone:
        logger.error("cannot remove %s (%r)", path, first_error)
    return gone


def open_regular(dir_fd: int, name: str) -> int | None:
    """An fd of the regular file `name` in `dir_fd`, or None (absent, link, FIFO, dir...)."""
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
        )
    except OSError:
        return None
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def copy_file_out(
    src_dir_fd: int,
    name: str,
    dst_dir_fd: int,
    *,
    max_bytes: int,
    tail: bool = False,
    owner: tuple[int, int] | None = None,
) -> str:
    """Copy a file a model wrote into a host dir: "copied", "absent" (none, or not a
    regular file) or "too_large" (bigger than max_bytes; with tail=True the last
    max_bytes are copied instead). Never raises for what the source is."""
    src = open_regular(src_dir_fd, name)
    if src is None:
        return "absent"
    try:
        size = os.fstat(src).st_size
        if size > max_bytes and not tail:
            return "too_large"
        start = max(0, size - max_bytes)
        dst = os.open(
            name,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=dst_dir_fd,
        )
        try:
            if owner is not None:
                os.fchown(dst, *owner)
            offset, remaining = start, min(size, max_bytes)
            while remaining > 0:
                sent = os.sendfile(dst, src, offset, min(remaining, COPY_CHUNK_BYTES))
                if sent <= 0:
                    break
                offset += sent
                remaining -= sent
        finally:
            os.close(dst)
        return "copied"
    except OSError as error:
        logger.warning("could not copy %s out of a run: %s", name, error)
        return "absent"
    finally:
        os.close(src)


def copy_tree_out(
    src_dir_fd: int,
    dst_dir: str,
    *,
    max_depth: int,
    max_entries: int,
    max_bytes: int,
) -> None:
    """Copy a tree of plain dirs and files into a new host dir `dst_dir`, iteratively,
    within the given bounds (0o755 dirs, 0o644 files, owned by the caller). Raises
    ValueError when the tree is not plain or exceeds a bound, OSError on I/O errors."""
    os.mkdir(dst_dir, 0o755)
    stack: list[tuple[int, str, int]] = [(os.dup(src_dir_fd), dst_dir, 0)]
    entries = total = 0
    try:
        while stack:
            fd, target, depth = stack.pop()
            target_fd = -1
            try:
                # Once per dir: readable by the runs' uids whatever the umask.
                target_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
                os.chmod(target_fd, 0o755)  # noqa: S103  mounted read-only for runs
                for entry in os.scandir(fd):
                    entries += 1
                    if entries > max_entries:
                        raise ValueError("too many entries")
                    if entry.is_dir(follow_symlinks=False):
                        if depth + 1 > max_depth:
                            raise ValueError("too deep")
                        child = os.open(
                            entry.name,
                            os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                            dir_fd=fd,
                        )
                        child_target = os.path.join(target, entry.name)
                        os.mkdir(child_target, 0o755)
                        stack.append((child, child_target, depth + 1))
                    elif entry.is_file(follow_symlinks=False):
                        size = entry.stat(follow_symlinks=False).st_size
                        total += size
                        if total > max_bytes:
                            raise ValueError("too large")
                        if copy_file_out(fd, entry.name, target_fd, max_bytes=size) != "copied":
                            raise ValueError(f"cannot copy {entry.name!r}")
                        os.chmod(entry.name, 0o644, dir_fd=target_fd)
                    else:
                        raise ValueError(f"not a plain file or dir: {entry.name!r}")
            finally:
                os.close(fd)
                if target_fd >= 0:
                    os.close(target_fd)
    except BaseException:
        for fd, _target, _depth in stack:
            with contextlib.suppress(OSError):
                os.close(fd)
        raise


_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc: ctypes.CDLL | None = None


def free_range(fd: int, offset: int, length: int) -> bool:
    """Give a range of a file's blocks back to the file system (fallocate with
    PUNCH_HOLE; the file keeps its size and reads zeros there). False where the file
    system cannot; never raises."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        flags = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
        return bool(_libc.fallocate(fd, flags, ctypes.c_long(offset), ctypes.c_long(length)) == 0)
    except (OSError, AttributeError):
        return False
