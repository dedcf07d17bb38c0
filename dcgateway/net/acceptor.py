"""The acceptor: one listening port for every configured session, told apart by the Logon's 49/56.

Binding rules (../shared/ILINK.md "Logon rules", FIX Vol. 2 "Logon"):

* The first message on a connection must be a Logon (35=A); anything else: disconnect.
* 56 must be the gateway's CompID and 49 a configured session, else Logout with a reason text and
  disconnect (the sequence number of that Logout is 1: there is no session to consume one of).
* A session already logged on keeps its connection: a second Logon for it is refused with a
  Logout and the newcomer is disconnected.
* A connection that has not logged on within ``logon_timeout`` seconds is closed.

Everything after binding is the session engine's business; the acceptor only routes events
(application messages go to the ``app_sink``, the rest to ``on_event`` for logs and metrics) and
runs the one timer task that drives every session's heartbeats and timeouts.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from ..fix import tags as T
from ..fix.codec import RawMessage, encode_fields
from ..fix.session import AppMessage, Authenticator, Disconnect, FixSession, SessionConfig
from ..fix.timefmt import utc_timestamp
from .connection import CLOSE_GRACE_S, FixConnection

log = logging.getLogger("dcgateway.net")


class Store(Protocol):
    def sync(self) -> None: ...


@dataclass
class SessionSlot:
    """A configured session: its durable store and, while logged on, its connection."""

    comp_id: str
    role: str
    config: SessionConfig
    store: Any                                  # SessionStore with sync()/close()
    connection: FixConnection | None = None
    logons: int = 0
    target: Any = None                          # fanout.TargetState for a drop copy target
    bytes_in: int = 0                           # cumulative, read by the metrics pump
    bytes_out: int = 0


class AppSink(Protocol):
    def __call__(self, slot: SessionSlot, messages: list[RawMessage], now: float) -> None: ...


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
        self._server: asyncio.base_events.Server | None = None
        self._our = settings.our_comp_id.encode()
        self.refusing: str | None = None        # a reason to refuse every Logon (weekly reset)

    # -- used by FixConnection --------------------------------------------------------------

    @property
    def write_buffer_limits(self) -> tuple[int, int]:
        return self.settings.write_buffer_high, self.settings.write_buffer_low

    @property
    def logon_timeout(self) -> float:
        return self.settings.logon_timeout

    def connection_opened(self, conn: FixConnection) -> None:
        if len(self.connections) >= self.settings.max_connections:
            log.warning("refusing connection from %s: max_connections=%d reached",
                        conn.peer, self.settings.max_connections)
            self.refused(conn, "max_connections")
            conn.close("max connections")
            return
        self.connections.add(conn)

    def connection_closed(self, conn: FixConnection, exc: Exception | None) -> None:
        self.connections.discard(conn)
        slot = conn.slot
        if slot is not None and slot.connection is conn:
            slot.connection = None
            if slot.target is not None:
                slot.target.detach(conn)
            try:
                slot.store.sync()
            except Exception as err:           # a failing disk: logged, the slot is free anyway
                log.error("session %s: could not sync its state on disconnect: %s",
                          slot.comp_id, err)
            log.info("session %s disconnected (%s)", slot.comp_id,
                     conn.close_reason or (exc and str(exc)) or "peer closed")
            self.on_event(slot, Disconnect(conn.close_reason or "peer closed"))

    def refused(self, conn: FixConnection, reason: str) -> None:
        log.info("connection %s refused: %s", conn.peer, reason)
        self.on_event(None, ("refused", reason))

    def bind(self, conn: FixConnection, first: RawMessage, now: float) -> FixSession | None:
        """Route a connection by its first message; None when refused (already answered)."""
        if first.msg_type != T.MsgType.LOGON:
            self.refused(conn, "first_message_not_logon")
            conn.close("first message was not a Logon")
            return None
        sender = first.header.get(T.SENDER_COMP_ID, b"")
        target = first.header.get(T.TARGET_COMP_ID, b"")
        slot = self.slots.get(sender.decode("ascii", "replace"))
        refusal = None                          # (metric reason, Logout text)
        if self.refusing is not None:
            refusal = ("sequence_reset", self.refusing)
        elif target != self._our:
            refusal = ("wrong_target_comp_id", f"TargetCompID(56) must be {self.settings.our_comp_id}")
        elif slot is None:
            refusal = ("unknown_session", "unknown SenderCompID(49)")
        elif slot.connection is not None:
            refusal = ("already_logged_on", "session is already logged on")
        if refusal is not None:
            self._refuse_logon(conn, first, refusal[1], refusal[0], now)
            return None
        assert slot is not None
        if slot.target is not None:
            slot.target.attach(conn)            # before its Logon is processed: see fanout.py
        session = FixSession(slot.config, slot.store, self.authenticator, now)
        slot.connection = conn
        slot.logons += 1
        conn.slot = slot
        return session

    def _refuse_logon(self, conn: FixConnection, logon: RawMessage, reason: str, code: str,
                      now: float) -> None:
        begin = logon.begin_string or b"FIX.4.2"
        their = logon.header.get(T.SENDER_COMP_ID, b"UNKNOWN")
        out = encode_fields(begin, T.MsgType.LOGOUT, [
            (T.SENDER_COMP_ID, self._our), (T.TARGET_COMP_ID, their), (T.MSG_SEQ_NUM, 1),
            (T.SENDING_TIME, utc_timestamp(now))], [(T.TEXT, reason)])
        conn.write_raw(out)
        log.info("connection %s refused: %s", conn.peer, reason)
        self.on_event(None, ("refused", code))
        conn.close(reason)

    def dispatch(self, conn: FixConnection, events: list, now: float) -> None:
        slot = conn.slot
        assert slot is not None
        app: list[RawMessage] = []
        for ev in events:
            if isinstance(ev, AppMessage):
                app.append(ev.msg)
            else:
                self.on_event(slot, ev)
        if app and self.app_sink is not None:
            self.app_sink(slot, app, now)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self, host: str, port: int, ssl: Any = None) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: FixConnection(self, self.clock, self.settings.max_message_size),
            host, port, ssl=ssl, reuse_address=True)
        bound = self._server.sockets[0].getsockname()[1]
        log.info("FIX listener on %s:%d", host, bound)
        return bound

    @property
    def listening(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def run_timers(self, interval: float = 0.5) -> None:
        """The one timer task: heartbeats, TestRequests, logon and logout timeouts."""
        while True:
            await asyncio.sleep(interval)
            now = self.clock()
            for conn in list(self.connections):
                conn.tick(now)

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
