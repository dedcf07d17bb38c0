"""The shell around the fan-out: applies its decisions to the sessions' connections and feeds the
targets whose copies became durable. The fan-out (:mod:`dcgateway.fanout`) decides; this module
acts (log a source out, hold or release its reads, wake a target's connection), so data flows one
way: connection -> session -> fan-out -> journal -> outbox -> connection."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from ..fanout import Decision, Fanout, HoldSources, RefuseSource, TargetStore, target_rejects
from ..fix.codec import RawMessage
from ..fix.session_admin import peer_reject
from ..fix.session_types import Disconnect, LoggedOn
from ..journal import Journal
from ..net.connection import JOURNAL_HOLD, FixConnection, SessionSlot
from ..vocab import Role

log = logging.getLogger("dcgateway")


class Flow:
    """``on_app`` is the acceptor's application sink, ``on_durable`` the committer's
    notification, ``on_event`` sees session events that matter to the data flow."""

    def __init__(self, fanout: Fanout, journal: Journal, slots: Mapping[str, SessionSlot],
                 clock: Callable[[], float]) -> None:
        self.fanout = fanout
        self.journal = journal
        self.slots = slots
        self.clock = clock
        self.sources = [s for s in slots.values() if s.role == Role.SOURCE]
        for slot in slots.values():
            if isinstance(slot.store, TargetStore):
                # a target's sequence reset re-offers the copies routed and not yet delivered
                slot.store.carry_over = fanout.carry_over
        #: where events the flow finds itself go (the gateway's event sink)
        self.acceptor_event: Callable[[SessionSlot, object], None] = lambda slot, ev: None
        #: commits what a source's read appended (the committer's ``commit_now``; wired by the
        #: composition root once the committer exists, the fan-out's notify until then)
        self.commit: Callable[[], None] = fanout.notify
        #: connections whose output waits for the journal up to an lsn (a source's 141=Y)
        self._held_output: dict[FixConnection, int] = {}

    def on_app(self, conn: FixConnection, messages: list[RawMessage], now: float) -> None:
        slot = conn.slot
        assert slot is not None
        if slot.role == Role.SOURCE:
            decisions = self.fanout.from_source(slot.comp_id, messages, now, slot.store.next_in)
            if decisions:
                self.apply(decisions, now)
            self.commit()
        elif conn.session is not None:
            for msg in messages:
                if msg.msg_type == b"j":          # the target rejects a copy: report it
                    self.acceptor_event(slot, peer_reject(msg))
            for msg_type, body in target_rejects(slot.comp_id, messages):
                conn.session.send_app(msg_type, body, now)

    def on_durable(self, lsn: int) -> None:
        if self._held_output:
            self._release_output(lsn)
        ready, decisions = self.fanout.on_durable(lsn)
        now = self.clock()
        if decisions:
            self.apply(decisions, now)
        batch: list[tuple[FixConnection, bytes]] = []
        slots = self.slots
        for outbox in ready:                # every target's copies built first...
            conn = slots[outbox.comp_id].connection
            if conn is not None:
                conn.push(batch, now)
        for conn, data in batch:            # ...then written (FixConnection.push says why)
            conn.write_fed(data)

    def _release_output(self, lsn: int) -> None:
        """The connections whose output waited for a record up to ``lsn`` write it now."""
        for conn, barrier in list(self._held_output.items()):
            if barrier <= lsn:
                del self._held_output[conn]
                conn.release_output()

    def on_files_synced(self) -> None:
        """The session files' background sync ran: a target whose copies waited for the note
        of its Logon to reach the disk (:attr:`~dcgateway.fanout.Outbox.held_at`) takes them
        now."""
        for slot in self.slots.values():
            outbox, conn = slot.outbox, slot.connection
            if outbox is not None and outbox.held_at >= 0 and conn is not None:
                conn.kick()

    def apply(self, decisions: list[Decision], now: float) -> None:
        for d in decisions:
            if isinstance(d, HoldSources):
                for slot in self.sources:
                    if slot.connection is not None:
                        if d.hold:
                            slot.connection.hold_reading(JOURNAL_HOLD)
                        else:
                            slot.connection.release_reading(JOURNAL_HOLD)
            elif isinstance(d, RefuseSource):
                slot = self.slots[d.source]
                slot.store.set_next_in(d.next_in)
                conn = slot.connection
                if conn is not None and conn.session is not None and not conn.session.closed:
                    conn.session.logout(d.text, now)
                    conn.close_after_pump = True

    def on_event(self, slot: SessionSlot | None, ev: object) -> None:
        """A source that logs on with 141=Y starts again at 1: the journal must know that
        before the Logon reply leaves, or a crash would make the next start expect the old,
        higher seq. In ``fsync`` mode the connection's output is held until the group commit
        has made the marker durable (:meth:`on_durable`; the loop does not wait); otherwise
        the journal is synced now (``os``: written to the OS; a cluster: the fence's barrier).
        A source that logs on while the journal lags is held. A source that disconnects: its
        admin messages consumed seqs too, so its marker is journaled for the restart."""
        if slot is None or slot.role != Role.SOURCE:
            return
        if isinstance(ev, LoggedOn):
            if ev.reset:
                self.fanout.source_marker(slot.comp_id, slot.store.next_in)
                conn = slot.connection
                barrier = self.journal.appended_lsn        # (the marker, if journaled)
                if self.journal.durability == "fsync" and conn is not None:
                    if barrier > self.journal.durable_lsn:
                        conn.hold_output()
                        self._held_output[conn] = barrier
                else:
                    try:
                        self.journal.sync()
                    except Exception as exc:
                        log.error("could not make the sequence reset of %s durable: %s",
                                  slot.comp_id, exc)
            if self.fanout.sources_held and slot.connection is not None:
                slot.connection.hold_reading(JOURNAL_HOLD)
        elif isinstance(ev, Disconnect) and slot.connection is None:
            self.fanout.source_marker(slot.comp_id, slot.store.next_in)
            try:
                slot.store.settle()      # its file's inbound seq, deferred while connected
            except Exception as exc:     # a failing disk: the journal has the seq anyway
                log.error("session %s: could not write its inbound seq on disconnect: %s",
                          slot.comp_id, exc)
