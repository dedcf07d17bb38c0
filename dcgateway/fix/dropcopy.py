"""Building the copy a drop copy target receives (sans-I/O: bytes in, bytes out).

docs/architecture.md "Data flow" and "Copy conventions": the work that depends only on the source message
is done once per message (:class:`CopySource`: the body slice and its byte sum, the source's
49/50/52, the ilink2 envelope and its sum); per target only the standard header is built, and
BodyLength/CheckSum come from ``len(header) + len(body)`` and ``sum(header) + body_sum`` through
:func:`codec.encode`, so the body is never re-summed per target.

Two front end systems (docs/venue.md "Drop copy"):

``fix`` (ours)
    The original MsgType and body, byte for byte, under a rebuilt header:
    ``49=<gateway> 56=<target> 34=<target seq> [43=Y] 52=<now> 115=<source 49>
    [116=<source 50>] [97=Y] 122=<original sending time>``. PossResend (97=Y) is carried when
    the source set it: the message may repeat what the source sent under another sequence
    number, and so may its copy (a clearing firm must not book it twice). The source's other
    header fields (57, 142, 128, ...) are not carried: the header belongs to the gateway-target
    hop.

``ilink2`` (venue format)
    ``35=n`` XMLnonFIX whose XmlDataLen (212) / XmlData (213), standard header fields in FIX 4.2,
    carry the original message complete with its own 8..10, wrapped ``<RTRF>...</RTRF>``. Outer
    header ``49 56 34 [43=Y] 52 [122]``; the source is identified by the inner header. The
    venue's outer header also carries 57 and 143 (echoing the target's own Logon 50 and 142)
    and 369 (the last MsgSeqNum processed from the target); they are not carried yet (README,
    "What a target receives").

On retransmission (docs/venue.md: "business messages are re-sent with 43=Y and 122") the copy gets
PossDupFlag 43=Y. A ``fix`` copy keeps its 122 (the source's time); an ``ilink2`` copy gets the
122 the caller passes: the gateway passes the time it received the source message (the copy's
first SendingTime is not kept; it was at or after that time, so 122 <= 52 holds).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from . import tags as T
from .codec import RawMessage, byte_sum, encode

__all__ = ["CopySource", "FrontEnd", "build_copy", "unwrap_rtrf", "FRONT_ENDS", "RTRF_OPEN",
           "RTRF_CLOSE"]


class FrontEnd(StrEnum):
    """The front end system of a drop copy group: the format its copies take."""

    ILINK2 = "ilink2"       # the venue's 35=n RTRF envelope
    FIX = "fix"             # the original message under a rebuilt header

RTRF_OPEN = b"<RTRF>"
RTRF_CLOSE = b"</RTRF>"
_XML_NON_FIX = T.MsgType.XML_NON_FIX
_POSS_DUP = b"43=Y\x01"


class CopySource:
    """What every copy of one source message shares; built once per message, before fan-out.

    ``orig_sending_time`` is the source's SendingTime (52), or its OrigSendingTime (122) when the
    source itself sent the message as a PossDup retransmission (its 52 is then the resend time,
    not when the message was first sent)."""

    __slots__ = ("msg", "body", "body_sum", "sender_comp_id", "sender_sub_id", "sending_time",
                 "orig_sending_time", "poss_resend", "_fix_tail", "_fix_tail_sum", "_envelope", "_envelope_sum",
                 "fix_live", "variants")

    def __init__(self, msg: RawMessage) -> None:
        self.msg = msg
        self.body = msg.raw[msg.body_start:msg.body_end]
        self.body_sum = byte_sum(self.body)
        header = msg.header
        self.sender_comp_id: bytes | None = header.get(T.SENDER_COMP_ID)
        self.sender_sub_id: bytes | None = header.get(T.SENDER_SUB_ID)
        self.sending_time: bytes | None = header.get(T.SENDING_TIME)
        orig = header.get(T.ORIG_SENDING_TIME) if msg.poss_dup else None
        self.orig_sending_time: bytes | None = orig or self.sending_time
        self.poss_resend = header.get(T.POSS_RESEND) == b"Y"
        self._fix_tail: bytes | None = None
        self._fix_tail_sum = 0
        self._envelope: bytes | None = None
        self._envelope_sum = 0
        #: (MsgType field, tail + body, their length, their byte sum): what every live ``fix``
        #: copy of this message shares, made on the first one (:func:`_live_fix`)
        self.fix_live: tuple[bytes, bytes, int, int] | None = None
        #: the same message made valid for other data dictionaries (a FIX 4.2 source copied to
        #: a FIX 4.4 target), by whoever adapts it: key -> variant, or None when impossible
        self.variants: dict[object, CopySource | None] | None = None

    def with_body(self, body: bytes) -> CopySource:
        """This message with another body (the header, and so 115/116/122, unchanged)."""
        other = CopySource(self.msg)        # the same header fields, nothing cached yet
        other.body = body
        other.body_sum = byte_sum(body)
        return other

    def fix_tail(self, orig_sending_time: bytes | None = None) -> bytes:
        """``115=..|116=..|[97=Y|]122=..|``: the part of a ``fix`` copy's header that is the same for
        every target; cached on first use unless a caller overrides 122."""
        if orig_sending_time is None:
            tail = self._fix_tail
            if tail is None:
                self._fix_tail = tail = self._tail(self.orig_sending_time)
                self._fix_tail_sum = byte_sum(tail)
            return tail
        return self._tail(orig_sending_time)

    def _tail(self, orig: bytes | None) -> bytes:
        parts = []
        if self.sender_comp_id:
            parts.append(b"115=%s\x01" % self.sender_comp_id)
        if self.sender_sub_id:
            parts.append(b"116=%s\x01" % self.sender_sub_id)
        if self.poss_resend:
            parts.append(b"97=Y\x01")
        if orig:
            parts.append(b"122=%s\x01" % orig)
        return b"".join(parts)

    def envelope(self) -> tuple[bytes, int]:
        """``212=<len>|213=<RTRF>original</RTRF>|`` and its byte sum: the same for every ilink2
        target, so built and summed once (on first use)."""
        env = self._envelope
        if env is None:
            raw = self.msg.raw
            data_len = len(RTRF_OPEN) + len(raw) + len(RTRF_CLOSE)
            env = b"".join((b"212=%d\x01213=" % data_len, RTRF_OPEN, raw, RTRF_CLOSE, b"\x01"))
            self._envelope = env
            self._envelope_sum = byte_sum(env)
        return env, self._envelope_sum


def _build_fix(src: CopySource, begin_string: bytes, head: bytes, sending_time: bytes,
               poss_dup: bool, orig_sending_time: bytes | None) -> bytes:
    header = b"".join((head, _POSS_DUP if poss_dup else b"", b"52=", sending_time, b"\x01",
                       src.fix_tail(orig_sending_time)))
    return encode(begin_string, src.msg.msg_type, header, src.body, src.body_sum)


def _build_ilink2(src: CopySource, begin_string: bytes, head: bytes, sending_time: bytes,
                  poss_dup: bool, orig_sending_time: bytes | None) -> bytes:
    if poss_dup:
        if not orig_sending_time:
            raise ValueError("an ilink2 retransmission needs orig_sending_time (122): the "
                             "SendingTime of the copy's first transmission")
        header = b"".join((head, _POSS_DUP, b"52=", sending_time, b"\x01122=",
                           orig_sending_time, b"\x01"))
    else:
        header = b"".join((head, b"52=", sending_time, b"\x01"))
    env, env_sum = src.envelope()
    return encode(begin_string, _XML_NON_FIX, header, env, env_sum)


_Builder = Callable[[CopySource, bytes, bytes, bytes, bool, "bytes | None"], bytes]

#: front end system -> copy builder (docs/architecture.md rule 2: a table, not an if-chain).
_BUILDERS: dict[str, _Builder] = {FrontEnd.FIX: _build_fix, FrontEnd.ILINK2: _build_ilink2}
FRONT_ENDS: tuple[str, ...] = tuple(f.value for f in FrontEnd)


def build_copy(src: CopySource, front_end: str, begin_string: bytes, gateway_comp: bytes,
               target_comp: bytes, seq: int, sending_time: bytes, *, poss_dup: bool = False,
               orig_sending_time: bytes | None = None) -> bytes:
    """The complete copy of ``src`` for one target, in ``front_end``'s format.

    ``begin_string`` is the target session's; ``seq`` the target's own outbound MsgSeqNum;
    ``sending_time`` the copy's 52. For a ``fix`` copy ``orig_sending_time`` overrides the
    source's time in 122; for an ``ilink2`` copy it is the 122 of a retransmission (required
    when ``poss_dup``, ignored otherwise). Raises KeyError for an unknown front end."""
    head = b"49=%s\x0156=%s\x0134=%d\x01" % (gateway_comp, target_comp, seq)
    return _BUILDERS[front_end](src, begin_string, head, sending_time, poss_dup,
                                orig_sending_time)


LiveBuilder = Callable[[CopySource, int, bytes, int], bytes]


# The live builders assemble the whole message themselves and take its CheckSum from sums known
# in advance (the target's constant header, the copy's SendingTime once per flush, the message's
# type, 115/116/122 and body once per message): per copy only the few bytes of 9 and 34 are
# summed. Byte-identical to build_copy (a test checks it).

#: CheckSum field for each value of the sum modulo 256.
_TRAILERS: tuple[bytes, ...] = tuple(b"10=%03d\x01" % i for i in range(256))


def _fix_live_parts(src: CopySource) -> tuple[bytes, bytes, int, int]:
    mt = src.msg.msg_type
    tail = src.fix_tail()
    mt_field = b"\x0135=" + mt + b"\x01"
    rest = tail + src.body
    # BodyLength counts 35=<mt>SOH, the header and the body; the SOH before 35 belongs to 9
    return (mt_field, rest, len(mt_field) - 1 + len(rest),
            byte_sum(mt_field) + src._fix_tail_sum + src.body_sum)


def _digits_sum(n: int) -> int:
    """The byte sum of ``b"%d" % n`` (``n >= 0``), from the number itself: compiled, a few
    integer steps, cheaper than summing the bytes just made."""
    total = 0
    while True:
        total += 48 + n % 10
        n //= 10
        if n == 0:
            return total


def _live_fix(begin_string: bytes, head: bytes) -> LiveBuilder:
    start = b"8=" + begin_string + b"\x019="
    head_len = len(head) + 1                                   # the SOH after 34
    fixed_sum = byte_sum(start) + byte_sum(head) + 1
    trailers = _TRAILERS

    def build(src: CopySource, seq: int, st52: bytes, st52_sum: int) -> bytes:
        parts = src.fix_live
        if parts is None:
            src.fix_live = parts = _fix_live_parts(src)
        mt_field, rest, rest_len, rest_sum = parts
        seq_b = b"%d" % seq
        body_len = rest_len + head_len + len(seq_b) + len(st52)
        cs = (fixed_sum + rest_sum + st52_sum + _digits_sum(body_len) + _digits_sum(seq)) & 0xFF
        return b"".join((start, b"%d" % body_len, mt_field, head, seq_b, b"\x01", st52, rest,
                         trailers[cs]))
    return build


def _live_ilink2(begin_string: bytes, head: bytes) -> LiveBuilder:
    start = b"8=" + begin_string + b"\x019="
    mt = b"35=" + _XML_NON_FIX + b"\x01"
    fixed_sum = byte_sum(start) + 1 + byte_sum(mt) + byte_sum(head) + 1
    trailers = _TRAILERS

    def build(src: CopySource, seq: int, st52: bytes, st52_sum: int) -> bytes:
        env, env_sum = src.envelope()
        seq_b = b"%d" % seq
        body_len = len(mt) + len(head) + len(seq_b) + 1 + len(st52) + len(env)
        cs = (fixed_sum + _digits_sum(body_len) + _digits_sum(seq) + st52_sum + env_sum) & 0xFF
        return b"".join((start, b"%d" % body_len, b"\x01", mt, head, seq_b, b"\x01", st52, env,
                         trailers[cs]))
    return build


_LIVE: dict[str, Callable[[bytes, bytes], LiveBuilder]] = {FrontEnd.FIX: _live_fix,
                                                           FrontEnd.ILINK2: _live_ilink2}


def live_builder(front_end: str, begin_string: bytes, gateway_comp: bytes,
                 target_comp: bytes) -> LiveBuilder:
    """The fan-out's hot path: ``build(src, seq, st52, sum(st52))`` with ``st52 =
    b"52=<time>SOH"`` makes the first transmission of a copy for one target, byte-identical to
    :func:`build_copy` without poss_dup, with the target's constant header bytes prepared once."""
    return _LIVE[front_end](begin_string, b"49=%s\x0156=%s\x0134=" % (gateway_comp, target_comp))


def unwrap_rtrf(copy: RawMessage) -> bytes:
    """The original message carried by an ilink2 copy (35=n): XmlData (213) without its
    ``<RTRF>`` wrapper. Raises ValueError when the copy is not such a message."""
    if copy.msg_type != _XML_NON_FIX:
        raise ValueError(f"not an XMLnonFIX (35=n) copy: 35={copy.msg_type!r}")
    data = copy.header.get(T.XML_DATA)
    if data is None:
        data = copy.get(T.XML_DATA)
    length = copy.header.get(T.XML_DATA_LEN) or copy.get(T.XML_DATA_LEN)
    if data is None or length is None or not length.isdigit() or int(length) != len(data):
        raise ValueError("XmlDataLen (212) / XmlData (213) missing or inconsistent")
    if not (data.startswith(RTRF_OPEN) and data.endswith(RTRF_CLOSE)):
        raise ValueError("XmlData (213) is not wrapped in <RTRF>...</RTRF>")
    return data[len(RTRF_OPEN):len(data) - len(RTRF_CLOSE)]
