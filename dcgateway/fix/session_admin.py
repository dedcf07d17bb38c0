"""Helpers of the FIX session engine (:mod:`.session`): inbound validation and the builders of
session-level (admin) messages and retransmissions. Pure functions on bytes; no state but a
one-entry parse cache.

Why a separate module: :mod:`.session` keeps the state machine and sequencing readable, this module
keeps the field-level rules of FIX 4.2/4.4 Vol. 2 ("Session Level Reject", "Logon",
"Resend Request", "Sequence Reset") and of the FIX Session Layer Test Cases in one table-driven
place.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from . import tags as T
from .codec import FieldError, RawMessage, encode_fields, fields_bytes, seq_value
from .session_types import PeerReject
from .timefmt import parse_utc_timestamp, utc_timestamp

if TYPE_CHECKING:  # pragma: no cover
    from .session_types import SessionConfig

R = T.SessionRejectReason
M = T.MsgType
# compared with on every message: module constants, read directly when compiled
_MT_REJECT: Final = M.REJECT
_MT_SEQUENCE_RESET: Final = M.SEQUENCE_RESET


class MessageValidator(Protocol):
    """A data dictionary's validator (:class:`~.validate.Validator`)."""

    def validate(self, msg: RawMessage) -> Problem | None: ...


@dataclass(frozen=True, slots=True)
class Problem:
    """Why an inbound message is rejected (35=3): SessionRejectReason (373), RefTagID (371, or
    None) and the Text (58) sent to the peer."""

    reason: int
    tag: int | None
    text: str


# ----------------------------------------------------------------------------------------------
# SendingTime
# ----------------------------------------------------------------------------------------------

class SendingTimeParser:
    """SendingTime (52) -> seconds since the epoch, or None when malformed.

    Every inbound message is checked for SendingTime accuracy (FIX Vol. 2 "SendingTime accuracy",
    Test Cases), so the date/second prefix is cached: consecutive messages share it, and the
    per-message work is a slice compare plus the fraction.
    """

    __slots__ = ("_key", "_secs", "_last", "_last_result")

    def __init__(self) -> None:
        self._key = b""
        self._secs = 0.0
        self._last = b""
        self._last_result: float | None = None

    def parse(self, value: bytes) -> float | None:
        # The same header value is checked at receipt and again when validated in sequence.
        if value is self._last:
            return self._last_result
        self._last = value
        self._last_result = result = self._parse(value)
        return result

    def _parse(self, value: bytes) -> float | None:
        key = value[:17]
        if key == self._key:
            secs = self._secs
        else:
            parsed = parse_utc_timestamp(key)
            if parsed is None:
                return None
            secs = parsed
            self._key = bytes(key)
            self._secs = parsed
        frac = value[17:]
        if not frac:
            return secs
        if frac[:1] != b"." or len(frac) > 10 or not frac[1:].isdigit():
            return None
        return secs + float(b"0" + frac)


# ----------------------------------------------------------------------------------------------
# Inbound validation (Session Level Reject reasons, FIX 4.2/4.4 Vol. 2)
# ----------------------------------------------------------------------------------------------

def _is_int(v: bytes) -> bool:
    return v.isdigit()


def _is_seq(v: bytes) -> bool:
    return seq_value(v) is not None


def _is_bool(v: bytes) -> bool:
    return v == b"Y" or v == b"N"


#: Required body tags per session MsgType (FIX Vol. 2 message definitions). Reject is not listed:
#: we never reject a Reject (that could loop); Logon is validated by :data:`LOGON_CHECKS`.
REQUIRED: dict[bytes, tuple[int, ...]] = {
    M.TEST_REQUEST: (T.TEST_REQ_ID,),
    M.RESEND_REQUEST: (T.BEGIN_SEQ_NO, T.END_SEQ_NO),
    M.SEQUENCE_RESET: (T.NEW_SEQ_NO,),
}

