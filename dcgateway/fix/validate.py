"""Validation of inbound messages against a data dictionary (FIX Vol. 2 "Session Level Reject";
the FIX Session Layer Test Cases, case 14 "Receive application or administrative message with
... "), compiled once per dictionary and cheap per message.

What is checked, and the SessionRejectReason (373) / RefTagID (371) each failure gives:

* MsgType not in the dictionary: 11, RefTagID 35;
* 14a tag in no part of the dictionary: 0 (Invalid tag number);
* 14b required tag missing, in the header, the body or a group entry: 1, the missing tag;
* 14c tag defined, but not for this MsgType: 2;
* 14d tag without a value: 4;
* 14e value not one of the field's enumerated values: 5;
* 14f value not of the field's FIX data type: 6;
* 14g header tag after a body tag, or trailer tag before the end: 14;
* 14h tag repeated outside a repeating group: 13;
* 14i a repeating group entry's fields out of the dictionary's order, or an entry that does not
  start with the group's delimiter: 15 (with ``check_group_field_order``, the default);
* 14j NumInGroup not the number of entries: 16, RefTagID the NumInGroup tag.

Otherwise RefTagID (371) is the offending tag.

Why two paths. Every application message is validated on the hot path, where a full parse
(:meth:`RawMessage.fields`) alone costs several times the budget. But one source sends few
distinct *layouts* (the sequence of tags): a fill, a partial fill, a cancel. The slow path parses
the message, walks it against the dictionary and, when it is valid and its layout has been seen
before, compiles that layout into one regular expression that matches the whole message with
every value checked by its type or enumeration (and every NumInGroup by its count). A later
message with the same layout is then validated by one ``fullmatch`` over its bytes. The regex
proves validity by itself: it fixes every tag in order and lets no value hold SOH, so a message
that matches it has exactly the fields of a layout the slow path accepted, each with a value the
slow path would accept. Anything that does not match goes the slow path, which finds the problem.
The layout also captures the body values of the tags its owner reads from every message
(``capture``: routing's ExecType and ExecTransType), which RawMessage.get takes from the match.

A message holding a FIX data field (a length tag followed by a value that may contain SOH)
never matches a compiled layout (layouts holding data-length tags are never compiled, and a
layout's literal tags cannot match one) and is always checked by the data-field-aware slow path.

Memory is bounded however a peer varies its layouts: layouts are grouped in buckets by
(MsgType, number of fields), at most :data:`BUCKET_SIZE` per bucket, and the number of buckets
is capped (oldest dropped first). A layout is compiled only on its second sighting and only up to
:data:`MAX_LAYOUT_FIELDS` fields, and the compile rate is tied to the slow-path rate, so random
layouts cost the slow path and little more.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from . import tags as T
from .codec import FieldError, RawMessage, count_value, invalid_tag
from .dictionary import DataDictionary, FieldDef, GroupDef, Section
from .session_admin import Problem

R = T.SessionRejectReason
Fields = Sequence[tuple[int, bytes]]
#: A compiled layout: its pattern, and each captured tag's group in it (0: not in the body).
_Layout = tuple[re.Pattern[bytes], dict[int, int]]

#: QuickFIX's wording of each SessionRejectReason this module reports (Problem.text starts so).
TEXTS: dict[int, str] = {
    R.INVALID_TAG_NUMBER: "Invalid tag number",
    R.REQUIRED_TAG_MISSING: "Required tag missing",
    R.TAG_NOT_DEFINED_FOR_MSG_TYPE: "Tag not defined for this message type",
    R.UNDEFINED_TAG: "Undefined Tag",
    R.TAG_WITHOUT_VALUE: "Tag specified without a value",
    R.VALUE_INCORRECT: "Value is incorrect (out of range) for this tag",
    R.INCORRECT_DATA_FORMAT: "Incorrect data format for value",
    R.INVALID_MSG_TYPE: "Invalid MsgType",
    R.TAG_APPEARS_MORE_THAN_ONCE: "Tag appears more than once",
    R.TAG_OUT_OF_ORDER: "Tag specified out of required order",
    R.REPEATING_GROUP_OUT_OF_ORDER: "Repeating group fields out of order",
    R.INCORRECT_NUM_IN_GROUP: "Incorrect NumInGroup count for repeating group",
}

#: First tag of the user-defined range (FIX Vol. 1 "User Defined Fields": 5000-9999, and the
#: registered ranges above 10000).
USER_DEFINED_MIN = 5000
#: Compiled layouts per (MsgType, field count) bucket, tried most recent first.
BUCKET_SIZE = 4
#: A layout with more fields than this is never compiled: compiling costs time in proportion to
#: the fields, and a peer must not be able to make the gateway compile huge patterns.
MAX_LAYOUT_FIELDS = 200
#: Compiles allowed before the compile rate is tied to the slow-path rate (see module doc).
_FREE_COMPILES = 32
_SLOW_PER_COMPILE = 8

# --- FIX data types (FIX 4.2 / 4.4 Vol. 1 "Data Types") as regular expressions ---------------
_DATE = rb"\d{4}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"
#: An optional part of more than one item is an alternation with an empty branch: the engine's
#: ``(...)?`` keeps repeat state per match, which a value that always ends at SOH does not need.
_TIME = rb"(?:[01]\d|2[0-3]):[0-5]\d:(?:[0-5]\d|60)(?:\.\d{1,9}+|)"
_TZ = rb"(?:Z|[+-](?:0\d|1[0-4])(?::?[0-5]\d)?)"
#: "Sequence of digits with optional decimal point and sign character": only "-" is a sign in
#: FIX, so "+200.00" is malformed; "200.", ".5" and "-3" are fine. Possessive quantifiers (``++``)
#: save the regex engine its backtracking bookkeeping: a value always ends at SOH, so there is
#: nothing to give back (about 20% off a layout's match); the decimal point is one optional item
#: (``\.?+``) rather than an optional group, for the same reason as in _TIME.
_FLOAT = rb"-?+(?:\d++\.?+\d*+|\.\d++)"
_MULTI = rb"[^\x01 ]++(?: [^\x01 ]++)*+"
_SEQ = rb"(?:0*+[1-9]\d{0,%d}+|0++)" % (T.MAX_SEQ_DIGITS - 1)
_COUNT = rb"(?:0*+[1-9]\d{0,%d}+|0++)" % (T.MAX_COUNT_DIGITS - 1)
ANY_VALUE = rb"[^\x01]++"

#: Type name (upper case, as in the XML) -> pattern a value must fullmatch. A type not listed is
#: treated as STRING (any value without SOH). DATA and XMLDATA are not checked (their value is
#: bytes counted by the length field, which the codec's parse already verifies).
TYPE_PATTERNS: dict[str, bytes | None] = {
    # sequence numbers, lengths and counts as far as the session can keep them (tags.py)
    "INT": rb"-?+\d++", "LENGTH": _COUNT, "SEQNUM": _SEQ, "NUMINGROUP": _COUNT,
    "TAGNUM": rb"[1-9]\d*+", "DAYOFMONTH": rb"(?:0?[1-9]|[12]\d|3[01])",
    "FLOAT": _FLOAT, "QTY": _FLOAT, "PRICE": _FLOAT, "PRICEOFFSET": _FLOAT, "AMT": _FLOAT,
    "PERCENTAGE": _FLOAT,
    "CHAR": rb"[^\x01]", "BOOLEAN": rb"[YN]",
    "STRING": ANY_VALUE, "MULTIPLEVALUESTRING": _MULTI, "MULTIPLESTRINGVALUE": _MULTI,
    "MULTIPLECHARVALUE": rb"[^\x01 ](?: [^\x01 ])*+",
    "CURRENCY": rb"[A-Z]{3}",                  # ISO 4217 alphabetic code
    "EXCHANGE": rb"[A-Za-z0-9]{1,4}",          # ISO 10383 MIC, or a FIX 4.2 Appendix C code
    "COUNTRY": rb"[A-Z]{2}", "LANGUAGE": rb"[a-z]{2}",
    "UTCTIMESTAMP": _DATE + b"-" + _TIME, "TIME": _DATE + b"-" + _TIME,
    "UTCTIMEONLY": _TIME,
    "UTCDATE": _DATE, "UTCDATEONLY": _DATE, "LOCALMKTDATE": _DATE, "DATE": _DATE,
    "MONTHYEAR": rb"\d{4}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01]|w[1-5])?",
    "TZTIMEONLY": rb"(?:[01]\d|2[0-3]):[0-5]\d(?::(?:[0-5]\d|60)(?:\.\d{1,9})?)?" + _TZ,
    "TZTIMESTAMP": _DATE + b"-" + _TIME + _TZ,
    "DATA": None, "XMLDATA": None,
}
_UNCHECKED_TYPES = frozenset(t for t, p in TYPE_PATTERNS.items() if p is None)
_MULTI_TYPES = frozenset({"MULTIPLEVALUESTRING", "MULTIPLESTRINGVALUE", "MULTIPLECHARVALUE"})
_DATA_VALUE_TAGS = frozenset(T.DATA_LENGTH_TAGS.values())
_DATA_TAGS = frozenset(T.DATA_LENGTH_TAGS) | _DATA_VALUE_TAGS
#: Framing fields the codec has already checked (and MsgType, checked against the messages).
_FRAMING = frozenset({T.BEGIN_STRING, T.BODY_LENGTH, T.MSG_TYPE, T.CHECKSUM})


@dataclass(frozen=True, slots=True)
class ValidationOptions:
    """Switches an operator may need for a counterparty, named after QuickFIX's settings.

    ``allow_user_defined_fields``: a tag of the user-defined range (>= 5000) is accepted where the
    dictionary does not define it, anywhere in the message (QuickFIX ValidateUserDefinedFields=N).
    ``check_unknown_fields``: a tag below 5000 that the dictionary does not define at all is
    "Invalid tag number" (373=0); off, it is accepted anywhere (QuickFIX AllowUnknownMsgFields).
    ``check_fields_have_values``: ``tag=`` with nothing after it is 373=4.
    ``check_field_order``: header fields first, trailer fields last (373=14).
    ``check_body_field_order``: body fields in dictionary order (373=14); off by default: FIX
    asks for an order only within repeating groups, and QuickFIX does not enforce it.
    ``check_group_field_order``: the fields of a repeating group's entry in the order the
    dictionary defines them, the delimiter first (FIX Vol. 1 "Repeating Groups"; Test Case 14i:
    373=15, as QuickFIX/J's ValidateUnorderedGroupFields); on by default.
    ``check_enums``: enumerated fields hold one of their values (373=5).
    ``check_types``: values match their FIX data type (373=6).
    ``layout_cache_size``: compiled layouts kept, in buckets of :data:`BUCKET_SIZE` (below
    that, or 0, the fast path is off and every message takes the slow path).
    """

    allow_user_defined_fields: bool = True
    check_unknown_fields: bool = True
    check_fields_have_values: bool = True
    check_field_order: bool = True
    check_body_field_order: bool = False
    check_group_field_order: bool = True
    check_enums: bool = True
    check_types: bool = True
    layout_cache_size: int = 256


def problem(reason: int, tag: int | None, detail: str = "") -> Problem:
    """A :class:`Problem` worded as QuickFIX words its rejects, with the tag and any detail."""
    text = TEXTS.get(reason, "Other")
    if tag is not None:
        text = f"{text}: {tag}"
    return Problem(reason, tag, f"{text} ({detail})" if detail else text)


class Validator:
    """Validates messages against one :class:`DataDictionary`; build once per dictionary and
    options, keep for the session's life (its layout cache is what makes it fast)."""

    def __init__(self, dictionary: DataDictionary,
                 options: ValidationOptions = ValidationOptions(),
                 capture: frozenset[int] = frozenset()) -> None:
        self.dictionary = dictionary
        self.options = options
        self.capture = capture
        self._fields = dict(dictionary.fields)        # a plain dict: faster than the proxy
        self._messages = dictionary.messages
        self._header = dictionary.header
        self._trailer = dictionary.trailer
        self._header_tags = dictionary.header.tags
        self._trailer_tags = dictionary.trailer.tags
        mt = dictionary.fields.get(T.MSG_TYPE)
        self._fix_msg_types = mt.values if mt is not None else frozenset()
        self._checks: dict[int, tuple[re.Pattern[bytes] | None, re.Pattern[bytes] | None]] = {}
        self._fragments: dict[int, bytes] = {}
        self._group_tags: dict[bytes, frozenset[int]] = {}
        self._buckets: dict[tuple[bytes, int], list[_Layout]] = {}
        self._max_buckets = max(0, options.layout_cache_size // BUCKET_SIZE)
        self._seen: dict[tuple[bytes, tuple[int, ...]], None] = {}
        self._slow_runs = 0
        self._compiled = 0

    @property
    def cached_layouts(self) -> int:
        return sum(len(b) for b in self._buckets.values())

    # --- the hot path ---------------------------------------------------------------------------

    def validate(self, msg: RawMessage) -> Problem | None:
        """None when ``msg`` is valid; else the first :class:`Problem` found, for a Reject (35=3).
        BeginString is the session's to check (a wrong one is a Logout, not a Reject)."""
        raw = msg.raw
        end = msg.body_end
        bucket = self._buckets.get((msg.msg_type, raw.count(b"\x01", 0, end)))
        if bucket is not None:
            # A compiled layout has no data field (:meth:`_learn`) and no value pattern matches
            # SOH, so a message it matches has a plain body: RawMessage.get skips its own scan,
            # and reads the captured tags from the match.
            pattern, at = bucket[0]
            m = pattern.fullmatch(raw, 0, end)
            if m is not None:
                msg.note_layout(m, at)
                return None
            for i in range(1, len(bucket)):
                pattern, at = bucket[i]
                m = pattern.fullmatch(raw, 0, end)
                if m is not None:
                    bucket.insert(0, bucket.pop(i))     # most recent first
                    msg.note_layout(m, at)
                    return None
        return self._validate_slow(msg)

    # --- the slow path --------------------------------------------------------------------------

    def _validate_slow(self, msg: RawMessage) -> Problem | None:
        self._slow_runs += 1
        mdef = self._messages.get(msg.msg_type)
        if mdef is None:
            return self._msg_type_problem(msg.msg_type)
        try:
            fields = msg.fields()
        except FieldError as exc:
            if exc.reason != R.TAG_WITHOUT_VALUE or self.options.check_fields_have_values:
                return problem(exc.reason, exc.tag, "" if exc.tag is not None else exc.text)
            try:
                fields = parse_allowing_empty(msg.raw)
            except FieldError as exc2:
                return problem(exc2.reason, exc2.tag, "" if exc2.tag is not None else exc2.text)
        found = self.check_fields(mdef.body, fields)
        if found is None and self._max_buckets:
            self._learn(msg, fields)
        return found

    def _msg_type_problem(self, mt: bytes) -> Problem:
        """373=11 either way (QuickFIX semantics), saying whether FIX knows the MsgType."""
        shown = mt.decode("latin-1")
        begin = self.dictionary.begin_string.decode()
        if mt in self._fix_msg_types or (mt[:1] == b"U" and mt[1:].isalnum()):
            detail = f"{shown!r} is not defined in this {begin} data dictionary"
        else:
            detail = f"{shown!r} is not a {begin} MsgType"
        return problem(R.INVALID_MSG_TYPE, T.MSG_TYPE, detail)

    def check_body(self, msg_type: bytes, body: Fields) -> Problem | None:
        """Check body fields alone (no header or trailer) as the body of ``msg_type``: what a
        translated copy must pass before it is sent (see :mod:`.translate`)."""
        mdef = self._messages.get(msg_type)
        if mdef is None:
            return self._msg_type_problem(msg_type)
        for tag, _ in body:
            if tag in self._header_tags or tag in self._trailer_tags:
                return problem(R.TAG_OUT_OF_ORDER, tag, "header or trailer tag in the body")
        return self._walk_all(mdef.body, body)

    def check_fields(self, body: Section, fields: Fields) -> Problem | None:
        """The full check of a parsed message (8 .. 10) whose body is laid out as ``body``."""
        split = self._split(fields)
        if isinstance(split, Problem):
            return split
        header, main, trailer = split
        return (self._walk_all(self._header, header) or self._walk_all(body, main)
                or self._walk_all(self._trailer, trailer))

    def _split(self, fields: Fields
               ) -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]],
                          list[tuple[int, bytes]]] | Problem:
        """Header, body and trailer fields. FIX Vol. 1 "Message format": the standard header
        comes first, the trailer last; a tag out of its place is 373=14 when order is checked
        (otherwise it is counted with its own part)."""
        htags, ttags = self._header_tags, self._trailer_tags
        ordered = self.options.check_field_order
        n = len(fields) - 1                       # fields[-1] is CheckSum (10): the codec's frame
        i = 3                                     # 8, 9, 35 are checked by the codec
        while i < n and fields[i][0] in htags:
            i += 1
        header = list(fields[:i])
        body: list[tuple[int, bytes]] = []
        trailer: list[tuple[int, bytes]] = []
        for field in fields[i:n]:
            tag = field[0]
            if tag in htags:
                if ordered:
                    return problem(R.TAG_OUT_OF_ORDER, tag, "header field after a body field")
                header.append(field)
            elif tag in ttags:
                trailer.append(field)
            elif trailer and ordered:
                return problem(R.TAG_OUT_OF_ORDER, trailer[-1][0],
                               "trailer field before a body field")
            else:
                body.append(field)
        trailer.append(fields[n])
        return header, body, trailer

    def _walk_all(self, section: Section, fields: Fields) -> Problem | None:
        return self._walk(section, fields, 0, None, section.tags)[1]

    def _free(self, tag: int, fdef: FieldDef | None) -> bool:
        """A tag accepted wherever it appears: a user-defined one under
        ``allow_user_defined_fields``, or one unknown to the dictionary when unknown fields are
        not checked."""
        if tag >= USER_DEFINED_MIN and self.options.allow_user_defined_fields:
            return True
        return fdef is None and not self.options.check_unknown_fields

    def _walk(self, section: Section, fields: Fields, i: int, group: GroupDef | None,
              claimed: frozenset[int]) -> tuple[int, Problem | None]:
        """Consume ``fields[i:]`` that belong to ``section``: a whole header, body or trailer
        (``group`` None), or one entry of ``group`` (its first field is the delimiter). A tag
        the entry does not define ends it when the message places it elsewhere (``claimed``:
        every tag of the whole part at any depth); a free tag (see :meth:`_free`) stays in the
        entry. Returns the index of the first field not consumed, and the first problem."""
        index, groups = section.index, section.groups
        options = self.options
        ordered = options.check_body_field_order or (
            group is not None and options.check_group_field_order)
        seen: set[int] = set()
        last = -1
        n = len(fields)
        while i < n:
            tag, value = fields[i]
            fdef = self._fields.get(tag)
            if tag not in index:
                if group is not None and (tag in claimed or not self._free(tag, fdef)):
                    break                       # the entry ends; the parent decides
                if not self._free(tag, fdef):
                    if fdef is None:
                        return i, problem(R.INVALID_TAG_NUMBER, tag)
                    return i, problem(R.TAG_NOT_DEFINED_FOR_MSG_TYPE, tag)
            elif group is not None and tag == group.delimiter and seen:
                break                           # the next entry
            elif ordered:
                pos = index[tag]
                if pos < last:
                    reason = R.TAG_OUT_OF_ORDER if group is None else R.REPEATING_GROUP_OUT_OF_ORDER
                    return i, problem(reason, tag)
                last = pos
            if tag in seen:
                return i, problem(R.TAG_APPEARS_MORE_THAN_ONCE, tag)
            seen.add(tag)
            found = self._value_problem(tag, value, fdef)
            if found is not None:
                return i, found
            g = groups.get(tag)
            if g is None:
                i += 1
                continue
            i, found = self._group(g, fields, i, claimed)
            if found is not None:
                return i, found
        for tag in section.required_in_order:
            if tag not in seen:
                return i, problem(R.REQUIRED_TAG_MISSING, tag)
        return i, None

    def _group(self, g: GroupDef, fields: Fields, i: int, claimed: frozenset[int]
               ) -> tuple[int, Problem | None]:
        """A repeating group from its NumInGroup field at ``fields[i]`` (FIX Vol. 1 "Repeating
        Groups": the count, then that many entries, each starting with the delimiter)."""
        declared = count_value(fields[i][1])
        if declared is None:
            return i, problem(R.INCORRECT_DATA_FORMAT, g.count_tag)
        i += 1
        entries = 0
        n = len(fields)
        while i < n:
            tag = fields[i][0]
            if tag != g.delimiter:
                if tag in g.entry.members:
                    detail = f"entry starts with {tag}, not the delimiter {g.delimiter}"
                    if self.options.check_group_field_order:
                        return i, problem(R.REPEATING_GROUP_OUT_OF_ORDER, tag, detail)
                    return i, problem(R.INCORRECT_NUM_IN_GROUP, g.count_tag, detail)
                break
            entries += 1
            i, found = self._walk(g.entry, fields, i, g, claimed)
            if found is not None:
                return i, found
        if entries != declared:
            return i, problem(R.INCORRECT_NUM_IN_GROUP, g.count_tag,
                              f"{declared} declared, {entries} found")
        return i, None

    # --- values -----------------------------------------------------------------------------

    def _value_problem(self, tag: int, value: bytes, fdef: FieldDef | None) -> Problem | None:
        if not value or fdef is None or tag in _FRAMING:    # empty: only when allowed
            return None
        checks = self._checks.get(tag)
        fmt, enum = checks if checks is not None else self._value_checks(tag, fdef)
        if fmt is not None and fmt.fullmatch(value) is None:
            return problem(R.INCORRECT_DATA_FORMAT, tag)
        if enum is not None and enum.fullmatch(value) is None:
            return problem(R.VALUE_INCORRECT, tag)
        return None

    def _value_checks(self, tag: int, fdef: FieldDef
                      ) -> tuple[re.Pattern[bytes] | None, re.Pattern[bytes] | None]:
        found = self._checks.get(tag)
        if found is None:
            fmt, enum = _value_patterns(fdef, self.options)
            found = (None if fmt is None else re.compile(fmt),
                     None if enum is None else re.compile(enum))
            self._checks[tag] = found
        return found

    def _fragment(self, tag: int, value: bytes, counts: frozenset[int]) -> bytes:
        """The part of a layout's regex that checks ``tag``'s value: the same patterns as the
        slow path (so both paths accept exactly the same values); a NumInGroup (``counts``) as
        its count."""
        if tag in counts:
            return rb"0*%d" % int(value)
        found = self._fragments.get(tag)
        if found is None:
            fdef = self._fields.get(tag)
            fmt, enum = (None, None) if fdef is None else _value_patterns(fdef, self.options)
            found = enum or fmt or ANY_VALUE
            if not self.options.check_fields_have_values:
                found = b"(?:" + found + b")?"
            self._fragments[tag] = found
        return found

    # --- learning layouts -------------------------------------------------------------------

    def _learn(self, msg: RawMessage, fields: Fields) -> None:
        """Record a valid layout; compile it on its second sighting (see module doc)."""
        tags = tuple(t for t, _ in fields)
        if len(tags) > MAX_LAYOUT_FIELDS or not _DATA_TAGS.isdisjoint(tags) or any(
                (f := self._fields.get(t)) is not None and f.type in _UNCHECKED_TYPES
                for t in tags):
            return
        key = (msg.msg_type, tags)
        seen = self._seen
        if key not in seen:
            seen[key] = None
            if len(seen) > 4 * self.options.layout_cache_size:
                del seen[next(iter(seen))]
            return
        if self._compiled >= _FREE_COMPILES and self._slow_runs < _SLOW_PER_COMPILE * self._compiled:
            return
        counts = self._group_tags.get(msg.msg_type)
        if counts is None:
            counts = self._group_tags[msg.msg_type] = _group_tags(
                self._header, self._messages[msg.msg_type].body, self._trailer)
        parts = [re.escape(b"8=" + fields[0][1]), rb"\x019=\d++\x01",
                 re.escape(b"35=" + fields[2][1]), b"\x01"]
        # A captured tag's first occurrence in the body becomes a named group. The fields before
        # body_start are the standard header, which RawMessage.get reads from its header dict.
        head = msg.raw.count(b"\x01", 0, msg.body_start)
        capture = self.capture
        captured: set[int] = set()
        for i in range(3, len(fields) - 1):
            tag, value = fields[i]
            fragment = self._fragment(tag, value, counts)
            if i >= head and tag in capture and tag not in captured:
                captured.add(tag)
                fragment = b"(?P<t%d>%s)" % (tag, fragment)
            parts.append(b"%d=%s\x01" % (tag, fragment))
        pattern = re.compile(b"".join(parts))
        index = pattern.groupindex
        at = {tag: index["t%d" % tag] if tag in captured else 0 for tag in capture}
        self._compiled += 1
        bkey = (msg.msg_type, msg.raw.count(b"\x01", 0, msg.body_end))
        bucket = self._buckets.get(bkey)
        if bucket is None:
            if len(self._buckets) >= self._max_buckets:
                del self._buckets[next(iter(self._buckets))]
            bucket = self._buckets[bkey] = []
        bucket.insert(0, (pattern, at))
        del bucket[BUCKET_SIZE:]


