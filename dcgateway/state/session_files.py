"""Durable FIX session state: next inbound/outbound MsgSeqNum and the messages sent, per session.

One append-only file per session, ``<data_dir>/sessions/<CompID>.log``. Every record is framed
``crc32 | type | seq | length | payload`` (little-endian, CRC over everything after itself), so a
record torn by a crash or a kill -9 is detected on open and cut off (the file is truncated back to
the last whole record), never fatal.

Durability: the session engine calls the setters synchronously (they only ``write()`` into the
OS page cache), and the I/O shell calls :meth:`FileSessionStore.sync` once per batch of input,
before it writes any byte that batch produced to the socket. What is written there survives any
crash of the gateway's process (kill -9 included): the OS has it. Against a power loss or a
kernel crash (``fsync=True``, durability ``fsync``), the file is fdatasync'd *off the event
loop*, by :class:`dcgateway.runtime.session_sync.SessionFileSync` every fraction of a second
(:meth:`begin_sync` / :meth:`end_sync` around an fdatasync in a worker thread): a slow disk never
stalls the sessions. A power loss can then take the last admin messages' records (a Heartbeat, a
Reject: the copies' sequence numbers are in the journal), so a peer may have seen sequence
numbers the file forgets. The file therefore knows whether it was open when the machine stopped:
each open appends an ``OPEN`` record with the kernel's boot id (fdatasync'd before anything is
sent) and a clean close a ``CLOSED`` record. A file that was open, not closed, under another
boot (or torn at its end, which a process crash alone hardly leaves), is
:attr:`~FileSessionStore.after_power_loss`: its outbound sequence continues ``UNSYNCED_LIMIT``
past what the file and the journal say (the margin written with the OPEN record, in one
fdatasync). Never more than that many outbound records are written without an fdatasync (past
it, :meth:`~FileSessionStore.sync` fdatasyncs on the loop, as the mode requires), so no number
a peer saw is used twice. The peer sees a gap, asks for it, and gets a GapFill. A process crash
under the same boot lost nothing and costs no gap. A target's "delivered" marker, which a later
reset trusts (:meth:`~FileSessionStore.set_delivered`, at its Logon and its disconnect), is
synced in the background too, in a round started at once; until it is on the disk,
:attr:`~FileSessionStore.marker_synced` is False and the target's outbox hands out no copy (see
:class:`~dcgateway.fanout.TargetStore`): only that session waits. A failed background fdatasync is
final for the file: Linux reports a writeback error once, so a later success proves nothing;
its session's batches then fail as an on-loop fdatasync's failure did, and no clean close is
recorded.

The next *inbound* seq is only ever written, never waited for: losing its last value makes the
gateway expect an older seq, and FIX recovers that by a ResendRequest (a source's inbound seq is
authoritative in the journal anyway). A source's store goes further (``defer_next_in``): the
journal is what its inbound seq is recovered from, so the file's copy (what ``dcgateway sessions
list`` shows when no gateway runs) is written at most every ``DEFER_NEXT_IN_S`` seconds, with any
batch that sent something, when the source disconnects (:meth:`FileSessionStore.settle`) and on
close, rather than once per read.

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

import bisect
import logging
import os
import struct
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import StoreError
from ..fsutil import fsync_dir, private_dir
from ..ratelog import RateLimitedLog

log = logging.getLogger("dcgateway.state")
#: A session file's fdatasync this slow is logged.
SLOW_SYNC_S = 0.5
#: At most this many outbound records are written and not yet fdatasync'd (``fsync=True``); the
#: outbound sequence continues this much higher after a power loss (module docstring).
UNSYNCED_LIMIT = 10_000
_slow_log = RateLimitedLog(log, interval=10.0)
#: A background round's ticket: (a duplicate fd, outbound records and markers written before it)
SyncTicket = tuple[int, int, int]

MAGIC = b"DCGWSS02"
#: Files written before the OPEN and CLOSED records (read, and marked ``MAGIC`` when reopened,
#: so that an older release refuses the file rather than cut it at the first record it does
#: not know).
MAGIC_V1 = b"DCGWSS01"
#: A file that holds copies carried over a reset (``CARRY`` records): an older release, which does
#: not know them, refuses the file rather than cut it there.
MAGIC_V3 = b"DCGWSS03"
_REC = struct.Struct("<IBQI")          # crc32, type, seq, payload length
_REC_OUT = 1                            # an outbound message (payload = raw bytes)
_REC_NEXT_IN = 2                        # next inbound seq = seq
_REC_NEXT_OUT = 3                       # next outbound seq = seq
_REC_DELIVERED = 4                      # a target's copies were handed out up to seq
_UNKNOWN = (1 << 64) - 1                # ... or unknown (-1 in memory): connected
_REC_OPEN = 5                           # opened under the boot id in the payload
_REC_CLOSED = 6                         # closed cleanly: everything before it is on the disk
_REC_SKIP = 7                           # seqs seq..payload (u64) never used: the power-loss margin
_REC_CARRY = 8                          # a copy to carry over a reset (seq: its source seq)
_CARRY = struct.Struct("<dH")           # received, len(source); then source, raw
#: A copy a target never received, kept across a reset: (source, source seq, received, raw).
Carried = tuple[str, int, float, bytes]
_U64 = struct.Struct("<Q")
MAX_RECORD = 16 * 1024 * 1024
#: Zero-filled room kept past the last record (see "Room on a full disk").
RESERVE_BYTES = 64 * 1024
_ZEROS = bytes(RESERVE_BYTES)
#: With ``defer_next_in``: the inbound seq reaches the file at most this long after it changed
#: (the session's timer syncs the store once a second, so also when the traffic stops).
DEFER_NEXT_IN_S = 1.0
#: The clock of ``defer_next_in`` (a module attribute, so a test can move it).
_clock = time.monotonic


def read_boot_id() -> bytes:
    """The kernel's id of this boot (Linux); empty where there is none, which counts as a
    different boot every time (a margin after every unclean stop, never a reused seq)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:
            return f.read().strip()
    except OSError:
        return b""