#: The sequence number fields of session messages, which the session keeps as numbers.
SEQ_TAGS: dict[bytes, tuple[int, ...]] = {
    M.RESEND_REQUEST: (T.BEGIN_SEQ_NO, T.END_SEQ_NO),
    M.SEQUENCE_RESET: (T.NEW_SEQ_NO,),
}

#: Data format of session tags when present (373=6 "Incorrect data format for value").
FORMATS: dict[int, Callable[[bytes], bool]] = {
    T.BEGIN_SEQ_NO: _is_seq, T.END_SEQ_NO: _is_seq, T.NEW_SEQ_NO: _is_seq,
    T.GAP_FILL_FLAG: _is_bool, T.POSS_DUP_FLAG: _is_bool, T.POSS_RESEND: _is_bool,
    T.RESET_SEQ_NUM_FLAG: _is_bool, T.ENCRYPT_METHOD: _is_int,   # 108: _logon_heartbeat
}

_HEADER = T.HEADER_TAGS
_TRAILER_CHECKSUM = T.CHECKSUM

def _trie(words: list[bytes]) -> bytes:
    """Regex alternation of ``words`` factored by common prefixes (``1(?:15|16|22...)``): the
    regex engine then tries one branch per digit instead of every tag at every SOH (~3x faster
    than a flat alternation of the 31 header tags)."""
    optional = b"" in words
    groups: dict[bytes, list[bytes]] = {}
    for w in words:
        if w:
            groups.setdefault(w[:1], []).append(w[1:])
    parts = [re.escape(k) + _trie(v) for k, v in sorted(groups.items())]
    if not parts:
        return b""
    body = parts[0] if len(parts) == 1 else b"(?:" + b"|".join(parts) + b")"
    return b"(?:" + body + b")?" if optional else body


#: An empty field (``SOH SOH``), a standard-header tag after the body began, or a data-length
#: tag (a data field must match its length, which only the full parse checks), in one regex pass
#: that starts at each SOH; :func:`body_suspect` adds a ``find`` for an empty value anywhere in
#: the message (header included). The last alternative is a field without ``=`` (it stops at the
#: first ``=``, so it costs a few bytes per field).
_SUSPECT = re.compile(rb"\x01(?:\x01|" + _trie(sorted(
    b"%d" % t for t in set(_HEADER) | set(T.DATA_LENGTH_TAGS))) + rb"=|[^=\x01]*\x01)")


def body_suspect(msg: RawMessage) -> bool:
    """Cheap screen for application messages (hot path: one regex scan and one ``find``, no
    field parse). A hit only means "look closer": a data field may legitimately contain these
    bytes, so :func:`check_fields` decides."""
    raw, start, end = msg.raw, msg.body_start, msg.body_end
    if _SUSPECT.search(raw, start - 1, end) is not None:
        return True
    msg.note_plain_body()               # _SUSPECT covers every data-length tag
    return raw.find(b"=\x01", 0, end) >= 0


def valid_msg_type(mt: bytes) -> bool:
    """MsgType (35) is 1-3 alphanumerics, or a user-defined ``U...`` type (FIX Vol. 1 MsgType).
    Anything else is "Invalid MsgType" (373=11, Test Case "MsgType invalid")."""
    return mt.isalnum() and (len(mt) <= 3 or mt[:1] == b"U")