def _group_tags(*sections: Section) -> frozenset[int]:
    """Every NumInGroup tag of ``sections`` at any depth."""
    out: set[int] = set()
    todo = list(sections)
    while todo:
        s = todo.pop()
        out.update(s.groups)
        todo.extend(g.entry for g in s.groups.values())
    return frozenset(out)


def _value_patterns(fdef: FieldDef, options: ValidationOptions) -> tuple[bytes | None, bytes | None]:
    """(format pattern, enumeration pattern) of a field under ``options``; either may be None.
    Enumerated values that break the field's own format are dropped, so a value the enumeration
    accepts always passes the format check too."""
    own = None if fdef.tag in _DATA_VALUE_TAGS else TYPE_PATTERNS.get(fdef.type, ANY_VALUE)
    fmt = own if options.check_types else None
    enum = None
    if options.check_enums and fdef.values:
        values = sorted((v for v in fdef.values if own is None or re.fullmatch(own, v)),
                        key=lambda v: (-len(v), v))
        enum = _alternation(values)
        if fdef.type in _MULTI_TYPES:
            enum = enum + b"(?: " + enum + b")*"
    return fmt, enum


def _alternation(values: list[bytes]) -> bytes:
    if not values:
        return b"(?!)"
    if all(len(v) == 1 for v in values):            # one character class: faster
        return b"[" + b"".join(re.escape(v) for v in values) + b"]"
    return b"(?:" + b"|".join(re.escape(v) for v in values) + b")"


