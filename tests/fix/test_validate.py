"""Validator against the FIX Session Layer Test Cases, case 14 (14a-14i), its options, its
data-field handling, its bounded layout cache, and property tests: a message generated from the
dictionary validates, and each single mutation of it is caught with the right reason and tag,
by the slow path and by the compiled-layout fast path alike."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcgateway.fix import codec
from dcgateway.fix.codec import Decoder, RawMessage
from dcgateway.fix.dictionary import DataDictionary, load_dictionary
from dcgateway.fix.session_admin import Problem
from dcgateway.fix.validate import (
    MAX_LAYOUT_FIELDS,
    TEXTS,
    TYPE_PATTERNS,
    ValidationOptions,
    Validator,
)

from .fixgen import BAD, FRAMING, Generator, build, out_of_range

FIX42 = load_dictionary("FIX.4.2")
FIX44 = load_dictionary("FIX.4.4")
HEADER = [(49, "SRC1"), (56, "DCGW"), (34, 7), (52, "20261124-20:10:11.123")]
#: A FIX 4.2 fill: the benchmark's "typical ExecutionReport".
ER = [(37, "ORD1"), (11, "CL1"), (17, "EX1"), (20, 0), (150, "2"), (39, "2"), (1, "ACCT01"),
      (55, "ESZ6"), (207, "XCME"), (54, 1), (38, 100), (40, 2), (44, "4512.25"), (59, 0),
      (32, 100), (31, "4512.25"), (151, 0), (14, 100), (6, "4512.25"),
      (60, "20261124-20:10:11.123"), (58, "filled")]


def msg(body=ER, header=HEADER, mt=b"8", begin=b"FIX.4.2") -> RawMessage:
    [m] = Decoder().feed(codec.encode_fields(begin, mt, header, body))
    assert isinstance(m, RawMessage)
    return m


def replaced(tag, value, body=ER):
    return [(t, value if t == tag else v) for t, v in body]


def without(tag, fields):
    return [(t, v) for t, v in fields if t != tag]


def warm(v: Validator, *bodies, **kw) -> Validator:
    """Validate each body twice so its layout is compiled (the fast path is then in use)."""
    for body in bodies:
        for _ in range(2):
            assert v.validate(msg(body, **kw)) is None
    assert v.cached_layouts >= 1
    return v


@pytest.fixture(params=["slow", "fast"])
def v42(request) -> Validator:
    """A FIX 4.2 validator, cold (slow path) or with the typical ER's layout compiled."""
    v = Validator(FIX42)
    return warm(v, ER) if request.param == "fast" else v


def check(v: Validator, m: RawMessage, reason: int, tag: int | None) -> Problem:
    p = v.validate(m)
    assert p is not None, m
    assert (p.reason, p.tag) == (reason, tag), p
    assert p.text.startswith(TEXTS[reason])
    return p


def test_typical_execution_report_is_valid(v42):
    assert v42.validate(msg()) is None
    assert v42.validate(msg(replaced(38, "200.00"))) is None
    assert v42.validate(msg(replaced(44, "-1.5"))) is None


# ---------------------------------------------------------------------------------------------
# Test case 14
# ---------------------------------------------------------------------------------------------

def test_14a_undefined_tag_is_invalid_tag_number(v42):
    p = check(v42, msg(ER + [(4999, "x")]), 0, 4999)
    assert p.text == "Invalid tag number: 4999"


def test_14a_user_defined_tags_accepted_unless_switched_off(v42):
    assert v42.validate(msg(ER + [(9702, "1")])) is None
    strict = Validator(FIX42, ValidationOptions(allow_user_defined_fields=False))
    check(strict, msg(ER + [(9702, "1")]), 0, 9702)


def test_14b_required_tag_missing_from_body(v42):
    check(v42, msg(without(55, ER)), 1, 55)


def test_14b_required_tag_missing_from_header(v42):
    check(v42, msg(header=without(56, HEADER)), 1, 56)


