"""On-disk format of the journal: segment header, record framing, record payloads, checkpoint file.

Kept apart from :mod:`dcgateway.journal` so that the byte layout can be read in one place (and by
tools such as ``dcgateway replay``) without the write path's concurrency machinery.

Segment file ``<directory>/<%08d>.seg``::

    header   16 bytes   MAGIC "DCGWJNL1" | segment number u32 | crc32(first 12 bytes) u32
    records  ...        crc32 u32 | type u8 | length u32 | lsn u64 | payload[length]

All integers little-endian. The CRC covers type, length, lsn and payload, so a record torn by a
crash (short, or with stale bytes) is detected; the LSN is a global record counter (every record
has one, consecutive across segments), so a record that is CRC-valid but out of place is detected
too. The first record of every segment is a SNAPSHOT of the sequence state before it, so a segment
is self-describing once older segments are pruned (retention is 48 h and through the week: the
target sequences must survive the deletion of the records that assigned them).

Index entry (per target file, at ``(target_seq - 1) * 16``): segment u32 | offset u64 | record
length u32. An all-zero entry (segment 0 never exists) means "no journaled message at this seq".
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..errors import JournalError
from ..fsutil import fsync_dir

SEG_MAGIC = b"DCGWJNL1"
SEG_HEADER = struct.Struct("<8sII")       # magic, segment number, crc32 of the first 12 bytes
SEG_HEADER_SIZE = SEG_HEADER.size          # 16
HDR = struct.Struct("<IBIQ")               # crc32, type, payload length, lsn
HDR_SIZE = HDR.size                        # 17
HDR_REST = struct.Struct("<BIQ")           # the CRC-covered part of the header
U32 = struct.Struct("<I")
Q = struct.Struct("<Q")
APP_FIXED = struct.Struct("<dQH")           # received, source_seq, number of targets
MARK_FIXED = struct.Struct("<Q")           # next_in (followed by the source name)
IDX = struct.Struct("<IQI")                # segment, offset, record length
IDX_SIZE = IDX.size                        # 16
IDX_ZERO = bytes(IDX_SIZE)

T_APP = 1        # one source message and its (target, target_seq) assignments
T_NEXT_IN = 2    # the source's inbound sequence advanced to next_in
T_SNAPSHOT = 3   # sequence state at the start of a segment (JSON)
T_RESET = 4      # a target's outbound sequence restarts at 1 (weekly reset / 141=Y)
TYPES = frozenset((T_APP, T_NEXT_IN, T_SNAPSHOT, T_RESET))

MAX_RECORD = 16 << 20          # a FIX message is far smaller; a bigger length is corruption
MAX_NAME = 255                 # CompIDs are short; the length is one byte on disk

CKPT_MAGIC = b"DCGWCKP1"
CKPT_HEAD = struct.Struct("<8sII")         # magic, crc32(payload), payload length


def segment_name(number: int) -> str:
    return f"{number:08d}.seg"


def segment_header(number: int) -> bytes:
    head = struct.pack("<8sI", SEG_MAGIC, number)
    return head + U32.pack(zlib.crc32(head))


def check_segment_header(data: bytes, number: int) -> str | None:
    """Why a segment header is unusable, or None if it is fine."""
    if len(data) < SEG_HEADER_SIZE:
        return "short header"
    magic, num, crc = SEG_HEADER.unpack_from(data)
    if magic != SEG_MAGIC or zlib.crc32(data[:12]) != crc:
        return "bad magic or header checksum (not a dcgateway journal segment)"
    if num != number:
        return f"header says segment {num}, file name says {number}"
    return None


def encode_name(name: str) -> bytes:
    b = name.encode("utf-8")
    if not b or len(b) > MAX_NAME:
        raise ValueError(f"session name must be 1..{MAX_NAME} bytes, got {name!r}")
    return bytes((len(b),)) + b


def frame(rtype: int, lsn: int, payload: bytes) -> bytes:
    rest = HDR_REST.pack(rtype, len(payload), lsn)
    return U32.pack(zlib.crc32(payload, zlib.crc32(rest))) + rest + payload


def snapshot_payload(targets: dict[str, int], sources: dict[str, int], received_hw: float) -> bytes:
    return json.dumps({"targets": targets, "sources": sources, "received_hw": received_hw},
                      separators=(",", ":"), sort_keys=True).encode()


def parse_snapshot(payload: bytes) -> tuple[dict[str, int], dict[str, int], float]:
    d = json.loads(payload)
    return dict(d["targets"]), dict(d["sources"]), float(d["received_hw"])


def parse_app(data: bytes, pos: int = 0) -> tuple[float, int, str, list[tuple[str, int]], int]:
    """Decode an APP payload starting at ``data[pos]``: (received, source_seq, source,
    [(target, target_seq), ...], offset of the raw message in ``data``). Layout: APP_FIXED, then
    the source and each target as a length-prefixed name, each target followed by its seq u64,
    then the raw message to the end of the record."""
    received, source_seq, ntargets = APP_FIXED.unpack_from(data, pos)
    pos += APP_FIXED.size
    n = data[pos]
    source = data[pos + 1:pos + 1 + n].decode()
    pos += 1 + n
    targets = []
    for _ in range(ntargets):
        n = data[pos]
        name = data[pos + 1:pos + 1 + n].decode()
        pos += 1 + n
        targets.append((name, Q.unpack_from(data, pos)[0]))
        pos += 8
    if pos > len(data):
        raise ValueError("target list runs past the record")
    return received, source_seq, source, targets, pos


def decode_entry(data: bytes, length: int, target: str,
                 seq: int) -> tuple[str, int, float, bytes, int] | None:
    """(source, source_seq, received, raw, lsn) of the APP record read for (target, seq), or None
    unless it is whole, CRC-valid and really assigns ``seq`` to ``target`` (so a stale index slot
    can only ever read as absent, never as another message)."""
    if len(data) != length or length < HDR_SIZE:
        return None
    crc, rtype, plen, lsn = HDR.unpack_from(data)
    if rtype != T_APP or plen != length - HDR_SIZE or zlib.crc32(memoryview(data)[4:]) != crc:
        return None
    received, source_seq, source, targets, raw_at = parse_app(data, HDR_SIZE)
    if (target, seq) not in targets:
        return None
    return source, source_seq, received, data[raw_at:], lsn


def parse_next_in(payload: bytes) -> tuple[str, int]:
    (next_in,) = MARK_FIXED.unpack_from(payload)
    return payload[MARK_FIXED.size + 1:].decode(), next_in


@dataclass
class ScanResult:
    """Where a segment scan stopped and why (``error`` None means it reached the end cleanly)."""

    end: int
    records: int = 0
    error: str | None = None
    last_lsn: int = 0


@dataclass
class Scanner:
    """Reads one segment's records from ``start`` in bounded chunks (memory does not grow with the
    segment), checking framing, CRC, type and LSN continuity. Iterate for
    ``(offset, type, lsn, payload, record_length)``; ``result`` says where and why it stopped."""

    fd: int
    start: int
    size: int
    expect_lsn: int | None          # None: accept whatever the first record carries
    chunk: int = 1 << 20
    result: ScanResult = field(init=False)

    def __iter__(self) -> Iterator[tuple[int, int, int, bytes, int]]:
        self.result = res = ScanResult(end=self.start)
        buf, base = b"", self.start          # buf holds file bytes [base, base + len(buf))
        pos = self.start
        while pos < self.size:
            if pos + HDR_SIZE > self.size:
                res.error = "truncated record header"
                return
            if pos + HDR_SIZE > base + len(buf):
                buf, base = self._refill(buf, base, pos, HDR_SIZE)
            crc, rtype, length, lsn = HDR.unpack_from(buf, pos - base)
            end = pos + HDR_SIZE + length
            if length > MAX_RECORD or rtype not in TYPES:
                res.error = f"bad record header (type {rtype}, length {length})"
                return
            if end > self.size:
                res.error = "truncated record"
                return
            if end > base + len(buf):
                buf, base = self._refill(buf, base, pos, end - pos)
            if zlib.crc32(memoryview(buf)[pos - base + 4:end - base]) != crc:
                res.error = "checksum mismatch"
                return
            if self.expect_lsn is not None and lsn != self.expect_lsn:
                res.error = f"lsn {lsn} where {self.expect_lsn} was expected"
                return
            self.expect_lsn = lsn + 1
            yield pos, rtype, lsn, buf[pos - base + HDR_SIZE:end - base], end - pos
            res.records += 1
            res.last_lsn = lsn
            res.end = pos = end

    def _refill(self, buf: bytes, base: int, pos: int, need: int) -> tuple[bytes, int]:
        keep = buf[pos - base:]
        want = max(self.chunk, need) - len(keep)
        more = os.pread(self.fd, want, pos + len(keep))
        return keep + more, pos


def read_record_at(fd: int, offset: int) -> tuple[int, int, bytes] | None:
    """(type, lsn, payload) of the CRC-valid record at ``offset``, else None."""
    head = os.pread(fd, HDR_SIZE, offset)
    if len(head) < HDR_SIZE:
        return None
    crc, rtype, length, lsn = HDR.unpack(head)
    if length > MAX_RECORD:
        return None
    payload = os.pread(fd, length, offset + HDR_SIZE)
    if len(payload) != length or zlib.crc32(payload, zlib.crc32(head[4:])) != crc:
        return None
    return rtype, lsn, payload


# -- checkpoint ------------------------------------------------------------------------------------

@dataclass
class Checkpoint:
    """"Every index entry of every record with LSN <= ``lsn`` is written and fsync'd; the record
    after it starts at (``segment``, ``offset``); this was the sequence state at that point." """

    lsn: int
    segment: int
    offset: int
    targets: dict[str, int]
    sources: dict[str, int]
    received_hw: float = 0.0


