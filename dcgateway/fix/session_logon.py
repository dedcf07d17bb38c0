"""The Logon part of the FIX session engine (FIX Vol. 2 "Logon", Test Cases 1S; the venue's
Logon rules): the first message of a connection must be a valid, authenticated Logon; a second
Logon on a logged-on session ends it. A base of :class:`~.session.FixSession`, using its state
and output primitives."""

from __future__ import annotations

from mypy_extensions import trait

from . import tags as T
from .codec import RawMessage
from .resend import ResendProgress
from .session_admin import (
    AUTH_FAILED_TEXT,
    SendingTimeParser,
    logon_problem,
    logon_reply_body,
    refusal_logout,
    seq_problem_text,
)
from .session_types import (
    AuthDecision,
    Authenticator,
    AuthFailed,
    Event,
    LoggedOn,
    Outgoing,
    ProtocolError,
    SessionConfig,
)
from .store import SessionStore

M = T.MsgType


@trait
class LogonHandling:
    # the FixSession state and primitives this base uses
    config: SessionConfig
    store: SessionStore
    heartbeat_interval: int | None
    _auth: Authenticator
    _authenticated: bool
    _times: SendingTimeParser
    _events: list[Event]
    _queue: dict[int, RawMessage | None]
    _queued_bytes: int
    _highest_seen: int
    _resend_pending: tuple[int, int] | None
    _serving: ResendProgress | None
    _out: list[Outgoing]

    def _disconnect(self, reason: str) -> None:
        raise NotImplementedError

    def _comp_ids_ok(self, msg: RawMessage, seq: int, now: float) -> bool:
        raise NotImplementedError

    def _fatal(self, kind: str, text: str, now: float, extra: bytes = b"",
               detail: str | None = None, wait: bool = True) -> None:
        raise NotImplementedError

    def _transition(self, trigger: str) -> None:
        raise NotImplementedError

    def _send(self, msg_type: bytes, body: bytes, now: float, extra_header: bytes = b"",
              body_sum: int | None = None) -> int:
        raise NotImplementedError

    def _send_logout(self, text: str, now: float, extra: bytes = b"") -> None:
        raise NotImplementedError

    def _consume(self, seq: int) -> None:
        raise NotImplementedError

    def _request_gap(self, now: float) -> None:
        raise NotImplementedError


    def _on_first_message(self, msg: RawMessage, now: float) -> None:
        """FIX Vol. 2 "Logon" and Test Cases 1S: the first message must be a valid Logon.

        Authentication first: a peer that is not authenticated learns nothing but
        "authentication failed" (docs/venue.md), in a Logout that says nothing of the session
        either (:func:`refusal_logout`), and a stale SendingTime or a 122 on the Logon counts
        toward the port closure as the replay protection it is. Only then the session's own
        checks: BeginString, MsgSeqNum, CompIDs, the Logon's fields."""
        if msg.msg_type != M.LOGON:
            self._events.append(ProtocolError("logon_not_first",
                                              f"first message is MsgType {msg.msg_type!r}"))
            self._disconnect("first message not Logon")
            return
        if not self._authenticate(msg, now):
            return
        self._authenticated = True
        if msg.begin_string != self.config.begin_string:
            self._fatal("begin_string", "incorrect BeginString", now)
            return
        seq = msg.seq_num
        if seq is None:
            self._fatal("seq_missing", seq_problem_text(msg), now)
            return
        if not self._comp_ids_ok(msg, seq, now):
            return
        found = logon_problem(self.config, msg, seq, now, self._times)
        if found is None and self.config.validator is not None:
            problem = self.config.validator.validate(msg)    # the session's data dictionary
            if problem is not None:
                found = ("invalid_logon", f"invalid Logon: {problem.text}")
        if found is not None:
            self._fatal(found[0], found[1], now)
            return
        reset = msg.get(T.RESET_SEQ_NUM_FLAG) == b"Y" or self.config.reset_on_logon
        if reset:
            self.store.reset()
            self._serving = None
        expected = self.store.next_in
        if seq < expected:
            text = f"MsgSeqNum too low, expecting {expected} but received {seq}"
            self._fatal("seq_too_low", text, now, b"789=%d\x01" % expected)
            return
        hbi = int(msg.get(T.HEART_BT_INT) or b"0")
        self.heartbeat_interval = hbi
        self._transition("logon")
        self._send(M.LOGON, logon_reply_body(msg, hbi, reset), now)
        self._events.append(LoggedOn(hbi, reset))
        if seq == expected:
            self._consume(seq)
        else:                         # Test Case 1S.b: accept, then ask for the gap
            self._highest_seen = seq
            self._queue[seq] = None
            self._request_gap(now)

    def _authenticate(self, msg: RawMessage, now: float) -> bool:
        """Run the authenticator; on refusal emit AuthFailed(reason) and send a Logout with only
        the decision's public text (docs/venue.md: never say which check failed)."""
        try:
            decision = self._auth(msg, now)
        except Exception:    # noqa: BLE001 - an authenticator bug must not leak or escape
            decision = AuthDecision(False, "authenticator_error", "")
        if decision.ok:
            return True
        self._events.append(AuthFailed(decision.reason or "refused"))
        text = decision.text or AUTH_FAILED_TEXT
        if self._authenticated:       # a Logon on a logged-on session: its own Logout
            self._send_logout(text, now)
        else:
            self._transition("send_logout")
            self._out.append(Outgoing(1, False,
                                      refusal_logout(msg, self.config.our_comp_id, text, now)))
        self._disconnect("authentication failed")
        return False

    def _on_second_logon(self, msg: RawMessage, now: float) -> None:
        """A Logon on a logged-on session. FIX 4.4 (Vol. 2 "Sequence Reset (Logon)") lets a
        party reset both sequences in session with a Logon carrying 141=Y and 34=1: both sides
        start again at 1, the reply echoing 141=Y. Anything else ends the session."""
        if (self.config.begin_string == b"FIX.4.4" and msg.seq_num == 1
                and msg.get(T.RESET_SEQ_NUM_FLAG) == b"Y"):
            # authenticated as every Logon is (README: "Every Logon ... is authenticated"): a
            # forged or replayed reset would otherwise move both sequences of a live session
            if not self._authenticate(msg, now):
                return
            self.store.reset()
            self._serving = None            # nothing of the old sequence is owed any more
            hbi = self.heartbeat_interval or int(msg.get(T.HEART_BT_INT) or b"30")
            self._send(M.LOGON, logon_reply_body(msg, hbi), now)
            self._consume(1)
            self._queue.clear()             # the old sequence's gap: nothing of it is owed
            self._queued_bytes = 0
            self._highest_seen = 0
            self._resend_pending = None
            self._events.append(LoggedOn(hbi, True))
            return
        self._fatal("second_logon", "Logon received on a logged-on session", now)
