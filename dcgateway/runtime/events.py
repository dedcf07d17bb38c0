"""Session events -> log lines, metrics and the status file, in one table (a handler per event
type, no isinstance chain). The events come from the session engine
(:mod:`dcgateway.fix.session_types`) and the acceptor (:class:`~dcgateway.net.acceptor.Refused`);
what an event means for the data flow (a source's sequence marker, a hold) is the business of
:class:`~.flow.Flow`, not of this sink."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from ..fix.session_types import (
    AuthFailed,
    Disconnect,
    LoggedOn,
    LoggedOut,
    PeerReject,
    ProtocolError,
    ResendRequested,
    ResendServed,
    SessionRejectSent,
)
from ..journal import Journal
from ..metrics import GatewayMetrics
from ..net.acceptor import Refused
from ..net.connection import SessionSlot
from ..ratelog import RateLimitedLog
from .status import StatusFile

log = logging.getLogger("dcgateway")

Handler = Callable[["EventSink", str, SessionSlot | None, Any], None]


class EventSink:
    """``sink(slot, event)``: the acceptor's ``on_event``."""

    def __init__(self, metrics: GatewayMetrics, status: StatusFile,
                 is_locked: Callable[[str], bool]) -> None:
        self.metrics = metrics
        self.status = status
        self.is_locked = is_locked
        self.noisy = RateLimitedLog(log)        # what a misbehaving peer can repeat at will
        #: (target, seq) -> what that copy was ("copy of SRC MsgSeqNum N"), from the journal
        self.describe_copy: Callable[[str, int], str] = lambda target, seq: "unknown copy"
        self._locked: set[str] = set()

    def __call__(self, slot: SessionSlot | None, ev: Any) -> None:
        handler = _HANDLERS.get(type(ev))
        if handler is not None:
            handler(self, slot.comp_id if slot is not None else "-", slot, ev)

    def _logged_on(self, name: str, slot: SessionSlot | None, ev: LoggedOn) -> None:
        log.info("session %s logged on (HeartBtInt=%d%s)", name, ev.heartbeat_interval,
                 ", sequences reset" if ev.reset else "")
        self.metrics.logon_accepted(name)
        self.status.connected(name)

    def _auth_failed(self, name: str, slot: SessionSlot | None, ev: AuthFailed) -> None:
        # the authenticator logged it (rate limited); here: the metric and a port closure
        self.metrics.logon_rejected(slot.comp_id if slot else None, ev.reason)
        if slot is not None and name not in self._locked and self.is_locked(name):
            self._locked.add(name)
            self.metrics.port_closure(name)
        elif slot is not None and name in self._locked and not self.is_locked(name):
            self._locked.discard(name)

    def _ended(self, name: str, slot: SessionSlot | None, ev: LoggedOut | Disconnect) -> None:
        log.info("session %s: %s (%s)", name, type(ev).__name__, ev.reason)
        if slot is not None and slot.connection is None:
            self.status.disconnected(name)

    def _reject_sent(self, name: str, slot: SessionSlot | None, ev: SessionRejectSent) -> None:
        self.noisy.log((name, "reject"), logging.WARNING,
                       "session %s: sent Reject for seq %d (reason %d: %s)", name, ev.ref_seq,
                       ev.reason, ev.text)
        self.metrics.reject_sent(name)

    def _protocol_error(self, name: str, slot: SessionSlot | None, ev: ProtocolError) -> None:
        self.noisy.log((name, ev.kind), logging.WARNING, "session %s: protocol error %s: %s",
                       name, ev.kind, ev.text)
        self.metrics.protocol_error(name)

    def _resend_served(self, name: str, slot: SessionSlot | None, ev: ResendServed) -> None:
        log.info("session %s: served ResendRequest %d..%d (%d resent, %d gap-filled)", name,
                 ev.begin, ev.end, ev.resent, ev.gap_filled)
        self.metrics.resend_served(name, ev.resent, ev.gap_filled)

    def _resend_requested(self, name: str, slot: SessionSlot | None,
                          ev: ResendRequested) -> None:
        log.info("session %s: sent ResendRequest %d..%d", name, ev.begin, ev.end)
        self.metrics.resend_requested(name)

    def _peer_reject(self, name: str, slot: SessionSlot | None, ev: PeerReject) -> None:
        """A target that rejects a copy: logged with what the copy was, counted (and alerted
        on: the target's data dictionary and ours disagree)."""
        if slot is None or slot.outbox is None:
            self.noisy.log((name, "peer_reject"), logging.WARNING,
                           "session %s rejected our message %d (35=%s, reason %s): %s", name,
                           ev.ref_seq, ev.msg_type.decode("ascii", "replace"), ev.reason,
                           ev.text)
            return
        self.metrics.copy_rejected(name)
        self.noisy.log((name, "copy_rejected"), logging.ERROR,
                       "target %s rejected its message %d (%s; 35=%s reason %s: %s)", name,
                       ev.ref_seq, self.describe_copy(name, ev.ref_seq),
                       ev.msg_type.decode("ascii", "replace"), ev.reason, ev.text)

    def _refused(self, name: str, slot: SessionSlot | None, ev: Refused) -> None:
        self.metrics.connection_refused(ev.reason)


def copy_describer(journal: Journal) -> Callable[[str, int], str]:
    """(target, seq) -> what that copy was, from the journal: for the log line of a target's
    Reject of a copy (:attr:`EventSink.describe_copy`)."""
    def describe(target: str, seq: int) -> str:
        entries = journal.read_target(target, seq, seq) if seq > 0 else []
        if not entries:
            return "not a copy, or no longer in the journal"
        return f"copy of {entries[0].source} MsgSeqNum {entries[0].source_seq}"
    return describe


_HANDLERS: Mapping[type, Handler] = {
    LoggedOn: EventSink._logged_on, AuthFailed: EventSink._auth_failed,
    LoggedOut: EventSink._ended, Disconnect: EventSink._ended,
    SessionRejectSent: EventSink._reject_sent, ProtocolError: EventSink._protocol_error,
    ResendServed: EventSink._resend_served, ResendRequested: EventSink._resend_requested,
    Refused: EventSink._refused, PeerReject: EventSink._peer_reject,
}