#: This boot's id (a module attribute, so a test can reboot the machine).
boot_id = read_boot_id


def _record(rtype: int, seq: int, payload: bytes = b"") -> bytes:
    head = struct.pack("<BQI", rtype, seq, len(payload))
    return struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + head + payload


def _carry_record(carried: Carried) -> bytes:
    """A ``CARRY`` record: its seq the source seq, its payload received, len(source), source,
    raw (read back by ``FileSessionStore._scan``)."""
    source, source_seq, received, raw = carried
    name = source.encode()
    return _record(_REC_CARRY, source_seq, _CARRY.pack(received, len(name)) + name + raw)


def peek_sequences(path: Path | str) -> tuple[int, int] | None:
    """(next_in, next_out) recorded in a session store file, read without opening it for write:
    ``dcgateway sessions list`` uses it while the gateway runs (a torn tail is simply ignored,
    never truncated). None when the file does not exist."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    if not data.startswith((MAGIC, MAGIC_V1, MAGIC_V3)):
        raise StoreError(f"{path} is not a dcgateway session store (bad magic)")
    probe = FileSessionStore.__new__(FileSessionStore)
    probe.next_in, probe._next_out, probe._index, probe.delivered = 1, 1, {}, None
    probe.carried = []
    probe._seqs, probe.skipped = [], []
    probe._opened_boot, probe._closed = None, False
    probe._scan(data)
    return probe.next_in, probe._next_out


class FileSessionStore:
    """A :class:`dcgateway.fix.store.SessionStore` backed by one append-only file."""

    def __init__(self, path: Path | str, *, fsync: bool = True,
                 defer_next_in: bool = False, floor: int = 1) -> None:
        """``floor``: the least next outbound seq the session may continue with (a target's
        copies in the journal), what the margin after a power loss is added to."""
        self.path = Path(path)
        self._fsync = fsync
        self._defer_in = defer_next_in
        self._in_written = 0.0                # monotonic time the inbound seq was last written
        #: next MsgSeqNum expected inbound: a plain attribute, read on every message (set it
        #: through :meth:`set_next_in`)
        self.next_in = 1
        self._next_out = 1
        self._index: dict[int, tuple[int, int]] = {}
        self._seqs: list[int] = []            # the index's seqs, ascending (for next_stored)
        #: (first, last) runs of seqs never used: the margins after power losses
        self.skipped: list[tuple[int, int]] = []
        self.delivered: int | None = None     # a target's last seq handed out (see TargetStore)
        #: copies carried over the last reset and not journaled again yet (see TargetStore)
        self.carried: list[Carried] = []
        self._dirty = False                   # an outbound record in this batch
        self._pending_in: int | None = None
        self.recovered_torn_bytes = 0
        #: the boot id of the last OPEN record, and whether a CLOSED record followed it
        self._opened_boot: bytes | None = None
        self._closed = False
        #: outbound records written so far, and how many of them an fdatasync covers
        self._out_records = 0
        self._synced_records = 0
        self._unsynced = False                # an outbound record since the last begin_sync
        #: "delivered" markers written, and how many of them an fdatasync covers
        self._markers = 0
        self._markers_synced = 0
        #: asks for a background round now (set by the sync task): a marker is waited for
        self.sync_soon: Callable[[], None] | None = None
        #: a background fdatasync failed: what it should have covered may never reach the disk
        #: (Linux reports a writeback error once), so the file is not trusted until a restart
        self._sync_error: OSError | None = None
        private_dir(self.path.parent)
        self._fd = -1
        self._open()
        #: the machine stopped (power loss, kernel crash) while this file was open, or its tail
        #: is torn, which a process crash alone hardly leaves: its last records may be gone, so
        #: its outbound sequence continues ``UNSYNCED_LIMIT`` higher (module docstring)
        self.after_power_loss = self._opened_boot is not None and not self._closed and (
            not self._opened_boot or self._opened_boot != boot_id()
            or self.recovered_torn_bytes > 0)
        if self.after_power_loss:
            first = max(self._next_out, floor)
            self._next_out = first + UNSYNCED_LIMIT
            self.skipped.append((first, self._next_out - 1))
            self._append(_record(_REC_SKIP, first, _U64.pack(self._next_out - 1)))
            self._append(_record(_REC_NEXT_OUT, self._next_out))
        # The margin and the OPEN record reach the disk in one fdatasync, before anything is
        # sent: a start that fails after it has its margin already.
        self._append(_record(_REC_OPEN, 0, boot_id()))
        self._sync_now()

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
            fsync_dir(self.path.parent)
            return
        data = os.pread(fd, size, 0)
        if data.startswith(MAGIC_V1):
            os.pwrite(fd, MAGIC, 0)           # it is about to hold OPEN and CLOSED records
        elif not data.startswith((MAGIC, MAGIC_V3)):
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
                self._stored(seq, pos + hs, length)
                self._next_out = seq + 1
            elif rtype == _REC_SKIP and length == _U64.size:
                self.skipped.append((seq, _U64.unpack_from(data, pos + hs)[0]))
            elif rtype == _REC_NEXT_IN:
                self.next_in = seq
            elif rtype == _REC_NEXT_OUT:
                self._next_out = seq
            elif rtype == _REC_DELIVERED:
                self.delivered = -1 if seq == _UNKNOWN else seq
            elif rtype == _REC_OPEN:
                self._opened_boot = data[pos + hs:end]
            elif rtype == _REC_CARRY and length >= _CARRY.size:
                received, n_src = _CARRY.unpack_from(data, pos + hs)
                body = pos + hs + _CARRY.size
                self.carried.append((data[body:body + n_src].decode(), seq, received,
                                     data[body + n_src:end]))
            elif rtype != _REC_CLOSED:
                break
            self._closed = rtype == _REC_CLOSED
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
        self._out_records += max(1, seq - self._next_out)     # a jump counts as its length
        self._unsynced = True
        self._next_out = seq

    def set_delivered(self, seq: int) -> None:
        """A target's last seq handed out, written when it disconnects; -1 when it logs on:
        until the next disconnect it is unknown, so a crash meanwhile is never mistaken for
        "not delivered". A reset after a power loss carries over what the record says never
        left, so it must never say less than what did: with ``fsync=True`` the record is
        fdatasync'd by a background round asked for at once (:attr:`sync_soon`), and the
        target's copies wait for :attr:`marker_synced` (not the loop); here and now when no
        background sync is attached."""
        if seq != self.delivered:
            self._append(_record(_REC_DELIVERED, _UNKNOWN if seq < 0 else seq))
            self.delivered = seq
            if self._fsync:
                if self.sync_soon is None:     # no background sync (a tool, a test): now
                    self._sync_now()
                    return
                self._markers += 1
                self._unsynced = True
                self.sync_soon()

    @property
    def sync_failed(self) -> bool:
        """A background fdatasync failed (final until a restart: module docstring)."""
        return self._sync_error is not None

    @property
    def marker_synced(self) -> bool:
        """Whether the last "delivered" marker is on the disk (always, without ``fsync``); never
        after a failed fdatasync (a later success proves nothing: module docstring)."""
        return self._markers_synced >= self._markers and self._sync_error is None

    def save_outbound(self, seq: int, raw: bytes) -> None:
        self._flush_in()
        rec = _record(_REC_OUT, seq, raw)
        self._stored(seq, self._size + _REC.size, len(raw))
        self._append(rec)
        self._dirty = True
        self._out_records += 1
        self._unsynced = True
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

    def _stored(self, seq: int, offset: int, length: int) -> None:
        if seq not in self._index:
            if self._seqs and seq < self._seqs[-1]:
                bisect.insort(self._seqs, seq)
            else:
                self._seqs.append(seq)
        self._index[seq] = (offset, length)

    def skipped_to(self, seq: int) -> int:
        """Past the margin after a power loss that ``seq`` falls in (nothing was ever sent
        there), or ``seq`` itself."""
        for first, last in self.skipped:
            if first <= seq <= last:
                return last + 1
        return seq

    def next_stored(self, first: int, end: int) -> int:
        """The first seq in ``first..end`` with a message stored, or ``end + 1`` (see
        dcgateway.fix.resend)."""
        i = bisect.bisect_left(self._seqs, first)
        return self._seqs[i] if i < len(self._seqs) and self._seqs[i] <= end else end + 1

    def reset(self, carry: Sequence[Carried] = (), delivered: int | None = None) -> None:
        """Start a fresh file (atomic rename), both sequences at 1, holding ``carry``: the
        copies a target never received (until the next reset; whether they were journaled
        again is the journal's to say: see TargetStore), and a target's ``delivered`` marker
        for the new sequence (0 when it is offline, -1 when it is connected)."""
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            opened = _record(_REC_OPEN, 0, boot_id())
            records = b"".join(_carry_record(c) for c in carry)
            if delivered is not None:
                records += _record(_REC_DELIVERED, _UNKNOWN if delivered < 0 else delivered)
            head = (MAGIC_V3 if carry else MAGIC) + opened + records
            try:
                if os.write(fd, head) != len(head):
                    raise OSError(28, "No space left on device")
            except OSError as e:               # the old file stays as it was
                os.unlink(tmp)
                raise StoreError(f"cannot reset session store {self.path}: "
                                 f"{e.strerror or e}") from None
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
        if self._fsync:
            self._synced_records = self._out_records       # the fresh file is on the disk
            self._markers_synced = self._markers
        self._size = len(head)
        self._reserved_to = os.fstat(self._fd).st_size
        self.carried = list(carry)
        self._index.clear()
        self._seqs.clear()
        self.skipped.clear()
        self.delivered = delivered
        self.next_in = 1
        self._next_out = 1
        self._pending_in = None
        self._dirty = False

    # -- durability -------------------------------------------------------------------------

    def sync(self) -> None:
        """Before the batch's output goes to the socket: write the latest inbound seq (with
        ``defer_next_in``, only when the batch wrote an outbound record anyway or
        ``DEFER_NEXT_IN_S`` passed). With ``fsync=True``, fdatasync here, on the loop, only
        when ``UNSYNCED_LIMIT`` outbound records wait for the background sync: the bound that
        makes the margin after a power loss safe."""
        if self._pending_in is not None:
            if not self._defer_in or self._dirty:
                self._flush_in()
            else:
                now = _clock()
                if now - self._in_written >= DEFER_NEXT_IN_S:
                    self._in_written = now
                    self._flush_in()
        if self._dirty:
            self._dirty = False
            if self._sync_error is not None:
                raise StoreError(f"cannot sync session store {self.path}: "
                                 f"{self._sync_error.strerror or self._sync_error}")
            if self._fsync and self._out_records - self._synced_records >= UNSYNCED_LIMIT:
                self._sync_now()

    def begin_sync(self) -> SyncTicket | None:
        """On the loop: what a background fdatasync is to cover, as ``(fd, records, markers)`` (``fd``
        a duplicate the worker closes), or None when there is nothing to sync. The worker
        fdatasyncs ``fd``; then :meth:`end_sync` (or :meth:`abandon_sync`). A ticket from
        before a reset credits nothing after it: the reset's fsync covered more."""
        if not self._fsync or not self._unsynced or self._fd < 0:
            return None
        try:
            fd = os.dup(self._fd)
        except OSError as e:                  # no descriptor left: the next round tries again
            _slow_log.log("dup", logging.ERROR, "session store %s: cannot sync: %s",
                          self.path.name, e.strerror or e)
            return None
        self._unsynced = False
        return fd, self._out_records, self._markers

    def end_sync(self, ticket: SyncTicket, error: OSError | None, seconds: float) -> None:
        """On the loop, after the worker's fdatasync of ``ticket``: the records written
        before it began are on the disk. A failure is final for this file (``_sync_error``):
        its batches that send something fail as the old on-loop fdatasync did, and no clean
        close is recorded."""
        if error is not None:
            self._unsynced = True
            if self._sync_error is None:
                self._sync_error = error
                log.error("session store %s: fdatasync failed (%s): its session stops sending "
                          "until the gateway is restarted", self.path.name,
                          error.strerror or error)
            return
        self._synced_records = max(self._synced_records, ticket[1])
        self._markers_synced = max(self._markers_synced, ticket[2])
        if seconds >= SLOW_SYNC_S:
            _slow_log.log("slow", logging.WARNING,
                          "session store %s: a background fdatasync took %.3f s (no session "
                          "waited for it)", self.path.name, seconds)

    def abandon_sync(self) -> None:
        """The round was cancelled (the gateway stops): the close fdatasyncs it all."""
        self._unsynced = True

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
        """A clean close: everything, then the ``CLOSED`` record, on the disk."""
        if self._fd >= 0:
            self._flush_in()
            if self._sync_error is None:      # else: not known to be whole on the disk
                self._append(_record(_REC_CLOSED, 0))
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
        """fdatasync here and now (``fsync=True``): at open and close, and on the loop when
        ``UNSYNCED_LIMIT`` records wait (the background sync is stalled or failing)."""
        if self._fsync:
            t0 = time.monotonic()
            records = self._out_records
            try:
                os.fdatasync(self._fd)
            except OSError as e:
                raise StoreError(f"cannot sync session store {self.path}: {e.strerror}") from None
            self._synced_records = records
            self._markers_synced = self._markers
            took = time.monotonic() - t0
            if took >= SLOW_SYNC_S:
                _slow_log.log("slow-now", logging.WARNING,
                              "session store %s: an fdatasync took %.3f s, and every session "
                              "waited for it (at start or stop, or %d admin records were "
                              "waiting for the background sync)",
                              self.path.name, took, UNSYNCED_LIMIT)