def test_14b_required_tag_missing_from_group_entry():
    v = Validator(FIX44)
    header = HEADER
    sides = [(552, 1), (54, "1"), (37, "O1")]
    body = [(571, "T1"), (570, "N"), (32, 10), (31, "4512.25"), (55, "ESZ6"), (75, "20261124"),
            (60, "20261124-20:10:11")] + sides
    assert v.validate(msg(body, header, b"AE", b"FIX.4.4")) is None
    check(v, msg(body[:-1], header, b"AE", b"FIX.4.4"), 1, 37)


def test_14c_tag_not_defined_for_this_message_type(v42):
    p = check(v42, msg(ER + [(108, 30)]), 2, 108)
    assert p.text == "Tag not defined for this message type: 108"


def test_14d_tag_specified_without_a_value(v42):
    p = check(v42, msg(replaced(58, "")), 4, 58)
    assert p.text == "Tag specified without a value: 58"


def test_14e_value_out_of_range(v42):
    check(v42, msg(replaced(54, "Z")), 5, 54)
    check(v42, msg(replaced(150, "F")), 5, 150)                  # 4.4's Trade, not 4.2
    check(v42, msg(ER + [(18, "1 Q")]), 5, 18)                   # MultipleValueString token
    assert v42.validate(msg(ER + [(18, "1 G")])) is None


@pytest.mark.parametrize("tag,value", [
    (38, "+200.00"), (38, "1,000"), (44, "1.2.3"), (14, "abc"),     # Qty / Price
    (60, "20261124-25:10:11"), (60, "2026-11-24 20:10:11"),          # UTCTimestamp
    (54, "12"),                                                      # char
    (15, "usd"), (207, "XCMEX"),                                     # currency, exchange
    (18, "1  2"),                                                    # multiple value string
    (200, "2026-12"), (75, "20261332"),                              # MonthYear, LocalMktDate
    (59, "1.0"),                                                     # int (enumerated)
])
def test_14f_incorrect_data_format(v42, tag, value):
    body = replaced(tag, value) if any(t == tag for t, _ in ER) else ER + [(tag, value)]
    p = check(v42, msg(body), 6, tag)
    assert p.text == f"Incorrect data format for value: {tag}"


def test_14f_header_and_boolean_formats(v42):
    check(v42, msg(header=HEADER + [(43, "y")]), 6, 43)
    check(v42, msg(header=replaced(52, "20261124-20:10", HEADER)), 6, 52)
    check(v42, msg(header=replaced(34, "7a", HEADER)), 6, 34)


def test_14g_header_field_after_body_field(v42):
    header = without(52, HEADER)
    p = check(v42, msg(ER[:3] + [(52, "20261124-20:10:11.123")] + ER[3:], header), 14, 52)
    assert p.text.startswith("Tag specified out of required order: 52")


def test_14g_trailer_field_before_the_end(v42):
    check(v42, msg(ER[:3] + [(93, 3)] + ER[3:]), 14, 93)


def test_14h_tag_appears_more_than_once(v42):
    p = check(v42, msg(ER + [(55, "ESH7")]), 13, 55)
    assert p.text == "Tag appears more than once: 55"
    check(v42, msg(header=HEADER + [(50, "A"), (50, "B")]), 13, 50)


def test_14h_repeats_inside_groups_are_entries_not_duplicates(v42):
    body = ER + [(382, 2), (375, "B1"), (337, "T1"), (375, "B2"), (337, "T2")]
    assert v42.validate(msg(body)) is None
    dup = ER + [(382, 1), (375, "B1"), (337, "T1"), (337, "T2")]
    check(v42, msg(dup), 13, 337)


def test_14j_numingroup_count_does_not_match_entries(v42):
    entries = [(375, "B1"), (337, "T1"), (375, "B2")]
    assert v42.validate(msg(ER + [(382, 2)] + entries)) is None
    p = check(v42, msg(ER + [(382, 3)] + entries), 16, 382)
    assert "3 declared, 2 found" in p.text
    check(v42, msg(ER + [(382, 1)] + entries), 16, 382)


