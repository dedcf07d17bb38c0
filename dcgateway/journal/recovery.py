"""Journal recovery: from the files on disk back to a consistent journal with up-to-date indexes.

Why it works the way it does:

* Everything fsync'd is a contiguous prefix of the journal, and a segment roll seals (fdatasyncs)
  the old segment before the next one exists, so the only legitimate damage after a crash is a torn
  tail of the **last** segment: it is cut off. Damage anywhere else is real corruption and stops
  the start with a :class:`JournalError` naming the file and offset (serving wrong resends would be
  worse than not starting).
* A crash in the middle of a roll can leave a last segment with no valid state snapshot; nothing
  was ever appended to it, so it is renamed aside (``*.unfinished``), never deleted.
* Indexes: the checkpoint says they are complete and durable up to LSN X, so only records after X
  are replayed into them (idempotent ``pwrite`` at fixed slots). If the checkpoint is missing,
  unreadable, does not line up with the journal, or an index file is shorter than it claims
  (deleted, truncated), every index is rebuilt from the oldest segment, whose first record is a
  snapshot of the sequence state. Finally each index is cut to its recovered last seq, which
  removes entries that reached the disk for records that did not survive.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import JournalError
from .format import (
    HDR_SIZE,
    IDX,
    MARK_FIXED,
    SEG_HEADER_SIZE,
    T_APP,
    T_NEXT_IN,
    T_RESET,
    T_SNAPSHOT,
    Checkpoint,
    Scanner,
    check_segment_header,
    parse_app,
    parse_snapshot,
    read_checkpoint,
    read_record_at,
    segment_name,
)
from .index import TargetIndexes

#: (targets next seq, sources next seq, received high-water mark) of a snapshot
SnapshotState = tuple[dict[str, int], dict[str, int], float]
CreateSegment = Callable[[int, int, SnapshotState], tuple[int, int, int]]


@dataclass
class Recovery:
    """What :meth:`dcgateway.journal.Journal.recover` found; also logged and exported at start."""

    records: int                     # records scanned (after the checkpoint, or all on a rebuild)
    segments: int                    # segment files in use
    torn_bytes: int                  # bytes cut from the end of the last segment
    seconds: float
    source_next_in: dict[str, int]   # per source: next expected inbound seq
    target_next_seq: dict[str, int]  # per target: 1 + highest target_seq assigned
    last_lsn: int
    rebuilt_indexes: bool = False    # True when no usable checkpoint: every index was rebuilt


@dataclass
class RecoveredState:
    seg: int
    fd: int
    size: int
    floor: int
    segs: dict[int, tuple[int, float]]
    targets: dict[str, int]
    sources: dict[str, int]
    received_hw: float


@dataclass
class _Replay:
    """Applies scanned records to the sequence state and (re)writes their index entries."""

    index: TargetIndexes
    targets: dict[str, int] | None = None
    sources: dict[str, int] = field(default_factory=dict)
    received_hw: float = 0.0
    records: int = 0

    def apply(self, seg: int, off: int, rtype: int, payload: bytes, length: int) -> None:
        self.records += 1
        if self.targets is None:
            if rtype != T_SNAPSHOT:
                raise JournalError(f"journal segment {segment_name(seg)}: first record at offset "
                                   f"{off} is not a state snapshot")
            self.targets, self.sources, self.received_hw = parse_snapshot(payload)
            return
        if rtype == T_APP:
            received, source_seq, source, targets, _ = parse_app(payload)
            ent = IDX.pack(seg, off, length)
            for t, s in targets:
                self.index.add(t, s, ent)
                self.targets[t] = s + 1
            if source_seq >= self.sources.get(source, 0):
                self.sources[source] = source_seq + 1
            self.received_hw = max(self.received_hw, received)
            if self.index.pending_bytes >= 1 << 20:
                self.index.flush()
        elif rtype == T_NEXT_IN:
            (next_in,) = MARK_FIXED.unpack_from(payload)
            self.sources[payload[MARK_FIXED.size + 1:].decode()] = next_in
        elif rtype == T_RESET:
            target = payload[1:].decode()
            self.index.discard_pending(target)
            self.index.truncate(target, 0)
            self.targets[target] = 1


def list_segments(directory: Path) -> list[int]:
    """Segment numbers in order; they must be consecutive (a hole means a lost file)."""
    segs = sorted(int(p.name[:-4]) for p in directory.glob("*.seg")
                  if p.name[:-4].isdigit() and len(p.name) == 12)
    for a, b in zip(segs, segs[1:]):
        if b != a + 1:
            raise JournalError(f"journal {directory}: segment {segment_name(a + 1)} is missing "
                               f"between {segment_name(a)} and {segment_name(b)}")
    return segs


def _first_record(path: Path, seg: int) -> tuple[int, float, int] | None:
    """(snapshot lsn, received_hw, end offset of the snapshot) of a segment, None if unusable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if check_segment_header(os.pread(fd, SEG_HEADER_SIZE, 0), seg) is not None:
            return None
        rec = read_record_at(fd, SEG_HEADER_SIZE)
    finally:
        os.close(fd)
    if rec is None or rec[0] != T_SNAPSHOT:
        return None
    return rec[1], parse_snapshot(rec[2])[2], SEG_HEADER_SIZE + HDR_SIZE + len(rec[2])