def check_fields(msg: RawMessage) -> Problem | None:
    """Full, data-field-aware check of one message (admin messages always, application messages
    when :func:`body_suspect` hits): malformed field (codec FieldError -> its 373/371), a header
    tag after the first body tag (373=14), required session tags (373=1) and formats (373=6)."""
    try:
        fields = msg.fields()
    except FieldError as exc:
        return Problem(exc.reason, exc.tag, exc.text)
    in_body = False
    for tag, _value in fields[3:]:
        if tag == _TRAILER_CHECKSUM:
            break
        if tag in _HEADER:
            if in_body:
                return Problem(R.TAG_OUT_OF_ORDER, tag,
                               f"Tag specified out of required order: {tag}")
        else:
            in_body = True
    mt = msg.msg_type
    if mt not in T.ADMIN_MSG_TYPES:
        return None
    for tag in REQUIRED.get(mt, ()):
        if msg.get(tag) is None:
            return Problem(R.REQUIRED_TAG_MISSING, tag, f"Required tag missing: {tag}")
    for tag, ok in FORMATS.items():
        v = msg.get(tag)
        if v is not None and not ok(v):
            return Problem(R.INCORRECT_DATA_FORMAT, tag, f"Incorrect data format for value: {tag}")
    return None


def possdup_problem(msg: RawMessage, sending_time: float) -> Problem | None:
    """PossDupFlag=Y rules (FIX Vol. 2 "Possible duplicates" and the PossDup Test Cases): OrigSendingTime
    (122) is required, and must not be later than SendingTime (52)."""
    orig = msg.header.get(T.ORIG_SENDING_TIME)
    if orig is None:
        return Problem(R.REQUIRED_TAG_MISSING, T.ORIG_SENDING_TIME,
                       "Required tag missing: OrigSendingTime(122) with PossDupFlag=Y")
    t = parse_utc_timestamp(orig)
    if t is None:
        return Problem(R.INCORRECT_DATA_FORMAT, T.ORIG_SENDING_TIME,
                       "Incorrect data format for value: OrigSendingTime(122)")
    if t > sending_time:
        return Problem(R.SENDING_TIME_ACCURACY, T.SENDING_TIME,
                       "SendingTime accuracy problem: OrigSendingTime(122) after SendingTime(52)")
    return None


# ----------------------------------------------------------------------------------------------
# Logon checks (FIX Vol. 2 "Logon"; Test Cases 1S; docs/venue.md "Logon rules"), a table of small
# functions: each returns (kind, Logout text) or None.
# ----------------------------------------------------------------------------------------------

LogonCheck = Callable[["SessionConfig", RawMessage, int, float, SendingTimeParser],
                      "tuple[str, str] | None"]


def _logon_fields(cfg: SessionConfig, msg: RawMessage, seq: int, now: float,
                  times: SendingTimeParser) -> tuple[str, str] | None:
    if msg.header_error is not None:
        return "invalid_logon", f"invalid Logon: tag {msg.header_error} appears more than once"
    problem = check_fields(msg)
    if problem is not None:
        return "invalid_logon", f"invalid Logon: {problem.text}"
    return None


def _logon_no_orig_sending_time(cfg: SessionConfig, msg: RawMessage, seq: int, now: float,
                                times: SendingTimeParser) -> tuple[str, str] | None:
    # docs/venue.md: "A Logon that carries 122 OrigSendingTime is answered with a Logout."
    if T.ORIG_SENDING_TIME in msg.header:
        return "invalid_logon", "OrigSendingTime(122) is not allowed on Logon"
    return None


def _logon_sending_time(cfg: SessionConfig, msg: RawMessage, seq: int, now: float,
                        times: SendingTimeParser) -> tuple[str, str] | None:
    v = msg.header.get(T.SENDING_TIME)
    t = None if v is None else times.parse(v)
    if t is None:
        return "sending_time", "SendingTime(52) missing or malformed"
    if abs(t - now) > cfg.sending_time_tolerance:
        return "sending_time", "SendingTime accuracy problem"
    return None


def _logon_heartbeat(cfg: SessionConfig, msg: RawMessage, seq: int, now: float,
                     times: SendingTimeParser) -> tuple[str, str] | None:
    v = msg.get(T.HEART_BT_INT)
    if v is None or not v.isdigit() or len(v) > 9 \
            or not cfg.heartbeat_min <= int(v) <= cfg.heartbeat_max:
        return ("heartbeat_interval", f"HeartBtInt(108) must be between {cfg.heartbeat_min} "
                f"and {cfg.heartbeat_max} seconds")
    return None


