"""Fan-out: source message -> journal -> routing -> per-target outbox -> target socket.

Theory of operation (DESIGN.md "Data flow", ILINK.md "Drop copy"):

* **Append first.** Every application message a source session delivers is appended to the
  journal with the target sequence numbers it is assigned (one per matching target, reserved from
  that target's outbound stream), then the batch's inbound-sequence marker. Nothing is written to
  any target until the journal's group commit says the record is durable, so a target never holds
  a message, or a MsgSeqNum, that a crash could make the gateway forget.
* **One ordered outbox per connected target.** A target's wire must show its sequence numbers in
  order, but two producers use them: the fan-out (copies, reserved at append time) and the target's
  FIX session (Logon reply, Heartbeats, Rejects...). Both go through :class:`TargetState`, which
  writes strictly by sequence number: a copy once durable, a session message at once when its turn
  comes. Retransmissions (43=Y, answers to a ResendRequest) reuse old numbers and bypass it.
* **Slow and offline targets cost disk, not memory.** The outbox keeps at most ``max_pending``
  copies in memory; past that it *spills*: it keeps only its cursor and reads the copies back from
  the journal's per-target index as the socket drains (``resume_writing``). A target that is
  offline gets nothing in memory at all: its copies are in the journal under the sequence numbers
  reserved for it, and it receives them with 43=Y when it logs on and asks (ResendRequest, served
  from the journal, at most 2500 per request). A slow target never slows the source or the other
  targets: appending never waits for any socket.
* **No resend of what is not durable.** Before a target's Logon is processed, everything reserved
  for it is made durable (a rare, blocking fsync); afterwards a ResendRequest is served only up to
  the last sequence number the outbox has written (``TargetStore.resend_limit``); later ones are
  on their way, in order.
* **Read-only targets.** An application message from a target is answered with a Business
  Message Reject (35=j) and never routed (ILINK.md).
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections import Counter, deque
from collections.abc import Callable
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from .fix import tags as T
from .fix.codec import Decoder, RawMessage, byte_sum, encode
from .fix.dropcopy import CopySource, LiveBuilder, build_copy, live_builder
from .fix.timefmt import utc_timestamp
from .journal import Journal
from .routing import RoutingTable, category

if TYPE_CHECKING:
    from .net.acceptor import SessionSlot
    from .net.connection import FixConnection
    from .store import FileSessionStore

log = logging.getLogger("dcgateway.fanout")

#: Session messages (Heartbeats...) queued behind a target's copies before the gateway gives up on
#: a target that does not read (it keeps being read, see net/connection.py, so this is its bound).
MAX_ADMIN_QUEUED = 10_000
#: Copies a connected target whose socket pushes back may hold in memory before its outbox spills
#: to the journal; a target that keeps up spills only past SPILL_HARD_FACTOR times that.
DEFAULT_MAX_PENDING = 10_000
SPILL_HARD_FACTOR = 10
#: Journal records appended but not yet durable before the gateway stops reading from sources
#: (their TCP windows fill), and the level at which it reads again: the journal's own pace, never
#: a target's, bounds the memory of copies waiting for their fsync.
MAX_UNDURABLE = 20_000
RESUME_UNDURABLE = 10_000
#: Journal entries read per catch-up step, and bytes per socket write.
CATCHUP_BATCH = 1000
WRITE_CHUNK = 256 * 1024
#: Copies per socket write on the common path (about WRITE_CHUNK of typical copies).
RUN_COPIES = 1000
_LSN = itemgetter(1)
PROFILE_FRONT_END = {"ilink2": "ilink2", "fix": "fix"}


def _decode_one(raw: bytes) -> RawMessage | None:
    items = Decoder(max(len(raw) + 1, 1 << 16)).feed(raw)
    return items[0] if items and isinstance(items[0], RawMessage) else None


class _Pending:
    """A connected target's copies waiting to be written: ``(seq, lsn, src, received, category)``
    in seq order, lsn never decreasing. A list and a head index, so the writer takes a whole run
    of durable copies with one bisect and one slice."""

    __slots__ = ("_items", "_head")

    def __init__(self) -> None:
        self._items: list[tuple[int, int, CopySource, float, str | None]] = []
        self._head = 0

    def __len__(self) -> int:
        return len(self._items) - self._head

    def __bool__(self) -> bool:
        return len(self._items) > self._head

    def append(self, item: tuple[int, int, CopySource, float, str | None]) -> None:
        self._items.append(item)

    def first(self) -> tuple[int, int, CopySource, float, str | None]:
        return self._items[self._head]

    def pop_first(self) -> None:
        self._head += 1
        self._compact()

    def clear(self) -> None:
        self._items = []
        self._head = 0

    def take_run(self, seq: int, durable_lsn: int,
                 limit: int) -> list[tuple[int, int, CopySource, float, str | None]]:
        """Remove and return the copies from ``seq`` on whose lsn is durable, at most ``limit``,
        provided they are exactly ``seq, seq+1, ...``; otherwise (a session message's seq in
        between, or the first is not ``seq``) nothing."""
        items, head = self._items, self._head
        if head >= len(items) or items[head][0] != seq:
            return []
        end = bisect_right(items, durable_lsn, head, min(len(items), head + limit), key=_LSN)
        if end == head or items[end - 1][0] != seq + (end - head) - 1:
            return []
        run = items[head:end]
        self._head = end
        self._compact()
        return run

    def _compact(self) -> None:
        head = self._head
        if head >= len(self._items):
            self._items = []
            self._head = 0
        elif head > 4096 and head * 2 > len(self._items):
            del self._items[:head]
            self._head = 0


class TargetStore:
    """The :class:`~dcgateway.fix.store.SessionStore` of a drop copy target: inbound sequence and
    the session's own messages in its session file; copies in the journal. The outbound counter
    lives here, shared by the session (admin messages) and the fan-out (:meth:`reserve`)."""

    def __init__(self, target: "TargetState", file: "FileSessionStore", journal: Journal,
                 next_out: int) -> None:
        self.target = target
        self.file = file
        self.journal = journal
        self._next_out = next_out

    @property
    def next_in(self) -> int:
        return self.file.next_in

    @property
    def next_out(self) -> int:
        return self._next_out

    def set_next_in(self, seq: int) -> None:
        self.file.set_next_in(seq)

    def set_next_out(self, seq: int) -> None:
        self.file.set_next_out(seq)
        self._next_out = seq

    def save_outbound(self, seq: int, raw: bytes) -> None:
        self.file.save_outbound(seq, raw)
        self._next_out = max(self._next_out, seq + 1)

    def reserve(self) -> int:
        """The next outbound MsgSeqNum, for a copy (made durable by its journal record)."""
        seq = self._next_out
        self._next_out = seq + 1
        return seq

    def unreserve(self, seq: int) -> None:
        """The journal refused the record that ``seq`` was reserved for: give it back, so the
        target's stream has no hole its outbox would wait on forever."""
        if self._next_out == seq + 1:
            self._next_out = seq

    def resend_limit(self) -> int:
        return self.target.written_upto

    def get_outbound(self, begin: int, end: int) -> list[tuple[int, bytes]]:
        """The session's own messages and the copies, as first sent (52 = time received)."""
        out = dict(self.file.get_outbound(begin, end))
        t = self.target
        for e in self.journal.read_target(t.comp_id, begin, end):
            msg = _decode_one(e.raw)
            if msg is None:
                continue
            out[e.target_seq] = build_copy(CopySource(msg), t.front_end, t.begin_string,
                                           t.gateway_comp, t.comp_bytes, e.target_seq,
                                           utc_timestamp(e.received))
        return sorted(out.items())

    def reset(self) -> None:
        self.file.reset()
        self.journal.reset_target(self.target.comp_id)
        self._next_out = 1
        self.target.reset()

    def sync(self) -> None:
        self.file.sync()

    def close(self) -> None:
        self.file.close()