def test_14i_entry_not_starting_with_the_delimiter(v42):
    p = check(v42, msg(ER + [(382, 1), (337, "T1"), (375, "B1")]), 15, 337)
    assert "not the delimiter 375" in p.text
    lax = Validator(FIX42, ValidationOptions(check_group_field_order=False))
    p = check(lax, msg(ER + [(382, 1), (337, "T1"), (375, "B1")]), 16, 382)
    assert "not the delimiter 375" in p.text


def test_14i_entry_fields_out_of_order_are_rejected_with_373_15(v42):
    """FIX Vol. 1 "Repeating Groups": an entry's fields in the order the dictionary defines
    (ContraBroker 375, ContraTrader 337, ContraTradeQty 437...); the body's own order stays
    free (check_body_field_order is off)."""
    in_order = [(382, 1), (375, "B1"), (337, "T1"), (437, 5)]
    assert v42.validate(msg(ER + in_order)) is None
    p = check(v42, msg(ER + [(382, 1), (375, "B1"), (437, 5), (337, "T1")]), 15, 337)
    assert p.text.startswith("Repeating group fields out of order")
    assert v42.validate(msg(list(reversed(ER[2:])) + ER[:2] + in_order)) is None
    lax = Validator(FIX42, ValidationOptions(check_group_field_order=False))
    assert lax.validate(msg(ER + [(382, 1), (375, "B1"), (437, 5), (337, "T1")])) is None


def test_nested_groups_fix44():
    v = Validator(FIX44)
    base = [(37, "O1"), (17, "E1"), (150, "F"), (39, "2"), (54, "1"), (151, 0), (14, 10),
            (6, "1.5")]
    parties = [(453, 2), (448, "P1"), (447, "D"), (452, 1), (802, 2), (523, "S1"), (803, 1),
               (523, "S2"), (448, "P2"), (452, 3)]
    good = msg(base[:2] + parties + base[2:], mt=b"8", begin=b"FIX.4.4")
    assert v.validate(good) is None
    bad = msg(base[:2] + replaced(802, 3, parties) + base[2:], begin=b"FIX.4.4")
    check(v, bad, 16, 802)


def test_invalid_msg_type(v42):
    p = check(v42, msg(mt=b"ZZ"), 11, 35)
    assert "'ZZ' is not a FIX.4.2 MsgType" in p.text
    p = check(Validator(FIX42), msg([(571, "T1")], mt=b"AE"), 11, 35)   # 4.4's, not 4.2's
    assert "'AE' is not a FIX.4.2 MsgType" in p.text


def test_malformed_field_is_reported_by_the_codecs_reason():
    raw = codec.encode(b"FIX.4.2", b"8", codec.fields_bytes(HEADER),
                       codec.fields_bytes(ER) + b"x55=1\x01")
    [m] = Decoder().feed(raw)
    p = Validator(FIX42).validate(m)
    assert p.reason == 0 and p.tag is None and p.text.startswith("Invalid tag number")


# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------

def test_option_check_fields_have_values_off():
    v = Validator(FIX42, ValidationOptions(check_fields_have_values=False))
    warm(v, replaced(58, ""))
    assert v.validate(msg(replaced(58, ""))) is None
    assert v.validate(msg(replaced(58, "x"))) is None
    check(v, msg(replaced(38, "")  + [(55, "X")]), 13, 55)


def test_option_check_field_order_off():
    v = Validator(FIX42, ValidationOptions(check_field_order=False))
    header = without(52, HEADER)
    body = ER[:3] + [(52, "20261124-20:10:11.123")] + ER[3:]
    assert v.validate(msg(body, header)) is None
    check(v, msg(body + [(52, "20261124-20:10:11.123")], header), 13, 52)


