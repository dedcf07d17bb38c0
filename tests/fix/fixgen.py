"""Test helper: random messages laid out from a data dictionary, and values by FIX data type.

The generator is the tests' own reading of the dictionary (dictionary order, required fields
always, optional ones by chance, repeating groups with 1-2 entries each starting with the
delimiter), kept independent of the validator's walk so the property tests compare two readings.
"""

from __future__ import annotations

import random
import re
import string

from dcgateway.fix import codec
from dcgateway.fix import tags as T
from dcgateway.fix.codec import Decoder, RawMessage
from dcgateway.fix.dictionary import DataDictionary, FieldDef, Section
from dcgateway.fix.validate import ANY_VALUE, TYPE_PATTERNS

#: A valid value per FIX type, and one of the wrong format (None: no wrong format exists).
GOOD: dict[str, list[bytes]] = {
    "INT": [b"0", b"7", b"-12", b"1200"], "LENGTH": [b"3"], "SEQNUM": [b"1", b"42"],
    "NUMINGROUP": [b"1"], "TAGNUM": [b"55"], "DAYOFMONTH": [b"1", b"15", b"31"],
    "FLOAT": [b"1.5", b"-0.25", b"200.00", b"3", b".5"], "QTY": [b"100", b"2.5"],
    "PRICE": [b"4512.25", b"-1.5"], "PRICEOFFSET": [b"0.25", b"-0.5"], "AMT": [b"1000.00"],
    "PERCENTAGE": [b"0.05"], "CHAR": [b"A", b"7"], "BOOLEAN": [b"Y", b"N"],
    "STRING": [b"ABC", b"x-1", b"a=b"], "MULTIPLEVALUESTRING": [b"A", b"A B"],
    "MULTIPLESTRINGVALUE": [b"AB CD"], "MULTIPLECHARVALUE": [b"A B"],
    "CURRENCY": [b"USD", b"EUR"], "EXCHANGE": [b"XCME", b"N"], "COUNTRY": [b"US"],
    "LANGUAGE": [b"en"], "UTCTIMESTAMP": [b"20261124-20:10:11", b"20261124-20:10:11.123",
                                          b"20261231-23:59:60.123456"],
    "UTCTIMEONLY": [b"20:10:11", b"20:10:11.123"], "UTCDATE": [b"20261124"],
    "UTCDATEONLY": [b"20261124"], "LOCALMKTDATE": [b"20261124"],
    "MONTHYEAR": [b"202612", b"20261215", b"202612w2"],
}
BAD: dict[str, bytes] = {
    "INT": b"1.5", "LENGTH": b"-1", "SEQNUM": b"+1", "TAGNUM": b"0", "DAYOFMONTH": b"32",
    "FLOAT": b"+200.00", "QTY": b"+200.00", "PRICE": b"1,5", "PRICEOFFSET": b"--1",
    "AMT": b"1e3", "PERCENTAGE": b"5%", "CHAR": b"AB", "BOOLEAN": b"y",
    "MULTIPLEVALUESTRING": b"A  B", "MULTIPLESTRINGVALUE": b" A", "MULTIPLECHARVALUE": b"AB",
    "CURRENCY": b"usd", "EXCHANGE": b"XCMEX", "COUNTRY": b"USA", "LANGUAGE": b"EN",
    "UTCTIMESTAMP": b"20261324-20:10:11", "UTCTIMEONLY": b"24:00:00", "UTCDATE": b"2026-11-24",
    "UTCDATEONLY": b"20261132", "LOCALMKTDATE": b"261124", "MONTHYEAR": b"2026-12",
}
SKIP_TYPES = {"DATA", "XMLDATA", "TZTIMEONLY", "TZTIMESTAMP"}
SKIP_TAGS = set(T.DATA_LENGTH_TAGS) | set(T.DATA_LENGTH_TAGS.values())
FRAMING = {8, 9, 35, 10}
Fields = list[tuple[int, bytes]]


def good_value(f: FieldDef, rnd: random.Random) -> bytes:
    own = GOOD.get(f.type, GOOD["STRING"])
    if f.values:
        pat = TYPE_PATTERNS.get(f.type, ANY_VALUE)
        ok = sorted(v for v in f.values if pat is None or re.fullmatch(pat, v))
        if ok:
            if f.type.startswith("MULTIPLE") and len(ok) > 1 and rnd.random() < 0.3:
                return b" ".join(rnd.sample(ok, 2))
            return rnd.choice(ok)
    return rnd.choice(own)


def out_of_range(f: FieldDef) -> bytes | None:
    """A value of the right format that is not one of ``f``'s enumerated values."""
    if not f.values:
        return None
    if f.type in ("CHAR", "MULTIPLECHARVALUE"):
        pool = [c.encode() for c in string.ascii_letters + string.digits]
    elif f.type in ("INT", "NUMINGROUP"):
        pool = [b"%d" % n for n in range(0, 10000, 7)]
    elif f.type == "BOOLEAN":
        return None
    else:
        pool = [b"ZQX%d" % n for n in range(20)]
    for v in pool:
        if v not in f.values:
            return v
    return None


class Generator:
    def __init__(self, dd: DataDictionary, rnd: random.Random, optional: float = 0.15) -> None:
        self.dd = dd
        self.rnd = rnd
        self.optional = optional

    def section(self, sec: Section, depth: int = 0) -> Fields:
        out: Fields = []
        members = sec.members
        for pos, tag in enumerate(members):
            f = self.dd.fields[tag]
            required = tag in sec.required
            if f.type in SKIP_TYPES or tag in SKIP_TAGS or tag in FRAMING:
                assert not required, f"cannot generate required {tag}"
                continue
            g = sec.groups.get(tag)
            if g is None:
                if required or self.rnd.random() < self.optional:
                    out.append((tag, good_value(f, self.rnd)))
                continue
            later = set(members[pos + 1:])
            if not required and (depth >= 2 or g.entry.tags & later
                                 or self.rnd.random() >= self.optional * 2):
                continue
            n = self.rnd.randint(1, 2)
            out.append((tag, b"%d" % n))
            for _ in range(n):
                entry = self.section(g.entry, depth + 1)
                if not entry or entry[0][0] != g.delimiter:
                    entry.insert(0, (g.delimiter, good_value(self.dd.fields[g.delimiter],
                                                             self.rnd)))
                out.extend(entry)
        return out

    def header(self) -> Fields:
        h: Fields = [(49, b"SRC1"), (56, b"DCGW"), (34, b"%d" % self.rnd.randint(1, 10**6)),
                     (52, b"20261124-20:10:11.123")]
        if self.rnd.random() < 0.3:
            h.insert(2, (50, b"TRADER1"))
        if self.rnd.random() < 0.2:
            h.append((115, b"ONBEHALF"))
        return h

    def message(self, msg_type: bytes) -> tuple[Fields, Fields]:
        return self.header(), self.section(self.dd.messages[msg_type].body)


def build(dd: DataDictionary, msg_type: bytes, header: Fields, body: Fields) -> RawMessage:
    raw = codec.encode_fields(dd.begin_string, msg_type, header, body)
    [msg] = Decoder().feed(raw)
    assert isinstance(msg, RawMessage), msg
    return msg