class TargetState:
    """One target session: its outbound stream while connected (the ordered outbox)."""

    def __init__(self, comp_id: str, begin_string: str, profile: str, gateway_comp: str,
                 journal: Journal, clock: Callable[[], float], max_pending: int) -> None:
        self.comp_id = comp_id
        self.comp_bytes = comp_id.encode()
        self.begin_string = begin_string.encode()
        self.gateway_comp = gateway_comp.encode()
        self.default_front_end = PROFILE_FRONT_END.get(profile, "fix")
        self._front_end = ""
        self._build: LiveBuilder
        self.front_end = self.default_front_end
        self.journal = journal
        self.clock = clock
        self.max_pending = max_pending
        self.store: TargetStore | None = None
        self.conn: FixConnection | None = None
        self.cursor = 0                 # next seq to write while connected
        self.written_upto = 0           # highest seq written (or durable before logon)
        self.pending = _Pending()
        self.admin: dict[int, bytes] = {}
        self.spill_from: int | None = None
        self.last_reserved_lsn = 0
        self.copies_written = 0
        self.out_counts: Counter[str | None] = Counter()   # copies written by category (metrics)
        # receipt -> write, seconds: each flush hands its batch to ``observe_latencies`` (the
        # metrics histogram; a batch per flush keeps the loop free of once-a-second bulk work)
        # and keeps the most recent ones for the demo's p99
        self.observe_latencies: Callable[[list[float]], None] | None = None
        self.latencies: deque[float] = deque(maxlen=10_000)
        self._lats: list[float] = []
        self._catchup: deque = deque()      # journal entries read ahead while spilled

    @property
    def front_end(self) -> str:
        return self._front_end

    @front_end.setter
    def front_end(self, value: str) -> None:
        """The copy format (from the routing table); the hot-path builder follows it."""
        if value != self._front_end:
            self._front_end = value
            self._build = live_builder(value, self.begin_string, self.gateway_comp,
                                       self.comp_bytes)

    @property
    def backlog(self) -> int:
        """Copies routed to this target and not yet written to it."""
        assert self.store is not None
        if self.conn is None:
            return max(0, self.store.next_out - 1 - self.written_upto)
        return max(0, self.store.next_out - self.cursor)

    def reset(self) -> None:
        self._clear()
        self.cursor = 1
        self.written_upto = 0

    def _clear(self) -> None:
        self.pending.clear()
        self.admin.clear()
        self._catchup.clear()
        self.spill_from = None

    # -- connection lifecycle -------------------------------------------------------------------

    def attach(self, conn: "FixConnection") -> None:
        """The target's Logon is about to be processed: everything reserved so far must be
        durable (so a ResendRequest can serve it), and the outbox starts at the next seq."""
        assert self.store is not None
        if self.last_reserved_lsn > self.journal.durable_lsn:
            self.journal.sync()               # on the owner thread, it writes the buffer first
        self.conn = conn
        self.cursor = self.store.next_out
        self.written_upto = self.cursor - 1
        self._clear()

    def detach(self, conn: "FixConnection") -> None:
        if self.conn is conn:
            self.conn = None
            self._clear()

    # -- producers ----------------------------------------------------------------------------

    def add_copy(self, seq: int, lsn: int, src: CopySource, received: float,
                 cat: str | None = None) -> None:
        self.last_reserved_lsn = lsn
        conn = self.conn
        if conn is None or seq < self.cursor:
            return                          # offline: the journal has it for the ResendRequest
        if self.spill_from is not None:
            return                          # catching up from the journal already
        n = len(self.pending)
        if n < self.max_pending or (n < self.max_pending * SPILL_HARD_FACTOR
                                    and not conn.write_paused):
            self.pending.append((seq, lsn, src, received, cat))
        else:
            self.spill_from = self.pending.first()[0] if self.pending else seq
            self.pending.clear()
            log.warning("target %s is slow: %d copies queued; serving it from the journal "
                        "until it catches up", self.comp_id, n)

    def session_output(self, data: bytes) -> None:
        """Bytes the target's FIX session wants to send: retransmissions go out at once, new
        messages take their turn by sequence number."""
        direct: list[bytes] = []
        for item in Decoder(1 << 24).feed(data):
            if not isinstance(item, RawMessage):
                continue
            seq = item.seq_num or 0
            if item.poss_dup or seq < self.cursor:
                direct.append(item.raw)
            else:
                self.admin[seq] = item.raw
        # New messages first: a Logon reply must precede retransmissions answering a
        # ResendRequest that came in the same packet as the Logon.
        self.flush(self.journal.durable_lsn)
        conn = self.conn
        if direct and conn is not None:
            conn.write_raw(b"".join(direct))
        if len(self.admin) > MAX_ADMIN_QUEUED and conn is not None:
            log.warning("target %s is not reading: %d session messages queued; disconnecting",
                        self.comp_id, len(self.admin))
            conn.close("target not reading", abort=True)

    # -- the writer -------------------------------------------------------------------------------

    def flush(self, durable_lsn: int) -> None:
        """Write, in sequence order, everything that may go now; stop when the socket pushes
        back (``pause_writing``) or the next seq is not durable yet. The common case (no session
        message waiting, not spilled) takes whole runs of durable copies (:meth:`_write_run`)."""
        conn = self.conn
        if conn is None or conn.write_paused:
            return
        now = self.clock()
        st = utc_timestamp(now)
        st52 = b"52=" + st + b"\x01"
        st52_sum = byte_sum(st52)
        while self.conn is conn and not conn.write_paused:
            if self.admin or self.spill_from is not None or not self._write_run(
                    conn, durable_lsn, now, st52, st52_sum):
                if not self._write_in_order(conn, durable_lsn, now, st, st52, st52_sum):
                    break
        lats = self._lats
        if lats:
            self.copies_written += len(lats)
            self.latencies.extend(lats)
            if self.observe_latencies is not None:
                self.observe_latencies(lats)
            self._lats = []

    def _write_run(self, conn: "FixConnection", durable_lsn: int, now: float, st52: bytes,
                   st52_sum: int) -> bool:
        """The next run of durable copies, from the cursor on, up to RUN_COPIES (one bisect,
        one slice, comprehensions); False when there is none."""
        run = self.pending.take_run(self.cursor, durable_lsn, RUN_COPIES)
        if not run:
            return False
        build = self._build
        out = [build(src, seq, st52, st52_sum) for seq, _, src, _, _ in run]
        self._lats.extend([now - received for _, _, _, received, _ in run])
        self.out_counts.update([cat for _, _, _, _, cat in run])
        self.cursor += len(run)
        self._write(out, conn)
        return True

    def _write_in_order(self, conn: "FixConnection", durable_lsn: int, now: float, st: bytes,
                        st52: bytes, st52_sum: int) -> bool:
        """One message at a time, interleaving the session's own messages and catch-up copies
        read from the journal; True when it stopped at WRITE_CHUNK (more may follow)."""
        out: list[bytes] = []
        size = 0
        build = self._build
        pending, admin, lats, counts = self.pending, self.admin, self._lats, self.out_counts
        seq = self.cursor
        full = False
        while True:
            raw = admin.pop(seq, None) if admin else None
            if raw is None:
                if self.spill_from is None:
                    if not pending:
                        break
                    item = pending.first()
                    if item[0] != seq or item[1] > durable_lsn:
                        break
                    pending.pop_first()
                    raw = build(item[2], seq, st52, st52_sum)
                    lats.append(now - item[3])
                    counts[item[4]] += 1
                else:
                    raw = self._from_journal(seq, st)
                    if raw is None:
                        break
            out.append(raw)
            size += len(raw)
            seq += 1
            if size >= WRITE_CHUNK:
                full = True
                break
        self.cursor = seq
        if out:
            self._write(out, conn)
        return full

    def _write(self, out: list[bytes], conn: "FixConnection") -> None:
        conn.write_raw(b"".join(out))
        self.written_upto = self.cursor - 1

    def _from_journal(self, seq: int, st: bytes) -> bytes | None:
        """Catch-up: the copy for ``seq`` read back from the journal (durable entries only)."""
        assert self.store is not None
        if seq >= self.store.next_out:
            self.spill_from = None          # caught up: new copies queue in memory again
            self._catchup.clear()
            return None
        ahead = self._catchup
        while ahead and ahead[0].target_seq < seq:
            ahead.popleft()
        if not ahead:
            last = min(seq + CATCHUP_BATCH - 1, self.store.next_out - 1)
            ahead.extend(self.journal.read_target(self.comp_id, seq, last))
        if not ahead or ahead[0].target_seq != seq:
            return None                     # not durable yet
        msg = _decode_one(ahead.popleft().raw)
        if msg is None:                     # CRC-checked, so never expected: do not stall
            log.error("target %s: journal entry for seq %d does not decode; gap-filled",
                      self.comp_id, seq)
            return encode(self.begin_string, T.MsgType.SEQUENCE_RESET,
                          b"49=%s\x0156=%s\x0134=%d\x0143=Y\x0152=%s\x01122=%s\x01"
                          % (self.gateway_comp, self.comp_bytes, seq, st, st),
                          b"123=Y\x0136=%d\x01" % (seq + 1))
        self.copies_written += 1
        cat = category(msg)
        self.out_counts[cat] = self.out_counts.get(cat, 0) + 1
        return build_copy(CopySource(msg), self.front_end, self.begin_string, self.gateway_comp,
                          self.comp_bytes, seq, st)


