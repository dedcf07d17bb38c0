"""Per-target index files: ``<journal>/index/<target>.idx``, one fixed-size entry per target seq.

Why a file per target and a fixed slot per seq: a ResendRequest (served 200 messages a slice) or a
catching-up target asks for a range of its own sequence numbers; with the entry for seq N at byte
``(N - 1) * 16`` the whole range is one ``pread`` of the index plus one ``pread`` per message, and
the process holds no per-message state however large the backlog (docs/architecture.md: memory stays bounded
however far behind a target is).

Writes are buffered per target as contiguous *runs* (consecutive seqs, small gaps padded with zero
entries, which read as absent) and written with one ``pwrite`` per target now and then (the journal
decides when: not with every commit), so the append path does no index syscalls; reads lay the
runs not written yet over what the file holds. Index files are not fsync'd with every group commit: recovery rebuilds
anything after the last checkpoint from the journal itself (see :mod:`dcgateway.journal`).

Everything here runs on the journal's owner thread except :meth:`TargetIndexes.fsync`, which the
committer's worker calls on fds the owner handed over; fds are only closed by ``close()``, which
the journal calls under its sync lock, so a worker never fsyncs a closed (or reused) fd.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Callable, Sequence

from .format import HDR_SIZE, IDX_SIZE, IDX_ZERO, segment_name

GAP_PAD = 256          # a gap up to this many seqs is padded with zero entries rather than split
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\Z")


def index_filename(target: str) -> str:
    """CompIDs are usually plain ``[A-Z0-9]``; anything else (``/``, spaces, a leading dot) is
    hex-encoded behind ``~`` so that no CompID can name a path outside the index, and a name too
    long for that is hashed (file names are limited to 255 bytes)."""
    if _SAFE.match(target):
        return target + ".idx"
    raw = target.encode()
    if len(raw) <= 100:
        return "~" + raw.hex() + ".idx"
    return "~h" + hashlib.sha256(raw).hexdigest() + ".idx"


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    """``os.pwrite`` until every byte is written (a short write is retried, an error raised)."""
    n = os.pwrite(fd, data, offset)
    if n == len(data):
        return
    if n <= 0:
        raise OSError(0, "pwrite wrote nothing")
    offset += n
    view = memoryview(data)[n:]
    try:
        while view:
            n = os.pwrite(fd, view, offset)
            if n <= 0:
                raise OSError(0, "pwrite wrote nothing")
            view = view[n:]
            offset += n
    finally:
        view.release()


class _Run:
    """A target's pending entries: seqs ``first`` .. ``next - 1`` (a native class when compiled:
    its fields are read and written without boxing on the append path)."""

    __slots__ = ("first", "next", "data")

    def __init__(self, first: int, entry: bytes) -> None:
        self.first = first
        self.next = first + 1
        self.data = bytearray(entry)


class TargetIndexes:
    """The index files of all targets, with their pending (unwritten) runs."""

    def __init__(self, directory: Path, hook: Callable[[str], None]) -> None:
        self.dir = directory
        self._hook = hook
        self._fds: dict[str, int] = {}
        self._runs: dict[str, _Run] = {}
        self._spilled: list[tuple[str, int, bytes]] = []
        self.pending_bytes = 0
        self.dirty: set[int] = set()              # fds written (or truncated) since take_dirty()

    def fd(self, target: str) -> int:
        fd = self._fds.get(target)
        if fd is None:
            fd = os.open(self.dir / index_filename(target), os.O_RDWR | os.O_CREAT, 0o600)
            self._fds[target] = fd
        return fd

    # -- buffered writes ------------------------------------------------------------------------

    def add(self, target: str, seq: int, entry: bytes) -> None:
        run = self._runs.get(target)
        if run is not None:
            nxt = run.next
            if seq == nxt:
                run.data += entry
                run.next = seq + 1
                self.pending_bytes += IDX_SIZE
                return
            if nxt < seq <= nxt + GAP_PAD:
                run.data += IDX_ZERO * (seq - nxt)
                run.data += entry
                self.pending_bytes += IDX_SIZE * (seq - nxt + 1)
                run.next = seq + 1
                return
            self._spilled.append((target, run.first, bytes(run.data)))
        self._runs[target] = _Run(seq, entry)
        self.pending_bytes += IDX_SIZE

    def add_record(self, targets: Sequence[tuple[str, int]], entry: bytes) -> None:
        """One record's entries for all its targets (the append hot path: one call per record,
        the common case -- the next seq of an existing run -- inline)."""
        runs = self._runs
        n = 0
        for t, s in targets:
            run = runs.get(t)
            if run is not None and run.next == s:
                run.data += entry
                run.next = s + 1
                n += 1
            else:
                self.add(t, s, entry)
        self.pending_bytes += n * IDX_SIZE

    def flush(self) -> None:
        """Write every pending run. On an error the runs not yet written stay pending (a retry
        rewrites them; pwrite at a fixed slot is idempotent) and the OSError propagates."""
        while self._spilled:
            target, first, data = self._spilled[0]
            self._write(target, first, data)
            self._spilled.pop(0)
        for target in list(self._runs):
            run = self._runs[target]
            self._write(target, run.first, run.data)
            del self._runs[target]
        self.pending_bytes = 0

    def _write(self, target: str, first_seq: int, data: bytes | bytearray) -> None:
        self._hook("write")
        fd = self.fd(target)
        pwrite_all(fd, data, (first_seq - 1) * IDX_SIZE)
        self.dirty.add(fd)

    def discard_pending(self, target: str) -> None:
        self._spilled = [s for s in self._spilled if s[0] != target]
        self._runs.pop(target, None)

    # -- reads and maintenance -------------------------------------------------------------------

    def read(self, target: str, first_seq: int, last_seq: int) -> bytes:
        """The entries for ``first_seq..last_seq``: the file's, with the runs not written yet
        laid over them (shorter if neither reaches ``last_seq``)."""
        if target not in self._fds and not (self.dir / index_filename(target)).exists():
            data = b""
        else:
            data = os.pread(self.fd(target), (last_seq - first_seq + 1) * IDX_SIZE,
                            (first_seq - 1) * IDX_SIZE)
        pending = [(f, d) for t, f, d in self._spilled if t == target]
        run = self._runs.get(target)
        if run is not None:
            pending.append((run.first, bytes(run.data)))
        if not pending:
            return data
        buf = bytearray(data)
        for first, entries in pending:      # in the order they would be written
            lo = max(first, first_seq)
            hi = min(first + len(entries) // IDX_SIZE - 1, last_seq)
            if lo > hi:
                continue
            at = (lo - first_seq) * IDX_SIZE
            if len(buf) < at:
                buf += IDX_ZERO * ((at - len(buf)) // IDX_SIZE)
            buf[at:at + (hi - lo + 1) * IDX_SIZE] = \
                entries[(lo - first) * IDX_SIZE:(hi - first + 1) * IDX_SIZE]
        return bytes(buf)

    def entries_on_disk(self, target: str) -> int:
        try:
            return os.stat(self.dir / index_filename(target)).st_size // IDX_SIZE
        except FileNotFoundError:
            return 0

    def truncate(self, target: str, entries: int) -> None:
        """Set the file to exactly ``entries`` slots: drops entries beyond a recovered tail (or all
        of them on a reset) and zero-extends a file that lost its end (zero = absent)."""
        fd = self.fd(target)
        if os.fstat(fd).st_size != entries * IDX_SIZE:
            os.ftruncate(fd, entries * IDX_SIZE)
            self.dirty.add(fd)

    def truncate_all_on_disk(self) -> None:
        """Before a full rebuild: nothing in the old files is trusted."""
        for p in self.dir.glob("*.idx"):
            os.truncate(p, 0)

    def take_dirty(self) -> set[int]:
        dirty, self.dirty = self.dirty, set()
        return dirty

    def fsync(self, fds: set[int], fsync: bool) -> None:
        for fd in fds:
            self._hook("fsync")
            if fsync:
                os.fsync(fd)

    def close(self) -> None:
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)


class SegmentReader:
    """Read-only fds of segments for serving index entries, a few kept open at a time: a resend
    or a catch-up reads one or two segments, while 48 h of journal may be thousands of them."""

    def __init__(self, directory: Path, cache: int) -> None:
        self.dir = directory
        self._cache = cache
        self._fds: dict[int, int] = {}

    def read(self, seg: int, offset: int, length: int) -> bytes | None:
        """The bytes of a record, None if its segment is gone (pruned)."""
        fd = self._fds.get(seg)
        if fd is None:
            try:
                fd = os.open(self.dir / segment_name(seg), os.O_RDONLY)
            except FileNotFoundError:
                return None
            if len(self._fds) >= self._cache:
                os.close(self._fds.pop(next(iter(self._fds))))
            self._fds[seg] = fd
        return os.pread(fd, length, offset) if length >= HDR_SIZE else None

    def forget(self, seg: int) -> None:
        fd = self._fds.pop(seg, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)