def write_checkpoint(path: Path, ck: Checkpoint, fsync: bool) -> None:
    """Atomic replace (tmp, fsync, rename, fsync dir): a crash leaves the old or the new one."""
    payload = json.dumps({"lsn": ck.lsn, "segment": ck.segment, "offset": ck.offset,
                          "targets": ck.targets, "sources": ck.sources,
                          "received_hw": ck.received_hw},
                         separators=(",", ":"), sort_keys=True).encode()
    data = CKPT_HEAD.pack(CKPT_MAGIC, zlib.crc32(payload), len(payload)) + payload
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)    # not inside the slice: mypyc evaluates a slice
            view = view[written:]           # bound with a side effect twice
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if fsync:
        fsync_dir(path.parent)


def read_checkpoint(path: Path) -> Checkpoint | None:
    """The checkpoint, or None when it is missing or unusable (recovery then rescans everything,
    which is slower but never wrong, so a bad checkpoint is not an error)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise JournalError(f"cannot read journal checkpoint {path}: {e.strerror}") from None
    if len(data) < CKPT_HEAD.size:
        return None
    magic, crc, length = CKPT_HEAD.unpack_from(data)
    payload = data[CKPT_HEAD.size:]
    if magic != CKPT_MAGIC or len(payload) != length or zlib.crc32(payload) != crc:
        return None
    try:
        d = json.loads(payload)
        return Checkpoint(int(d["lsn"]), int(d["segment"]), int(d["offset"]),
                          {str(k): int(v) for k, v in d["targets"].items()},
                          {str(k): int(v) for k, v in d["sources"].items()},
                          float(d.get("received_hw", 0.0)))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
