"""Sequence numbers of the FIX session engine (FIX Vol. 2 "Message recovery", "Sequence Reset"):
a message above the expected seq is kept and the gap asked for in chunks, one below it is a
fatal error unless it is a PossDup duplicate, and SequenceReset (GapFill or Reset) moves the
expected seq. A base of :class:`~.session.FixSession`, using its state and output primitives."""

from __future__ import annotations

from mypy_extensions import trait

from . import tags as T
from .codec import RawMessage
from .session_admin import Problem, SendingTimeParser, possdup_problem
from .session_types import Event, ProtocolError, ResendRequested, SessionConfig
from .store import SessionStore

M = T.MsgType
R = T.SessionRejectReason


@trait
class SequenceHandling:
    # the FixSession state this base uses
    config: SessionConfig
    store: SessionStore
    _times: SendingTimeParser
    _events: list[Event]
    _queue: dict[int, RawMessage | None]
    _queued_bytes: int
    _highest_seen: int
    _drop_reported: bool
    _resend_pending: tuple[int, int] | None
    _closed: bool
    _ending: bool
    _jump_upto: int

    # FixSession's primitives, which it overrides (this is a trait: mypyc compiles the mix-in)
    def _validate(self, msg: RawMessage) -> Problem | None:
        raise NotImplementedError

    def _on_logout(self, msg: RawMessage, now: float) -> None:
        raise NotImplementedError

    def _on_resend_request(self, msg: RawMessage, now: float) -> None:
        raise NotImplementedError

    def _drain(self, now: float) -> None:
        raise NotImplementedError

    def _process(self, msg: RawMessage, seq: int, now: float) -> None:
        raise NotImplementedError

    def _reject(self, seq: int | None, msg_type: bytes, problem: Problem, now: float,
                msg: RawMessage | None = None) -> None:
        raise NotImplementedError

    def _fatal(self, kind: str, text: str, now: float, extra: bytes = b"",
               detail: str | None = None, wait: bool = True) -> None:
        raise NotImplementedError

    def _send(self, msg_type: bytes, body: bytes, now: float, extra_header: bytes = b"",
              body_sum: int | None = None) -> int:
        raise NotImplementedError

    def _too_high(self, msg: RawMessage, seq: int, now: float) -> None:
        """seq > expected (FIX Vol. 2 "Message gap detection", Test Cases 2.b, 10.a): keep the
        message and ask for the gap. A ResendRequest is served at once (Vol. 2: the peer's
        request is honoured before ours) and a Logout is honoured at once."""
        mt = msg.msg_type
        if mt == M.LOGOUT:
            self._on_logout(msg, now)
            return
        if seq > self._highest_seen:
            self._highest_seen = seq
        entry: RawMessage | None = msg
        if mt == M.RESEND_REQUEST and self._validate(msg) is None:
            self._on_resend_request(msg, now)
            entry = None
        if seq not in self._queue:
            size = 0 if entry is None else len(entry.raw)
            if (len(self._queue) < self.config.max_queued
                    and self._queued_bytes + size <= self.config.max_queued_bytes):
                self._queue[seq] = entry
                self._queued_bytes += size
            elif not self._drop_reported:     # one event per gap, not one per dropped message
                self._drop_reported = True
                self._events.append(ProtocolError(
                    "queue_full", f"out-of-order queue full: dropping from MsgSeqNum {seq}; "
                    "they will be requested again"))
        self._request_gap(now)

    def _too_low(self, msg: RawMessage, seq: int, expected: int, now: float) -> None:
        """seq < expected: without PossDupFlag it is fatal (Test Case 2.c, Logout carrying 789);
        a PossDup duplicate is ignored after the 122 checks (Test Case 2.e): a missing 122 gets a
        Reject (2.g), a 122 later than 52 a Reject, then a Logout and the disconnect (2.f)."""
        if not msg.poss_dup:
            text = f"MsgSeqNum too low, expecting {expected} but received {seq}"
            self._fatal("seq_too_low", text, now, b"789=%d\x01" % expected)
            return
        if msg.msg_type == M.SEQUENCE_RESET:
            return
        sending_time = self._times.parse(msg.header.get(T.SENDING_TIME, b""))
        if sending_time is None:
            return      # a duplicate we drop anyway; 52 itself is not worth a Reject here
        problem = possdup_problem(msg, sending_time)
        if problem is not None:
            self._reject(seq, msg.msg_type, problem, now, msg)
            if problem.reason == R.SENDING_TIME_ACCURACY:      # Test Case 2f: then Logout
                self._fatal("sending_time", problem.text, now)

    def _request_gap(self, now: float) -> None:
        """Send the next ResendRequest chunk if a gap is known and none is outstanding
        (7 = expected, 16 = min(expected + resend_chunk - 1, end of the gap); never 16=0)."""
        expected = self.store.next_in
        pending = self._resend_pending
        if pending is not None:
            if expected <= pending[1]:
                return
            self._resend_pending = None
        top = min(self._queue) - 1 if self._queue else self._highest_seen
        if top < expected:
            return
        end = min(expected + self.config.resend_chunk - 1, top)
        self._resend_pending = (expected, end)
        self._drop_reported = False
        self._send(M.RESEND_REQUEST, b"7=%d\x0116=%d\x01" % (expected, end), now)
        self._events.append(ResendRequested(expected, end))

    def _jump_to(self, new_seq: int, now: float) -> None:
        """Expected inbound seq moves forward to ``new_seq`` (GapFill or Reset); one queued at
        it is processed next (the caller drains the queue).

        A queued message below ``new_seq`` was received, whole and valid, and the peer's
        SequenceReset now says its seq is filled: an engine's GapFill that reaches past the gap
        we asked for. Dropping it would lose what the peer sent (a trade, for a drop copy),
        so it is processed, in order, before the jump, and reported (``ProtocolError``
        ``sequence_reset_over_queued``: logged and counted); only seqs never received are filled.
        A queued SequenceReset processed meanwhile only widens this jump (no recursion however
        many are queued); after an error Logout nothing more is acted on."""
        if self._jump_upto:
            self._jump_upto = max(self._jump_upto, new_seq)
            return
        self._jump_upto = new_seq
        taken: list[int] = []
        try:
            done = 0
            while done < self._jump_upto and not (self._closed or self._ending):
                upto = self._jump_upto
                for s in sorted(s for s in self._queue if done <= s < upto):
                    if self._closed or self._ending:
                        break
                    m = self._queue.pop(s)
                    if m is None:                   # a ResendRequest, answered when it came
                        continue
                    self._queued_bytes -= len(m.raw)
                    taken.append(s)
                    if s > self.store.next_in:
                        self.store.set_next_in(s)
                    self._process(m, s, now)
                done = upto
            if self._jump_upto > self.store.next_in and not self._closed:
                self.store.set_next_in(self._jump_upto)
        finally:
            self._jump_upto = 0
        if taken:
            listed = ", ".join(str(s) for s in taken[:10]) + (" ..." if len(taken) > 10 else "")
            self._events.append(ProtocolError(
                "sequence_reset_over_queued",
                f"SequenceReset NewSeqNo(36)={new_seq} covers MsgSeqNum {listed} already "
                f"received: processed in sequence, not dropped"))

    def _on_gap_fill(self, msg: RawMessage, now: float) -> None:
        """SequenceReset-GapFill in sequence (Test Cases 10.b, 10.e): NewSeqNo must move forward."""
        seq = msg.seq_num or 0
        new_seq = int(msg.get(T.NEW_SEQ_NO) or b"0")
        if new_seq <= seq:
            text = f"Attempt to lower sequence number, invalid value NewSeqNo(36)={new_seq}"
            self._reject(seq, msg.msg_type, Problem(R.VALUE_INCORRECT, T.NEW_SEQ_NO, text), now,
                         msg)
            return
        if new_seq > self.store.next_in:
            self._jump_to(new_seq, now)

    def _on_sequence_reset(self, msg: RawMessage, now: float) -> None:
        """SequenceReset-Reset (Test Cases 11.a-c): MsgSeqNum is ignored; NewSeqNo becomes the
        expected seq. Lower than expected: Reject 373=5, sequence unchanged."""
        seq = msg.seq_num
        problem = self._validate(msg)
        expected = self.store.next_in
        if problem is None:
            new_seq = int(msg.get(T.NEW_SEQ_NO) or b"0")
            if new_seq < expected:
                problem = Problem(R.VALUE_INCORRECT, T.NEW_SEQ_NO,
                                  f"Value is incorrect (out of range) for this tag: 36={new_seq}")
            elif new_seq > expected:
                self._jump_to(new_seq, now)
        if problem is not None:
            self._reject(seq, msg.msg_type, problem, now, msg)
        self._drain(now)