def _logon_encryption(cfg: SessionConfig, msg: RawMessage, seq: int, now: float,
                      times: SendingTimeParser) -> tuple[str, str] | None:
    v = msg.get(T.ENCRYPT_METHOD)
    if v is not None and v != b"0":
        return "invalid_logon", "EncryptMethod(98) must be 0 (none)"
    return None


def _logon_reset(cfg: SessionConfig, msg: RawMessage, seq: int, now: float,
                 times: SendingTimeParser) -> tuple[str, str] | None:
    if msg.get(T.RESET_SEQ_NUM_FLAG) != b"Y":
        return None
    if not cfg.allow_reset_on_logon:
        return "reset_refused", "ResetSeqNumFlag(141)=Y is not accepted on this session"
    if seq != 1:
        return "invalid_logon", "MsgSeqNum(34) must be 1 with ResetSeqNumFlag(141)=Y"
    return None


LOGON_CHECKS: tuple[LogonCheck, ...] = (
    _logon_fields, _logon_no_orig_sending_time, _logon_sending_time, _logon_heartbeat,
    _logon_encryption, _logon_reset,
)


def logon_problem(cfg: SessionConfig, msg: RawMessage, seq: int, now: float,
                  times: SendingTimeParser) -> tuple[str, str] | None:
    """First failing Logon check as (event kind, Logout text), or None."""
    for check in LOGON_CHECKS:
        found = check(cfg, msg, seq, now, times)
        if found is not None:
            return found
    return None


#: Logon fields the reply echoes (docs/venue.md: "echoes 108, 141, 1603, 1604, 1605").
_LOGON_ECHO = (T.RESET_SEQ_NUM_FLAG, T.APPLICATION_SYSTEM_NAME, T.TRADING_SYSTEM_VERSION,
               T.APPLICATION_SYSTEM_VENDOR)


def logon_reply_body(logon: RawMessage, heartbeat: int, reset: bool = False) -> bytes:
    """Body of our Logon reply: 98=0, 108 echoed, then 141/1603/1604/1605 when the peer sent them
    (141=Y also when the session resets on every Logon). No credential tags: the gateway's reply
    carries no signature (docs/venue.md)."""
    fields: list[tuple[int, bytes | int]] = [(T.ENCRYPT_METHOD, b"0"), (T.HEART_BT_INT, heartbeat)]
    for tag in _LOGON_ECHO:
        v = logon.get(tag)
        if tag == T.RESET_SEQ_NUM_FLAG and reset:
            v = b"Y"
        if v is not None:
            fields.append((tag, v))
    return fields_bytes(fields)


# ----------------------------------------------------------------------------------------------
# Outbound admin bodies
# ----------------------------------------------------------------------------------------------

def text_value(text: str, limit: int = 200) -> bytes:
    """A Text (58) value: ASCII, no SOH, bounded, never empty."""
    raw = text.encode("ascii", "replace").replace(b"\x01", b" ")[:limit]
    return raw or b"-"


#: The highest SessionRejectReason (373) a FIX version defines: FIX 4.2 stops at 11 (Invalid
#: MsgType); 12-17 (XML, repeated tag, out of order, group order and count, SOH in a value) came
#: with FIX 4.3, 99 (Other) with 4.4.
_MAX_REJECT_REASON = {b"FIX.4.2": R.INVALID_MSG_TYPE,
                      b"FIX.4.3": R.NON_DATA_VALUE_INCLUDES_DELIMITER}


def max_reject_reason(begin_string: bytes) -> int:
    """The highest SessionRejectReason a session of ``begin_string`` may be sent."""
    return _MAX_REJECT_REASON.get(begin_string, R.OTHER)