def _segment_infos(directory: Path, segs: list[int]) -> dict[int, tuple[int, float, int]]:
    infos: dict[int, tuple[int, float, int]] = {}
    for seg in segs:
        info = _first_record(directory / segment_name(seg), seg)
        if info is None and seg != segs[-1]:
            raise JournalError(f"journal segment {directory / segment_name(seg)} is corrupt at "
                               f"offset 0..{SEG_HEADER_SIZE}: no valid header and state snapshot")
        if info is not None:
            infos[seg] = info
    return infos


def _plan(directory: Path, index: TargetIndexes, ck: Checkpoint | None,
          segs: list[int]) -> tuple[int, int] | None:
    """(segment, offset) to replay from, or None for a full rebuild."""
    if ck is None or ck.segment not in segs:
        return None
    if any(index.entries_on_disk(t) < n - 1 for t, n in ck.targets.items()):
        return None
    path = directory / segment_name(ck.segment)
    size = path.stat().st_size
    if not SEG_HEADER_SIZE < ck.offset <= size:
        return None
    if ck.offset < size:
        fd = os.open(path, os.O_RDONLY)
        try:
            rec = read_record_at(fd, ck.offset)
        finally:
            os.close(fd)
        if rec is None and ck.segment != segs[-1]:
            return None
        if rec is not None and rec[1] != ck.lsn + 1:
            return None
    elif ck.segment != segs[-1]:
        info = _first_record(directory / segment_name(ck.segment + 1), ck.segment + 1)
        if info is None or info[0] != ck.lsn + 1:
            return None
    return ck.segment, ck.offset


def _all_zero(fd: int, start: int, end: int) -> bool:
    """Whether bytes ``start..end`` of the file are all zero (read a MiB at a time)."""
    pos = start
    while pos < end:
        data = os.pread(fd, min(end - pos, 1 << 20), pos)
        if not data:
            break
        if data.count(0) != len(data):
            return False
        pos += len(data)
    return True


def _scan(directory: Path, segs: list[int], start: tuple[int, int], expect: int | None,
          replay: _Replay, fsync: bool) -> tuple[int, int, int, int]:
    """Replay segments from ``start``; returns (last segment fd, its size, torn bytes, last lsn)."""
    torn, last_lsn, fd = 0, (expect or 1) - 1, -1
    for seg in segs[segs.index(start[0]):]:
        last = seg == segs[-1]
        path = directory / segment_name(seg)
        fd = os.open(path, os.O_RDWR if last else os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            sc = Scanner(fd, start[1] if seg == start[0] else SEG_HEADER_SIZE, size, expect)
            for off, rtype, lsn, payload, length in sc:
                replay.apply(seg, off, rtype, payload, length)
                last_lsn = lsn
            expect = sc.expect_lsn
            res = sc.result
            if res.error is not None and not last:
                raise JournalError(f"journal segment {path} is corrupt at offset {res.end}: "
                                   f"{res.error}; it is not the last segment, so this is not a "
                                   "torn write (restore it or move the journal aside)")
            if res.error is not None:
                # the zeros a live segment is kept filled with ahead of its data end it cleanly
                torn = 0 if _all_zero(fd, res.end, size) else size - res.end
                os.ftruncate(fd, res.end)
                size = res.end
            if fsync and last:
                os.fdatasync(fd)      # what we recovered may exist only in the page cache
        except BaseException:
            os.close(fd)
            raise
        if not last:
            os.close(fd)
    return fd, size, torn, last_lsn


def recover_journal(directory: Path, index: TargetIndexes, fsync: bool,
                    create_segment: CreateSegment) -> tuple[Recovery, RecoveredState]:
    t0 = time.perf_counter()
    segs = list_segments(directory)
    infos = _segment_infos(directory, segs)
    if segs and segs[-1] not in infos:            # crash in the middle of a roll
        path = directory / segment_name(segs[-1])
        if len(segs) == 1 and segs[0] != 1:
            raise JournalError(f"journal segment {path} is corrupt at offset 0: no valid header "
                               "and state snapshot, and no older segment to fall back on")
        os.replace(path, path.with_name(path.name + ".unfinished"))
        segs.pop()
    if not segs:                                  # a new journal (or its creation was cut short)
        index.truncate_all_on_disk()              # nothing left over may be read as an entry
        fd, size, lsn = create_segment(1, 1, ({}, {}, 0.0))
        state = RecoveredState(1, fd, size, size, {1: (lsn, 0.0)}, {}, {}, 0.0)
        return Recovery(0, 1, 0, time.perf_counter() - t0, {}, {}, lsn, False), state
    ck = read_checkpoint(directory / "index" / "checkpoint")
    start = _plan(directory, index, ck, segs)
    rebuilt = start is None
    replay = _Replay(index)
    expect: int | None = None
    if start is not None and ck is not None:
        replay.targets, replay.sources = dict(ck.targets), dict(ck.sources)
        replay.received_hw = ck.received_hw
        expect = ck.lsn + 1
    else:
        index.truncate_all_on_disk()
        start = (segs[0], SEG_HEADER_SIZE)
    fd, size, torn, last_lsn = _scan(directory, segs, start, expect, replay, fsync)
    assert replay.targets is not None
    index.flush()
    for t, n in replay.targets.items():
        index.truncate(t, n - 1)
    state = RecoveredState(segs[-1], fd, size, infos[segs[-1]][2],
                           {s: infos[s][:2] for s in segs}, replay.targets, replay.sources,
                           replay.received_hw)
    rec = Recovery(replay.records, len(segs), torn, time.perf_counter() - t0, dict(replay.sources),
                   dict(replay.targets), last_lsn, rebuilt)
    return rec, state