def parse_allowing_empty(raw: bytes) -> list[tuple[int, bytes]]:
    """:func:`codec.parse_fields` without its empty-value rule, for
    ``check_fields_have_values=False``: the same field and data-field reading otherwise."""
    out: list[tuple[int, bytes]] = []
    n = len(raw)
    p = 0
    data_tag, data_len = -1, 0
    while p < n:
        eq = raw.find(b"=", p, n)
        tag_b = raw[p:eq] if eq >= 0 else b""
        if not tag_b.isdigit() or tag_b[0] == 0x30 or len(tag_b) > T.MAX_TAG_DIGITS \
                or int(tag_b) > T.MAX_TAG:
            raise invalid_tag(tag_b)
        tag = int(tag_b)
        end = eq + 1 + data_len if tag == data_tag else raw.find(b"\x01", eq + 1, n)
        if end < 0 or end >= n or raw[end] != 1:
            raise FieldError(R.INCORRECT_DATA_FORMAT, tag, f"field {tag} is malformed")
        value = raw[eq + 1:end]
        out.append((tag, value))
        dt = T.DATA_LENGTH_TAGS.get(tag)
        length = count_value(value) if dt is not None else None
        data_tag, data_len = (dt, length) if dt is not None and length is not None else (-1, 0)
        p = end + 1
    return out
