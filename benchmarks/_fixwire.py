"""Plain-bytes FIX helpers shared by the fan-out benchmark's load process (``_fixload.py``) and
its comparison relay (``bare_relay.py``): encoding session messages, splitting a buffer into
frames by BodyLength with the CheckSum verified, and the UTCTimestamp of "now".

Standard library only: both processes keep every FIX library off their hot path, so what the
benchmark measures is the gateway and the relay, not a parser. Framing follows the FIX session
layer ("Message format"): 8=BeginString first, 9=BodyLength second, 10=CheckSum (three digits,
byte sum modulo 256 of everything before it) last.
"""

from __future__ import annotations

import re
import time

SOH = b"\x01"
TRAILER = b"\x0110="                  # SOH 10= : starts the CheckSum field of every frame
#: Session-level MsgTypes (FIX Vol. 2): never copied.
ADMIN_TYPES = frozenset((b"0", b"1", b"2", b"3", b"4", b"5", b"A"))
#: Standard header tags after 8, 9 and 35 (FIX 4.2/4.4 "Standard Message Header"). The header
#: ends at the first field whose tag is not one of these.
HEADER_TAGS = (49, 56, 115, 128, 90, 91, 34, 50, 142, 57, 143, 116, 144, 129, 145, 43, 97, 52,
               122, 212, 213, 347, 369, 370, 627, 628, 629, 630, 1128, 1129)
HEADER_RUN = re.compile(rb"(?:(?:%s)=[^\x01]*\x01)*" % b"|".join(
    b"%d" % t for t in sorted(HEADER_TAGS, key=lambda t: -len(str(t)))))

_second = [-1, b""]


def utc_now() -> bytes:
    """SendingTime (52) of now, UTCTimestamp with milliseconds; the formatted second is cached."""
    t = time.time()
    s = int(t)
    if s != _second[0]:
        _second[0], _second[1] = s, time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(s)).encode()
    return b"%s.%03d" % (_second[1], int((t - s) * 1000))


def encode(begin: bytes, fields: list[tuple[int, bytes]]) -> bytes:
    """A complete frame: 8, 9, the fields in the order given (35 first), 10."""
    body = b"".join(b"%d=%s\x01" % (tag, value) for tag, value in fields)
    head = b"8=%s\x019=%d\x01" % (begin, len(body))
    return b"%s%s10=%03d\x01" % (head, body, (sum(head) + sum(body)) & 255)


def fields_of(frame: bytes) -> dict[int, bytes]:
    """{tag: value} of one frame, first occurrence wins (the admin path only)."""
    out: dict[int, bytes] = {}
    for field in frame.split(SOH):
        tag, _, value = field.partition(b"=")
        if tag.isdigit():
            out.setdefault(int(tag), value)
    return out


class Framer:
    """Splits a byte stream into verified frames. ``feed(data)`` returns the complete frames
    (each ``(frame, byte_sum)``, where ``byte_sum`` is the sum of every byte before its 10=
    field, so a caller can derive a body sum without summing again); garbled ones are counted
    in ``bad`` and dropped, as the session layer requires of a message whose BodyLength or
    CheckSum is wrong; bytes before the next ``8=FIX`` are skipped and counted in ``garbage``."""

    __slots__ = ("buf", "bad", "garbage", "limit")

    def __init__(self, limit: int = 1 << 16) -> None:
        self.buf = b""
        self.bad = 0
        self.garbage = 0
        self.limit = limit

    def feed(self, data: bytes) -> list[tuple[bytes, int]]:
        buf = self.buf + data if self.buf else data
        out: list[tuple[bytes, int]] = []
        pos, n = 0, len(buf)
        while n - pos >= 20:
            if not buf.startswith(b"8=FIX", pos):
                nxt = buf.find(b"8=FIX", pos + 1)
                skip = nxt if nxt >= 0 else n - 4
                self.garbage += skip - pos
                pos = skip
                continue
            i = buf.find(SOH, pos)
            j = buf.find(SOH, i + 1) if i >= 0 else -1
            if j < 0:
                break
            if buf[i + 1:i + 3] != b"9=" or not buf[i + 3:j].isdigit() or j - pos > 40:
                self.bad += 1
                pos += 1
                continue
            bend = j + 1 + int(buf[i + 3:j])
            if bend - pos > self.limit:
                self.bad += 1
                pos += 1
                continue
            if bend + 7 > n:
                break
            if buf[bend - 1:bend + 3] != TRAILER or buf[bend + 6:bend + 7] != SOH:
                self.bad += 1
                pos += 1
                continue
            total = sum(buf[pos:bend])
            if buf[bend + 3:bend + 6] != b"%03d" % (total & 255):
                self.bad += 1
            else:
                out.append((buf[pos:bend + 7], total))
            pos = bend + 7
        self.buf = buf[pos:]
        return out