class Fanout:
    """Source messages in, copies out. ``on_app`` is the acceptor's application sink."""

    def __init__(self, journal: Journal, table: RoutingTable, targets: dict[str, TargetState],
                 *, clock: Callable[[], float], notify: Callable[[], None]) -> None:
        self.journal = journal
        self.table = table
        self.targets = targets
        self.clock = clock
        self.notify = notify              # the group committer's wake-up
        self.messages_in = 0
        self.copies_routed = 0
        self.sources: dict[str, "SessionSlot"] = {}   # source slots, for backpressure
        self.sources_held = False
        # plain counters the metrics pump reads once a second (no metrics call per message)
        self.journal_refusals = 0
        self.in_counts: dict[tuple[str, str | None], int] = {}
        self.group_counts: dict[str, int] = {}
        self.journal_bytes = 0
        self.on_journal_error: Callable[[Any, Exception], None] | None = None
        self._apply_front_ends()

    def swap_table(self, table: RoutingTable) -> None:
        """A new routing table (groups reloaded): one reference assignment; messages already
        routed keep their routes (their sequence numbers are in the journal)."""
        self.table = table
        self._apply_front_ends()

    def _apply_front_ends(self) -> None:
        for t in self.targets.values():
            t.front_end = self.table.front_end_of(t.comp_id) or t.default_front_end

    # -- the application sink -----------------------------------------------------------------

    def on_app(self, slot: "SessionSlot", messages: list[RawMessage], now: float) -> None:
        if slot.role == "source":
            self._from_source(slot, messages, now)
        else:
            self._from_target(slot, messages, now)

    def _from_source(self, slot: "SessionSlot", messages: list[RawMessage], now: float) -> None:
        table, journal, targets = self.table, self.journal, self.targets
        in_counts, group_counts = self.in_counts, self.group_counts
        source = slot.comp_id
        nbytes = 0
        classify_route = table.classify_route
        for msg in messages:
            try:
                cat, routes = classify_route(source, msg)
            except Exception as exc:          # a body the session let through but no filter can read
                log.error("%s MsgSeqNum %s: cannot route (%s); journaled, not copied",
                          source, msg.seq_num, exc)
                cat, routes = None, ()
            assigns = [(r.target, targets[r.target].store.reserve()) for r in routes]
            try:
                lsn = journal.append(source, msg.seq_num or 0, now, msg.raw, assigns)
            except Exception as exc:          # disk full, I/O error: this message is not kept
                for target, seq in assigns:
                    targets[target].store.unreserve(seq)
                self._refuse_rest(slot, msg, exc, now)
                break
            nbytes += len(msg.raw)
            key = (source, cat)
            in_counts[key] = in_counts.get(key, 0) + 1
            if routes:
                src = CopySource(msg)
                for target, seq in assigns:
                    targets[target].add_copy(seq, lsn, src, now, cat)
                for r in routes:
                    group_counts[r.group] = group_counts.get(r.group, 0) + 1
                self.copies_routed += len(routes)
        self.journal_bytes += nbytes
        self.messages_in += len(messages)
        try:
            journal.append_source_next_in(source, slot.store.next_in)
        except Exception as exc:              # disk full: the records above stay buffered for the
            # committer's retry, and the next append refuses the source (_refuse_rest)
            log.error("could not journal the inbound sequence of %s: %s", source, exc)
        self.notify()
        if not self.sources_held and journal.appended_lsn - journal.durable_lsn > MAX_UNDURABLE:
            self._hold_sources(True)

    def _refuse_rest(self, slot: "SessionSlot", msg: RawMessage, exc: Exception,
                     now: float) -> None:
        """The journal could not take ``msg``: it and the rest of its batch are not accepted.
        The source's next expected seq goes back to ``msg``'s, so the gateway asks for them
        again (ResendRequest) once the source logs on again; it is told why and disconnected."""
        self.journal_refusals += 1
        seq = msg.seq_num or slot.store.next_in
        log.error("journal refused a message of %s (MsgSeqNum %d): %s; logging it out, it will "
                  "be asked for everything from %d", slot.comp_id, seq, exc, seq)
        slot.store.set_next_in(seq)
        conn = slot.connection
        if conn is not None and conn.session is not None and not conn.session.closed:
            conn.session.logout("gateway cannot store messages right now; log on again later", now)
            conn.close_after_pump = True

    def _from_target(self, slot: "SessionSlot", messages: list[RawMessage], now: float) -> None:
        """ILINK.md: a drop copy target is read-only. Each application message it sends gets a
        Business Message Reject (35=j, 380=3 unsupported message type) and goes nowhere."""
        conn = slot.connection
        if conn is None or conn.session is None:
            return
        for msg in messages:
            log.warning("target %s sent an application message (35=%s); rejected, not routed",
                        slot.comp_id, msg.msg_type.decode("ascii", "replace"))
            body = b"45=%d\x01372=%s\x01380=3\x0158=drop copy sessions are read-only\x01" % (
                msg.seq_num or 0, msg.msg_type)
            conn.session.send_app(T.MsgType.BUSINESS_MESSAGE_REJECT, body, now)

    # -- durability -------------------------------------------------------------------------------

    def _hold_sources(self, hold: bool) -> None:
        self.sources_held = hold
        for slot in self.sources.values():
            conn = slot.connection
            if conn is not None:
                (conn.hold_reading if hold else conn.release_reading)("journal")
        if hold:
            log.warning("journal is %d records behind; pausing reads from sources",
                        self.journal.appended_lsn - self.journal.durable_lsn)

    def on_durable(self, lsn: int) -> None:
        if self.sources_held and self.journal.appended_lsn - lsn < RESUME_UNDURABLE:
            self._hold_sources(False)
        for t in self.targets.values():
            if t.conn is not None and (t.pending or t.spill_from is not None or t.admin):
                try:
                    t.flush(lsn)
                except Exception:             # one target's fault must not stop the others
                    log.exception("internal error writing to target %s; disconnecting it",
                                  t.comp_id)
                    if t.conn is not None:
                        t.conn.close("internal error", abort=True)
