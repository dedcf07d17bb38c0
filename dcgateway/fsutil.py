"""Small, careful file operations shared by the key store, the port-closure state, the notice
record and the audit log.

* :func:`atomic_write`: temp file in the same directory, write, fsync, ``os.replace``, fsync the
  directory, so a reader (another process) sees either the old file or the new one, never a
  partial one, and a crash after return cannot lose the rename.
* :func:`exclusive_lock`: ``fcntl.flock`` on a side ``.lock`` file, serialising read-modify-write
  between processes (the gateway and ``dcgateway keys ...`` CLI runs).
* :func:`stat_signature`: what changes when another process replaces a file (inode, size, mtime,
  ctime); compared on every Logon to decide whether to re-read, at the cost of one ``stat``.
"""

from __future__ import annotations

import fcntl
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Indirection so a test can make the rename fail and check that the old file survives.
replace = os.replace

StatSignature = tuple[int, int, int, int, int]


#: Everything the gateway writes under its data_dir is private to its user: files 0600,
#: directories 0700, whatever the umask and whichever path creates them.
FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(directory: Path) -> Path:
    """``mkdir -p`` with every directory it creates at mode 0700 (``Path.mkdir(parents=True)``
    creates the parents with the umask's default mode). Existing directories are left as they
    are. Returns ``directory``."""
    directory = Path(directory)
    missing = []
    d = directory
    while not d.exists():
        missing.append(d)
        if d.parent == d:
            break
        d = d.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(d, DIR_MODE)
    return directory


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically and durably. On any failure the old file is
    untouched and the temp file is removed."""
    path = Path(path)
    directory = private_dir(path.parent)
    tmp = directory / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            os.fchmod(fd, mode)               # exactly ``mode``, whatever the umask
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(directory)


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``<path>.lock`` (created 0600 if absent) for the block."""
    path = Path(path)
    private_dir(path.parent)
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def stat_signature(path: Path) -> StatSignature | None:
    """``(dev, inode, size, mtime_ns, ctime_ns)`` of ``path``, or None when it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def create_exclusive(path: Path, data: bytes, mode: int = 0o600) -> bool:
    """Create ``path`` holding ``data`` only if it does not exist yet; True if this call created
    it. The file appears complete or not at all: it is written to a temp file opened with
    ``O_CREAT|O_EXCL`` and ``mode``, then hard-linked into place (``link`` fails if the name
    exists), so two processes racing to create it cannot see or produce a half-written file."""
    path = Path(path)
    private_dir(path.parent)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.new"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:                       # a filesystem without hard links
            return _create_direct(path, data, mode)
        fsync_dir(path.parent)
        return True
    finally:
        os.unlink(tmp)


def _create_direct(path: Path, data: bytes, mode: int) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return False
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)
    return True
