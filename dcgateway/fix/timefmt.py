"""UTCTimestamp formatting and parsing (FIX Vol. 1 data types: YYYYMMDD-HH:MM:SS[.sss]).

Pure functions: the caller passes ``now`` (seconds since the epoch). The second-resolution prefix
is cached because the gateway formats SendingTime (52) for every message it sends.
"""

from __future__ import annotations

import calendar
from datetime import datetime, timezone

_cache_sec = -1
_cache_prefix = b""


def utc_timestamp(now: float, precision: int = 3) -> bytes:
    """``now`` -> ``b"YYYYMMDD-HH:MM:SS.sss"`` (precision 0, 3 or 6 fractional digits)."""
    global _cache_sec, _cache_prefix
    sec = int(now)
    if sec != _cache_sec:
        _cache_prefix = datetime.fromtimestamp(sec, timezone.utc).strftime("%Y%m%d-%H:%M:%S").encode()
        _cache_sec = sec
    if precision == 0:
        return _cache_prefix
    frac = int((now - sec) * 10 ** precision)
    return b"%s.%0*d" % (_cache_prefix, precision, frac)


def parse_utc_timestamp(value: bytes) -> float | None:
    """``b"YYYYMMDD-HH:MM:SS[.s...]"`` -> seconds since the epoch, or None if malformed."""
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return None
    if len(text) < 17 or text[8] != "-" or text[11] != ":" or text[14] != ":":
        return None
    date, clock = text[:8], text[9:17]
    frac = text[17:]
    if not (date.isdigit() and clock[0:2].isdigit() and clock[3:5].isdigit() and clock[6:8].isdigit()):
        return None
    if frac and (frac[0] != "." or not frac[1:].isdigit() or len(frac) > 10):
        return None
    try:
        dt = datetime(int(date[:4]), int(date[4:6]), int(date[6:8]),
                      int(clock[0:2]), int(clock[3:5]), int(clock[6:8]))
    except ValueError:
        return None
    seconds = float(calendar.timegm(dt.timetuple()))
    if frac:
        seconds += int(frac[1:]) / 10 ** (len(frac) - 1)
    return seconds
