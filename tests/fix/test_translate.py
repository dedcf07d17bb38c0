"""FIX 4.2 <-> 4.4 copies: the ExecutionReport mapping (ExecTransType folded into ExecType and
back), other messages copied only when the target defines every field, and every translated body
validating against the target dictionary as a whole message."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcgateway.fix.dictionary import DataDictionary, load_dictionary
from dcgateway.fix.translate import (
    Translator,
    Untranslatable,
    check_translation,
    er_42_to_44,
    fill_exec_type,
    translate_body,
)
from dcgateway.fix.validate import Validator

from .fixgen import Generator, build

FIX42 = load_dictionary("FIX.4.2")
FIX44 = load_dictionary("FIX.4.4")
HEADER = [(49, b"DCGW"), (56, b"CLEAR1"), (34, b"9"), (52, b"20261124-20:10:11.123")]
TO44 = Translator(FIX42, FIX44)
TO42 = Translator(FIX44, FIX42)


def b(fields):
    return [(t, v if isinstance(v, bytes) else str(v).encode()) for t, v in fields]


def er42(trans, exec_type, status="2", extra=()):
    return b([(37, "O1"), (11, "C1"), (17, "E1"), (20, trans), (19, "E0"), (150, exec_type),
              (39, status), (55, "ESZ6"), (54, 1), (38, 100), (32, 100), (31, "4512.25"),
              (151, 0 if status == "2" else 50), (14, 100 if status == "2" else 50),
              (6, "4512.25"), *extra])


def er44(exec_type, status="2", leaves=0, cum=100, qty=100, extra=()):
    return b([(37, "O1"), (11, "C1"), (17, "E1"), (150, exec_type), (39, status), (55, "ESZ6"),
              (54, 1), (38, qty), (151, leaves), (14, cum), (6, "4512.25"), *extra])


def valid_in(dd: DataDictionary, mt: bytes, body) -> None:
    """The body, under a standard header, is a valid message of ``dd``."""
    p = Validator(dd).validate(build(dd, mt, HEADER, body))
    assert p is None, (p, body)


def value(fields, tag):
    return dict(fields).get(tag)


@pytest.mark.parametrize("trans,exec_type,expected", [
    ("0", "2", b"F"), ("0", "1", b"F"), ("0", "0", b"0"), ("0", "4", b"4"),
    ("1", "2", b"H"), ("2", "1", b"G"), ("3", "0", b"I"),
])
def test_execution_report_42_to_44(trans, exec_type, expected):
    out = TO44.translate(b"8", er42(trans, exec_type))
    assert not isinstance(out, Untranslatable), out
    assert value(out, 150) == expected and 20 not in dict(out)
    valid_in(FIX44, b"8", out)


@pytest.mark.parametrize("exec_type,status,leaves,cum,trans,expected", [
    ("F", "1", 50, 50, b"0", b"1"),          # partially filled
    ("F", "2", 0, 100, b"0", b"2"),          # filled
    ("F", "4", 0, 100, b"0", b"2"),          # the fill that completed, then a cancel status
    ("F", "4", 0, 60, b"0", b"1"),           # IOC: partly filled, rest cancelled
    ("H", "1", 50, 50, b"1", b"1"),          # trade cancel
    ("G", "2", 0, 100, b"2", b"2"),          # trade correct
    ("I", "1", 50, 50, b"3", b"1"),          # order status: ExecType = OrdStatus
    ("0", "0", 100, 0, b"0", b"0"),          # anything else: ExecTransType New, same ExecType
])
def test_execution_report_44_to_42(exec_type, status, leaves, cum, trans, expected):
    out = TO42.translate(b"8", er44(exec_type, status, leaves, cum))
    assert not isinstance(out, Untranslatable), out
    assert value(out, 20) == trans and value(out, 150) == expected
    tags = [t for t, _ in out]
    assert tags.index(20) == tags.index(150) - 1              # FIX 4.2 order: 17, 20, 19, 150
    valid_in(FIX42, b"8", out)


def test_exec_trans_type_goes_before_exec_ref_id():
    out = TO42.translate(b"8", er44("G", extra=b([(19, "E0")])))
    tags = [t for t, _ in out]
    assert tags.index(20) == tags.index(19) - 1
    valid_in(FIX42, b"8", out)


def test_fill_exec_type_reads_ord_status_then_quantities():
    assert fill_exec_type(b([(39, "2")])) == b"2"
    assert fill_exec_type(b([(39, "1"), (151, 0)])) == b"1"
    assert fill_exec_type(b([(39, "4"), (151, 0)])) == b"2"       # no OrderQty: leaves decide
    assert fill_exec_type(b([(39, "4"), (151, 0), (14, 5), (38, 10)])) == b"1"


def test_field_not_in_target_is_refused_naming_the_tag():
    out = TO44.translate(b"8", er42("0", "2", extra=b([(76, "BRKR")])))  # ExecBroker: gone in 4.4
    assert isinstance(out, Untranslatable) and out.tag == 76
    assert out.reason == "FIX.4.4: Invalid tag number: 76"      # no tag 76 in FIX 4.4 at all


def test_required_target_field_missing_is_refused():
    out = TO42.translate(b"8", [(t, v) for t, v in er44("F") if t != 55])
    assert isinstance(out, Untranslatable) and out.tag == 55
    assert "Required tag missing: 55" in out.reason


def test_replaced_becomes_the_orders_own_state_in_44():
    """FIX 4.2 OrdStatus 5 (Replaced) is not a FIX 4.4 value: the order's state instead."""
    out = TO44.translate(b"8", er42("0", "5", status="5"))       # CumQty 50, LeavesQty 50
    assert not isinstance(out, Untranslatable) and dict(out)[39] == b"1"
    valid_in(TO44.target, b"8", out)


