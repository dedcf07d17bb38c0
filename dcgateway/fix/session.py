"""The FIX session engine (acceptor side, FIX 4.2 and 4.4), sans I/O.

Theory of operation
-------------------
A :class:`FixSession` is one FIX session on one connection, h2/h11 style: the shell feeds it bytes
(:meth:`~FixSession.receive_data`) or already-decoded items (:meth:`~FixSession.receive_messages`)
and calls :meth:`~FixSession.on_timer` about once a second; the session never blocks, never reads a
clock and never touches a socket. After each call the shell drains :meth:`~FixSession.events`
(application messages, logon/logout, faults for logs and metrics), makes the store durable, writes
:meth:`~FixSession.data_to_send`, and closes the socket once :attr:`~FixSession.closed` is True.

Inbound pipeline for every framed message (FIX Vol. 2 "Standard Message Header" processing and the
FIX Session Layer Test Cases, numbers in brackets):

1. BeginString must match the session's, else Logout + disconnect [2.h]; MsgSeqNum must be present,
   else Logout + disconnect.
2. Before logon, only a Logon is accepted [1S.d]; it is checked (``session_admin.LOGON_CHECKS``),
   then authenticated, then sequenced [1S.a/b/e].
3. After logon: 49/56 must match [2.i: Reject 373=9, Logout, disconnect]; SendingTime accuracy is
   checked at receipt, not when a queued message is finally processed ["SendingTime not within
   tolerance": Reject 373=10, Logout, disconnect].
4. Sequencing. ``seq == expected``: validate, consume the seq, dispatch by MsgType through a
   handler table (application types become :class:`AppMessage` events), then drain the queue of
   out-of-order messages. ``seq > expected``: queue it (bounded) and send one ResendRequest per
   gap, in chunks of ``resend_chunk`` [2.b, 1S.b]. ``seq < expected``: PossDup duplicates are
   ignored [2.e], anything else is a fatal "MsgSeqNum too low" Logout [2.c].
5. A message that fails validation is answered with a Reject (35=3) and consumes its seq [invalid
   MsgType, required tag missing, ...]; garbled frames (codec DecodeError: garbage, wrong
   BodyLength or CheckSum, 8/9/35 out of place) are ignored and consume nothing [2.d].

State lives in :data:`TRANSITIONS`; every state change goes through :meth:`FixSession._transition`,
which asserts the change against that table. Nothing raises out of ``receive_*``/``on_timer``: a
bug becomes a ``ProtocolError("internal_error")`` event, a Logout and a disconnect.

Outbound: every message we originate gets 34 = ``store.next_out`` and is saved with
``store.save_outbound`` (admin messages too, so a later resend of them becomes a gap fill).
Retransmissions reuse their seq and are not saved again. The public types (config, states,
events) live in :mod:`.session_types` and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from ..errors import StoreError
from . import tags as T
from .codec import DecodeError, Decoder, RawMessage, encode
from .resend import ResendProgress, resend_range, serve_slice
from .session_admin import (
    Problem,
    SendingTimeParser,
    gap_fill_flag,
    late_seq,
    max_reject_reason,
    peer_reject,
    reject_body,
    reverse_routing,
    seq_problem_text,
    text_of,
    text_value,
    validate,
)
from .session_logon import LogonHandling
from .session_sequence import SequenceHandling
from .session_types import (
    TRANSITIONS,
    AppMessage,
    AuthDecision,
    Authenticator,
    AuthFailed,
    Disconnect,
    Event,
    LoggedOn,
    LoggedOut,
    Outgoing,
    ProtocolError,
    ResendRequested,
    ResendServed,
    SessionConfig,
    SessionNotReady,
    SessionRejectSent,
    SessionState,
    accept_all,
)
from .store import SessionStore
from .timefmt import utc_timestamp

M = T.MsgType
R = T.SessionRejectReason

#: Logout text when the session's own state cannot be stored (a full or failing disk).
STORE_FAULT_TEXT = "gateway cannot store session state right now; log on again later"
S = SessionState

# What the per-message path compares with, as module constants: compiled, these are read
# directly, where ``M.LOGON`` or ``S.ACTIVE`` is an attribute lookup on a class each time.
_AWAITING_LOGON: Final = S.AWAITING_LOGON
_MT_LOGON: Final = M.LOGON
_MT_LOGOUT: Final = M.LOGOUT
_MT_SEQUENCE_RESET: Final = M.SEQUENCE_RESET

__all__ = [
    "AppMessage", "AuthDecision", "AuthFailed", "Authenticator", "Disconnect", "Event",
    "FixSession", "LoggedOn", "LoggedOut", "Outgoing", "ProtocolError", "ResendRequested",
    "ResendServed", "SessionConfig", "SessionNotReady", "SessionRejectSent", "SessionState",
    "TRANSITIONS",
]


class _IllegalTransition(Exception):
    pass


class FixSession(SequenceHandling, LogonHandling):
    """One FIX session (acceptor side). See the module docstring for the theory of operation."""

    def __init__(self, config: SessionConfig, store: SessionStore,
                 authenticator: Authenticator | None = None, now: float = 0.0) -> None:
        self.config = config
        self.store = store
        self.state = S.AWAITING_LOGON
        self._authenticated = False
        self.heartbeat_interval: int | None = None
        self._auth = authenticator or accept_all
        self._decoder = Decoder(config.max_message_size)
        self._times = SendingTimeParser()
        self._events: list[Event] = []
        self._out: list[Outgoing] = []
        self._closed = False
        self._created = now
        self._last_recv = now
        self._last_sent = now
        self._logout_sent_at = now
        self._ending = False                # an error Logout was sent (see _fatal)
        #: the MsgSeqNum of the Logout we sent (0: none): after it, FIX lets us send nothing
        #: more unless the peer asks for a resend; a drop copy target's copies stop there
        self.logout_seq = 0
        self._logout_deadline = now
        self._test_req_id: bytes | None = None
        self._test_req_at = now
        self._test_req_count = 0
        self._queue: dict[int, RawMessage | None] = {}   # None: seq already acted on (Logon, 2)
        self._queued_bytes = 0
        self._drop_reported = False
        self._highest_seen = 0
        self._resend_pending: tuple[int, int] | None = None
        self._jump_upto = 0                  # a SequenceReset's jump in progress (_jump_to)
        self._serving: ResendProgress | None = None    # a ResendRequest being answered
        #: the store cannot serve the answer yet (``resend_ready``): the shell asks again later
        self.resend_waiting = False
        self._head = b"49=" + config.our_comp_id + b"\x0156=" + config.their_comp_id + b"\x0134="
        self._handlers: dict[bytes, Callable[[RawMessage, float], None]] = {
            M.HEARTBEAT: self._on_heartbeat, M.TEST_REQUEST: self._on_test_request,
            M.RESEND_REQUEST: self._on_resend_request, M.REJECT: self._on_reject,
            M.SEQUENCE_RESET: self._on_gap_fill, M.LOGOUT: self._on_logout,
            M.LOGON: self._on_second_logon,
        }
        self._timers: dict[SessionState, Callable[[float], None]] = {
            S.AWAITING_LOGON: self._timer_awaiting_logon, S.ACTIVE: self._timer_active,
            S.LOGOUT_SENT: self._timer_logout_sent,
        }

    # --- public API ------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def events(self) -> list[Event]:
        out, self._events = self._events, []
        return out

    def data_to_send(self) -> bytes:
        """Everything to write to the peer, in order, as one bytes object."""
        if not self._out:
            return b""
        out = b"".join(o.raw for o in self._out)
        self._out.clear()
        return out

    def items_to_send(self) -> list[Outgoing]:
        """The same as :meth:`data_to_send`, message by message with seq and PossDupFlag."""
        out, self._out = self._out, []
        return out

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed raw bytes from the socket (any chunking)."""
        if self._closed or not data:
            return
        self.receive_messages(self._decoder.feed(data), now)

    def receive_messages(self, items: list[RawMessage | DecodeError], now: float) -> None:
        """Process decoded items in order; never raises (docs/architecture.md rule 3)."""
        for item in items:
            if self._closed:
                return
            try:
                if isinstance(item, DecodeError):
                    # FIX Vol. 2 / Test Case 2.d: garbled messages are ignored, no seq used.
                    self._events.append(ProtocolError(item.kind, item.detail))
                else:
                    self._last_recv = now
                    self._on_message(item, now)
            except Exception as exc:    # noqa: BLE001 - the boundary of rule 3
                self._internal_error(exc, now)

    def on_timer(self, now: float) -> None:
        """Heartbeats, TestRequest, logon/logout/heartbeat timeouts; never raises."""
        if self._closed:
            return
        handler = self._timers.get(self.state)
        if handler is None:
            return
        try:
            handler(now)
        except Exception as exc:    # noqa: BLE001
            self._internal_error(exc, now)

    def excuse_silence(self, now: float) -> None:
        """The shell is not reading the peer on purpose (the journal is behind: what the peer
        sends waits in the socket), so its silence is ours, not a sign that it is gone: the
        clock towards a TestRequest and the heartbeat timeout starts again from ``now``."""
        if now > self._last_recv:
            self._last_recv = now
        self._test_req_id = None

    def next_timer(self) -> float | None:
        """Earliest time :meth:`on_timer` has something to do (None when never)."""
        st = self.state
        if st is S.AWAITING_LOGON:
            return self._created + self.config.logon_timeout
        if st is S.LOGOUT_SENT:
            if self._ending:
                return self._logout_deadline
            return self._logout_sent_at + self.config.logout_timeout
        if st is not S.ACTIVE or self.heartbeat_interval is None:
            return None
        hbi = self.heartbeat_interval
        if self._test_req_id is None:
            probe = self._last_recv + hbi * 1.2
        else:
            probe = self._test_req_at + hbi
        return min(self._last_sent + hbi, probe)

    def send_app(self, msg_type: bytes, body: bytes, now: float, extra_header: bytes = b"",
                 body_sum: int | None = None) -> int:
        """Send an application message; returns its MsgSeqNum. ``body`` is the encoded fields
        after the standard header, ``extra_header`` encoded header fields placed after 52."""
        if self.state is not S.ACTIVE:
            peer = self.config.their_comp_id.decode("ascii", "replace")
            raise SessionNotReady(f"session with {peer} is {self.state.value}, not logged on")
        if msg_type in T.ADMIN_MSG_TYPES:
            raise ValueError(f"send_app() is for application messages, not MsgType {msg_type!r}")
        return self._send(msg_type, body, now, extra_header, body_sum)

    def logout(self, text: str, now: float) -> None:
        """Start the Logout handshake (FIX Vol. 2 "Logout"): send Logout, then wait up to
        ``logout_timeout`` for the peer's Logout. Before logon there is nothing to log out of:
        the connection is just closed."""
        if self.state is S.ACTIVE:
            self._send_logout(text, now)
        elif self.state is S.AWAITING_LOGON:
            self._disconnect(text)

    # --- state and output primitives -----------------------------------------------------------

    def _transition(self, trigger: str) -> None:
        nxt = TRANSITIONS[self.state].get(trigger)
        if nxt is None:
            raise _IllegalTransition(f"{trigger!r} is not allowed in state {self.state.value}")
        self.state = nxt

    def _send(self, msg_type: bytes, body: bytes, now: float, extra_header: bytes = b"",
              body_sum: int | None = None) -> int:
        seq = self.store.next_out
        header = b"%s%d\x0152=%s\x01%s" % (self._head, seq, utc_timestamp(now), extra_header)
        raw = encode(self.config.begin_string, msg_type, header, body, body_sum)
        if self._authenticated:
            self.store.save_outbound(seq, raw)
        # else: the answer to a Logon that was refused before it was authenticated. It carries
        # our next seq but does not consume it, so an unauthenticated peer cannot move the
        # session's outbound sequence (nor fill its store) however often it tries.
        self._out.append(Outgoing(seq, False, raw))
        self._last_sent = now
        return seq

    def _send_logout(self, text: str, now: float, extra: bytes = b"") -> None:
        self._transition("send_logout")
        self._logout_sent_at = now
        body = (b"58=" + text_value(text) + b"\x01" if text else b"") + extra
        self.logout_seq = self._send(M.LOGOUT, body, now)

    def _disconnect(self, reason: str) -> None:
        if self._closed:
            return
        self._transition("disconnect")
        self._closed = True
        self._queue.clear()
        self._queued_bytes = 0
        self._events.append(Disconnect(reason))

    def _fatal(self, kind: str, text: str, now: float, extra: bytes = b"",
               detail: str | None = None, wait: bool = True) -> None:
        """A fault that ends the session (FIX Test Cases 2.c, 2.h, 2.i, 2.k, 2.o, SendingTime
        accuracy): event, Logout with the reason text, then wait ``error_logout_grace`` seconds
        for the peer's Logout before disconnecting (so its reply does not meet a reset); nothing
        else it sends is acted on meanwhile. Before authentication, or when no Logout may be
        sent, the disconnect is immediate. ``detail`` (event only, never sent to the peer)
        defaults to ``text``."""
        self._events.append(ProtocolError(kind, text if detail is None else detail))
        if wait and self._authenticated and self.state is S.ACTIVE:
            self._send_logout(text, now, extra)
            self._ending = True
            self._logout_deadline = now + self.config.error_logout_grace
            return
        if "send_logout" in TRANSITIONS[self.state]:
            self._send_logout(text, now, extra)
        self._disconnect(text)

    def _internal_error(self, exc: Exception, now: float) -> None:
        """A bug or a failing store inside receive_*/on_timer (docs/architecture.md rule 3): the details go
        to the event only; the peer gets a Logout saying what it may do (a store that cannot be
        written, a full disk: log on again later), or a plain "internal error" for a bug."""
        kind, text = (("store_error", STORE_FAULT_TEXT) if isinstance(exc, StoreError)
                      else ("internal_error", "internal error"))
        try:
            self._fatal(kind, text, now, detail=f"{type(exc).__name__}: {exc}", wait=False)
        except Exception:    # noqa: BLE001 - the store itself is failing: close without Logout
            self.state = S.CLOSED       # deliberately outside TRANSITIONS: last-resort path
            if not self._closed:
                self._closed = True
                self._events.append(Disconnect("internal error"))

    def _reject(self, seq: int | None, msg_type: bytes, problem: Problem, now: float,
                msg: RawMessage | None = None) -> None:
        """Session-level Reject (35=3) with 45/371/372/373/58 (FIX Vol. 2 "Reject"), routed back
        the way the rejected message came (its 115/116/144 as 128/129/145 and the reverse)."""
        self._send(M.REJECT, reject_body(seq, msg_type, problem,
                                         max_reject_reason(self.config.begin_string)), now,
                   reverse_routing(msg) if msg is not None else b"")
        self._events.append(SessionRejectSent(seq or 0, problem.reason, problem.text))

    def _consume(self, seq: int) -> None:
        """The in-order message ``seq`` was dealt with (processed or rejected)."""
        if self.store.next_in == seq:
            self.store.set_next_in(seq + 1)

    # --- inbound ----------------------------------------------------------------------------

    def _on_message(self, msg: RawMessage, now: float) -> None:
        if self.state is _AWAITING_LOGON:
            self._on_first_message(msg, now)   # authenticated before anything else is looked at
            return
        if msg.begin_string != self.config.begin_string:
            self._fatal("begin_string", "incorrect BeginString", now)
            return
        seq = msg.seq_num
        if seq is None:
            seq = late_seq(msg)            # 34 after a body field (Test Case 14g): a Reject
        if seq is None:
            self._fatal("seq_missing", seq_problem_text(msg), now)
            return
        if self._ending:                    # an error Logout was sent: only its answer counts
            if msg.msg_type == _MT_LOGOUT:
                self._events.append(LoggedOut(text_of(msg) or "logout confirmed"))
                self._disconnect("logout complete")
            return
        if not self._comp_ids_ok(msg, seq, now):
            return
        if msg.msg_type == _MT_LOGON:         # its SendingTime is the authenticator's to judge,
            self._on_second_logon(msg, now)   # as on the first Logon (replay protection)
            return
        if not self._sending_time_ok(msg, seq, now):
            return
        if msg.msg_type == _MT_SEQUENCE_RESET and not gap_fill_flag(msg):
            self._on_sequence_reset(msg, now)
            return
        expected = self.store.next_in
        if seq == expected:
            self._process(msg, seq, now)
            if self._queue or self._resend_pending is not None or \
                    self._highest_seen > expected:
                self._drain(now)             # else it would find nothing to do
        elif seq > expected:
            self._too_high(msg, seq, now)
        else:
            self._too_low(msg, seq, expected, now)

    def _comp_ids_ok(self, msg: RawMessage, seq: int, now: float) -> bool:
        """49/56 on every message (FIX Test Case 2.i): Reject 373=9, Logout, disconnect."""
        h = msg.header
        sender, target = h.get(T.SENDER_COMP_ID), h.get(T.TARGET_COMP_ID)
        if not sender or not target:
            return True     # missing or empty (Test Cases 14b, 14d): a Reject by validation
        sender_ok = sender == self.config.their_comp_id
        if sender_ok and target == self.config.our_comp_id:
            return True
        tag = T.TARGET_COMP_ID if sender_ok else T.SENDER_COMP_ID
        if self.state is not S.AWAITING_LOGON:
            self._reject(seq, msg.msg_type, Problem(R.COMPID_PROBLEM, tag, "CompID problem"), now,
                         msg)
            self._consume(seq)
        self._fatal("comp_id", "CompID problem", now)
        return False

    def _sending_time_ok(self, msg: RawMessage, seq: int, now: float) -> bool:
        """SendingTime accuracy at receipt (FIX Test Cases, "SendingTime not
        within tolerance"): Reject 373=10, Logout, disconnect.
        A missing or malformed 52 is rejected later, in sequence, by :meth:`_validate`."""
        v = msg.header.get(T.SENDING_TIME)
        t = None if v is None else self._times.parse(v)
        if t is None or abs(t - now) <= self.config.sending_time_tolerance:
            return True
        problem = Problem(R.SENDING_TIME_ACCURACY, T.SENDING_TIME, "SendingTime accuracy problem")
        self._reject(seq, msg.msg_type, problem, now, msg)
        self._consume(seq)
        self._fatal("sending_time", problem.text, now)
        return False

    def _validate(self, msg: RawMessage) -> Problem | None:
        """Checks of an in-order message before it is acted on (:func:`.session_admin.
        validate`)."""
        return validate(msg, self._times, self.config.validator)

    def _process(self, msg: RawMessage, seq: int, now: float) -> None:
        """The message whose seq is the expected one: validate, consume, dispatch."""
        problem = self._validate(msg)
        self._consume(seq)
        if problem is not None:
            self._reject(seq, msg.msg_type, problem, now, msg)
            if problem.reason == R.SENDING_TIME_ACCURACY:      # Test Case 2f: then Logout
                self._fatal("sending_time", problem.text, now)
            return
        handler = self._handlers.get(msg.msg_type)
        if handler is None:
            self._events.append(AppMessage(msg))
        else:
            handler(msg, now)

    def _drain(self, now: float) -> None:
        """Process queued messages that are now in sequence, then ask for the next gap chunk."""
        q = self._queue
        while q and not self._closed:
            nxt = self.store.next_in
            if nxt not in q:
                break
            msg = q.pop(nxt)
            if msg is None:
                self._consume(nxt)
            else:
                self._queued_bytes -= len(msg.raw)
                self._process(msg, nxt, now)
        if not self._closed:
            self._request_gap(now)

    # --- admin message handlers (dispatched by MsgType) --------------------------------------

    def _on_heartbeat(self, msg: RawMessage, now: float) -> None:
        """A Heartbeat answering our TestRequest clears it (FIX Vol. 2 "Heartbeat")."""
        if self._test_req_id is not None and msg.get(T.TEST_REQ_ID) == self._test_req_id:
            self._test_req_id = None

    def _on_test_request(self, msg: RawMessage, now: float) -> None:
        """Answer with a Heartbeat carrying the same TestReqID (Test Case 6)."""
        test_id = msg.get(T.TEST_REQ_ID) or b""
        self._send(M.HEARTBEAT, b"112=" + test_id + b"\x01", now)

    def _on_reject(self, msg: RawMessage, now: float) -> None:
        """A peer Reject counts its seq and is reported; it is never answered."""
        self._events.append(peer_reject(msg))

    def _on_resend_request(self, msg: RawMessage, now: float) -> None:
        """FIX Vol. 2 "Resend Request", Test Case 8 (:mod:`.resend`): the whole range is
        answered, a slice now and the rest as the shell asks (:meth:`continue_resend`); a new
        request replaces one still being answered."""
        problem, progress, event = resend_range(self.store, msg)
        if problem is not None:
            self._reject(msg.seq_num, msg.msg_type, problem, now, msg)
            return
        if event is not None:
            self._events.append(event)
        if progress is not None:
            self._serving = progress
            self.continue_resend(now)

    @property
    def resend_backlog(self) -> int:
        """Seqs of the ResendRequest being answered that are not answered yet."""
        return 0 if self._serving is None else self._serving.remaining

    def continue_resend(self, now: float) -> None:
        """Answer the next slice of the ResendRequest being served: ``config.resend_slice``
        seqs (all of them when 0). The shell calls this again while :attr:`resend_backlog` is
        not 0, once what it wrote has drained, so a large request shares the loop; while the
        store is not ready (:attr:`resend_waiting`), nothing is answered yet."""
        progress = self._serving
        if progress is None:
            return
        if self._closed or self.state is not S.ACTIVE:
            self._serving = None            # ending: what is left is not owed any more
            self.resend_waiting = False
            return
        ready = getattr(self.store, "resend_ready", None)
        self.resend_waiting = ready is not None and not ready()
        if self.resend_waiting:
            return
        limit = self.config.resend_slice or progress.remaining
        out = serve_slice(self.config, self.store, progress, now, limit)
        if out:
            self._out.extend(Outgoing(seq, True, raw) for seq, raw in out)
            self._last_sent = now
        if not progress.remaining:
            self._serving = None
            self._events.append(progress.served())

    def _on_logout(self, msg: RawMessage, now: float) -> None:
        """Peer Logout (FIX Vol. 2 "Logout", Test Case 13): completes our handshake, or is
        answered with a Logout; either way the connection is then closed."""
        text = text_of(msg)
        if self.state is S.LOGOUT_SENT:
            self._events.append(LoggedOut(text or "logout confirmed"))
            self._disconnect("logout complete")
            return
        self._transition("recv_logout")
        self._send_logout("", now)
        self._events.append(LoggedOut(text or "peer logout"))
        self._disconnect("peer logout")

    # --- timers (dispatched by state) --------------------------------------------------------

    def _timer_awaiting_logon(self, now: float) -> None:
        if now >= self._created + self.config.logon_timeout:
            self._events.append(ProtocolError("logon_timeout", "no Logon received"))
            self._disconnect("logon timeout")

    def _timer_logout_sent(self, now: float) -> None:
        if self._ending and now >= self._logout_deadline:
            self._events.append(LoggedOut("no Logout reply after an error Logout"))
            self._disconnect("logout grace over")
            return
        if now >= self._logout_sent_at + self.config.logout_timeout:
            self._events.append(LoggedOut("logout timeout"))
            self._disconnect("logout timeout")

    def _timer_active(self, now: float) -> None:
        """FIX Vol. 2 "Heartbeat interval" and Test Cases 3/4: Heartbeat after hbi seconds of
        our silence; TestRequest after hbi*1.2 of theirs; Logout after another hbi without reply."""
        hbi = self.heartbeat_interval or 30
        if self._test_req_id is not None and self._last_recv > self._test_req_at:
            self._test_req_id = None              # the peer spoke since: it is alive
        if self._test_req_id is None:
            if now - self._last_recv >= hbi * 1.2:
                self._test_req_count += 1
                self._test_req_id = b"TEST-%d-%d" % (int(now), self._test_req_count)
                self._test_req_at = now
                self._send(M.TEST_REQUEST, b"112=" + self._test_req_id + b"\x01", now)
        elif now - self._test_req_at >= hbi:
            self._fatal("heartbeat_timeout", "heartbeat timeout", now)
            return
        if now - self._last_sent >= hbi:
            self._send(M.HEARTBEAT, b"", now)