def reject_body(ref_seq: int | None, ref_msg_type: bytes, problem: Problem,
                max_reason: int = R.OTHER) -> bytes:
    """Reject (35=3): 45 RefSeqNum, 371 RefTagID, 372 RefMsgType, 373 SessionRejectReason, 58
    (FIX 4.2 added 371-373; Vol. 2 "Reject"). A reason the session's version does not define
    (above ``max_reason``: 13-16 to a FIX 4.2 peer) is left out, as the FIX test cases say
    (">= FIX 4.3: SessionRejectReason = ..."), and 58 says it in words: a value the peer's
    dictionary does not know would get our Reject rejected."""
    fields: list[tuple[int, bytes | int]] = []
    if ref_seq is not None:
        fields.append((T.REF_SEQ_NUM, ref_seq))
    if problem.tag is not None:
        fields.append((T.REF_TAG_ID, problem.tag))
    if ref_msg_type and all(0x21 <= b <= 0x7e and b != 0x3d for b in ref_msg_type[:16]):
        fields.append((T.REF_MSG_TYPE, ref_msg_type[:16]))   # known, even if invalid (2q)
    if problem.reason <= max_reason:
        fields.append((T.SESSION_REJECT_REASON, problem.reason))
    fields.append((T.TEXT, text_value(problem.text)))
    return fields_bytes(fields)


def gap_fill_flag(msg: RawMessage) -> bool:
    """GapFillFlag(123)=Y. A malformed message counts as gap fill: it then goes through normal
    sequencing, where validation rejects it."""
    try:
        return msg.get(T.GAP_FILL_FLAG) == b"Y"
    except FieldError:
        return True


def text_of(msg: RawMessage) -> str:
    """Text (58) for logs/events; a malformed message yields ""."""
    try:
        v = msg.get(T.TEXT)
    except FieldError:
        return ""
    return "" if v is None else v.decode("ascii", "replace")


def validate(msg: RawMessage, times: SendingTimeParser,
             validator: MessageValidator | None = None) -> Problem | None:
    """Checks of an in-order message before the session acts on it. With the session's data
    dictionary (``validator``), every message but a Reject is validated against it (FIX Test
    Cases 14a-14i: tags, values, order, repeats, groups); without one, the session-level checks
    only (repeated header tags, fields of admin messages, a valid MsgType). Then SendingTime
    present and well formed, and the PossDupFlag rules."""
    mt = msg.msg_type
    if validator is not None:
        if mt != _MT_REJECT:            # never reject a Reject (it could loop)
            problem = validator.validate(msg)
            if problem is not None:
                return problem
        for tag in SEQ_TAGS.get(mt, ()):  # FIX 4.2's dictionary types them INT: any digits
            v = msg.get(tag)
            if v is not None and seq_value(v) is None:
                return Problem(R.INCORRECT_DATA_FORMAT, tag,
                               f"Incorrect data format for value: {tag} (a sequence number "
                               f"is 0 to {T.MAX_SEQ_NUM})")
    elif msg.header_error is not None:
        return Problem(R.TAG_APPEARS_MORE_THAN_ONCE, msg.header_error,
                       f"Tag appears more than once: {msg.header_error}")
    v = msg.header.get(T.SENDING_TIME)
    if v is None:
        return Problem(R.REQUIRED_TAG_MISSING, T.SENDING_TIME, "Required tag missing: 52")
    sending_time = times.parse(v)
    if sending_time is None:
        return Problem(R.INCORRECT_DATA_FORMAT, T.SENDING_TIME,
                       "Incorrect data format for value: 52")
    if validator is None:
        if mt in T.ADMIN_MSG_TYPES or body_suspect(msg):
            problem = check_fields(msg)
            if problem is not None:
                return problem
        if mt not in T.ADMIN_MSG_TYPES and not valid_msg_type(mt):
            return Problem(R.INVALID_MSG_TYPE, T.MSG_TYPE, "Invalid MsgType")
    if msg.poss_dup and mt != _MT_SEQUENCE_RESET:
        return possdup_problem(msg, sending_time)
    return None


