"""The segment journal's read side and its upkeep: reading a target's copies by target seq
(resends, catch-up), snapshots and checkpoints, dropping whole segments past retention, and a
target's sequence reset. Kept apart from :mod:`.segment` (the write side: append, group commit,
segments) so each module stays readable; :class:`ReadsAndMaintenance` is a base of
:class:`~.segment.SegmentJournal` and uses its state."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..errors import JournalError
from ..fsutil import fsync_dir
from .base import Entry
from .format import (
    HDR_SIZE,
    IDX,
    IDX_SIZE,
    T_RESET,
    Checkpoint,
    decode_entry,
    encode_name,
    write_checkpoint,
)

if TYPE_CHECKING:
    from .index import SegmentReader, TargetIndexes


class ReadsAndMaintenance:
    # state of the SegmentJournal this is a base of
    directory: Path
    index_dir: Path
    _target_next: dict[str, int]
    _index: TargetIndexes
    _reader: SegmentReader
    _synced_lsn: int
    _written_lsn: int
    _first_seg: int
    _seg: int
    _segs: dict[int, tuple[int, float]]
    _fsync: bool
    _sync_lock: threading.Lock
    _state_lock: threading.Lock
    _usable: bool
    _buf: bytearray
    _size: int
    _source_next: dict[str, int]
    _received_hw: float
    _pending_ckpt: Checkpoint | None
    _pending_fds: set[int]
    _ckpt_base: int
    _ckpt_time: float
    _ckpt_records: int
    _ckpt_seconds: float
    checkpoint_path: Path
    _hook: Callable[[str], None]

    def _check(self) -> None:
        raise NotImplementedError

    def flush_writes(self, upkeep: bool = True) -> int:
        raise NotImplementedError

    @property
    def durable_lsn(self) -> int:
        raise NotImplementedError

    def sync_to_disk(self) -> int:
        raise NotImplementedError

    def flush_index(self) -> None:
        raise NotImplementedError

    def _append_record(self, rtype: int, payload: bytes) -> int:
        raise NotImplementedError

    def _roll_for(self, n: int) -> bool:
        raise NotImplementedError

    def _roll(self) -> None:
        raise NotImplementedError

    def _finish_roll(self) -> None:
        raise NotImplementedError

    @property
    def roll_due(self) -> bool:
        raise NotImplementedError

    def _seg_path(self, seg: int) -> Path:
        raise NotImplementedError

    # -- snapshots and checkpoints ----------------------------------------------------------------

    def _maybe_snapshot(self) -> None:
        if self._written_lsn - self._ckpt_base >= self._ckpt_records or (
                self._written_lsn > self._ckpt_base
                and time.monotonic() - self._ckpt_time >= self._ckpt_seconds):
            self._take_snapshot()

    def _take_snapshot(self) -> None:
        """Owner thread, with the buffer and index runs flushed: capture the state at
        ``written_lsn`` for the next :meth:`checkpoint` (which writes it once that LSN is
        durable). fds dirtied since the last captured snapshot accumulate until one is written."""
        if self._buf or self.roll_due:      # (a roll due: the state is the next segment's)
            return
        self.flush_index()
        ck = Checkpoint(self._written_lsn, self._seg, self._size, dict(self._target_next),
                        dict(self._source_next), self._received_hw)
        with self._state_lock:
            self._pending_fds |= self._index.take_dirty()
            self._pending_ckpt = ck
        self._ckpt_base = ck.lsn
        self._ckpt_time = time.monotonic()

    @property
    def checkpoint_due(self) -> bool:
        ck = self._pending_ckpt         # read once: a worker may clear it meanwhile
        return ck is not None and ck.lsn <= self._synced_lsn

    def checkpoint(self) -> bool:
        """Write the pending checkpoint if its LSN is durable: fsync the index files written
        since the last one, then replace the checkpoint file atomically. Worker-thread safe.
        Returns whether one was written. A failure leaves the old checkpoint (recovery then
        replays more) and raises :class:`JournalError`."""
        with self._sync_lock:
            if not self._usable:
                return False
            with self._state_lock:
                ck, fds = self._pending_ckpt, set(self._pending_fds)
            if ck is None or ck.lsn > self._synced_lsn:
                return False
            try:
                self._index.fsync(fds, self._fsync)
                self._hook("fsync")
                if self._fsync:
                    fsync_dir(self.index_dir)
                self._hook("write")
                write_checkpoint(self.checkpoint_path, ck, self._fsync)
            except OSError as e:
                raise JournalError(f"cannot write journal checkpoint {self.checkpoint_path}: "
                                   f"{e.strerror or e}") from None
            with self._state_lock:
                if self._pending_ckpt is ck:
                    self._pending_ckpt = None
                    self._pending_fds = set()
            return True

    # -- reads ------------------------------------------------------------------------------------

    def target_last_seq(self, target: str) -> int:
        """Highest target_seq assigned to ``target`` (0 if none, or since its last reset)."""
        return self._target_next.get(target, 1) - 1

    def read_target(self, target: str, from_seq: int, to_seq: int, *,
                    durable_only: bool = True) -> list[Entry]:
        """Entries with ``from_seq <= target_seq <= to_seq``, ascending; seqs with no journaled
        message (admin messages, pruned segments) are absent. One ``pread`` of the index plus one
        per entry; each record is CRC-checked and must name this (target, seq), so a stale index
        slot reads as absent, never as the wrong message. ``durable_only`` stops at the first
        entry whose LSN is not yet durable (a target must never see it before a crash-proof
        copy exists). Owner thread."""
        self._check()
        if not durable_only:
            self._finish_roll()
            self.flush_writes()
        first, last = max(from_seq, 1), min(to_seq, self.target_last_seq(target))
        if last < first:
            return []
        blob = self._index.read(target, first, last)
        limit = self.durable_lsn if durable_only else self._written_lsn
        # a roll due: the next segment is the worker's to create (its records are not durable)
        unborn = self._seg if self.roll_due else 1 << 62
        out: list[Entry] = []
        blob = blob[:len(blob) - len(blob) % IDX_SIZE]
        for i, (seg, off, length) in enumerate(IDX.iter_unpack(blob)):
            if seg < self._first_seg:       # absent (0) or pruned
                continue
            if seg >= unborn:
                break
            data = self._reader.read(seg, off, length)
            got = None if data is None else decode_entry(data, length, target, first + i)
            if got is None:
                continue
            if got[4] > limit:
                break
            out.append(Entry(first + i, *got))
        return out

    # -- maintenance ------------------------------------------------------------------------------

    def prune(self, before: float) -> int:
        """Delete the oldest whole segments whose every record was received before ``before``
        (the caller applies retention: at least 48 h and through the week, iLink). Never the
        current segment, and only once the next segment's snapshot (which carries the sequence
        state forward) is durable. Index slots into deleted segments then read as absent."""
        self._check()
        removed = 0
        for seg in range(self._first_seg, self._seg):
            nxt = self._segs.get(seg + 1)
            if nxt is None or nxt[1] >= before or nxt[0] > self._synced_lsn:
                break
            self._reader.forget(seg)
            try:
                os.unlink(self._seg_path(seg))
            except FileNotFoundError:
                pass
            except OSError as e:
                raise JournalError(f"cannot delete journal segment {self._seg_path(seg)}: "
                                   f"{e.strerror}") from None
            self._segs.pop(seg, None)
            self._first_seg = seg + 1
            removed += 1
        if removed:
            if self._fsync:
                fsync_dir(self.directory)
            self._take_snapshot()       # so the next checkpoint no longer names a deleted segment
        return removed

    def reset_target(self, target: str) -> None:
        """The target's outbound sequence restarts at 1 (weekly reset, or 141=Y): a RESET record,
        its index emptied, made durable and checkpointed at once, so no post-reset index entry can
        outlive a lost reset record. Old segments stay until pruned. Owner thread; blocking (a few
        fsyncs), which is fine for a once-a-week operation."""
        self._check()
        self._finish_roll()
        self.flush_writes()
        name = encode_name(target)
        if self._roll_for(HDR_SIZE + len(name)):
            self._roll()                # the roll the RESET record would begin, done first: if
            self._finish_roll()         # it fails, nothing of the reset is appended or applied
        self._append_record(T_RESET, name)
        self._index.discard_pending(target)
        self._target_next[target] = 1
        self.flush_writes()
        try:
            self._index.truncate(target, 0)
        except OSError as e:
            raise JournalError(f"cannot reset journal index of {target}: {e.strerror}") from None
        self.sync_to_disk()
        self._take_snapshot()
        self.checkpoint()