def test_option_check_body_field_order_on():
    v = Validator(FIX42, ValidationOptions(check_body_field_order=True))
    ordered = sorted(ER, key=lambda f: FIX42.messages[b"8"].body.index[f[0]])
    assert v.validate(msg(ordered)) is None
    swapped = [ordered[1], ordered[0]] + ordered[2:]
    check(v, msg(swapped), 14, swapped[1][0])
    assert Validator(FIX42).validate(msg(swapped)) is None      # off by default


def test_option_enums_and_types_off():
    v = Validator(FIX42, ValidationOptions(check_enums=False))
    assert v.validate(msg(replaced(54, "Z"))) is None
    check(v, msg(replaced(54, "ZZ")), 6, 54)
    v = Validator(FIX42, ValidationOptions(check_types=False))
    assert v.validate(msg(replaced(38, "+200.00"))) is None
    check(v, msg(replaced(54, "Z")), 5, 54)


def test_option_unknown_fields_off():
    v = Validator(FIX42, ValidationOptions(check_unknown_fields=False))
    warm(v, ER + [(4999, "x")])
    assert v.validate(msg(ER + [(4999, "y")])) is None
    check(v, msg(ER + [(108, 30)]), 2, 108)                    # defined, not for 35=8


# ---------------------------------------------------------------------------------------------
# Data fields, and the layout cache
# ---------------------------------------------------------------------------------------------

def test_data_fields_are_read_by_length_and_never_cached():
    v = Validator(FIX42)
    data = "a\x0158=b\x01c=d"
    logon = [(98, 0), (108, 30), (95, len(data)), (96, data)]
    for _ in range(3):
        assert v.validate(msg(logon, mt=b"A")) is None
    assert v.cached_layouts == 0
    check(v, msg(logon[:2] + [(95, len(data) + 1), (96, data)], mt=b"A"), 6, 96)
    # a data field whose bytes look like the fields of a cached ER layout
    warm(v, ER)
    fake = codec.fields_bytes(ER)
    logon = [(98, 0), (108, 30), (95, len(fake)), (96, fake)]
    assert v.validate(msg(logon, mt=b"A")) is None
    check(v, msg(logon[:2] + [(95, len(fake) + 1), (96, fake + b"x")] + [(58, "")], mt=b"A"),
          4, 58)


def test_the_fast_path_is_used_for_a_repeated_layout():
    v = Validator(FIX42)
    assert v.validate(msg()) is None and v.cached_layouts == 0   # first sighting: slow path
    assert v.validate(msg()) is None and v.cached_layouts == 1   # second: compiled
    slow_runs = v._slow_runs
    for seq in range(3):
        assert v.validate(msg(header=replaced(34, 100 + seq, HEADER))) is None
    assert v._slow_runs == slow_runs


def test_a_message_a_compiled_layout_matched_reads_its_fields_without_a_data_field_scan():
    """A compiled layout never holds a data field, so the fast path marks the message's body
    plain; a message with a data field is never marked, and reads its fields the careful way."""
    v = Validator(FIX42)
    v.validate(msg())
    first = msg()
    assert v.validate(first) is None and v.cached_layouts == 1
    assert first._plain is None                      # matched the slow way, then compiled
    again = msg()
    assert v.validate(again) is None and again._plain is True
    assert again.get(150) == b"2" and again.get(58) == b"filled"
    with_data = msg(body=[*ER, (95, 3), (96, "a\x01b")])
    v.validate(with_data)
    assert with_data._plain is not True and with_data.get(96) == b"a\x01b"


