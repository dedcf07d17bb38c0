"""The acceptor: one listening port for every configured session, told apart by the Logon's 49/56.

Binding rules (FIX Vol. 2 "Logon" and Test Cases 1S; the venue's Logon rules):

* The first message on a connection must be a valid Logon (35=A); anything else, a garbled first
  message included (Test Case 1S.d: wrong BodyLength or CheckSum), disconnects at once.
* Before a Logon is authenticated nothing about the gateway's state is revealed: an unknown
  SenderCompID, a wrong TargetCompID, a bad or missing signature all get the same Logout,
  ``authentication failed`` (the precise reason goes to the log and the metric's label). The one
  other answer is the venue's port-closure text for a locked session. In cluster mode a
  correctly signed Logon for a session another node serves is answered, after authentication,
  with a Logout naming that node (the ``admit`` hook).
* A session already logged on keeps its connection (Test Case 1S.b): a correctly signed second
  Logon for it is disconnected without a word; one that does not authenticate gets the same
  ``authentication failed`` as anyone else, so a peer without the key learns nothing.
* Unauthenticated connections are cheap and cannot crowd out Logons: at most
  ``max_pending_logons`` of them (and ``max_pending_logons_per_address`` from one address) wait
  for their Logon; a newcomer past the bound evicts the oldest. A connection that sends nothing
  within ``pre_logon_idle`` seconds is closed, one still sending its Logon after
  ``logon_timeout`` seconds too. Logged-on sessions never compete with them for a slot, and the
  total stays under the process's descriptor limit so a flood meets a clean refusal, not EMFILE.
  Refusals are counted per reason and logged as one summary line per interval, not one line each.

Everything after binding is the session engine's business; the acceptor only routes events
(application messages go to the ``app_sink``, the rest to ``on_event`` for logs and metrics) and
runs the one timer task that drives every session's heartbeats and timeouts.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from ..errors import StoreError
from ..fix import tags as T
from ..fix.codec import RawMessage
from ..fix.session import (
    AppMessage,
    AuthDecision,
    Authenticator,
    AuthFailed,
    Disconnect,
    FixSession,
)
from ..fix.session_admin import AUTH_FAILED_TEXT, refusal_logout
from .connection import CLOSE_GRACE_S, FixConnection, SessionSlot

log = logging.getLogger("dcgateway.net")


@dataclass(frozen=True, slots=True)
class Refused:
    """A connection turned away before a session was bound (the metric's ``reason``)."""

    reason: str


#: Refusals are summarised in one log line at most this often (seconds).
REFUSAL_LOG_INTERVAL = 10.0
#: The shortest wait of the session timer task (seconds), whatever is due: at most 20 passes
#: a second over the sessions (the due ones ticked), a Heartbeat at most this late.
MIN_TIMER_S = 0.05
#: Listen backlog: completed handshakes the kernel queues for accept() (capped by somaxconn).
#: A flood of connections must not fill it, or a client's SYN is dropped and retried a second
#: later: the gateway accepts and sheds them quickly instead.
LISTEN_BACKLOG = 4096


class AppSink(Protocol):
    """Where a logged-on session's application messages go (the composition root wires the
    fan-out here); it may act on the connection (log it out, hold its reads)."""

    def __call__(self, conn: FixConnection, messages: list[RawMessage], now: float) -> None: ...


@dataclass
class AcceptorSettings:
    our_comp_id: str
    logon_timeout: float = 60.0
    max_message_size: int = 64 * 1024
    write_buffer_high: int = 1 << 20
    write_buffer_low: int = 256 << 10
    max_connections: int = 1024
    shutdown_timeout: float = 5.0
    max_inbound_rate: int = 0                   # messages/s per session; 0: no limit
    max_pending_logons: int = 1000              # unauthenticated connections at once
    max_pending_logons_per_address: int = 0     # from one peer address; 0: no own bound
    pre_logon_idle: float = 5.0                 # close a connection silent this long; 0: off


class Acceptor:
    def __init__(self, settings: AcceptorSettings, slots: dict[str, SessionSlot], *,
                 clock: Callable[[], float], app_sink: AppSink | None = None,
                 authenticator: Authenticator | None = None,
                 on_event: Callable[[SessionSlot | None, Any], None] | None = None) -> None:
        self.settings = settings
        self.slots = slots
        self.clock = clock
        self.app_sink = app_sink
        self.authenticator = authenticator
        self.on_event = on_event or (lambda slot, ev: None)
        self.connections: set[FixConnection] = set()
        self.pending: dict[FixConnection, None] = {}   # unbound connections, oldest first
        self._per_address: Counter[str] = Counter()
        self._server: asyncio.base_events.Server | None = None
        self._our = settings.our_comp_id.encode()
        #: reasons to refuse every authenticated Logon, by metric reason: "sequence_reset"
        #: (the weekly reset in progress), "journal_unwritable" (a storage fault) -> Logout text
        self.refusals: dict[str, str] = {}
        self.max_connections = settings.max_connections   # lowered to fit the fd limit
        #: cluster mode: ``admit(slot, conn)`` -> None when this node serves the session (it
        #: may wrap the connection), else the Logout text naming the node that serves it
        self.admit: Callable[[SessionSlot, FixConnection], str | None] | None = None
        self._refusals: Counter[str] = Counter()
        self._refusals_logged_at = float("-inf")

    # -- used by FixConnection --------------------------------------------------------------

    @property
    def write_buffer_limits(self) -> tuple[int, int]:
        return self.settings.write_buffer_high, self.settings.write_buffer_low

    @property
    def logon_timeout(self) -> float:
        return self.settings.logon_timeout

    def connection_opened(self, conn: FixConnection) -> None:
        """Admit a new connection. When the pending bound (or the total) is reached, room is
        made by evicting the oldest unauthenticated connection that has sent nothing; when every
        one waiting has sent something (Logons being read), the newcomer is refused. A client
        whose Logon was already waiting in its socket when it was accepted counts as having
        sent something, so a flood of silent connections cannot push a Logon out before it is
        read. Logged-on sessions never compete for these slots."""
        address = conn.peer.rsplit(":", 1)[0]
        for bound in range(3):             # each bound judged after the evictions before it
            if not self._crowded(bound, address):
                continue
            victim = self._silent(address if bound == 0 else None)
            if victim is None:
                self.refused(conn, "max_connections" if bound == 2 else "max_pending_logons")
                conn.close("too many connections waiting for a Logon", abort=True)
                return
            self._evict(victim)
        conn.address = address
        self.connections.add(conn)
        self.pending[conn] = None
        self._per_address[address] += 1

    def _crowded(self, bound: int, address: str) -> bool:
        """Bound 0: pending from ``address``; 1: pending in all; 2: connections in all."""
        st = self.settings
        if bound == 0:
            return bool(st.max_pending_logons_per_address and
                        self._per_address[address] >= st.max_pending_logons_per_address)
        if bound == 1:
            return len(self.pending) >= st.max_pending_logons
        return len(self.connections) >= self.max_connections

    def _silent(self, address: str | None) -> FixConnection | None:
        """The oldest pending connection (from ``address`` when given) that has sent nothing,
        looking at the oldest few only (Logons being dribbled in are not silent)."""
        for i, c in enumerate(self.pending):
            if i >= 64:
                return None
            if (address is None or c.address == address) and not c.heard:
                return c
        return None

    def _evict(self, conn: FixConnection) -> None:
        """Close an unauthenticated connection to make room: it stops counting at once (its
        connection_lost comes later)."""
        self._unpend(conn)
        self.connections.discard(conn)
        self.refused(conn, "evicted_before_logon")
        conn.close("evicted: too many connections waiting for a Logon", abort=True)

    def _unpend(self, conn: FixConnection) -> None:
        if self.pending.pop(conn, 0) is None:
            n = self._per_address[conn.address] - 1
            if n > 0:
                self._per_address[conn.address] = n
            else:
                del self._per_address[conn.address]

    def connection_closed(self, conn: FixConnection, exc: Exception | None) -> None:
        self.connections.discard(conn)
        self._unpend(conn)
        slot = conn.slot
        if slot is not None and slot.connection is conn:
            slot.connection = None
            try:
                if slot.outbox is not None:
                    try:
                        slot.store.note_delivered()     # a later reset knows what never left
                    finally:
                        slot.outbox.detach()
                slot.store.sync()
            except (StoreError, OSError) as err:   # a failing disk: logged, the slot is free
                log.error("session %s: could not sync its state on disconnect: %s",
                          slot.comp_id, err)
            log.info("session %s disconnected (%s)", slot.comp_id,
                     conn.close_reason or (exc and str(exc)) or "peer closed")
            self.on_event(slot, Disconnect(conn.close_reason or "peer closed"))

    def refused(self, conn: FixConnection, reason: str) -> None:
        """Count a refusal (the metric's ``reason``) and log a summary at most once per
        REFUSAL_LOG_INTERVAL: a flood of refused connections must not flood the log."""
        self.on_event(None, Refused(reason))
        self._refusals[reason] += 1
        if self.clock() - self._refusals_logged_at >= REFUSAL_LOG_INTERVAL:
            self.log_refusals()

    def log_refusals(self) -> None:
        if self._refusals:
            counts = ", ".join(f"{r} {n}" for r, n in self._refusals.most_common())
            log.warning("refused %d connection(s) since the last report: %s",
                        sum(self._refusals.values()), counts)
            self._refusals.clear()
        self._refusals_logged_at = self.clock()

    def bind(self, conn: FixConnection, first: RawMessage, now: float) -> FixSession | None:
        """Route a connection by its first message; None when refused (already answered)."""
        if first.msg_type != T.MsgType.LOGON:
            self.refused(conn, "first_message_not_logon")
            conn.close("first message was not a Logon")
            return None
        sender = first.header.get(T.SENDER_COMP_ID, b"")
        target = first.header.get(T.TARGET_COMP_ID, b"")
        slot = self.slots.get(sender.decode("ascii", "replace"))
        refusal = None                          # metric reason
        if target != self._our:
            refusal = "wrong_target_comp_id"
        elif slot is None:
            refusal = "unknown_session"
        elif self.refusals:
            refusal = next(iter(self.refusals))
        elif slot.connection is not None:
            refusal = "already_logged_on"
        if refusal is not None:
            self._refuse_logon(conn, first, refusal, slot, now)
            return None
        assert slot is not None
        elsewhere = self.admit(slot, conn) if self.admit is not None else None
        if elsewhere is not None:               # cluster: another node serves it
            self._refuse_logon(conn, first, "served_elsewhere", slot, now, elsewhere)
            return None
        self._unpend(conn)
        if slot.outbox is not None:
            slot.outbox.attach()                # before its Logon is processed: see fanout
        session = FixSession(slot.config, slot.store, self.authenticator, now)
        slot.connection = conn
        slot.logons += 1
        conn.slot = slot
        return session

    def _refuse_logon(self, conn: FixConnection, logon: RawMessage, code: str,
                      slot: SessionSlot | None, now: float, text: str | None = None) -> None:
        """A Logon that cannot bind. It is authenticated first (a configured session's failures
        count towards its port closure, as they would when it binds); only a peer that holds the
        key learns more than ``authentication failed``: a duplicate identity is disconnected
        silently (Test Case 1S.b), a weekly reset or a storage fault is named."""
        decision = self._authenticate(logon, now) if slot is not None else AuthDecision(
            False, "unknown_session", AUTH_FAILED_TEXT)
        if slot is not None and not decision.ok:
            self.on_event(slot, AuthFailed(decision.reason or "refused"))
        self.refused(conn, code)
        if decision.ok and code == "already_logged_on":
            conn.close("duplicate Logon for a session already logged on", abort=True)
            return
        text = (text or self.refusals.get(code, AUTH_FAILED_TEXT)) if decision.ok else (
            decision.text or AUTH_FAILED_TEXT)
        conn.write_raw(refusal_logout(logon, self._our, text, now))
        conn.close(code)

    def _authenticate(self, logon: RawMessage, now: float) -> AuthDecision:
        if self.authenticator is None:
            return AuthDecision(True)
        try:
            return self.authenticator(logon, now)
        except Exception:                       # an authenticator bug must not leak or escape
            log.exception("authenticator failed")
            return AuthDecision(False, "internal_error", AUTH_FAILED_TEXT)

    def dispatch(self, conn: FixConnection, events: list[Any], now: float) -> None:
        slot = conn.slot
        assert slot is not None
        app: list[RawMessage] = []
        for ev in events:
            if isinstance(ev, AppMessage):
                app.append(ev.msg)
            else:
                self.on_event(slot, ev)
        if app and self.app_sink is not None:
            self.app_sink(conn, app, now)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self, host: str, port: int, ssl: Any = None) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: FixConnection(self, self.clock, self.settings.max_message_size),
            host, port, ssl=ssl, reuse_address=True, backlog=LISTEN_BACKLOG)
        bound: int = self._server.sockets[0].getsockname()[1]
        log.info("FIX listener on %s:%d", host, bound)
        return bound

    @property
    def listening(self) -> bool:
        return self._server is not None and self._server.is_serving()

    def due(self, now: float, until: float) -> tuple[list[FixConnection], float]:
        """The connections whose session timer is due at ``now``, and the seconds until the
        timer task should look again: when the next session's timer is due (a Heartbeat at
        HeartBtInt, not up to half a second after it: an engine that counts in whole seconds
        sends a TestRequest for a late one), at the latest at ``until`` (the next full pass: logon
        timeouts, refusal logs), at least ``MIN_TIMER_S`` later (a timer that stays due cannot
        spin the loop). One pass over the connections; only the due ones are ticked."""
        ready: list[FixConnection] = []
        wake = until
        for conn in self.connections:
            session = conn.session
            if session is not None:
                t = session.next_timer()
                if t is not None:
                    if t <= now:
                        ready.append(conn)
                    elif t < wake:
                        wake = t
        return ready, max(min(MIN_TIMER_S, until - now), wake - now)

    async def run_timers(self, interval: float = 0.5) -> None:
        """The one timer task: heartbeats, TestRequests, logon and logout timeouts. Every
        ``interval`` it ticks every connection; in between only those whose session timer is
        due (a pass at 1,000 sessions ticks the few due, not all)."""
        sweep_at = self.clock() + interval
        while True:
            now = self.clock()
            ready, wait = self.due(now, sweep_at)
            for conn in ready:
                conn.tick(now)
            await asyncio.sleep(max(0.0, wait))
            now = self.clock()
            if now >= sweep_at or now < sweep_at - 2 * interval:   # (or the clock went back)
                sweep_at = now + interval
                for conn in list(self.connections):
                    conn.tick(now)
                if self._refusals and now - self._refusals_logged_at >= REFUSAL_LOG_INTERVAL:
                    self.log_refusals()

    async def shutdown(self, text: str = "gateway shutting down") -> None:
        """Stop listening, send Logout on every logged-on session, wait (bounded) for the peers'
        Logout replies, then close every connection and sync every store."""
        if self._server is not None:
            self._server.close()
        now = self.clock()
        for conn in list(self.connections):
            if conn.session is not None and not conn.session.closed:
                try:
                    conn.session.logout(text, now)
                    conn.pump(now)
                except (StoreError, OSError) as err:   # a failing disk: the stop goes on
                    log.error("session %s: no Logout sent: %s", conn.name, err)
                    conn.close(text, abort=True)
                except Exception:
                    log.exception("error sending Logout to %s", conn.name)
            else:
                conn.close(text)
        deadline = now + self.settings.shutdown_timeout
        while self.connections and self.clock() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close(text)
        # A peer that does not drain what is buffered for it is aborted, not left half-closed.
        deadline = self.clock() + CLOSE_GRACE_S
        while self.connections and self.clock() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.abort_if_open()
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            except asyncio.TimeoutError:
                log.warning("listener did not close within 2s")
        for slot in self.slots.values():
            slot.store.sync()
