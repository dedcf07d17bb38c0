"""Message recovery, acceptor side (FIX Vol. 2 "Message Recovery", "Resend Request", Test Case 8):
answering a ResendRequest from the session's store. Pure functions on bytes.

Application messages are re-sent with PossDupFlag 43=Y, a new SendingTime and OrigSendingTime
122; admin messages, and seqs the store no longer has, are coalesced into SequenceReset-GapFill
messages (35=4, 123=Y). A request is answered whole, up to what was sent (16=0: everything), and
a store may cap the range at what it has handed out (``resend_limit``: a drop copy target's later
copies are on their way, in order). The answer is built in slices (:class:`ResendProgress`): a
shell that shares its event loop asks for one slice at a time (``SessionConfig.resend_slice``),
so a request for 300,000 messages never holds the loop. Answering only part of a request is not
an option: an engine that asked for 1..0 (QuickFIX) waits for the whole range before it asks
again, and would stall.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import tags as T
from .codec import Decoder, RawMessage, encode
from .session_admin import Problem
from .session_types import Event, ProtocolError, ResendServed
from .store import SessionStore
from .timefmt import utc_timestamp

if TYPE_CHECKING:  # pragma: no cover
    from .session_types import SessionConfig

M = T.MsgType
R = T.SessionRejectReason

#: Header tags rebuilt on a retransmission; every other stored header tag (115, 116, 97, 57,
#: 369 ...) is kept as it was. PossResend (97=Y) in particular: a drop copy of a message its
#: source marked PossResend may repeat what the target booked under another seq, retransmitted
#: or not (FIX: 43 and 97 are independent).
_RESEND_REBUILT = frozenset({T.BEGIN_STRING, T.BODY_LENGTH, T.MSG_TYPE, T.SENDER_COMP_ID,
                             T.TARGET_COMP_ID, T.MSG_SEQ_NUM, T.SENDING_TIME, T.POSS_DUP_FLAG,
                             T.ORIG_SENDING_TIME})


@dataclass(frozen=True, slots=True)
class Resender:
    """What a retransmission's header needs: our BeginString, 49, 56 and this SendingTime."""

    begin_string: bytes
    sender: bytes
    target: bytes
    sending_time: bytes

    def _head(self, seq: int, orig: bytes) -> bytes:
        return (b"49=%s\x0156=%s\x0134=%d\x0143=Y\x0152=%s\x01122=%s\x01"
                % (self.sender, self.target, seq, self.sending_time, orig))

    def gap_fill(self, seq: int, new_seq: int) -> bytes:
        """SequenceReset-GapFill (35=4, 123=Y, 36=next seq after the gap), sent with 34 = first
        seq of the gap and 43=Y; 122 = 52 so a peer that requires 122 on PossDup accepts it."""
        body = b"123=Y\x0136=%d\x01" % new_seq
        return encode(self.begin_string, M.SEQUENCE_RESET, self._head(seq, self.sending_time), body)

    def resend(self, msg: RawMessage, seq: int) -> bytes:
        """An application message re-sent: same 34, same body bytes, 43=Y, new 52, 122 = the
        stored 122 when it has one (a drop copy's 122 is the source's SendingTime, docs/architecture.md) or
        else its original 52."""
        h = msg.header
        orig = h.get(T.ORIG_SENDING_TIME) or h.get(T.SENDING_TIME) or self.sending_time
        parts = [self._head(seq, orig)]
        parts.extend(b"%d=%s\x01" % (t, v) for t, v in h.items() if t not in _RESEND_REBUILT)
        return encode(self.begin_string, msg.msg_type, b"".join(parts), msg.body)

    def serve(self, stored: list[tuple[int, bytes]], begin: int, end: int
              ) -> tuple[list[tuple[int, bytes]], int, int]:
        """Messages answering a ResendRequest for ``begin..end`` (already clamped): application
        messages re-sent, admin messages and missing or unreadable seqs coalesced into gap fills.
        Returns ((seq, message) in order, resent count, count of seqs covered by gap fills)."""
        by_seq = dict(stored)
        out: list[tuple[int, bytes]] = []
        resent = 0
        gap_start: int | None = None
        for seq in range(begin, end + 1):
            msg = _decode_one(by_seq.get(seq))
            if msg is None or msg.msg_type in T.ADMIN_MSG_TYPES:
                if gap_start is None:
                    gap_start = seq
                continue
            if gap_start is not None:
                out.append((gap_start, self.gap_fill(gap_start, seq)))
                gap_start = None
            out.append((seq, self.resend(msg, seq)))
            resent += 1
        if gap_start is not None:
            out.append((gap_start, self.gap_fill(gap_start, end + 1)))
        return out, resent, end - begin + 1 - resent