def test_a_compiled_layout_captures_the_tags_its_owner_reads():
    """The tags a validator is asked to capture are read from the layout's match: their first
    occurrence in the body, the header's value for a header tag, ``default`` for a tag the layout
    does not hold; the rest are found in the message as before."""
    capture = frozenset({150, 20, 52, 58, 448})
    v = Validator(FIX44, capture=capture)
    parties = [(453, 2), (448, "FIRM1"), (447, "D"), (452, 1), (448, "FIRM2"), (447, "D"),
               (452, 3)]
    body = [(37, "O1"), (17, "E1"), (150, "F"), (39, "2"), *parties, (55, "ESZ6"), (54, 1),
            (38, 5), (32, 5), (31, "4512.25"), (151, 0), (14, 5), (6, "4512.25")]
    for _ in range(2):
        assert v.validate(msg(body, mt=b"8", begin=b"FIX.4.4")) is None
    m = msg(body, mt=b"8", begin=b"FIX.4.4")
    assert v.validate(m) is None and m._at is not None
    assert m._at[20] == 0 and m._at[58] == 0 and m._at[52] == 0     # not in this body
    assert m.get(150) == b"F" and m.get(448) == b"FIRM1"           # the first entry's
    assert m.get(52) == b"20261124-20:10:11.123"                    # the header's
    assert m.get(20) is None and m.get(58, b"none") == b"none"
    assert m.get(55) == b"ESZ6" and m.get(9999) is None             # not captured: searched
    changed = msg([(t, "7" if t == 38 else "O2" if t == 37 else v) for t, v in body],
                  mt=b"8", begin=b"FIX.4.4")
    assert v.validate(changed) is None and changed._at is m._at     # one layout, per message
    assert changed.get(37) == b"O2" and changed.get(150) == b"F"


def test_layout_cache_is_bounded():
    size = 16
    v = Validator(FIX42, ValidationOptions(layout_cache_size=size))
    rnd = random.Random(7)
    optional = [(1, "A"), (11, "C"), (58, "t"), (60, "20261124-20:10:11"), (40, 2), (59, 0),
                (44, "1.5"), (38, 5), (31, "1"), (32, 1), (207, "XCME"), (15, "USD")]
    required = [(37, "O"), (17, "E"), (20, 0), (150, "0"), (39, "0"), (55, "S"), (54, 1),
                (151, 1), (14, 0), (6, "0")]
    for _ in range(600):
        body = required + rnd.sample(optional, rnd.randint(0, len(optional)))
        for _ in range(2):
            assert v.validate(msg(body)) is None
    assert v.cached_layouts <= size
    assert len(v._seen) <= 4 * size


def test_huge_layouts_are_not_compiled():
    v = Validator(FIX42)
    body = ER + [(5000 + i, "x") for i in range(MAX_LAYOUT_FIELDS)]
    for _ in range(3):
        assert v.validate(msg(body)) is None
    assert v.cached_layouts == 0


def test_layout_cache_off():
    v = Validator(FIX42, ValidationOptions(layout_cache_size=0))
    for _ in range(3):
        assert v.validate(msg()) is None
    assert v.cached_layouts == 0


def test_check_body_for_translated_copies():
    v = Validator(FIX42)
    assert v.check_body(b"8", [(t, b"%s" % (x if isinstance(x, bytes) else str(x).encode())) for t, x in ER]) is None
    assert v.check_body(b"8", [(52, b"x")]).reason == 14
    assert v.check_body(b"ZZ", []).reason == 11


# ---------------------------------------------------------------------------------------------
# Property tests: generated messages and single mutations
# ---------------------------------------------------------------------------------------------

MSG_TYPES = {
    "FIX.4.2": [b"8", b"9", b"D", b"F", b"G", b"0", b"1", b"2", b"4", b"5", b"j", b"J"],
    "FIX.4.4": [b"8", b"9", b"D", b"F", b"G", b"AE", b"AB", b"0", b"1", b"j", b"J"],
}
DICTS = {"FIX.4.2": FIX42, "FIX.4.4": FIX44}
SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def generated(data) -> tuple[DataDictionary, bytes, list, list, random.Random]:
    name = data.draw(st.sampled_from(sorted(DICTS)))
    dd = DICTS[name]
    mt = data.draw(st.sampled_from(MSG_TYPES[name]))
    rnd = data.draw(st.randoms(use_true_random=False))
    header, body = Generator(dd, rnd).message(mt)
    return dd, mt, header, body, rnd