def test_value_not_valid_in_target_is_refused():
    out = TO44.translate(b"8", er42("0", "0", status="Z"))       # no such OrdStatus in 4.4
    assert isinstance(out, Untranslatable) and out.tag == 39


def test_unknown_exec_trans_type_is_refused():
    out = er_42_to_44(er42("9", "2"))
    assert isinstance(out, Untranslatable) and out.tag == 20


def test_msg_type_not_in_target():
    out = TO42.translate(b"AE", b([(571, "T1")]))
    assert isinstance(out, Untranslatable) and out.tag == 35


def test_other_messages_copied_when_every_field_is_defined():
    cxl_rej = b([(37, "O1"), (11, "C2"), (41, "C1"), (39, "0"), (434, "1"), (58, "late")])
    for tr, dd in ((TO44, FIX44), (TO42, FIX42)):
        out = tr.translate(b"9", cxl_rej)
        assert out == cxl_rej
        valid_in(dd, b"9", out)
    out = TO44.translate(b"9", cxl_rej + b([(109, "CLIENT")]))      # ClientID: 4.2 only
    assert isinstance(out, Untranslatable) and out.tag == 109
    out = TO42.translate(b"9", cxl_rej + b([(75, "20261124")]))      # TradeDate: not on 4.2's 9
    assert isinstance(out, Untranslatable) and out.tag == 75
    assert out.reason == "FIX.4.2: Tag not defined for this message type: 75"


def test_translate_body_function():
    body = er42("0", "2")
    assert translate_body(body, b"8", FIX42, FIX42) == body
    out = translate_body(body, b"8", FIX42, FIX44)
    assert not isinstance(out, Untranslatable) and value(out, 150) == b"F"


# ---------------------------------------------------------------------------------------------
# check-config: can a group's copies always be made valid?
# ---------------------------------------------------------------------------------------------

def test_check_translation_same_dictionary_always():
    r = check_translation(FIX42, FIX42, [b"8", b"9", b"D"])
    assert r.possible and r.always and r.problems == ()


def test_check_translation_42_to_44_possible_not_always():
    r = check_translation(FIX42, FIX44, [b"8", b"9"])
    assert r.possible and not r.always
    assert "35=8: tag 76 is not defined for this MsgType in FIX.4.4" in r.problems
    assert not any(p.startswith(("35=8: tag 20 ", "35=8: tag 150 "))
                   for p in r.problems)                          # the mapping handles those


def test_check_translation_44_to_42_names_required_fields():
    r = check_translation(FIX44, FIX42, [b"8"])
    assert r.possible and not r.always
    assert ("35=8: tag 55 is required in FIX.4.2 but optional or absent in the source"
            in r.problems)
    assert not any(" tag 20 " in p for p in r.problems)             # added by the mapping


def test_check_translation_impossible_msg_type():
    r = check_translation(FIX44, FIX42, [b"8", b"AE"])
    assert not r.possible and not r.always
    assert r.problems[0] == "35=AE: not defined in the FIX.4.2 dictionary"


# ---------------------------------------------------------------------------------------------
# Property: a translated copy is a valid target message, or refused naming a tag
# ---------------------------------------------------------------------------------------------

PAIRS = [(FIX42, FIX44, TO44), (FIX44, FIX42, TO42)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PAIRS), st.sampled_from([b"8", b"9", b"D", b"F", b"G"]),
       st.randoms(use_true_random=False))
def test_translation_validates_or_names_a_tag(pair, mt, rnd):
    source, target, tr = pair
    _, body = Generator(source, rnd).message(mt)
    assert Validator(source).validate(build(source, mt, HEADER, body)) is None
    out = tr.translate(mt, body)
    if isinstance(out, Untranslatable):
        assert out.tag is not None and out.reason.startswith(target.begin_string.decode())
    else:
        valid_in(target, mt, out)


def _portable_42_er(rnd: random.Random):
    """A generated FIX 4.2 ER cut down to what FIX 4.4 can carry: top-level fields 4.4's ER
    defines, with values 4.4 accepts (OrdStatus Replaced is not one)."""
    _, body = Generator(FIX42, rnd).message(b"8")
    er44_def = FIX44.messages[b"8"].body
    out = []
    for tag, val in body:
        if tag == 39 and val == b"5":
            val = b"0"
        f44 = FIX44.fields.get(tag)
        if tag != 20 and tag not in er44_def.tags:
            continue
        if tag not in (20, 150) and f44 is not None and f44.values and not (
                set(val.split()) <= f44.values):
            continue
        out.append((tag, val))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False))
def test_portable_execution_reports_always_translate(rnd):
    body = _portable_42_er(rnd)
    assert Validator(FIX42).validate(build(FIX42, b"8", HEADER, body)) is None
    out = TO44.translate(b"8", body)
    assert not isinstance(out, Untranslatable), out
    valid_in(FIX44, b"8", out)
    back = TO42.translate(b"8", out)
    assert not isinstance(back, Untranslatable), back
    valid_in(FIX42, b"8", back)
