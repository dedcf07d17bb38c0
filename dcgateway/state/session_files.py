"""Durable FIX session state: next inbound/outbound MsgSeqNum and the messages sent, per session.

One append-only file per session, ``<data_dir>/sessions/<CompID>.log``. Every record is framed
``crc32 | type | seq | length | payload`` (little-endian, CRC over everything after itself), so a
record torn by a crash or a kill -9 is detected on open and cut off (the file is truncated back to
the last whole record), never fatal.

Durability is group commit: the session engine calls the setters synchronously (they only
``write()`` into the OS page cache), and the I/O shell calls :meth:`FileSessionStore.sync` once per
batch of input, before it writes any byte that batch produced to the socket. An outbound record
(a message sent, or the next outbound seq) makes that sync an fdatasync, so a peer can never have
seen a sequence number, or a message, that a crash would make the gateway forget. The next
*inbound* seq alone is only written, not fsynced: losing its last value in a crash makes the
gateway expect an older seq, and FIX recovers that by a ResendRequest (a source's inbound seq is
authoritative in the journal anyway); an fsync per read of a busy source would cost the event
loop ~200 µs every time. A source's store goes further (``defer_next_in``): the journal is
what its inbound seq is recovered from, so the file's copy (what ``dcgateway sessions list``
shows when no gateway runs) is written at most every ``DEFER_NEXT_IN_S`` seconds, with any
fsync'd batch, when the source disconnects (:meth:`FileSessionStore.settle`) and on close,
rather than once per read.

Room on a full disk: the file is kept zero-filled up to ``RESERVE_BYTES`` past its last record
(extended when less than a quarter is left, a failure to extend only logged), so when the disk
fills the session can still record what it must send to say so (a Logout with the reason, a
Logon reply refusing a Logon): those records overwrite blocks the file already has. On open, an
all-zero tail is the clean end, not a torn record.

Resend data: an in-memory index ``seq -> (offset, length)`` points into the file; message bytes are
read back with ``pread`` only when a ResendRequest asks for them, so memory stays bounded by the
index, not by the messages. A reset (141=Y, weekly reset) starts a fresh file atomically.
"""

from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from pathlib import Path

from ..errors import StoreError
from ..fsutil import fsync_dir, private_dir
from ..ratelog import RateLimitedLog

log = logging.getLogger("dcgateway.state")
#: A session file's fdatasync (on the event loop, ``fsync`` durability) this slow is logged.
SLOW_SYNC_S = 0.5
_slow_log = RateLimitedLog(log, interval=10.0)

MAGIC = b"DCGWSS01"
_REC = struct.Struct("<IBQI")          # crc32, type, seq, payload length
_REC_OUT = 1                            # an outbound message (payload = raw bytes)
_REC_NEXT_IN = 2                        # next inbound seq = seq
_REC_NEXT_OUT = 3                       # next outbound seq = seq
_REC_DELIVERED = 4                      # a target's copies were handed out up to seq
_UNKNOWN = (1 << 64) - 1                # ... or unknown (-1 in memory): connected
MAX_RECORD = 16 * 1024 * 1024
#: Zero-filled room kept past the last record (see "Room on a full disk").
RESERVE_BYTES = 64 * 1024
_ZEROS = bytes(RESERVE_BYTES)
#: With ``defer_next_in``: the inbound seq reaches the file at most this long after it changed
#: (the session's timer syncs the store once a second, so also when the traffic stops).
DEFER_NEXT_IN_S = 1.0
#: The clock of ``defer_next_in`` (a module attribute, so a test can move it).
_clock = time.monotonic


def _record(rtype: int, seq: int, payload: bytes = b"") -> bytes:
    head = struct.pack("<BQI", rtype, seq, len(payload))
    return struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + head + payload