#: Header routing tags and their counterparts on an answer (FIX Vol. 2 "Standard Message
#: Header": a reply goes back DeliverTo the original's OnBehalfOf, and the reverse).
_REVERSE = ((T.ON_BEHALF_OF_COMP_ID, T.DELIVER_TO_COMP_ID),
            (T.ON_BEHALF_OF_SUB_ID, T.DELIVER_TO_SUB_ID),
            (T.ON_BEHALF_OF_LOCATION_ID, T.DELIVER_TO_LOCATION_ID),
            (T.DELIVER_TO_COMP_ID, T.ON_BEHALF_OF_COMP_ID),
            (T.DELIVER_TO_SUB_ID, T.ON_BEHALF_OF_SUB_ID),
            (T.DELIVER_TO_LOCATION_ID, T.ON_BEHALF_OF_LOCATION_ID))


def reverse_routing(msg: RawMessage) -> bytes:
    """The header routing fields of an answer to ``msg`` (115->128, 116->129, 144->145 and the
    reverse), in a fixed order; empty when ``msg`` carries none."""
    h = msg.header
    pairs = sorted((back, h[tag]) for tag, back in _REVERSE if h.get(tag))
    return b"".join(b"%d=%s\x01" % (back, value) for back, value in pairs)


def late_seq(msg: RawMessage) -> int | None:
    """MsgSeqNum written after a body field (the header run ended before it): found in the whole
    message, so the message can be rejected in sequence (Test Case 14g) instead of ending the
    session."""
    try:
        v = msg.get(T.MSG_SEQ_NUM)
    except FieldError:
        return None
    return seq_value(v) if v is not None else None


def seq_problem_text(msg: RawMessage) -> str:
    """Why a message has no usable MsgSeqNum (34): missing, or not a sequence number."""
    try:
        v = msg.header.get(T.MSG_SEQ_NUM)
    except FieldError:
        v = None
    if v is None:
        return "MsgSeqNum(34) missing"
    shown = v[:24].decode("latin-1") + ("..." if len(v) > 24 else "")
    return f"MsgSeqNum(34) {shown!r} is not a sequence number (1 to {T.MAX_SEQ_NUM})"


#: The only answer to a Logon that is not authenticated (the venue's rule: the peer learns nothing
#: of which check failed, nor whether the session exists).
AUTH_FAILED_TEXT: Final = "authentication failed"


def refusal_logout(logon: RawMessage, our_comp_id: bytes, text: str, now: float) -> bytes:
    """The Logout refusing ``logon`` before it is authenticated: the same bytes whatever was
    wrong with it and whichever session it named (34=1, the peer's own BeginString and
    SenderCompID; nothing of a session's state, such as its sequence number)."""
    begin = logon.begin_string or b"FIX.4.2"
    their = logon.header.get(T.SENDER_COMP_ID, b"UNKNOWN")[:64]
    return encode_fields(begin, M.LOGOUT, [
        (T.SENDER_COMP_ID, our_comp_id), (T.TARGET_COMP_ID, their), (T.MSG_SEQ_NUM, 1),
        (T.SENDING_TIME, utc_timestamp(now))], [(T.TEXT, text)])


def peer_reject(msg: RawMessage) -> PeerReject:
    """A Reject (35=3) or BusinessMessageReject (35=j) the peer sent, as an event."""
    try:
        ref = msg.get(T.REF_SEQ_NUM)
        reason = msg.get(T.SESSION_REJECT_REASON if msg.msg_type == M.REJECT else 380)
    except FieldError:
        ref = reason = None
    return PeerReject((seq_value(ref) or 0) if ref is not None else 0, msg.msg_type,
                      (reason or b"").decode("ascii", "replace"), text_of(msg))
