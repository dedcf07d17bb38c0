"""Read what a target was sent, straight from the journal's files, without the journal's lock.

``dcgateway replay`` runs beside a live gateway, which holds the journal open and locked, so this
reader never writes and never takes the lock: it reads the target's index file (fixed 16-byte
slots) and the records those slots point at, and keeps only records that are whole, CRC-valid and
really assign that sequence number to that target (``journal_format.decode_entry``). Entries the
running gateway has not written to its index yet are not shown: it writes the index at least once
a second while copies flow, and about a second after they stop.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .format import IDX, IDX_SIZE, IDX_ZERO, decode_entry, segment_name
from .index import index_filename


@dataclass(frozen=True)
class Sent:
    target_seq: int
    source: str
    source_seq: int
    received: float
    raw: bytes


def last_seq(journal_dir: Path, target: str) -> int:
    try:
        return os.stat(journal_dir / "index" / index_filename(target)).st_size // IDX_SIZE
    except FileNotFoundError:
        return 0


def read_sent(journal_dir: Path, target: str, from_seq: int, to_seq: int) -> Iterator[Sent]:
    """Copies of ``target`` with ``from_seq <= seq <= to_seq`` found in the journal, ascending."""
    index = journal_dir / "index" / index_filename(target)
    try:
        ifd = os.open(index, os.O_RDONLY)
    except FileNotFoundError:
        return
    segs: dict[int, int] = {}
    try:
        to_seq = min(to_seq, os.fstat(ifd).st_size // IDX_SIZE)
        for seq in range(max(1, from_seq), to_seq + 1):
            slot = os.pread(ifd, IDX_SIZE, (seq - 1) * IDX_SIZE)
            if len(slot) != IDX_SIZE or slot == IDX_ZERO:
                continue
            segment, offset, length = IDX.unpack(slot)
            fd = segs.get(segment)
            if fd is None:
                try:
                    fd = segs[segment] = os.open(journal_dir / segment_name(segment), os.O_RDONLY)
                except FileNotFoundError:           # pruned by retention
                    continue
            found = decode_entry(os.pread(fd, length, offset), length, target, seq)
            if found is not None:
                source, source_seq, received, raw, _ = found
                yield Sent(seq, source, source_seq, received, raw)
    finally:
        os.close(ifd)
        for fd in segs.values():
            os.close(fd)