def _decode_one(raw: bytes | None) -> RawMessage | None:
    """A stored message decoded again; None when absent or unreadable (it is then gap-filled)."""
    if raw is None:
        return None
    items = Decoder(max_size=max(len(raw), 1)).feed(raw)
    if len(items) != 1 or not isinstance(items[0], RawMessage):
        return None
    return items[0]


@dataclass(slots=True)
class ResendProgress:
    """A ResendRequest being answered: ``begin..end`` (clamped to what was sent), ``next`` the
    first seq not answered yet, and what the slices so far re-sent and gap-filled."""

    begin: int
    end: int
    next: int = field(default=0)
    resent: int = 0
    gap_filled: int = 0

    def __post_init__(self) -> None:
        if self.next == 0:
            self.next = self.begin

    @property
    def remaining(self) -> int:
        return max(0, self.end - self.next + 1)

    def served(self) -> ResendServed:
        return ResendServed(self.begin, self.end, self.resent, self.gap_filled)


def resend_range(store: SessionStore, msg: RawMessage
                 ) -> tuple[Problem | None, ResendProgress | None, Event | None]:
    """What a ResendRequest asks for, 7..16 (16=0: infinity), clamped to what was sent: (a
    Reject's problem) or (the range to answer) or (an event: nothing to answer)."""
    begin = int(msg.get(T.BEGIN_SEQ_NO) or b"0")
    end = int(msg.get(T.END_SEQ_NO) or b"0")
    last = store.next_out - 1
    limit = getattr(store, "resend_limit", None)
    if limit is not None:
        last = min(last, limit())
    if begin < 1 or (end and end < begin):
        tag = T.BEGIN_SEQ_NO if begin < 1 else T.END_SEQ_NO
        return Problem(R.VALUE_INCORRECT, tag, f"Value is incorrect for this tag: {tag}"), None, None
    end = last if end == 0 or end > last else end
    if begin > end:
        return None, None, ProtocolError("resend_range",
                                         f"ResendRequest from {begin} but last sent is {last}")
    return None, ResendProgress(begin, end), None


def serve_slice(config: SessionConfig, store: SessionStore, progress: ResendProgress,
                now: float, limit: int) -> list[tuple[int, bytes]]:
    """The next at most ``limit`` seqs of ``progress`` answered from ``store``: (seq, message)
    in order; ``progress`` moves on."""
    first = progress.next
    last = min(progress.end, first + max(1, limit) - 1)
    stored = store.get_outbound(first, last)
    if last < progress.end and (not stored or stored[-1][0] < last):
        # The slice ends in a run of nothing stored (e.g. the sequence gap after a power loss):
        # one GapFill reaches the next stored message, if the store can say where that is,
        # rather than one a slice.
        next_stored = getattr(store, "next_stored", None)
        if next_stored is not None:
            last = max(last, int(next_stored(last + 1, progress.end)) - 1)
    resender = Resender(config.begin_string, config.our_comp_id, config.their_comp_id,
                        utc_timestamp(now))
    out, resent, filled = resender.serve(stored, first, last)
    progress.next = last + 1
    progress.resent += resent
    progress.gap_filled += filled
    return out
