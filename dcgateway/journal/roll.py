"""The segment journal's roll to its next segment file, which a worker thread can do while the
owner (the event loop) goes on: the owner writes what it has, captures the state snapshot and
appends to the next segment, buffered (:meth:`SegmentRolls._roll`); the worker (the committer's
sync thread, :meth:`SegmentRolls.roll`) seals the full segment (cut at its data, fdatasync) and
creates the next with its snapshot, fdatasync'd with its directory, then switches the fd; the
owner then writes what waited. The disk sees the same operations in the same order as when the
owner does them itself (without a worker: :meth:`SegmentRolls.hand_rolls_to`), so a segment that
is not the last is always whole, and recovery's rule stands: a bad record there is corruption,
never a crash artefact. Kept apart from :mod:`.segment` so each module stays readable;
:class:`SegmentRolls` is a base of :class:`~.segment.SegmentJournal` and uses its state."""

from __future__ import annotations

import os
import threading

from ..errors import JournalError
from .format import T_SNAPSHOT, frame, segment_header, snapshot_payload
from .upkeep import ReadsAndMaintenance


class _Roll:
    """A roll begun by the owner (:meth:`SegmentJournal._roll`), its disk work still to do: the
    segment to seal (number, fd, size of its data) and the next one's number, first bytes
    (header and snapshot), snapshot LSN and received high-water mark."""

    __slots__ = ("old_seg", "old_fd", "old_size", "seg", "data", "lsn", "hw")

    def __init__(self, old_seg: int, old_fd: int, old_size: int, seg: int, data: bytes,
                 lsn: int, hw: float) -> None:
        self.old_seg, self.old_fd, self.old_size = old_seg, old_fd, old_size
        self.seg, self.data, self.lsn, self.hw = seg, data, lsn, hw


class SegmentRolls(ReadsAndMaintenance):
    # state of the SegmentJournal this is a base of
    _roll_job: _Roll | None
    _roll_worker: bool
    _fd: int
    _segment_bytes: int
    _seg_floor: int
    _zeroed_to: int
    _appended_lsn: int
    _rewrite: bool
    _retained: list[tuple[int, int, int, bytearray]]
    _retained_bytes: int
    _state_lock: threading.Lock

    def _fdatasync_current(self, rewrite: list[tuple[int, int, int, bytearray]]) -> None:
        raise NotImplementedError

    def _create_file(self, seg: int, data: bytes) -> int:
        raise NotImplementedError

    def hand_rolls_to(self, worker: bool) -> None:
        """With ``worker`` True, a segment roll's disk work (sealing the full segment, creating
        the next) is left to a worker thread that calls :meth:`roll` when :attr:`roll_due`
        (the committer's sync thread): the owner thread never waits for the disk at a roll.
        Meanwhile appends are buffered (bounded: see :meth:`_flush_full`) and reach the OS once
        the next segment exists. Without a worker the owner does it itself, blocking."""
        self._roll_worker = worker

    def _roll_for(self, n: int) -> bool:
        """A record of ``n`` bytes appended now would begin a roll: it does not fit in the
        segment, which holds a record beyond its snapshot, and no roll is due already (one at a
        time: the next segment may grow past ``segment_bytes`` by what arrives meanwhile)."""
        off = self._size + len(self._buf)
        return off + n > self._segment_bytes and off > self._seg_floor and self._roll_job is None

    @property
    def roll_due(self) -> bool:
        """A roll is begun and waits for :meth:`roll`."""
        return self._roll_job is not None

    def _roll(self) -> None:
        """Start the next segment: seal the current one (cut, fdatasync) and create the next
        with a state snapshot, fsyncing it and the directory; a segment that is not the last is
        thus always whole, so a bad record there is real corruption, never a crash artefact.
        The owner writes what is buffered and captures the snapshot here; the disk work is
        :meth:`roll`'s, on the worker when there is one (:meth:`hand_rolls_to`), else here and
        now (a failure then undoes the roll, and the message that asked for it is refused)."""
        self.flush_writes()
        old_seg = self._seg
        state = (self._seg, self._size, self._seg_floor, self._zeroed_to, self._appended_lsn)
        lsn = self._appended_lsn + 1
        hw = self._received_hw
        data = segment_header(old_seg + 1) + frame(
            T_SNAPSHOT, lsn, snapshot_payload(self._target_next, self._source_next, hw))
        job = _Roll(old_seg, self._fd, self._size, old_seg + 1, data, lsn, hw)
        with self._state_lock:      # from here the owner appends to the next segment, buffered
            self._roll_job = job
            self._seg, self._size, self._seg_floor = old_seg + 1, len(data), len(data)
            self._zeroed_to = len(data)
            self._appended_lsn = lsn
        if self._roll_worker:
            return
        try:
            self.roll()
        except BaseException:
            with self._state_lock:
                self._roll_job = None
                self._seg, self._size, self._seg_floor, self._zeroed_to, self._appended_lsn = state
            raise

    def roll(self) -> bool:
        """Do the disk work of the roll begun by the owner (:attr:`roll_due`): cut the old
        segment at its data, rewrite what a failed fsync may have dropped, fdatasync it, then
        create the next segment durably and switch to it. Worker-thread safe (under
        ``_sync_lock``, like a sync); the owner calls it too where it cannot go on without the
        new segment (:meth:`_finish_roll`). Returns whether a roll was done. On a failure the
        roll stays due (a retry redoes it from the start: idempotent) and :class:`JournalError`
        is raised."""
        with self._sync_lock:           # no worker fsync in flight on the old fd from here on
            job = self._roll_job
            if job is None or not self._usable:
                return False
            try:                    # cut any remnant of a failed write first: the fsync covers it
                os.ftruncate(job.old_fd, job.old_size)
                self._fdatasync_current(self._retained if self._rewrite else [])
            except OSError as e:
                self._rewrite = True
                raise JournalError(f"cannot seal journal segment {self._seg_path(job.old_seg)}: "
                                   f"{e.strerror or e}") from None
            with self._state_lock:  # what the sealed segment holds is durable, whatever follows
                self._synced_lsn = max(self._synced_lsn, self._written_lsn)
                self._retained.clear()
                self._retained_bytes = 0
                self._rewrite = False
            fd = self._create_file(job.seg, job.data)
            self._segs[job.seg] = (job.lsn, job.hw)
            with self._state_lock:
                self._fd = fd
                self._written_lsn = self._synced_lsn = job.lsn
                self._roll_job = None
            try:
                os.close(job.old_fd)
            except OSError:         # its data is durable: the seal's fdatasync said so
                pass
            return True

    def _finish_roll(self) -> None:
        """Owner: a roll begun must be done before what follows (a read of records not yet
        written, a sync asked for, a sequence reset, the close): do it here, blocking."""
        if self._roll_job is not None:
            self.roll()
