"""The fan-out: source messages in, journal records and per-target copies out, sans I/O.

Theory of operation (the data flow, in one direction):

* **Append first.** Every application message a source session delivers is classified and routed
  once (:class:`~dcgateway.routing.RoutingTable`), each matching target's next outbound seq is
  reserved, and the message is appended to the journal with those seqs, then the batch's
  inbound-sequence marker. A copy is queued in its target's :class:`~.outbox.Outbox` with the
  record's LSN: it goes out only once the journal says that LSN is durable, so a target never
  holds a message, or a MsgSeqNum, the gateway could forget in a crash.
* **Decisions, not calls.** The fan-out never touches a connection. What the shell must do is
  returned: :class:`RefuseSource` (the journal refused a message: rewind the source to it, log it
  out with the reason), :class:`HoldSources` (the journal is too far behind: stop or resume
  reading from every source), and from :meth:`Fanout.on_durable` the targets that now have
  something to write.
* **Read-only targets.** An application message from a target is answered with a Business
  Message Reject (35=j, 380=3) and never routed (:func:`target_rejects`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from ..fix.codec import RawMessage
from ..fix.dropcopy import CopySource
from ..journal import Entry, Journal
from ..routing import Route, RoutingTable, category
from .outbox import Outbox, decode_one

log = logging.getLogger("dcgateway.fanout")

#: Journal records appended but not yet durable before the gateway stops reading from sources
#: (their TCP windows fill), and the level at which it reads again: the journal's own pace, never
#: a target's, bounds the memory of copies waiting for their commit.
MAX_UNDURABLE = 20_000
RESUME_UNDURABLE = 10_000
#: The same for records durable but not yet on the disk (durability ``os``: copies leave before
#: the fsync): a stalled disk pauses the sources here, never the copies, and the journal's
#: bytes kept for a rewrite after a failed fsync stay bounded.
MAX_UNSYNCED = 100_000
RESUME_UNSYNCED = 50_000


@dataclass(frozen=True, slots=True)
class RefuseSource:
    """The journal could not take the source's message ``next_in``: it and the rest of its batch
    are not accepted. Its next expected seq goes back to ``next_in`` (it will be asked for them
    again), it is told ``text`` in a Logout and disconnected."""

    source: str
    next_in: int
    text: str


@dataclass(frozen=True, slots=True)
class HoldSources:
    """Stop (``hold``) or resume reading from every source connection."""

    hold: bool


Decision = RefuseSource | HoldSources
#: ([(target, its outbox)], [each route's group]) of one routing decision
Plan = tuple[list[tuple[str, Outbox]], list[str]]

#: Logout text when the journal cannot take a message (disk full, I/O error).
CANNOT_STORE_TEXT = "gateway cannot store messages right now; log on again later"


class Notify(Protocol):
    def __call__(self) -> None: ...


class Fanout:
    """Source messages in, copies out (module docstring)."""

    def __init__(self, journal: Journal, table: RoutingTable, outboxes: dict[str, Outbox], *,
                 notify: Notify) -> None:
        self.journal = journal
        self.table = table
        self.outboxes = outboxes
        self.notify = notify              # the committer's wake-up
        self.sources_held = False
        # plain counters the metrics pump reads once a second (no metrics call per message)
        self.messages_in = 0
        self.journal_bytes = 0
        self.in_counts: dict[tuple[str, str | None], int] = {}
        self.group_counts: dict[str, int] = {}
        self._plans: dict[tuple[Route, ...], Plan] = {}    # routes -> plan (see _plan)
        self._apply_front_ends()

    def swap_table(self, table: RoutingTable) -> None:
        """A new routing table (groups reloaded): one reference assignment; messages already
        routed keep their routes (their sequence numbers are in the journal)."""
        self.table = table
        self._plans.clear()
        self._apply_front_ends()

    def _plan(self, routes: tuple[Route, ...]) -> Plan:
        """What the hot path needs of a routing decision, made once per distinct decision:
        each target's outbox, and the groups to count."""
        plan = ([(r.target, self.outboxes[r.target]) for r in routes], [r.group for r in routes])
        if len(self._plans) > 10_000:       # bounded: one per distinct routing decision
            self._plans.clear()
        self._plans[routes] = plan
        return plan

    def _apply_front_ends(self) -> None:
        """Each target's copies take its groups' front end. A target no group reaches any more
        keeps the one it had: the copies routed to it before (journaled, perhaps not yet
        delivered, or asked for again) were routed in that format, which can carry them (an
        ilink2 envelope carries any message; the target's own dictionary may not)."""
        for o in self.outboxes.values():
            o.front_end = self.table.front_end_of(o.comp_id) or o.front_end

    # -- from sources -------------------------------------------------------------------------

    def from_source(self, source: str, messages: list[RawMessage], now: float,
                    next_in: int) -> list[Decision]:
        """Journal and route a batch of in-order application messages of ``source``; its next
        expected inbound seq after them is ``next_in``."""
        table, journal, outboxes = self.table, self.journal, self.outboxes
        in_counts, group_counts = self.in_counts, self.group_counts
        decisions: list[Decision] = []
        nbytes = accepted = 0
        classify_route = table.classify_route
        plans = self._plans
        for msg in messages:
            try:
                cat, routes = classify_route(source, msg)
            except Exception as exc:          # a body the session let through but no filter reads
                log.error("%s MsgSeqNum %s: cannot route (%s); journaled, not copied",
                          source, msg.seq_num, exc)
                cat, routes = None, ()
            plan = plans.get(routes)
            if plan is None:
                plan = self._plan(routes)
            assigns = [(t, o.reserve()) for t, o in plan[0]]
            try:
                lsn = journal.append(source, msg.seq_num or 0, now, msg.raw, assigns)
            except Exception as exc:          # disk full, I/O error: this message is not kept
                for target, seq in assigns:
                    outboxes[target].unreserve(seq)
                seq_in = msg.seq_num or next_in
                log.error("journal refused a message of %s (MsgSeqNum %d): %s; logging it out, "
                          "it will be asked for everything from %d", source, seq_in, exc, seq_in)
                decisions.append(RefuseSource(source, seq_in, CANNOT_STORE_TEXT))
                next_in = seq_in
                break
            accepted += 1
            nbytes += len(msg.raw)
            key = (source, cat)
            in_counts[key] = in_counts.get(key, 0) + 1
            if routes:
                src = CopySource(msg)
                for (_, o), (_, seq) in zip(plan[0], assigns):
                    o.add_copy(seq, lsn, src, now, cat)
                for g in plan[1]:
                    group_counts[g] = group_counts.get(g, 0) + 1
        self.journal_bytes += nbytes
        self.messages_in += accepted
        self.source_marker(source, next_in, notify=False)    # the shell commits the read
        if not self.sources_held and (
                journal.appended_lsn - journal.durable_lsn > MAX_UNDURABLE
                or journal.appended_lsn - journal.synced_lsn > MAX_UNSYNCED):
            decisions.append(self._hold(True))
        return decisions

    def source_marker(self, source: str, next_in: int, *, notify: bool = True) -> None:
        """Journal the source's next inbound seq (admin messages consume seqs too, so a restart
        expects exactly it). Never raises: a failing disk is logged, and the journal then still
        holds an older, lower value, which only costs a ResendRequest. ``notify``: wake the
        committer (:meth:`from_source` leaves that to the shell, which commits the read)."""
        try:
            self.journal.append_source_next_in(source, next_in)
        except Exception as exc:
            log.error("could not journal the inbound sequence of %s: %s", source, exc)
        if notify:
            self.notify()

    def carry_over(self, target: str, entries: list[Entry]) -> None:
        """After a target's sequence reset: journal again, under its next new seqs, the copies it
        never received (:class:`~.target_store.TargetStore`), and queue them in order."""
        outbox = self.outboxes[target]
        for i, e in enumerate(entries):
            msg = decode_one(e.raw)
            if msg is None:
                continue
            seq = outbox.reserve()
            try:
                lsn = self.journal.append(e.source, e.source_seq, e.received, e.raw,
                                          [(target, seq)])
            except Exception as exc:
                outbox.unreserve(seq)
                log.error("target %s: could not carry %d copies over its sequence reset: %s "
                          "(its session file keeps them: the next start carries them)",
                          target, len(entries) - i, exc)
                break
            outbox.add_copy(seq, lsn, CopySource(msg), e.received, category(msg))
        log.info("target %s: %d copies it had not received carried over its sequence reset",
                 target, len(entries))
        self.notify()

    # -- durability -----------------------------------------------------------------------------

    def _hold(self, hold: bool) -> HoldSources:
        self.sources_held = hold
        if hold:
            j = self.journal
            log.warning("journal is %d records behind (%d not on the disk); pausing reads from "
                        "sources", j.appended_lsn - j.durable_lsn, j.appended_lsn - j.synced_lsn)
        return HoldSources(hold)

    def on_durable(self, lsn: int) -> tuple[list[Outbox], list[Decision]]:
        """Records up to ``lsn`` are durable: the outboxes that now have something to write,
        and whether sources may be read again."""
        decisions: list[Decision] = []
        j = self.journal
        if self.sources_held and j.appended_lsn - lsn < RESUME_UNDURABLE \
                and j.appended_lsn - j.synced_lsn < RESUME_UNSYNCED:
            decisions.append(self._hold(False))
        ready = [o for o in self.outboxes.values() if o.connected and o.ready(lsn)]
        return ready, decisions


def target_rejects(target: str, messages: Iterable[RawMessage]) -> list[tuple[bytes, bytes]]:
    """A drop copy target is read-only: each application message it sends gets a Business
    Message Reject (35=j, 380=3 unsupported message type) and goes nowhere. Returns the
    (MsgType, body) of each reject to send. A BusinessMessageReject from the target is about a
    copy: it is reported by the caller, never answered (two rejects must not loop)."""
    out = []
    for msg in messages:
        if msg.msg_type == b"j":
            continue
        log.warning("target %s sent an application message (35=%s); rejected, not routed",
                    target, msg.msg_type.decode("ascii", "replace"))
        out.append((b"j", b"45=%d\x01372=%s\x01380=3\x0158=drop copy sessions are read-only\x01"
                    % (msg.seq_num or 0, msg.msg_type)))
    return out