def both_paths(dd: DataDictionary, mt: bytes, header, body, mutated_header, mutated_body):
    """(cold result, result after the valid message's layout was compiled)."""
    cold = Validator(dd).validate(build(dd, mt, mutated_header, mutated_body))
    v = Validator(dd)
    for _ in range(2):
        assert v.validate(build(dd, mt, header, body)) is None
    hot = v.validate(build(dd, mt, mutated_header, mutated_body))
    return cold, hot


@SETTINGS
@given(st.data())
def test_generated_messages_validate(data):
    dd, mt, header, body, _ = generated(data)
    v = Validator(dd)
    for _ in range(3):                           # cold, learning, compiled
        assert v.validate(build(dd, mt, header, body)) is None
    big = 3 + len(header) + len(body) + 1 > MAX_LAYOUT_FIELDS   # too big to be compiled
    assert v.cached_layouts == (0 if big else 1)


def _top_level(dd, mt, body):
    """Indexes of body fields that are top-level, non-group fields."""
    sec = dd.messages[mt].body
    out, i = [], 0
    while i < len(body):
        tag = body[i][0]
        if tag in sec.groups:
            i += 1
            while i < len(body) and body[i][0] not in sec.index:
                i += 1
            continue
        out.append(i)
        i += 1
    return out


def _mutations(dd: DataDictionary, mt: bytes, header, body):
    """Every single mutation this message allows, as (name, header, body, reason, tag)."""
    sec = dd.messages[mt].body
    top = _top_level(dd, mt, body)
    for i in top:
        tag, value = body[i]
        if tag in sec.required:
            yield "removed", header, body[:i] + body[i + 1:], 1, tag
        yield "repeated", header, body[:i + 1] + [(tag, value)] + body[i + 1:], 13, tag
    for j, (tag, _) in enumerate(header):
        if body:
            moved = body[:1] + [header[j]] + body[1:]
            yield "moved after body", header[:j] + header[j + 1:], moved, 14, tag
        yield "emptied header", header[:j] + [(tag, b"")] + header[j + 1:], body, 4, tag
    counts = set()
    for d in [sec, *_all_groups(sec)]:
        counts |= set(d.groups)
    for i, (tag, value) in enumerate(body):
        f = dd.fields[tag]
        yield "emptied", header, body[:i] + [(tag, b"")] + body[i + 1:], 4, tag
        if tag in counts:
            for delta in (1, -1):
                n = b"%d" % (int(value) + delta)
                # NoSides (552) is enumerated in FIX 4.4 (1 or 2): a count outside that is 373=5
                reason = 5 if f.values and n not in f.values else 16
                yield "count off by one", header, body[:i] + [(tag, n)] + body[i + 1:], reason, tag
            continue
        bad = BAD.get(f.type)
        if bad is not None and tag not in FRAMING:
            yield "wrong format", header, body[:i] + [(tag, bad)] + body[i + 1:], 6, tag
        off = out_of_range(f)
        if off is not None:
            yield "out of range", header, body[:i] + [(tag, off)] + body[i + 1:], 5, tag


def _all_groups(sec):
    for g in sec.groups.values():
        yield g.entry
        yield from _all_groups(g.entry)


@SETTINGS
@given(st.data())
def test_each_single_mutation_is_caught(data):
    dd, mt, header, body, _ = generated(data)
    header = [(t, v if isinstance(v, bytes) else str(v).encode()) for t, v in header]
    mutations = list(_mutations(dd, mt, header, body))
    if not mutations:
        return
    name, mheader, mbody, reason, tag = data.draw(st.sampled_from(mutations))
    cold, hot = both_paths(dd, mt, header, body, mheader, mbody)
    assert cold is not None and (cold.reason, cold.tag) == (reason, tag), (name, cold)
    assert hot == cold, (name, hot, cold)


