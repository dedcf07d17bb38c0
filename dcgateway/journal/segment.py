"""The durable journal: every application message a source sends is appended here before anything
else happens to it; a copy reaches a target only once its record is durable (``durability``).

Why it is shaped this way (docs/architecture.md, data flow):

* **One record per source message, carrying its per-target sequence numbers.** The fan-out assigns
  each matching target its next outbound MsgSeqNum and passes the assignments to :meth:`append`,
  so they become durable together with the message: a target can never hold a sequence number
  the gateway could forget in a crash (FIX 4.4 Vol. 2, "Message Recovery": the sender must be
  able to honour a ResendRequest for any seq it sent).
* **Group commit.** :meth:`append` only buffers (one ``pwrite`` per batch via
  :meth:`flush_writes`); :class:`GroupCommitter` runs one ``fdatasync`` at a time in its sync
  thread, covering everything written before it started. :attr:`durable_lsn` follows it
  (``fsync``) or the writes (``os``, the sync then bounds a power loss, not a crash).
* **Per-target index files** (:mod:`dcgateway.journal_index`): target seq N -> (segment, offset,
  length) at a fixed slot, so serving a ResendRequest (200 messages a slice) or a catching-
  up target costs O(returned) ``pread`` calls and no memory proportional to the backlog.
* **Checkpoint + replay instead of fsyncing indexes per commit.** Index files are fsync'd only when
  a checkpoint is written (every ``checkpoint_records`` records or ``checkpoint_seconds``); recovery
  replays the records after the checkpoint into the indexes (idempotent ``pwrite``), truncates each
  index at its recovered tail, and falls back to a full rebuild if the checkpoint or an index file
  is missing or short.
* **Zeroed ahead.** The current segment is filled with zeros up to 128 KiB ahead of the last
  record (:meth:`_zero_ahead`), so a commit's ``fdatasync`` overwrites blocks the file already
  has: no size change, no extent allocation, no filesystem-journal commit (on ext4, about 90 µs
  instead of about 160 µs). Small steps, because the commit that carries a step's zeros to disk
  is that much slower (1 MiB steps put those commits in the p99 at 50k msgs/s). Recovery reads
  an all-zero tail of the last segment as its clean end and cuts it; a roll, a failed write and
  a close cut it too, so only the live segment has one.
* **Segments** of ``segment_bytes`` (one may run past it while the roll before it waits for the
  disk: :meth:`hand_rolls_to`), each starting with a state snapshot, so whole old segments can
  be pruned once outside retention (48 h and through the week) without losing sequence state.

Threads: everything runs on the *owner* thread (the one that called :meth:`recover`: the event
loop), except :meth:`sync` and :meth:`checkpoint`, which may run in one worker thread at a time.
Why that is safe: the owner publishes ``written_lsn``, the current segment fd and the not-yet-
durable chunks together under ``_state_lock`` (held for a few assignments, never across a
syscall), after the bytes are in the page cache. ``sync`` captures them under the same lock, then
fdatasyncs the captured fd, which covers every byte written to the file before the call (POSIX):
claiming ``durable_lsn = captured written_lsn`` is sound, and appends made meanwhile are simply
not claimed. A roll seals the old segment and switches fds while holding ``_sync_lock``, as does
``close``, so a worker never fsyncs a stale, closed (or reused) fd. With a worker
(:meth:`hand_rolls_to`) the owner only begins a roll (:meth:`_roll`: the snapshot captured, the
next segment's offsets in use, appends buffered) and the worker does its disk work
(:meth:`roll`); until then nothing is written, the zeros ahead and snapshots wait, and what needs
the next segment at once does the roll itself (:meth:`_finish_roll`).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Final, Sequence

from ..errors import JournalError
from ..fsutil import fsync_dir, private_dir
from .base import Entry
from .format import (
    APP_FIXED,
    HDR_REST,
    HDR_SIZE,
    IDX,
    MARK_FIXED,
    T_APP,
    T_NEXT_IN,
    T_SNAPSHOT,
    U32,
    Checkpoint,
    encode_name,
    frame,
    segment_header,
    segment_name,
    snapshot_payload,
)
from .index import SegmentReader, TargetIndexes, pwrite_all
from .recovery import Recovery, SnapshotState, recover_journal
from .roll import SegmentRolls, _Roll

#: Every write of segment bytes goes through this module global, looked up at each call (a
#: compiled module binds a direct call to a function at build time): the seam the fault
#: injection tests replace to fail a write half-way.
write_at: Callable[[int, Any, int], None] = pwrite_all

log = logging.getLogger(__name__)

#: zlib's CRC-32 as a constant: compiled, ``zlib.crc32`` is an attribute lookup per call
_CRC32: Final = zlib.crc32
U32_SIZE: Final = U32.size
#: In an APP record's packing arguments (:meth:`SegmentJournal._layout`): where the first
#: target's seq goes (type, length, lsn, received, source seq, count, source name, then name and
#: seq per target).
_FIRST_SEQ_ARG: Final = 8

#: How far past the last record the live segment is kept zero-filled (see "Zeroed ahead").
ZERO_AHEAD_BYTES = 128 << 10
_ZEROS = bytes(ZERO_AHEAD_BYTES)
#: ``fsync``: a copy leaves once its record is on the disk; ``os``: once it is written to the OS
#: (the fsync follows in the background, see :mod:`.commit`).
DURABILITY_MODES = ("fsync", "os")
#: Buffered index runs are written once this many bytes are pending, or this long after the last
#: write of them (see :meth:`SegmentJournal.flush_index`).
INDEX_FLUSH_BYTES = 64 << 10
INDEX_FLUSH_S = 1.0

__all__ = ["Entry", "Recovery", "SegmentJournal"]


def _no_hook(op: str) -> None:
    return None


class SegmentJournal(SegmentRolls):
    """Append-only segmented journal with per-target indexes (module docstring for the why).

    ``write_hook(op)`` runs before every write (``"write"``) and fsync (``"fsync"``); raising
    OSError there simulates a full or failing disk. ``flush_bytes`` bounds the append buffer,
    ``max_unsynced_bytes`` the bytes written but not yet durable (kept for a rewrite after a
    failed fsync); ``checkpoint_records``/``checkpoint_seconds`` bound how much recovery replays.
    Call :meth:`recover` once before anything else, :meth:`close` at the end."""

    def __init__(self, directory: Path | str, *, segment_bytes: int = 64 << 20, fsync: bool = True,
                 write_hook: Callable[[str], None] | None = None,
                 checkpoint_records: int = 65536, checkpoint_seconds: float = 30.0,
                 flush_bytes: int = 1 << 20, max_unsynced_bytes: int = 64 << 20,
                 read_fd_cache: int = 16, durability: str = "fsync") -> None:
        if durability not in DURABILITY_MODES:
            raise ValueError(f"journal durability {durability!r}: one of {DURABILITY_MODES}")
        self.durability = durability
        self._os_mode = durability == "os"
        self.directory = Path(directory)
        self.index_dir = self.directory / "index"
        self.checkpoint_path = self.index_dir / "checkpoint"
        self._segment_bytes, self._fsync, self._hook = segment_bytes, fsync, write_hook or _no_hook
        self._ckpt_records, self._ckpt_seconds = checkpoint_records, checkpoint_seconds
        self._flush_bytes, self._max_unsynced = flush_bytes, max_unsynced_bytes
        self._usable = False                  # True between recover() and close()
        self._closed = False
        self._owner: int | None = None
        self._sync_lock = threading.Lock()    # one sync/checkpoint/close at a time
        self._state_lock = threading.Lock()   # consistent (written_lsn, fd, retained) for sync()
        self._lock_fd = -1
        # write side (owner thread; published to sync() under _state_lock)
        self._seg = 0
        self._fd = -1
        self._size = 0                        # bytes of the current segment in the page cache
        self._zeroed_to = 0                   # the segment file is zero-filled up to here
        self._seg_floor = 0                   # size of header + snapshot: "segment is empty"
        self._buf = bytearray()
        # a roll begun and not done yet (its disk work is the worker's: hand_rolls_to)
        self._roll_job: _Roll | None = None
        self._roll_worker = False
        self._appended_lsn = 0
        self._written_lsn = 0
        self._synced_lsn = 0
        self._retained: list[tuple[int, int, int, bytearray]] = []  # (last lsn, seg, offset, bytes)
        self._retained_bytes = 0
        self._rewrite = False                 # a fsync failed: rewrite retained bytes first
        # sequence state
        self._target_next: dict[str, int] = {}
        self._source_next: dict[str, int] = {}
        self._received_hw = 0.0
        self._names: dict[str, bytes] = {}
        self._layouts: dict[tuple[str, ...], tuple[struct.Struct, list[object]]] = {}
        self._segs: dict[int, tuple[int, float]] = {}   # segment -> (snapshot lsn, received_hw)
        self._first_seg = 0
        self._reader = SegmentReader(self.directory, read_fd_cache)
        self._index = TargetIndexes(self.index_dir, self._hook)
        # checkpointing
        self._pending_ckpt: Checkpoint | None = None
        self._pending_fds: set[int] = set()
        self._ckpt_base = 0
        self._ckpt_time = 0.0
        self._index_flushed = 0.0

    # -- lifecycle --------------------------------------------------------------------------------

    def recover(self) -> Recovery:
        """Open the journal (once, before any other call): take the directory lock, scan the
        segments after the checkpoint verifying CRCs and LSN continuity, cut a torn tail of the last
        segment, bring the indexes up to date, make the recovered state durable and checkpoint it.
        A corrupt record in an earlier segment is a :class:`JournalError` naming file and offset."""
        if self._usable or self._closed:
            raise JournalError(f"journal {self.directory}: recover() must be called exactly once")
        self._owner = threading.get_ident()
        try:
            private_dir(self.index_dir)
            self._take_dir_lock()
            rec, state = recover_journal(self.directory, self._index, self._fsync,
                                         self._create_segment)
        except OSError as e:
            self._release()
            hint = ("; free space on its filesystem and start again (nothing is lost: the "
                    "journal is recovered then)" if e.errno in (errno.ENOSPC, errno.EDQUOT)
                    else "")
            raise JournalError(f"journal recovery in {self.directory} failed: "
                               f"{e.strerror or e}{hint}") from None
        except JournalError:
            self._release()
            raise
        self._seg, self._fd, self._size = state.seg, state.fd, state.size
        self._zeroed_to = state.size
        self._seg_floor = state.floor
        self._segs, self._first_seg = state.segs, min(state.segs)
        self._target_next, self._source_next = state.targets, state.sources
        self._received_hw = state.received_hw
        self._appended_lsn = self._written_lsn = self._synced_lsn = rec.last_lsn
        self._usable = True
        self._ckpt_time = time.monotonic()
        self._take_snapshot()
        try:
            self.checkpoint()
        except JournalError as exc:
            # The journal is consistent without it (the next start replays a little more); a
            # full disk must not keep the gateway from starting and saying it is unhealthy.
            log.warning("%s; the journal opened without a fresh checkpoint", exc)
        return rec

    def _take_dir_lock(self) -> None:
        """One process per journal: two writers would interleave records and LSNs."""
        self._lock_fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JournalError(f"journal {self.directory} is in use by another process "
                               "(LOCK held)") from None

    def close(self) -> None:
        """Flush, sync and checkpoint (so the next start replays nothing), then release every fd.
        Call on the owner thread after the committer has stopped. Idempotent."""
        if not self._usable:
            self._release()
            return
        err: JournalError | None = None
        try:
            self._finish_roll()
            self.flush_writes()
            self.sync_to_disk()
            self._take_snapshot()
            self.checkpoint()
            self._cut_tail()                  # the zeros ahead: a closed segment ends at its data
        except JournalError as e:
            err = e
        self._release()
        if err is not None:
            raise err

    def _release(self) -> None:
        with self._sync_lock:
            self._usable = False
            self._closed = True
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            self._reader.close()
            self._index.close()
            if self._lock_fd >= 0:
                os.close(self._lock_fd)      # closing the fd drops the flock
                self._lock_fd = -1

    def _check(self) -> None:
        if not self._usable:
            raise JournalError(f"journal {self.directory} is "
                               f"{'closed' if self._closed else 'not recovered yet'}")

    # -- append -----------------------------------------------------------------------------------

    @property
    def appended_lsn(self) -> int:
        """LSN of the last record accepted by append (possibly still buffered)."""
        return self._appended_lsn

    @property
    def written_lsn(self) -> int:
        """LSN of the last record written to the OS (page cache)."""
        return self._written_lsn

    @property
    def durable_lsn(self) -> int:
        """LSN up to which everything is as durable as the mode promises, so copies of it may
        leave: fdatasync'd (``fsync``), or written to the OS (``os``: the page cache outlives
        any crash of the process, kill -9 included)."""
        return self._written_lsn if self._os_mode else self._synced_lsn

    @property
    def synced_lsn(self) -> int:
        """LSN up to which everything is fdatasync'd (on the disk, whatever the mode)."""
        return self._synced_lsn

    @property
    def unsynced_bytes(self) -> int:
        """Bytes written since the last fdatasync (kept for a rewrite; ``max_unsynced_bytes``)."""
        return self._retained_bytes

    def append(self, source: str, source_seq: int, received: float, raw: bytes,
               targets: Sequence[tuple[str, int]]) -> int:
        """Journal one source message with its (target, target_seq) assignments; returns its LSN.

        Only buffers (no syscall unless the buffer is full) and updates the per-target state;
        target seqs must be increasing per target (a reset is :meth:`reset_target`). An I/O error
        while flushing a full buffer raises :class:`JournalError` and this message is not
        appended (earlier ones stay buffered for the retry)."""
        if not self._usable:
            self._check()
        if len(self._buf) >= self._flush_bytes or self._index.pending_bytes >= self._flush_bytes:
            self._flush_full()
        tnext = self._target_next
        key: list[str] = [source]
        for t, s in targets:            # validated first: nothing to undo on a bad assignment
            prev = tnext.get(t)
            if prev is not None and s < prev or s < 1:
                raise ValueError(f"target {t}: seq {s} is not after {(prev or 1) - 1}")
            key.append(t)
        layout = self._layouts.get(tuple(key))
        if layout is None:
            layout = self._layout(key)
        head_struct, template = layout
        rec_len = U32_SIZE + head_struct.size + len(raw)
        off = self._size + len(self._buf)   # (_roll_for, inline on the hot path)
        if off + rec_len > self._segment_bytes and off > self._seg_floor \
                and self._roll_job is None:     # (one at a time: the next segment may grow past)
            saved = [(t, tnext.get(t)) for t, _ in targets]
            for t, s in targets:        # the new segment's snapshot includes this message
                tnext[t] = s + 1
            try:
                self._roll()
            except BaseException:
                for t, prev in reversed(saved):       # nothing of this message is kept
                    if prev is None:
                        del tnext[t]
                    else:
                        tnext[t] = prev
                raise
            off = self._size
        lsn = self._appended_lsn + 1
        # the header's CRC-covered part and the payload's fixed part in one pack: the names
        # come from the template, the numbers are set here (module docstring: record layout)
        args = template[:]
        args[1] = rec_len - HDR_SIZE
        args[2] = lsn
        args[3] = received
        args[4] = source_seq
        i = _FIRST_SEQ_ARG
        for t, s in targets:
            args[i] = s
            i += 2
            tnext[t] = s + 1
        head = head_struct.pack(*args)
        buf = self._buf
        buf += U32.pack(_CRC32(raw, _CRC32(head)))
        buf += head
        buf += raw
        self._appended_lsn = lsn
        self._index.add_record(targets, IDX.pack(self._seg, off, rec_len))
        if source_seq >= self._source_next.get(source, 0):
            self._source_next[source] = source_seq + 1
        if received > self._received_hw:
            self._received_hw = received
        return lsn

    def _layout(self, key: list[str]) -> tuple[struct.Struct, list[object]]:
        """How an APP record of one source and list of targets is packed after its CRC: the
        header's CRC-covered part (HDR_REST), APP_FIXED, then each length-prefixed name, each
        target's followed by its seq. Returns the struct and a template of its arguments with
        the names filled in (append sets the numbers). Made once per distinct list, which also
        checks that no target appears twice."""
        if len(set(key[1:])) != len(key) - 1:
            raise ValueError(f"a target appears twice in {key[1:]!r}: one copy per target")
        encs = [self._names.get(n) or self._name(n) for n in key]
        fmt = HDR_REST.format + APP_FIXED.format[1:] + "".join(
            f"{len(e)}s" + ("Q" if i else "") for i, e in enumerate(encs))
        template: list[object] = [T_APP, 0, 0, 0.0, 0, len(key) - 1, encs[0]]
        for enc in encs[1:]:
            template.append(enc)
            template.append(0)
        if len(self._layouts) > 10_000:      # bounded: lists come from the configured groups
            self._layouts.clear()
        found = (struct.Struct(fmt), template)
        self._layouts[tuple(key)] = found
        return found

    def _name(self, name: str) -> bytes:
        if len(self._names) > 100_000:       # bounded: names come from configured sessions
            self._names.clear()
        self._names[name] = enc = encode_name(name)
        return enc

    def append_source_next_in(self, source: str, next_in: int) -> int:
        """Marker: the source's inbound sequence advanced to ``next_in`` (admin messages consume
        seqs too). On recovery the latest marker sets the source's next_in and later APP records
        raise it; so a marker written after a batch makes the restart's expected seq exact, and a
        lower marker (a sequence reset, 141=Y) is honoured rather than ignored. A marker equal to
        what the records already say (the batch's last message was ``next_in - 1``: the common
        case) is not written; the current LSN is returned."""
        self._check()
        if self._source_next.get(source) == next_in:
            return self._appended_lsn
        lsn = self._append_record(T_NEXT_IN, MARK_FIXED.pack(next_in) + encode_name(source))
        self._source_next[source] = next_in
        return lsn

    def _append_record(self, rtype: int, payload: bytes) -> int:
        if len(self._buf) >= self._flush_bytes:
            self._flush_full()
        if self._roll_for(HDR_SIZE + len(payload)):
            self._roll()
        lsn = self._appended_lsn + 1
        self._buf += frame(rtype, lsn, payload)
        self._appended_lsn = lsn
        return lsn

    def flush_writes(self, upkeep: bool = True) -> int:
        """Hand buffered records to the OS (one ``pwrite``), then, unless ``upkeep`` is False
        (the committer runs :meth:`upkeep` once the copies are out), the zeros ahead, now and
        then the index runs and a snapshot; returns ``written_lsn``. Owner thread only. On a
        failed write the segment is cut back to its last whole record and the buffer kept, so a
        retry rewrites the same bytes at the same offset and no half record can survive."""
        self._check()
        if self._buf and self._roll_job is None:    # (due: the next segment does not exist yet)
            data, off = self._buf, self._size
            try:
                self._hook("write")
                write_at(self._fd, data, off)
            except OSError as e:
                self._cut_tail()
                raise JournalError(f"cannot write journal segment {self._seg_path(self._seg)}: "
                                   f"{e.strerror or e}") from None
            self._buf = bytearray()
            with self._state_lock:
                self._size = off + len(data)
                self._written_lsn = self._appended_lsn
                if self._fsync:           # kept for a rewrite should the fsync fail
                    self._retained.append((self._appended_lsn, self._seg, off, data))
                    self._retained_bytes += len(data)
        if upkeep:
            self.upkeep()
        return self._written_lsn

    def upkeep(self, idle: bool = False) -> None:
        """After a write, off the copies' path: extend the zeros ahead, write the index runs
        (every ``INDEX_FLUSH_BYTES`` or ``INDEX_FLUSH_S``, and when ``idle``: the committer calls
        that once writes stopped, so ``dcgateway replay`` beside the running gateway sees the
        last copies), capture a snapshot when one is due."""
        if self._size > self._zeroed_to - ZERO_AHEAD_BYTES // 4 and self._roll_job is None:
            self._zero_ahead()
        pending = self._index.pending_bytes
        if pending >= INDEX_FLUSH_BYTES or (pending and (idle or time.monotonic()
                                                         - self._index_flushed >= INDEX_FLUSH_S)):
            self.flush_index()
        self._maybe_snapshot()

    def flush_index(self) -> None:
        """Write the buffered index runs (one ``pwrite`` per target). Deferred by
        :meth:`flush_writes` to every ``INDEX_FLUSH_BYTES`` or ``INDEX_FLUSH_S``, not once per
        commit: the indexes are rebuilt from the records after the last checkpoint anyway, reads
        see the runs not written yet, and a snapshot writes them first. Owner thread."""
        self._index_flushed = time.monotonic()
        if self._index.pending_bytes:
            try:
                self._index.flush()
            except OSError as e:
                raise JournalError(f"cannot write journal index in {self.index_dir}: "
                                   f"{e.strerror or e}") from None

    def _flush_full(self) -> None:
        """The buffer is full: write it, and refuse new records (backpressure) while more than
        ``max_unsynced_bytes`` are written but not durable, i.e. while fsync keeps failing; memory
        stays bounded by the two limits."""
        self.flush_writes()
        if self._retained_bytes > self._max_unsynced:
            raise JournalError(f"journal {self.directory}: {self._retained_bytes} bytes written "
                               "but not durable (fsync failing?); refusing new records")
        if self._roll_job is not None and len(self._buf) > self._max_unsynced:
            raise JournalError(f"journal {self.directory}: {len(self._buf)} bytes wait for the "
                               "next segment (the disk is slow or failing); refusing new records")

    def _zero_ahead(self) -> None:
        """Owner thread, after a write: extend the zeros past the end of the data by
        ZERO_AHEAD_BYTES (not past the segment's size). They reach the disk with the next commit's
        fsync; a disk too full for them only loses the speed-up."""
        start = max(self._size, self._zeroed_to)
        stop = min(start + ZERO_AHEAD_BYTES, self._segment_bytes)
        if stop <= start:
            return
        try:
            write_at(self._fd, memoryview(_ZEROS)[:stop - start], start)
        except OSError as e:
            log.debug("journal: cannot zero ahead in %s: %s", self._seg_path(self._seg), e)
            return
        self._zeroed_to = stop

    def _cut_tail(self) -> None:
        self._zeroed_to = self._size
        try:
            os.ftruncate(self._fd, self._size)
        except OSError:
            pass        # the retry overwrites at the same offset; recovery cuts any remnant

    def _seg_path(self, seg: int) -> Path:
        return self.directory / segment_name(seg)

    # -- segments ---------------------------------------------------------------------------------

    def _create_segment(self, seg: int, lsn: int,
                        state: SnapshotState | None = None) -> tuple[int, int, int]:
        """Create segment ``seg`` holding its header and a snapshot record with LSN ``lsn``, durable
        (file and directory entry) before it is used. Returns (fd, size, lsn)."""
        targets, sources, hw = state or (self._target_next, self._source_next, self._received_hw)
        data = segment_header(seg) + frame(T_SNAPSHOT, lsn, snapshot_payload(targets, sources, hw))
        fd = self._create_file(seg, data)
        self._segs[seg] = (lsn, hw)
        return fd, len(data), lsn

    def _create_file(self, seg: int, data: bytes) -> int:
        """Segment ``seg``'s file holding ``data`` (its header and snapshot), durable (file and
        directory entry) before it is used; its fd. Nothing is left behind on a failure."""
        path = self._seg_path(seg)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        except OSError as e:
            raise JournalError(f"cannot create journal segment {path}: {e.strerror}") from None
        try:
            self._hook("write")
            write_at(fd, data, 0)
            self._hook("fsync")
            if self._fsync:
                os.fdatasync(fd)
                fsync_dir(self.directory)
        except OSError as e:
            os.close(fd)
            try:
                os.unlink(path)
            except OSError:
                pass
            raise JournalError(f"cannot create journal segment {path}: {e.strerror or e}") from None
        return fd

    # -- durability -------------------------------------------------------------------------------

    def sync(self) -> int:
        """Make everything appended durable as the mode promises, now (owner thread, blocking;
        in ``os`` mode a target's Logon or a source's sequence reset, where it only writes; tools
        and tests): write the buffered appends, then, in ``fsync`` mode, fdatasync them. Returns
        the new :attr:`durable_lsn`. A roll due is done first (rare: its window is one roll's
        disk work, once per ``segment_bytes``)."""
        self._check()
        self._finish_roll()
        self.flush_writes()
        if self._os_mode:
            return self._written_lsn
        return self.sync_to_disk()

    def sync_to_disk(self) -> int:
        """fdatasync the current segment whatever the mode; returns the new :attr:`synced_lsn`,
        the ``written_lsn`` observed at the start. Safe in one worker thread while the owner
        keeps appending (module docstring): it covers what the owner has written to the OS.

        fsync failure rule: after a failed fdatasync Linux may have dropped the dirty pages, so a
        later "successful" fsync proves nothing about them. The journal therefore keeps the bytes
        written since the last synced point (bounded by ``max_unsynced_bytes``) and, after a
        failure, rewrites them before the next fsync."""
        self._check()
        with self._sync_lock:
            if not self._usable:
                return self._synced_lsn
            with self._state_lock:
                w, seg = self._written_lsn, self._seg - (self._roll_job is not None)
                chunks = list(self._retained) if self._rewrite else []
            if w <= self._synced_lsn:
                return self._synced_lsn
            try:
                self._fdatasync_current(chunks)
            except OSError as e:
                self._rewrite = True
                raise JournalError(f"fdatasync of journal segment {self._seg_path(seg)} failed: "
                                   f"{e.strerror or e}; will rewrite and retry") from None
            with self._state_lock:
                self._rewrite = False
                self._synced_lsn = max(self._synced_lsn, w)
                keep = [c for c in self._retained if c[0] > w]
                self._retained = keep
                self._retained_bytes = sum(len(c[3]) for c in keep)
            return self._synced_lsn

    def _fdatasync_current(self, rewrite: list[tuple[int, int, int, bytearray]]) -> None:
        """Under ``_sync_lock`` (which a roll holds too: the segment cannot change meanwhile):
        rewrite the unsynced chunks given (after a failed fsync), then fdatasync the segment."""
        for last, _, off, data in rewrite:
            if last > self._synced_lsn:
                self._hook("write")
                write_at(self._fd, data, off)
        self._hook("fsync")
        if self._fsync:
            os.fdatasync(self._fd)
