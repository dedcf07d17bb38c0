"""A drop copy target's outbox: its one outbound stream, in sequence order, sans I/O.

Two producers share a target's MsgSeqNums: the fan-out (copies, whose seqs are reserved when
their source message is appended to the journal) and the target's FIX session (Logon reply,
Heartbeats, Rejects...). The outbox merges them strictly by seq and hands out what may be
written now: a copy once its journal record is durable, a session message as soon as its turn
comes, a retransmission (PossDupFlag=Y, an old seq) at once. It knows nothing of sockets: the
connection shell calls :meth:`Outbox.take` and writes what it gets.

Bounded work and memory, whatever the backlog:

* **A budget per take.** :meth:`take` returns at most about ``budget`` bytes; the shell writes
  them and, if :meth:`ready` says more could go, takes again on a later turn of the event loop.
  A target catching up on 10 million copies shares the loop with everyone else. A live take
  also hands out at least as many copies as were queued since the previous take, so a target
  that reads what it is sent is never outrun by the sources (however small the budget: the
  shell fits it to the time a take runs, which a busy machine stretches), and its queue does not
  grow until it spills.
* **Slow and offline targets cost disk, not memory.** At most ``max_pending`` copies wait in
  memory while the socket pushes back (``SPILL_HARD_FACTOR`` times that while it keeps up); past
  that the outbox *spills*: it keeps only its cursor and reads copies back from the journal by
  target seq (``CATCHUP_BATCH`` entries at a time). An offline target holds nothing in memory:
  its copies are in the journal and reach it when it logs on (catch-up) or asks (ResendRequest).
* **Session messages are bounded too**: past ``MAX_ADMIN_QUEUED`` of them waiting behind copies
  the target is not reading, and :attr:`stalled` tells the shell to drop it.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable
from operator import itemgetter
from typing import Protocol

from ..fix import tags as T
from ..fix.codec import Decoder, RawMessage, byte_sum, encode
from ..fix.dropcopy import CopySource, LiveBuilder, build_copy, live_builder
from ..fix.session_types import Outgoing
from ..fix.timefmt import utc_timestamp
from ..journal import Entry, Journal
from ..routing import category
from ..vocab import PROFILE_FRONT_END, FrontEnd
from .adapt import CopyAdapter

log = logging.getLogger("dcgateway.fanout")

#: Session messages queued behind a target's copies before the target counts as not reading.
MAX_ADMIN_QUEUED = 10_000
#: A target that keeps up may queue this many times ``max_pending`` before it spills.
SPILL_HARD_FACTOR = 10
#: Journal entries read per catch-up step.
CATCHUP_BATCH = 1000
#: Bytes handed out per :meth:`Outbox.take` (about 1000 typical copies); less while catching up
#: from the journal, where each copy is read back and built again.
TAKE_BUDGET = 256 * 1024
CATCHUP_BUDGET = 64 * 1024
#: Copies per run on the common path (no session message waiting, not spilled), and the
#: smallest copy a run's length is estimated with against the take's budget.
RUN_COPIES = 1000
MIN_COPY_BYTES = 128
#: Up to this many waiting copies (and nothing else) are taken in one short loop (the common
#: case at moderate rates) rather than by the run machinery.
FEW_COPIES = 16
#: Latencies gathered before they go to the histogram (else: the metrics pump, once a second).
LATENCY_BATCH = 512

_LSN = itemgetter(1)
#: (target seq, journal lsn, source message, received at, category)
PendingCopy = tuple[int, int, CopySource, float, "str | None"]


class SeqSource(Protocol):
    """What the outbox needs of its target's session store (:class:`~.target_store.
    TargetStore`): to note that the target is connected, and whether that note is durable."""

    def note_attached(self) -> None: ...

    def attach_durable(self) -> bool: ...


def decode_one(raw: bytes) -> RawMessage | None:
    """A journaled message framed again (it was verified on the way in)."""
    items = Decoder(max(len(raw) + 1, 1 << 16)).feed(raw)
    return items[0] if items and isinstance(items[0], RawMessage) else None


class SendingTimes:
    """SendingTime (52) of the copies handed out now, made once per millisecond however many
    targets take in it (a commit feeds every target in the same loop turn): the timestamp,
    the ``52=...SOH`` field and its byte sum. One is shared by the outboxes of a gateway."""

    __slots__ = ("_ms", "_value")

    def __init__(self) -> None:
        self._ms = -1
        self._value: tuple[bytes, bytes, int] = (b"", b"", 0)

    def at(self, now: float) -> tuple[bytes, bytes, int]:
        ms = int(now * 1000)
        if ms != self._ms:
            st = utc_timestamp(now)
            st52 = b"52=" + st + b"\x01"
            self._value = (st, st52, byte_sum(st52))
            self._ms = ms
        return self._value


class PendingCopies:
    """Copies waiting to be written, in seq order with lsn never decreasing: a list and a head
    index, so a whole run of durable copies is one bisect and one slice."""

    __slots__ = ("_items", "_head")

    def __init__(self) -> None:
        self._items: list[PendingCopy] = []
        self._head = 0

    def __len__(self) -> int:
        return len(self._items) - self._head

    def __bool__(self) -> bool:
        return len(self._items) > self._head

    def append(self, item: PendingCopy) -> None:
        self._items.append(item)

    def first(self) -> PendingCopy:
        return self._items[self._head]

    def pop_first(self) -> None:
        self._head += 1
        self._compact()

    def clear(self) -> None:
        self._items = []
        self._head = 0

    def take_run(self, seq: int, durable_lsn: int, limit: int) -> list[PendingCopy]:
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


class Outbox:
    """One target session's outbound stream (module docstring)."""

    def __init__(self, comp_id: str, begin_string: str, profile: str, gateway_comp: str,
                 journal: Journal, max_pending: int,
                 sending_times: SendingTimes | None = None) -> None:
        self.comp_id = comp_id
        self.sending_times = sending_times or SendingTimes()
        self.comp_bytes = comp_id.encode()
        self.begin_string = begin_string.encode()
        self.gateway_comp = gateway_comp.encode()
        self.default_front_end: str = PROFILE_FRONT_END.get(profile, FrontEnd.FIX)
        self._front_end = ""
        self._build: LiveBuilder
        self._adapter: CopyAdapter | None = None
        self._adapt: CopyAdapter | None = None
        self.front_end = self.default_front_end
        self.journal = journal
        self.max_pending = max_pending
        self.store: SeqSource | None = None
        #: the target's next outbound MsgSeqNum, copies and session messages alike: kept here,
        #: where each copy reserves one (:meth:`reserve`), and read and set by the target's
        #: session store (:class:`~.target_store.TargetStore`), which sets it when it is made
        self.next_out = 1
        self.connected = False
        self.pushback = False             # the socket's buffer is above its high mark
        self.stalled = False              # too many session messages queued: not reading
        self.cursor = 0                   # next seq to hand out while connected
        self.written_upto = 0             # highest seq handed out to the target
        self.resendable_upto = 0          # highest seq a ResendRequest may be served up to
        self.pending = PendingCopies()
        #: copies queued since the last take while the socket took what it was sent (not
        #: pushing back): the next take hands them all out, whatever its budget
        self.arrived = 0
        self.admin: dict[int, bytes] = {}
        self.direct: list[bytes] = []     # retransmissions: out at once, after what is ready
        self.spill_from: int | None = None
        self.last_reserved_lsn = 0
        #: ``last_reserved_lsn`` when the target last logged on: every copy below the cursor
        #: then is in the journal at or below it (a ResendRequest waits until it is durable)
        self.attach_lsn = 0
        #: while the store's note of the Logon is not durable (:meth:`SeqSource.attach_durable`):
        #: the attach lsn, above which no copy may leave; -1 when nothing is held
        self.held_at = -1
        self.copies_written = 0
        #: copies handed out, by category (a plain dict: a Counter's item update costs several
        #: times a dict's on the per-copy path)
        self.out_counts: dict[str | None, int] = {}
        self.latencies: deque[float] = deque(maxlen=10_000)  # receipt -> hand-out, seconds
        self.observe_latencies: Callable[[list[float]], None] | None = None
        self._lats: list[float] = []     # not handed to observe_latencies yet
        self._lats_counted = 0           # of them, already in copies_written
        self._catchup: deque[Entry] = deque()

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
        self._set_adapt()

    @property
    def adapter(self) -> CopyAdapter | None:
        return self._adapter

    @adapter.setter
    def adapter(self, value: CopyAdapter | None) -> None:
        """Makes ``fix`` copies valid in this target's dictionary (:mod:`.adapt`)."""
        self._adapter = value
        self._set_adapt()

    def _set_adapt(self) -> None:
        a = getattr(self, "_adapter", None)
        self._adapt = a if a is not None and a.needed and self._front_end == FrontEnd.FIX \
            else None

    def source_for(self, src: CopySource) -> CopySource | None:
        """The copy source as this target gets it (translated for its dictionary), or None
        when it cannot be made valid (its seq is then gap-filled)."""
        return src if self._adapt is None else self._adapt(src)

    def gap_fill(self, seq: int, st: bytes) -> bytes:
        """SequenceReset-GapFill for one seq (PossDupFlag=Y, 122 = 52)."""
        return encode(self.begin_string, T.MsgType.SEQUENCE_RESET,
                      b"49=%s\x0156=%s\x0134=%d\x0143=Y\x0152=%s\x01122=%s\x01"
                      % (self.gateway_comp, self.comp_bytes, seq, st, st),
                      b"123=Y\x0136=%d\x01" % (seq + 1))

    @property
    def backlog(self) -> int:
        """Copies routed to this target and not yet handed out."""
        if not self.connected:
            return max(0, self.next_out - 1 - self.written_upto)
        return max(0, self.next_out - self.cursor)

    # -- lifecycle ------------------------------------------------------------------------------

    def attach(self) -> None:
        """The target's Logon is about to be processed: the stream starts at the next seq, and
        what lies between the last hand-out and here comes from the journal when the target
        asks for it, once it is durable (:attr:`attach_lsn`; in ``fsync`` mode the request
        waits for the group commit, never the loop; otherwise it is made so now, without a
        wait on the disk). No copy leaves before the store's note of the Logon is durable
        (:attr:`held_at`)."""
        assert self.store is not None
        self.attach_lsn = self.last_reserved_lsn
        if self.attach_lsn > self.journal.durable_lsn and self.journal.durability != "fsync":
            self.journal.sync()       # os: written to the OS; replicated: the fence's barrier
        self.store.note_attached()
        self.held_at = -1 if self.store.attach_durable() else self.attach_lsn
        self._clear()
        self.connected = True
        self.cursor = self.next_out
        self.resendable_upto = self.cursor - 1

    def _released(self, durable_lsn: int) -> int:
        """``durable_lsn``, or less while the Logon's note is not durable (:attr:`held_at`)."""
        assert self.store is not None
        if self.store.attach_durable():
            self.held_at = -1
            return durable_lsn
        return min(durable_lsn, self.held_at)

    def detach(self) -> None:
        self.connected = False
        self.held_at = -1
        self._clear()

    def reset(self) -> None:
        """The sequence restarts at 1 (141=Y, weekly reset)."""
        self._clear()
        self.cursor = 1
        self.written_upto = self.resendable_upto = 0

    def _clear(self) -> None:
        self.pending.clear()
        self.arrived = 0
        self.admin.clear()
        self.direct.clear()
        self._catchup.clear()
        self.spill_from = None
        self.pushback = False
        self.stalled = False

    def reserve(self) -> int:
        """The next outbound MsgSeqNum of the target, for a copy (made durable by its journal
        record)."""
        seq = self.next_out
        self.next_out = seq + 1
        return seq

    def unreserve(self, seq: int) -> None:
        """The journal refused the record that ``seq`` was reserved for: give it back, so the
        target's stream has no hole this outbox would wait on forever."""
        if self.next_out == seq + 1:
            self.next_out = seq

    # -- producers ----------------------------------------------------------------------------

    def add_copy(self, seq: int, lsn: int, src: CopySource, received: float,
                 cat: str | None = None) -> None:
        """A copy reserved ``seq``, journaled at ``lsn``: queued in memory while connected and
        not spilled (bounded); otherwise the journal has it."""
        self.last_reserved_lsn = lsn
        if not self.connected or seq < self.cursor or self.spill_from is not None:
            return
        pending = self.pending
        n = len(pending._items) - pending._head
        if n < self.max_pending or (n < self.max_pending * SPILL_HARD_FACTOR
                                    and not self.pushback):
            pending._items.append((seq, lsn, src, received, cat))
            if not self.pushback:
                self.arrived += 1
        else:
            self.spill_from = self.pending.first()[0] if self.pending else seq
            self.pending.clear()
            self.arrived = 0
            log.warning("target %s is slow: %d copies queued; serving it from the journal "
                        "until it catches up", self.comp_id, n)

    def add_session(self, items: Iterable[Outgoing]) -> None:
        """What the target's FIX session sends: retransmissions at once, new messages in turn."""
        for seq, poss_dup, raw in items:
            if poss_dup or seq < self.cursor:
                self.direct.append(raw)
            else:
                self.admin[seq] = raw
        if len(self.admin) > MAX_ADMIN_QUEUED:
            self.stalled = True

    # -- the consumer ---------------------------------------------------------------------------

    def ready(self, durable_lsn: int) -> bool:
        """Whether :meth:`take` would hand out something now."""
        if not self.connected or self.stalled:
            return False
        if self.held_at >= 0:
            durable_lsn = self._released(durable_lsn)
        if self.direct or self.cursor in self.admin:
            return True
        if self.spill_from is not None:
            return self.held_at < 0 and self.cursor < self.next_out
        return bool(self.pending) and self.pending.first()[0] == self.cursor and \
            self.pending.first()[1] <= durable_lsn

    def take(self, durable_lsn: int, now: float, budget: int = TAKE_BUDGET) -> list[bytes]:
        """What may be written now, in order: runs of durable copies and session messages by
        seq (about ``budget`` bytes, or as many copies as were queued since the previous take
        if that is more: see the module docstring), then any retransmissions."""
        out: list[bytes] = []
        if not self.connected or self.stalled:
            return out
        if self.held_at >= 0:
            durable_lsn = self._released(durable_lsn)
        pending = self.pending
        if (0 < len(pending._items) - pending._head <= FEW_COPIES and not self.admin
                and not self.direct and self.spill_from is None):
            if self._take_few(out, durable_lsn, now):
                self.arrived = 0            # all handed out
                return out
            if not pending.first()[1] <= durable_lsn:
                return out                  # nothing is durable yet
        # copies queued since the last take and not handed out yet (some may not have been
        # durable then) are owed, whatever the budget; what this take cannot hand out (not
        # durable yet) stays owed
        owed = self.cursor + self.arrived
        st, st52, st52_sum = self.sending_times.at(now)
        if self.spill_from is not None:
            budget = min(budget, CATCHUP_BUDGET)
        size = 0
        while size < budget or self.cursor < owed:
            room = max(budget - size, (owed - self.cursor) * MIN_COPY_BYTES)
            if not self.admin and self.spill_from is None:
                n = self._take_run(out, durable_lsn, now, st52, st52_sum,
                                   min(RUN_COPIES, max(1, room // MIN_COPY_BYTES)))
                if n and not pending and not self.admin:
                    break                   # all handed out: no second look
            else:
                n = self._take_in_order(out, durable_lsn, now, st, st52, st52_sum, room)
            if not n:
                break
            size += n
        self.arrived = max(0, owed - self.cursor)
        if self.direct:
            out.extend(self.direct)
            self.direct = []
        if self._lats:
            self._hand_latencies()
        return out

    def _take_few(self, out: list[bytes], durable_lsn: int, now: float) -> bool:
        """:meth:`take` when a few copies wait and nothing else does (a source at a moderate
        rate: a read commits one message or a handful): all of them, if they run on from the
        cursor and are durable (lsns never decrease: the last one says it for all); the same
        result as the run path, in fewer steps. False when they do not qualify."""
        pending = self.pending
        items, head = pending._items, pending._head
        seq = self.cursor
        n = len(items) - head
        last = items[-1]
        if items[head][0] != seq or last[0] != seq + n - 1 or last[1] > durable_lsn:
            return False
        run = items[head:] if head else items
        pending.clear()
        _, st52, st52_sum = self.sending_times.at(now)
        build, lats, counts = self._build, self._lats, self.out_counts
        adapt = self._adapt
        for s, _, src, received, cat in run:
            out.append(build(src, s, st52, st52_sum) if adapt is None
                       else self._adapted(src, s, st52, st52_sum))
            lats.append(now - received)
            counts[cat] = counts.get(cat, 0) + 1
        self.cursor = seq + n
        self.written_upto = self.resendable_upto = seq + n - 1
        self._hand_latencies()
        return True

    def _take_run(self, out: list[bytes], durable_lsn: int, now: float, st52: bytes,
                  st52_sum: int, limit: int) -> int:
        """The next run of durable copies from the cursor (one bisect, one slice,
        comprehensions); its size in bytes, 0 when there is none."""
        run = self.pending.take_run(self.cursor, durable_lsn, limit)
        if not run:
            return 0
        build = self._build
        if self._adapt is None:
            copies = [build(src, seq, st52, st52_sum) for seq, _, src, _, _ in run]
        else:
            copies = [self._adapted(src, seq, st52, st52_sum) for seq, _, src, _, _ in run]
        self._lats.extend([now - received for _, _, _, received, _ in run])
        counts = self.out_counts
        for _, _, _, _, cat in run:
            counts[cat] = counts.get(cat, 0) + 1
        self.cursor += len(run)
        self.written_upto = self.resendable_upto = self.cursor - 1
        out.extend(copies)
        return sum(map(len, copies))

    def _take_in_order(self, out: list[bytes], durable_lsn: int, now: float, st: bytes,
                       st52: bytes, st52_sum: int, budget: int) -> int:
        """One message at a time, interleaving session messages, queued copies and catch-up
        copies from the journal, up to ``budget`` bytes; the bytes handed out."""
        size = 0
        build = self._build
        pending, admin = self.pending, self.admin
        seq = self.cursor
        while size < budget:
            raw = admin.pop(seq, None) if admin else None
            if raw is None:
                if self.spill_from is None:
                    if not pending:
                        break
                    item = pending.first()
                    if item[0] != seq or item[1] > durable_lsn:
                        break
                    pending.pop_first()
                    raw = (build(item[2], seq, st52, st52_sum) if self._adapt is None
                           else self._adapted(item[2], seq, st52, st52_sum))
                    self._lats.append(now - item[3])
                    cat = item[4]
                    self.out_counts[cat] = self.out_counts.get(cat, 0) + 1
                else:
                    if self.held_at >= 0:       # (the journal's copies are durable, not free)
                        break
                    raw = self._from_journal(seq, st)
                    if raw is None:
                        break
            out.append(raw)
            size += len(raw)
            seq += 1
        self.cursor = seq
        if self.spill_from is not None and seq >= self.next_out:
            self._caught_up()               # (a take that ended on the budget at the last copy)
        if size:
            self.written_upto = self.resendable_upto = seq - 1
        return size

    def _caught_up(self) -> None:
        """Everything reserved was handed out from the journal: new copies queue in memory
        again."""
        self.spill_from = None
        self._catchup.clear()

    def _adapted(self, src: CopySource, seq: int, st52: bytes, st52_sum: int) -> bytes:
        assert self._adapt is not None
        adapted = self._adapt(src)
        if adapted is None:
            return self.gap_fill(seq, st52[3:-1])
        return self._build(adapted, seq, st52, st52_sum)

    def _hand_latencies(self) -> None:
        n = len(self._lats)
        self.copies_written += n - self._lats_counted
        self._lats_counted = n
        if n >= LATENCY_BATCH:
            self.flush_latencies()

    def flush_latencies(self) -> None:
        """Hand the latencies gathered since the last call to ``observe_latencies`` (the
        histogram): every ``LATENCY_BATCH`` copies, and from the metrics pump once a second and
        before every scrape, rather than once per take."""
        lats, self._lats = self._lats, []
        self.copies_written += len(lats) - self._lats_counted
        self._lats_counted = 0
        if lats:
            self.latencies.extend(lats)
            if self.observe_latencies is not None:
                self.observe_latencies(lats)

    def _from_journal(self, seq: int, st: bytes) -> bytes | None:
        """Catch-up: the copy for ``seq`` read back from the journal (durable entries only);
        None when caught up (new copies queue in memory again) or not durable yet."""
        if seq >= self.next_out:
            self._caught_up()
            return None
        ahead = self._catchup
        while ahead and ahead[0].target_seq < seq:
            ahead.popleft()
        if not ahead:
            last = min(seq + CATCHUP_BATCH - 1, self.next_out - 1)
            ahead.extend(self.journal.read_target(self.comp_id, seq, last))
        if not ahead or ahead[0].target_seq != seq:
            return None
        msg = decode_one(ahead.popleft().raw)
        if msg is None:                     # CRC-checked, so never expected: do not stall
            log.error("target %s: journal entry for seq %d does not decode; gap-filled",
                      self.comp_id, seq)
            return self.gap_fill(seq, st)
        src = self.source_for(CopySource(msg))
        if src is None:
            return self.gap_fill(seq, st)
        self.copies_written += 1
        cat = category(msg)
        self.out_counts[cat] = self.out_counts.get(cat, 0) + 1
        return build_copy(src, self.front_end, self.begin_string, self.gateway_comp,
                          self.comp_bytes, seq, st)