@SETTINGS
@given(st.data())
def test_captured_tags_read_as_the_message_holds_them(data):
    """Whatever the layout, the validator's options and whichever tags are captured (header,
    body, inside a group, absent), RawMessage.get answers as it does for the same message never
    validated; a second validator capturing other tags leaves the answers as they were."""
    dd, mt, header, body, rnd = generated(data)
    tags = sorted({t for t, _ in header} | {t for t, _ in body} | {58, 9999})
    def some_tags() -> frozenset[int]:
        return frozenset(rnd.sample(tags, min(len(tags), rnd.randint(1, 6))))
    options = ValidationOptions(check_fields_have_values=data.draw(st.booleans()),
                                check_enums=data.draw(st.booleans()),
                                check_types=data.draw(st.booleans()),
                                layout_cache_size=data.draw(st.sampled_from([4, 8, 256])))
    first, second = Validator(dd, options, some_tags()), Validator(dd, options, some_tags())
    for v in (first, second):
        for _ in range(2):
            assert v.validate(build(dd, mt, header, body)) is None
    m = build(dd, mt, header, body)
    fresh = build(dd, mt, header, body)
    for v in (first, second):
        assert v.validate(m) is None
        assert (m._at is not None) == (v.cached_layouts == 1)
        for t in [*tags, *first.capture, *second.capture]:
            assert m.get(t) == fresh.get(t), t
            assert m.get(t, b"?") == fresh.get(t, b"?"), t


def _float_ok(s: bytes) -> bool:
    """FIX Vol. 1 "float": digits with an optional decimal point and an optional "-" sign."""
    body = s[1:] if s.startswith(b"-") else s
    return (body.count(b".") <= 1 and any(c in b"0123456789" for c in body)
            and all(c in b"0123456789." for c in body))


def _timestamp_ok(s: bytes) -> bool:
    """FIX "UTCTimestamp": YYYYMMDD-HH:MM:SS, optionally .s to nine digits (60: a leap second)."""
    head, dot, frac = s.partition(b".")
    if dot and not (1 <= len(frac) <= 9 and frac.isdigit()):
        return False
    if len(head) != 17 or head[8:9] != b"-" or head[11:12] != b":" or head[14:15] != b":":
        return False
    parts = (head[0:4], head[4:6], head[6:8], head[9:11], head[12:14], head[15:17])
    if not all(p.isdigit() for p in parts):
        return False
    _, month, day, hour, minute, second = map(int, parts)
    return 1 <= month <= 12 and 1 <= day <= 31 and hour <= 23 and minute <= 59 and second <= 60


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=8).map(lambda b: bytes(b"-.0123456789+e"[c % 14] for c in b)))
def test_the_float_pattern_is_fix_float(value):
    assert (re.fullmatch(TYPE_PATTERNS["FLOAT"], value) is not None) == _float_ok(value)


@settings(max_examples=3000, deadline=None)
@given(st.tuples(st.integers(0, 9999), st.integers(0, 19), st.integers(0, 39),
                 st.integers(0, 29), st.integers(0, 69), st.integers(0, 69),
                 st.sampled_from(["", ".", ".0", ".123", ".123456789", ".1234567890", ".x"]),
                 st.sampled_from(["", "garble"])))
def test_the_timestamp_pattern_is_fix_utctimestamp(t):
    year, month, day, hour, minute, second, frac, garble = t
    value = b"%04d%02d%02d-%02d:%02d:%02d%s" % (year, month, day, hour, minute, second,
                                                frac.encode())
    if garble:
        value = value[:len(value) // 2] + b"x" + value[len(value) // 2 + 1:]
    assert (re.fullmatch(TYPE_PATTERNS["UTCTIMESTAMP"], value) is not None) == _timestamp_ok(value)
