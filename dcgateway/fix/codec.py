"""FIX tag=value framing and encoding on plain bytes (no I/O).

Why not simplefix here: its parser walks the input byte by byte and checks neither BodyLength (9)
nor CheckSum (10) (docs/architecture.md rule 8). This decoder finds frames with ``bytes.find`` and the
BodyLength, verifies CheckSum with :func:`byte_sum` over the frame, and parses only the standard
header into a small dict; the body stays one slice of the original bytes so the fan-out can copy it
byte for byte. A full, data-field-aware parse of every field is available lazily
(:meth:`RawMessage.fields`) for admin messages, validation and filters.

Framing rules (FIX 4.2/4.4 Vol. 1, "Message format" and "Standard Message Trailer"):

* A message starts ``8=<BeginString>SOH9=<BodyLength>SOH``; BodyLength counts the bytes after the
  SOH that ends tag 9 up to and including the SOH before ``10=``; CheckSum is the sum of every byte
  before ``10=`` modulo 256, written as three digits.
* ``35`` must be the third field. A frame that breaks any of these is *garbled*: FIX says garbled
  messages are ignored (not rejected) and do not consume a sequence number. The decoder reports
  them as :class:`DecodeError` and carries on.
* After garbage (or a frame whose BodyLength does not land on ``10=``) the decoder resynchronises
  on the next ``8=FIX`` in the stream.
* A frame larger than ``max_size`` is never buffered: it is reported and skipped by resync, so a
  peer announcing a huge BodyLength cannot make the gateway allocate for it.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from typing import Final

from . import tags as T

SOH: Final = b"\x01"
_SOH_INT: Final = 1
_BEGIN_MARK: Final = b"8=FIX"
_MAX_BEGIN_LEN: Final = 16      # "FIXT.1.1" is 8; leave room, but not much
_MAX_LEN_DIGITS: Final = 7      # BodyLength up to 9,999,999 digits-wise; max_size caps the value
_TRAILER_LEN: Final = 7         # b"10=" + 3 digits + SOH

DEFAULT_MAX_SIZE: Final = 64 * 1024


#: zlib's Adler-32, read as a constant (compiled, ``zlib.adler32`` is a module attribute
#: lookup on every call; :func:`byte_sum` runs several times per message)
_ADLER32: Final = zlib.adler32


def byte_sum(data: bytes, stop: int | None = None) -> int:
    """``sum(data[:stop])``, the CheckSum's sum, at C speed: Adler-32's low 16 bits are
    ``1 + sum(data)`` modulo 65521, exact for any 256 bytes (at most 65,280), so it is taken 256
    bytes at a time. About twice as fast as ``sum()`` on a 250-byte message (the hot path sums
    every frame once and every copied body once)."""
    n = len(data) if stop is None else stop
    if n <= 256:
        return (_ADLER32(data if n == len(data) else data[:n]) & 0xFFFF) - 1
    total = 0
    for i in range(0, n, 256):      # slices, not a memoryview: cheaper at these sizes
        total += (_ADLER32(data[i:min(i + 256, n)]) & 0xFFFF) - 1
    return total

#: Header tag bytes -> int, so the header scan needs no int() per field.
_HEADER_TAG_IDS: dict[bytes, int] = {str(t).encode(): t for t in T.HEADER_TAGS}
_HEADER_DATA_LEN = {T.SECURE_DATA_LEN: T.SECURE_DATA, T.XML_DATA_LEN: T.XML_DATA}
#: The common case in one match: a well-formed start (8, 9, 35). The standard-header fields after
#: it are read by :func:`_plain_header` (a byte loop: with the dict it builds, less than half of
#: what an alternation of the header tags in this match and a split of their run cost). Anything
#: the match does not vouch for (a frame cut short, too large, garbled) goes the careful way.
_FAST_START = re.compile(rb"8=(FIX[^\x01=]{0,%d})\x019=(\d{1,%d})\x0135=([^\x01]*)\x01" % (
    _MAX_BEGIN_LEN - 3, _MAX_LEN_DIGITS))
#: Digits of the largest standard-header tag, and per tag number of at most that many digits:
#: 1 for a standard-header tag, 2 for a header data-length tag (90, 212: its data field may hold
#: SOH, so :func:`_scan_header` reads such a header), else 0.
_HEADER_TAG_DIGITS: Final = len(str(max(T.HEADER_TAGS)))
_HEADER_KIND: Final = bytes((2 if t in _HEADER_DATA_LEN else 1) if t in T.HEADER_TAGS else 0
                            for t in range(10 ** _HEADER_TAG_DIGITS))
#: Any data-length tag at the start of a body field: when a body has none, a value can be found
#: with one bytes.find (no data field can hide a fake "SOH tag=" sequence).
#: A tag written as a (possibly negative) number of at most 9 digits: RefTagID can name it.
_SIGNED_INT = re.compile(rb"-?[0-9]{1,9}")
_BODY_DATA_FIELD = re.compile(rb"\x01(?:%s)=" % b"|".join(b"%d" % t for t in sorted(T.DATA_LENGTH_TAGS)))


#: ``SOH tag=`` per tag number, as :meth:`RawMessage.get` looks for it in a plain body.
_FIELD_KEYS: dict[int, bytes] = {}


class DecodeError:
    """A framing problem the decoder skipped over. ``kind`` is one of ``garbage`` (bytes before a
    message start), ``garbled`` (bad 8/9/35 layout or BodyLength not landing on 10=), ``checksum``
    (CheckSum mismatch), ``too_large`` (BodyLength past ``max_size``)."""

    __slots__ = ("kind", "detail", "discarded")

    def __init__(self, kind: str, detail: str, discarded: int) -> None:
        self.kind = kind
        self.detail = detail
        self.discarded = discarded

    def __repr__(self) -> str:
        return f"DecodeError({self.kind!r}, {self.detail!r}, discarded={self.discarded})"


class FieldError(ValueError):
    """A checksum-valid message whose fields cannot be parsed; carries the FIX
    SessionRejectReason (373) and the offending tag (371) for a Reject (35=3)."""

    def __init__(self, reason: int, tag: int | None, text: str) -> None:
        super().__init__(text)
        self.reason = reason
        self.tag = tag
        self.text = text


def invalid_tag(tag_b: bytes) -> FieldError:
    """The error for a field whose tag is not a tag number (FIX Test Case 14a): RefTagID (371)
    is the number written when it is one (0, -1), else absent; the text shows it as sent."""
    shown = tag_b[:20].decode("ascii", "replace")
    ref = int(tag_b) if _SIGNED_INT.fullmatch(tag_b) else None
    return FieldError(T.SessionRejectReason.INVALID_TAG_NUMBER, ref,
                      f"Invalid tag number: {shown}" if shown else "field without a tag number")


class RawMessage:
    """One framed, checksum-verified message.

    ``raw`` is the complete message (8=... through 10=xxx SOH). ``header`` maps each standard
    header tag to its value as written. ``body_start``/``body_end`` delimit the body: the fields
    after the standard header up to (not including) ``10=``; every body field ends with SOH.
    ``header_error`` is set when a header tag appeared twice (SessionRejectReason 13).
    """

    __slots__ = ("raw", "begin_string", "msg_type", "header", "body_start", "body_end",
                 "header_error", "_fields", "_index", "_plain", "_seq", "_match", "_at")

    def __init__(self, raw: bytes, begin_string: bytes, msg_type: bytes, header: dict[int, bytes],
                 body_start: int, body_end: int, header_error: int | None = None) -> None:
        self.raw = raw
        self.begin_string = begin_string
        self.msg_type = msg_type
        self.header = header
        self.body_start = body_start
        self.body_end = body_end
        self.header_error = header_error
        self._fields: list[tuple[int, bytes]] | None = None
        self._index: dict[int, bytes] | None = None
        self._plain: bool | None = None
        self._seq: int | None | bool = False       # False: not parsed yet
        self._match: re.Match[bytes] | None = None
        self._at: dict[int, int] | None = None

    @property
    def body(self) -> bytes:
        return self.raw[self.body_start:self.body_end]

    @property
    def seq_num(self) -> int | None:
        """MsgSeqNum (34) as int, or None when absent or not a positive integer (parsed once:
        the session and the fan-out both read it)."""
        seq = self._seq
        if seq is False:
            v = self.header.get(T.MSG_SEQ_NUM)
            self._seq = seq = seq_value(v) if v is not None else None
        return seq

    @property
    def poss_dup(self) -> bool:
        return self.header.get(T.POSS_DUP_FLAG) == b"Y"

    def note_plain_body(self) -> None:
        """The caller has scanned the body and found no data-length tag (the session's
        ``body_suspect`` screen does): :meth:`get` can skip its own scan for one."""
        self._plain = True

    def note_layout(self, match: re.Match[bytes], at: dict[int, int]) -> None:
        """A validator's compiled layout matched the whole message (so its body is plain, as
        :meth:`note_plain_body`) and captured some body values as it did: ``at`` maps each
        captured tag to its group in ``match`` (the tag's first occurrence in the body), or to 0
        when the layout has no such tag in the body. :meth:`get` reads those tags from the match
        instead of searching the message. The match (and through it the layout's pattern) lives
        as long as the message: a few hundred bytes per message in flight."""
        self._plain = True
        self._match = match
        self._at = at

    def fields(self) -> list[tuple[int, bytes]]:
        """Every field in order (8 .. 10), data fields read by their length tag. Raises
        :class:`FieldError` for a malformed field; parsed once and cached."""
        if self._fields is None:
            self._fields = parse_fields(self.raw)
        return self._fields

    def get(self, tag: int, default: bytes | None = None) -> bytes | None:
        """Value of ``tag`` (header first, then the first occurrence in the body).

        Fast paths (routing and filters read a handful of body tags of every message): a tag a
        validator's layout captured (:meth:`note_layout`) is read from its match; otherwise, when
        the body holds no FIX data field, the value is found with one ``bytes.find``. Otherwise
        the whole message is parsed once, data-field aware, so a value inside a data field is
        never mistaken for a field of its own."""
        v = self.header.get(tag)
        if v is not None:
            return v
        at = self._at
        if at is not None:
            g = at.get(tag)
            if g is not None:
                match = self._match                 # set with _at (note_layout): never None here
                return default if g == 0 or match is None else match.group(g)
        raw = self.raw
        if self._plain is None:
            self._plain = _BODY_DATA_FIELD.search(raw, self.body_start - 1, self.body_end) is None
        if self._plain:
            key = _FIELD_KEYS.get(tag)
            if key is None:
                key = b"\x01%d=" % tag
                if len(_FIELD_KEYS) < 4096:       # bounded: tags come from filters and code
                    _FIELD_KEYS[tag] = key
            i = raw.find(key, self.body_start - 1, self.body_end)
            if i < 0:
                return default
            i += len(key)
            return raw[i:raw.find(b"\x01", i, self.body_end)]
        if self._index is None:
            idx: dict[int, bytes] = {}
            for t, val in self.fields():
                if t not in idx:
                    idx[t] = val
            self._index = idx
        return self._index.get(tag, default)

    def __repr__(self) -> str:
        return f"RawMessage({self.raw.replace(SOH, b'|')!r})"


def parse_fields(raw: bytes, start: int = 0, stop: int | None = None) -> list[tuple[int, bytes]]:
    """Parse ``raw[start:stop]`` into ``(tag, value)`` pairs, honouring FIX data fields (a length
    tag followed by a data tag whose value may contain SOH). Raises :class:`FieldError`."""
    out: list[tuple[int, bytes]] = []
    n = len(raw) if stop is None else stop
    p = start
    data_tag = -1
    data_len = 0
    while p < n:
        eq = raw.find(b"=", p, n)
        if eq < 0:
            raise FieldError(T.SessionRejectReason.INVALID_TAG_NUMBER, None,
                             "field without '=' separator")
        tag_b = raw[p:eq]
        if not tag_b.isdigit() or tag_b[0] == 0x30 or len(tag_b) > T.MAX_TAG_DIGITS:
            raise invalid_tag(tag_b)
        tag = int(tag_b)
        if tag > T.MAX_TAG:
            raise invalid_tag(tag_b)
        if tag == data_tag:
            end = eq + 1 + data_len
            if end >= n or raw[end] != _SOH_INT:
                raise FieldError(T.SessionRejectReason.INCORRECT_DATA_FORMAT, tag,
                                 f"data field {tag} does not match its length")
        else:
            end = raw.find(SOH, eq + 1, n)
            if end < 0:
                raise FieldError(T.SessionRejectReason.INCORRECT_DATA_FORMAT, tag,
                                 f"field {tag} not terminated by SOH")
        value = raw[eq + 1:end]
        if not value:
            raise FieldError(T.SessionRejectReason.TAG_WITHOUT_VALUE, tag,
                             f"tag {tag} has no value")
        out.append((tag, value))
        data_tag = -1
        dt = T.DATA_LENGTH_TAGS.get(tag)
        if dt is not None:
            length = count_value(value)
            if length is None:
                raise FieldError(T.SessionRejectReason.INCORRECT_DATA_FORMAT, tag,
                                 f"length tag {tag} is not a number")
            data_tag, data_len = dt, length
        p = end + 1
    return out


def _scan_header(raw: bytes, p: int, stop: int) -> tuple[dict[int, bytes], int, int | None]:
    """Read standard-header fields from ``p`` until the first non-header tag.
    Returns (header, body_start, duplicated_tag)."""
    header: dict[int, bytes] = {}
    dup: int | None = None
    ids = _HEADER_TAG_IDS
    while p < stop:
        eq = raw.find(b"=", p, stop)
        if eq < 0:
            break
        tag = ids.get(raw[p:eq])
        if tag is None:
            break
        soh = raw.find(SOH, eq + 1, stop)
        if soh < 0:
            break
        value = raw[eq + 1:soh]
        if tag in header and dup is None:
            dup = tag
        header[tag] = value
        p = soh + 1
        data_tag = _HEADER_DATA_LEN.get(tag)
        length = count_value(value) if data_tag is not None else None
        if data_tag is not None and length is not None:
            prefix = b"%d=" % data_tag
            if raw.startswith(prefix, p):
                vstart = p + len(prefix)
                vend = vstart + length
                if vend < stop and raw[vend] == _SOH_INT:
                    header[data_tag] = raw[vstart:vend]
                    p = vend + 1
    return header, p, dup


def _plain_header(raw: bytes, p: int, stop: int) -> tuple[dict[int, bytes] | None, int, int | None]:
    """:func:`_scan_header` for a header without data fields, with a byte loop (the hot path:
    no slice, hash or ``find`` per tag). Returns a None header when it meets a header
    data-length tag (90, 212): the caller reads that header with :func:`_scan_header`. Otherwise
    the same (header, body_start, duplicated_tag) as :func:`_scan_header`."""
    header: dict[int, bytes] = {}
    dup: int | None = None
    kinds = _HEADER_KIND
    digits = _HEADER_TAG_DIGITS
    while p < stop:
        i = p
        tag = 0
        c = 0
        while i < stop and i - p <= digits:     # one digit more than a header tag has
            c = raw[i]
            if c < 48 or c > 57:
                break
            tag = tag * 10 + c - 48
            i += 1
        if c != 61 or i == p or i - p > digits or raw[p] == 48:
            break                               # not "digits=" without a leading zero
        kind = kinds[tag]
        if kind == 0:
            break
        if kind == 2:
            return None, p, dup
        j = i + 1
        while j < stop and raw[j] != _SOH_INT:
            j += 1
        if j >= stop:
            break
        if dup is None and tag in header:
            dup = tag
        header[tag] = raw[i + 1:j]
        p = j + 1
    return header, p, dup


class Decoder:
    """Incremental framer: ``feed(bytes)`` returns the complete messages (and framing errors) in
    the order they were found; an incomplete tail is kept for the next call.

    Memory is bounded: the buffer never holds more than one partial frame, and a frame's size is
    checked against ``max_size`` from its BodyLength before any of it is buffered.
    """

    __slots__ = ("max_size", "_buf")

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.max_size = max_size
        self._buf = b""

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def take_pending(self) -> bytes:
        """Hand over the incomplete tail (the acceptor decodes a connection's first Logon itself,
        then gives the rest of the stream to the session's own decoder)."""
        pending, self._buf = self._buf, b""
        return pending

    def feed(self, data: bytes) -> list[RawMessage | DecodeError]:
        buf = self._buf + data if self._buf else bytes(data)
        out: list[RawMessage | DecodeError] = []
        n = len(buf)
        pos = 0
        max_size = self.max_size
        fast = _FAST_START.match
        while pos < n:
            m = fast(buf, pos)
            if m is not None:
                body_begin = m.end(2) + 1
                cs_pos = body_begin + int(m.group(2))
                end = cs_pos + _TRAILER_LEN
                hend = m.end()
                if (hend <= cs_pos and end <= n and end - pos <= max_size
                        and buf[end - 1] == _SOH_INT and buf[cs_pos - 1] == _SOH_INT
                        and buf.startswith(b"10=", cs_pos)):
                    raw = buf[pos:end]
                    stop = cs_pos - pos
                    cs_b = raw[stop + 3:stop + 6]
                    if not cs_b.isdigit() or byte_sum(raw, stop) & 0xFF != int(cs_b):
                        out.append(DecodeError("checksum", "CheckSum(10) mismatch", end - pos))
                    else:
                        hstart = hend - pos
                        header, body_start, dup = _plain_header(raw, hstart, stop)
                        if header is None:
                            header, body_start, dup = _scan_header(raw, hstart, stop)
                        out.append(RawMessage(raw, m.group(1), m.group(3), header, body_start,
                                              stop, dup))
                    pos = end
                    continue
            nxt = self._frame_slowly(buf, pos, out)
            if nxt < 0:
                break                                   # wait for more bytes
            pos = nxt
        self._buf = buf[pos:] if pos < n else b""
        return out

    def _frame_slowly(self, buf: bytes, pos: int, out: list[RawMessage | DecodeError]) -> int:
        """A message the fast path did not take (a resync point, an atypical header, a frame
        still arriving): frames it field by field, or skips garbage with the reason. Returns
        where to go on, or -1 to wait for more bytes."""
        n = len(buf)
        max_size = self.max_size
        if not buf.startswith(_BEGIN_MARK, pos):
            if n - pos < len(_BEGIN_MARK) and _BEGIN_MARK.startswith(buf[pos:]):
                return -1                               # maybe the start of "8=FIX": wait
            return self._resync(buf, pos, out, "garbage", "bytes before a message start")
        soh1 = buf.find(SOH, pos + 2, pos + 3 + _MAX_BEGIN_LEN)
        if soh1 < 0:
            if n - pos > 2 + _MAX_BEGIN_LEN:
                return self._resync(buf, pos + 1, out, "garbled", "BeginString too long", pos)
            if buf.find(b"=", pos + 2) >= 0:     # a "8=FIX..." cut short, then more
                return self._resync(buf, pos + 1, out, "garbled", "BeginString cut short", pos)
            return -1
        if buf.find(b"=", pos + 2, soh1) >= 0:
            # the BeginString of a message cut short ran into the next message's "8="
            return self._resync(buf, pos + 1, out, "garbled", "BeginString cut short", pos)
        if not buf.startswith(b"9=", soh1 + 1):
            if n - soh1 < 3:
                return -1
            return self._resync(buf, pos + 1, out, "garbled", "BodyLength(9) is not the second field", pos)
        soh2 = buf.find(SOH, soh1 + 3, soh1 + 4 + _MAX_LEN_DIGITS)
        if soh2 < 0:
            if n - soh1 > 3 + _MAX_LEN_DIGITS:
                return self._resync(buf, pos + 1, out, "garbled", "BodyLength(9) too long", pos)
            return -1
        len_b = buf[soh1 + 3:soh2]
        if not len_b.isdigit():
            return self._resync(buf, pos + 1, out, "garbled", "BodyLength(9) is not a number", pos)
        body_begin = soh2 + 1
        cs_pos = body_begin + int(len_b)
        end = cs_pos + _TRAILER_LEN
        if end - pos > max_size:
            return self._resync(buf, pos + 1, out, "too_large",
                                f"BodyLength {int(len_b)} exceeds the {max_size}-byte cap", pos)
        if end > n:
            return -1
        if (buf[end - 1] != _SOH_INT or not buf.startswith(b"10=", cs_pos)
                or buf[cs_pos - 1] != _SOH_INT):
            return self._resync(buf, pos + 1, out, "garbled",
                                "BodyLength(9) does not end at CheckSum(10)", pos)
        raw = buf[pos:end]
        stop = cs_pos - pos
        cs_b = raw[stop + 3:stop + 6]
        if not cs_b.isdigit() or byte_sum(raw, stop) & 0xFF != int(cs_b):
            out.append(DecodeError("checksum", "CheckSum(10) mismatch", end - pos))
            return end
        b0 = body_begin - pos
        if not raw.startswith(b"35=", b0):
            out.append(DecodeError("garbled", "MsgType(35) is not the third field", end - pos))
            return end
        soh3 = raw.find(SOH, b0 + 3, stop)
        header, body_start, dup = _scan_header(raw, soh3 + 1, stop)
        out.append(RawMessage(raw, raw[2:soh1 - pos], raw[b0 + 3:soh3], header,
                              body_start, stop, dup))
        return end

    def _resync(self, buf: bytes, start: int, out: list[RawMessage | DecodeError], kind: str,
                detail: str,
                origin: int | None = None) -> int:
        """Skip to the next ``8=FIX`` at or after ``start``; report what was dropped."""
        nxt = buf.find(_BEGIN_MARK, start)
        if nxt < 0:
            # keep a tail that could be the beginning of "8=FIX"
            keep = 0
            for k in range(min(len(_BEGIN_MARK) - 1, len(buf) - start), 0, -1):
                if _BEGIN_MARK.startswith(buf[-k:]):
                    keep = k
                    break
            nxt = len(buf) - keep
        first = start if origin is None else origin
        if nxt > first:
            out.append(DecodeError(kind, detail, nxt - first))
        return nxt


# ----------------------------------------------------------------------------------------------
# Encoding
# ----------------------------------------------------------------------------------------------

FieldValue = bytes | str | int


def _b(v: FieldValue) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, int):
        return b"%d" % v
    return v.encode("ascii")


def fields_bytes(fields: Iterable[tuple[int, FieldValue]]) -> bytes:
    """``[(tag, value), ...]`` -> ``b"tag=value\\x01..."``; values are bytes, str or int."""
    return b"".join(b"%d=%s\x01" % (t, _b(v)) for t, v in fields)


def encode(begin_string: bytes, msg_type: bytes, header: bytes, body: bytes = b"",
           body_sum: int | None = None) -> bytes:
    """Build a complete message: ``8``, ``9``, ``35``, then ``header`` (already-encoded header
    fields after 35), then ``body`` (encoded fields, each ending with SOH), then ``10``.

    ``body_sum`` is ``byte_sum(body)`` when the caller already has it: the fan-out computes it once per
    message and reuses it for every target, so per target only the header is summed.
    """
    head = b"35=" + msg_type + SOH + header
    prefix = b"8=" + begin_string + b"\x019=%d\x01" % (len(head) + len(body))
    if body_sum is None:
        body_sum = byte_sum(body)
    checksum = (byte_sum(prefix) + byte_sum(head) + body_sum) & 0xFF
    return b"".join((prefix, head, body, b"10=%03d\x01" % checksum))


def digits_value(v: bytes, max_digits: int) -> int | None:
    """``v`` as int when it is digits only and at most ``max_digits`` of them, leading zeros
    aside; else None (never an int of thousands of digits)."""
    if not v.isdigit():
        return None
    if len(v) > max_digits:
        v = v.lstrip(b"0")
        if len(v) > max_digits:
            return None
    return int(v) if v else 0


def seq_value(v: bytes) -> int | None:
    """A sequence number field's value (34, 7, 16, 36), at most :data:`~.tags.MAX_SEQ_NUM`."""
    return digits_value(v, T.MAX_SEQ_DIGITS)


def count_value(v: bytes) -> int | None:
    """A length or NumInGroup value, at most :data:`~.tags.MAX_COUNT_DIGITS` digits."""
    return digits_value(v, T.MAX_COUNT_DIGITS)


def encode_fields(begin_string: bytes | str, msg_type: bytes | str,
                  header: Iterable[tuple[int, FieldValue]],
                  body: Iterable[tuple[int, FieldValue]] = ()) -> bytes:
    """Convenience: :func:`encode` from ``(tag, value)`` lists (admin path, tests, simulators)."""
    return encode(_b(begin_string), _b(msg_type), fields_bytes(header), fields_bytes(body))


def checksum_ok(raw: bytes) -> bool:
    """True when ``raw`` is a complete message whose CheckSum matches (a test/diagnostic aid)."""
    i = raw.rfind(b"\x0110=")
    return i >= 0 and raw[i + 4:i + 7].isdigit() and sum(raw[:i + 1]) % 256 == int(raw[i + 4:i + 7])