def peek_sequences(path: Path | str) -> tuple[int, int] | None:
    """(next_in, next_out) recorded in a session store file, read without opening it for write:
    ``dcgateway sessions list`` uses it while the gateway runs (a torn tail is simply ignored,
    never truncated). None when the file does not exist."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    if not data.startswith(MAGIC):
        raise StoreError(f"{path} is not a dcgateway session store (bad magic)")
    probe = FileSessionStore.__new__(FileSessionStore)
    probe.next_in, probe._next_out, probe._index, probe.delivered = 1, 1, {}, None
    probe._scan(data)
    return probe.next_in, probe._next_out


class FileSessionStore:
    """A :class:`dcgateway.fix.store.SessionStore` backed by one append-only file."""

    def __init__(self, path: Path | str, *, fsync: bool = True,
                 defer_next_in: bool = False) -> None:
        self.path = Path(path)
        self._fsync = fsync
        self._defer_in = defer_next_in
        self._in_written = 0.0                # monotonic time the inbound seq was last written
        #: next MsgSeqNum expected inbound: a plain attribute, read on every message (set it
        #: through :meth:`set_next_in`)
        self.next_in = 1
        self._next_out = 1
        self._index: dict[int, tuple[int, int]] = {}
        self.delivered: int | None = None     # a target's last seq handed out (see TargetStore)
        self._dirty = False
        self._pending_in: int | None = None
        self.recovered_torn_bytes = 0
        private_dir(self.path.parent)
        self._fd = -1
        self._open()

    # -- recovery ---------------------------------------------------------------------------

    def _open(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise StoreError(f"cannot open session store {self.path}: {e.strerror}") from None
        self._fd = fd
        size = os.fstat(fd).st_size
        if size == 0:
            os.write(fd, MAGIC)
            self._size = self._reserved_to = len(MAGIC)
            self._reserve()
            self._sync_now()
            fsync_dir(self.path.parent)
            return
        data = os.pread(fd, size, 0)
        if not data.startswith(MAGIC):
            os.close(fd)
            raise StoreError(f"{self.path} is not a dcgateway session store (bad magic); "
                             "move it aside to start the session afresh")
        good = self._scan(data)
        if good < size and data.count(0, good) != size - good:      # not just the zero tail
            self.recovered_torn_bytes = size - good
            os.ftruncate(fd, good)
            os.fsync(fd)
            size = good
        self._size = good
        self._reserved_to = size

    def _scan(self, data: bytes) -> int:
        pos = len(MAGIC)
        n = len(data)
        hs = _REC.size
        while pos + hs <= n:
            crc, rtype, seq, length = _REC.unpack_from(data, pos)
            end = pos + hs + length
            if length > MAX_RECORD or end > n:
                break
            if zlib.crc32(data[pos + 4:end]) != crc:
                break
            if rtype == _REC_OUT:
                self._index[seq] = (pos + hs, length)
                self._next_out = seq + 1
            elif rtype == _REC_NEXT_IN:
                self.next_in = seq
            elif rtype == _REC_NEXT_OUT:
                self._next_out = seq
            elif rtype == _REC_DELIVERED:
                self.delivered = -1 if seq == _UNKNOWN else seq
            else:
                break
            pos = end
        return pos

    # -- SessionStore -----------------------------------------------------------------------

    @property
    def data_size(self) -> int:
        """Bytes of records (the file is longer: its zero-filled reserve)."""
        return self._size

    @property
    def next_out(self) -> int:
        return self._next_out

    def set_next_in(self, seq: int) -> None:
        # Coalesced: only the latest value is written, at the next sync() (once per batch).
        self.next_in = seq
        self._pending_in = seq

    def set_next_out(self, seq: int) -> None:
        self._flush_in()
        self._append(_record(_REC_NEXT_OUT, seq))
        self._dirty = True
        self._next_out = seq

    def set_delivered(self, seq: int) -> None:
        """A target's last seq handed out, written (and fsynced with the next batch) when it
        disconnects; -1 when it logs on: until the next disconnect it is unknown, so a crash
        meanwhile is never mistaken for "not delivered"."""
        if seq != self.delivered:
            self._append(_record(_REC_DELIVERED, _UNKNOWN if seq < 0 else seq))
            self._dirty = True
            self.delivered = seq

    def save_outbound(self, seq: int, raw: bytes) -> None:
        self._flush_in()
        rec = _record(_REC_OUT, seq, raw)
        self._index[seq] = (self._size + _REC.size, len(raw))
        self._append(rec)
        self._dirty = True
        self._next_out = seq + 1

    def get_outbound(self, begin: int, end: int) -> list[tuple[int, bytes]]:
        out = []
        idx = self._index
        if end - begin > len(idx):
            seqs = sorted(s for s in idx if begin <= s <= end)
        else:
            seqs = [s for s in range(begin, end + 1) if s in idx]
        for s in seqs:
            off, length = idx[s]
            out.append((s, os.pread(self._fd, length, off)))
        return out

    def reset(self) -> None:
        """Start a fresh file (atomic rename), both sequences at 1."""
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, MAGIC)
            try:
                os.write(fd, _ZEROS)
            except OSError:
                pass                           # no room to reserve: the reset still holds
            if self._fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        if self._fsync:                        # (`os` durability: the loop never waits here)
            fsync_dir(self.path.parent)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_RDWR)
        self._size = len(MAGIC)
        self._reserved_to = os.fstat(self._fd).st_size
        self._index.clear()
        self.delivered = None
        self.next_in = 1
        self._next_out = 1
        self._pending_in = None
        self._dirty = False

    # -- durability -------------------------------------------------------------------------

    def sync(self) -> None:
        """Before the batch's output goes to the socket: write the latest inbound seq (with
        ``defer_next_in``, only when the batch is fsync'd anyway or ``DEFER_NEXT_IN_S`` passed),
        and fdatasync when an outbound record was written (one for the whole batch)."""
        if self._pending_in is not None:
            if not self._defer_in or self._dirty:
                self._flush_in()
            else:
                now = _clock()
                if now - self._in_written >= DEFER_NEXT_IN_S:
                    self._in_written = now
                    self._flush_in()
        if self._dirty:
            self._sync_now()
            self._dirty = False

    def settle(self) -> None:
        """The session ended (a disconnect): write a deferred inbound seq now, so the file does
        not lag behind while the session is away (no fsync: the next batch or close carries
        it to the disk)."""
        self._flush_in()

    def flush(self) -> None:
        """Make everything durable, the inbound seq included (clean close, tests)."""
        self._flush_in()
        self._sync_now()
        self._dirty = False

    def close(self) -> None:
        if self._fd >= 0:
            self.flush()
            os.close(self._fd)
            self._fd = -1

    def _flush_in(self) -> None:
        if self._pending_in is not None:
            seq, self._pending_in = self._pending_in, None
            self._append(_record(_REC_NEXT_IN, seq))

    def _append(self, rec: bytes) -> None:
        try:
            os.pwrite(self._fd, rec, self._size)
        except OSError as e:
            raise StoreError(f"cannot write session store {self.path}: {e.strerror}") from None
        self._size += len(rec)
        if self._size > self._reserved_to - RESERVE_BYTES // 4:
            self._reserve()

    def _reserve(self) -> None:
        """Extend the zero-filled room past the last record (it reaches the disk with the next
        fdatasync); a full disk only leaves less room."""
        start = max(self._size, self._reserved_to)
        try:
            os.pwrite(self._fd, _ZEROS[:self._size + RESERVE_BYTES - start], start)
        except OSError:
            return
        self._reserved_to = self._size + RESERVE_BYTES

    def _sync_now(self) -> None:
        if self._fsync:
            t0 = time.monotonic()
            try:
                os.fdatasync(self._fd)
            except OSError as e:
                raise StoreError(f"cannot sync session store {self.path}: {e.strerror}") from None
            took = time.monotonic() - t0
            if took >= SLOW_SYNC_S:
                _slow_log.log("slow", logging.WARNING,
                              "session store %s: fdatasync took %.3f s, and every session "
                              "waited for it (journal_durability: fsync syncs the session "
                              "files before their messages leave; `os` does not)",
                              self.path.name, took)
