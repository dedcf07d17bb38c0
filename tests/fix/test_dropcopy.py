"""Drop copy formats: the fix header rewrite and the ilink2 35=n RTRF envelope."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcgateway.fix import codec
from dcgateway.fix.codec import RawMessage
from dcgateway.fix.dropcopy import CopySource, build_copy, live_builder, unwrap_rtrf

SRC_HEADER = [(49, "ABC123N"), (56, "DCGW"), (34, 7), (50, "TRADER1"), (57, "G"),
              (142, "US,IL"), (52, "20261124-20:10:11.123")]
FILL = [(37, "ORD1"), (17, "EX1"), (150, "F"), (39, "2"), (1, "ACCT01"), (55, "ESZ6"), (54, 1)]
NOW = b"20261124-20:10:11.500"
LATER = b"20261124-21:00:00.000"


def decode_one(raw: bytes) -> RawMessage:
    items = codec.Decoder().feed(raw)
    assert len(items) == 1 and isinstance(items[0], RawMessage), items
    return items[0]


def source(header=SRC_HEADER, body=FILL, begin="FIX.4.2", msg_type="8") -> RawMessage:
    return decode_one(codec.encode_fields(begin, msg_type, header, body))


def fields_of(m: RawMessage, start: int, stop: int) -> list[tuple[int, bytes]]:
    return codec.parse_fields(m.raw, start, stop)


def header_fields(m: RawMessage) -> list[tuple[int, bytes]]:
    """Fields between 35 and the body, in order."""
    first = m.raw.index(b"\x0135=") + 1
    return fields_of(m, first, m.body_start)[1:]


def assert_valid(raw: bytes) -> RawMessage:
    """Decodes with a verified CheckSum and a BodyLength landing on 10=."""
    m = decode_one(raw)
    assert codec.checksum_ok(raw)
    nine = raw.index(b"\x019=") + 3
    soh = raw.index(b"\x01", nine)
    assert int(raw[nine:soh]) == raw.rindex(b"\x0110=") + 1 - (soh + 1)
    return m


def fix_copy(src: CopySource, **kw) -> bytes:
    return build_copy(src, "fix", b"FIX.4.4", b"DCGW", b"CLRFIX44", 42, NOW, **kw)


def ilink_copy(src: CopySource, **kw) -> bytes:
    return build_copy(src, "ilink2", b"FIX.4.2", b"DCGW", b"CLR001N", 9, NOW, **kw)


# ---------------------------------------------------------------------------------------------
# fix front end
# ---------------------------------------------------------------------------------------------

def test_fix_copy_header_and_body():
    orig = source()
    copy = assert_valid(fix_copy(CopySource(orig)))
    assert copy.begin_string == b"FIX.4.4"
    assert copy.msg_type == b"8"
    assert header_fields(copy) == [(49, b"DCGW"), (56, b"CLRFIX44"), (34, b"42"), (52, NOW),
                                   (115, b"ABC123N"), (116, b"TRADER1"),
                                   (122, b"20261124-20:10:11.123")]
    assert copy.body == orig.body
    assert copy.raw.endswith(orig.body + copy.raw[-7:])
    assert 43 not in copy.header


def test_fix_copy_without_sender_sub_id_has_no_116():
    orig = source(header=[f for f in SRC_HEADER if f[0] != 50])
    copy = assert_valid(fix_copy(CopySource(orig)))
    assert [t for t, _ in header_fields(copy)] == [49, 56, 34, 52, 115, 122]


def test_fix_copy_carries_the_sources_poss_resend():
    """97=Y: the source may have sent this information under another sequence number; so may
    the copy's target have received it (a clearing firm must not book it twice). Live and
    resent copies alike, and the live builder byte for byte."""
    orig = source(header=SRC_HEADER + [(97, "Y")])
    src = CopySource(orig)
    copy = assert_valid(fix_copy(src))
    assert header_fields(copy) == [(49, b"DCGW"), (56, b"CLRFIX44"), (34, b"42"), (52, NOW),
                                   (115, b"ABC123N"), (116, b"TRADER1"), (97, b"Y"),
                                   (122, b"20261124-20:10:11.123")]
    assert assert_valid(fix_copy(src, poss_dup=True)).header[97] == b"Y"
    st52 = b"52=" + NOW + b"\x01"
    live = live_builder("fix", b"FIX.4.4", b"DCGW", b"CLRFIX44")
    assert live(CopySource(orig), 42, st52, sum(st52)) == fix_copy(src)
    assert 97 not in assert_valid(fix_copy(CopySource(source(
        header=SRC_HEADER + [(97, "N")])))).header


def test_fix_copy_keeps_begin_string_of_the_target():
    copy = assert_valid(build_copy(CopySource(source(begin="FIX.4.4")), "fix", b"FIX.4.2",
                                   b"DCGW", b"T", 1, NOW))
    assert copy.begin_string == b"FIX.4.2"


def test_fix_retransmission_has_poss_dup_and_keeps_122():
    src = CopySource(source())
    copy = assert_valid(fix_copy(src, poss_dup=True))
    assert header_fields(copy) == [(49, b"DCGW"), (56, b"CLRFIX44"), (34, b"42"), (43, b"Y"),
                                   (52, NOW), (115, b"ABC123N"), (116, b"TRADER1"),
                                   (122, b"20261124-20:10:11.123")]
    assert copy.body == src.body


def test_fix_orig_sending_time_override():
    copy = assert_valid(fix_copy(CopySource(source()), poss_dup=True, orig_sending_time=LATER))
    assert copy.header[122] == LATER
    again = assert_valid(fix_copy(CopySource(source())))
    assert again.header[122] == b"20261124-20:10:11.123"


def test_source_retransmission_gives_its_own_orig_sending_time():
    """A source resend (43=Y) has 52 = resend time; 122 is when it was first sent."""
    hdr = [(49, "ABC123N"), (56, "DCGW"), (34, 7), (43, "Y"), (52, "20261124-20:30:00.000"),
           (122, "20261124-20:10:11.123")]
    copy = assert_valid(fix_copy(CopySource(source(header=hdr))))
    assert copy.header[122] == b"20261124-20:10:11.123"
    assert 43 not in copy.header


def test_copy_source_is_per_message_and_reused():
    src = CopySource(source())
    assert src.body_sum == sum(src.body)
    assert (src.sender_comp_id, src.sender_sub_id, src.sending_time) == (
        b"ABC123N", b"TRADER1", b"20261124-20:10:11.123")
    a = build_copy(src, "fix", b"FIX.4.4", b"DCGW", b"T1", 1, NOW)
    b = build_copy(src, "fix", b"FIX.4.4", b"DCGW", b"T2", 2, NOW)
    assert assert_valid(a).body == assert_valid(b).body == src.body
    assert src.fix_tail() is src.fix_tail()


def test_unknown_front_end():
    with pytest.raises(KeyError):
        build_copy(CopySource(source()), "fixml", b"FIX.4.4", b"DCGW", b"T", 1, NOW)


# ---------------------------------------------------------------------------------------------
# ilink2 front end
# ---------------------------------------------------------------------------------------------

def test_ilink2_copy_is_an_rtrf_envelope_around_the_original():
    orig = source()
    copy = assert_valid(ilink_copy(CopySource(orig)))
    assert copy.begin_string == b"FIX.4.2"
    assert copy.msg_type == b"n"
    assert header_fields(copy) == [
        (49, b"DCGW"), (56, b"CLR001N"), (34, b"9"), (52, NOW),
        (212, b"%d" % (len(orig.raw) + 13)), (213, b"<RTRF>" + orig.raw + b"</RTRF>")]
    assert int(copy.header[212]) == len(copy.header[213])
    inner = unwrap_rtrf(copy)
    assert inner == orig.raw
    assert decode_one(inner).raw == orig.raw and codec.checksum_ok(inner)


def test_ilink2_envelope_is_built_once_for_every_target():
    src = CopySource(source())
    a = ilink_copy(src)
    env, env_sum = src.envelope()
    b = build_copy(src, "ilink2", b"FIX.4.2", b"DCGW", b"CLR002N", 10, NOW)
    assert src.envelope()[0] is env and env_sum == sum(env)
    assert unwrap_rtrf(assert_valid(a)) == unwrap_rtrf(assert_valid(b)) == src.msg.raw


def test_ilink2_retransmission():
    copy = assert_valid(ilink_copy(CopySource(source()), poss_dup=True, orig_sending_time=NOW))
    assert [t for t, _ in header_fields(copy)] == [49, 56, 34, 43, 52, 122, 212, 213]
    assert copy.header[43] == b"Y" and copy.header[122] == NOW
    with pytest.raises(ValueError, match="orig_sending_time"):
        ilink_copy(CopySource(source()), poss_dup=True)


def test_ilink2_first_transmission_ignores_orig_sending_time():
    copy = assert_valid(ilink_copy(CopySource(source()), orig_sending_time=LATER))
    assert 122 not in copy.header and 43 not in copy.header


def test_unwrap_rtrf_refuses_what_is_not_an_rtrf_copy():
    with pytest.raises(ValueError, match="35=n"):
        unwrap_rtrf(source())
    bad = decode_one(codec.encode_fields("FIX.4.2", "n", [(49, "X"), (56, "Y"), (34, 1),
                                                          (52, NOW.decode()), (212, 5),
                                                          (213, "<xml>")]))
    with pytest.raises(ValueError, match="RTRF"):
        unwrap_rtrf(bad)
    missing = decode_one(codec.encode_fields("FIX.4.2", "n", [(49, "X"), (56, "Y"), (34, 1)]))
    with pytest.raises(ValueError, match="212"):
        unwrap_rtrf(missing)


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------

_value = st.binary(min_size=1, max_size=40).filter(lambda b: b"\x01" not in b)
_tag = st.integers(min_value=1, max_value=9999).filter(
    lambda t: t not in codec._HEADER_TAG_IDS.values() and t not in (10, 8, 9, 35)
    and t not in codec.T.DATA_LENGTH_TAGS and t not in codec.T.DATA_LENGTH_TAGS.values())
_plain_field = st.tuples(_tag, _value)
_data_field = st.binary(min_size=1, max_size=30).map(lambda b: [(95, len(b)), (96, b)])


@st.composite
def bodies(draw):
    fields = [(55, b"ESZ6")] + draw(st.lists(_plain_field, max_size=12))
    if draw(st.booleans()):                       # a RawData field whose value may hold SOH
        at = draw(st.integers(min_value=0, max_value=len(fields)))
        fields[at:at] = draw(_data_field)
    return fields


@settings(max_examples=200, deadline=None)
@given(body=bodies(), msg_type=st.sampled_from(["8", "D", "9", "BZ", "AB"]),
       begin=st.sampled_from(["FIX.4.2", "FIX.4.4"]), sub=st.sampled_from([None, "OP1"]),
       seq=st.integers(min_value=1, max_value=10**9), poss_dup=st.booleans())
def test_copies_are_valid_and_carry_the_body_unchanged(body, msg_type, begin, sub, seq, poss_dup):
    hdr = [(49, "ABC123N"), (56, "DCGW"), (34, 3)] + ([(50, sub)] if sub else []) + [
        (52, "20261124-20:10:11.123")]
    orig = decode_one(codec.encode_fields(begin, msg_type, hdr, body))
    src = CopySource(orig)
    fix = assert_valid(build_copy(src, "fix", b"FIX.4.4", b"DCGW", b"T", seq, NOW,
                                  poss_dup=poss_dup))
    assert fix.body == orig.body and fix.msg_type == orig.msg_type
    assert fix.header[34] == b"%d" % seq and fix.header.get(116) == (sub.encode() if sub else None)
    assert fix.fields()[-len(body) - 1:-1] == orig.fields()[-len(body) - 1:-1]
    ilink = assert_valid(build_copy(src, "ilink2", b"FIX.4.2", b"DCGW", b"T", seq, NOW,
                                    poss_dup=poss_dup, orig_sending_time=LATER))
    assert int(ilink.header[212]) == len(ilink.header[213])
    inner = unwrap_rtrf(ilink)
    assert inner == orig.raw and codec.checksum_ok(inner)
    assert (ilink.header.get(43) == b"Y") is poss_dup



@pytest.mark.parametrize("front_end", ["fix", "ilink2"])
def test_live_builder_is_byte_identical_to_build_copy(front_end):
    from dcgateway.fix import codec as _codec
    from dcgateway.fix.dropcopy import CopySource as _CS
    from dcgateway.fix.dropcopy import build_copy as _bc
    from dcgateway.fix.dropcopy import live_builder
    raw = _codec.encode_fields("FIX.4.2", "8", [(49, "ABC123N"), (56, "DCGW"), (34, 9), (50, "T1"),
                                                (52, "20261124-10:00:00.000")],
                               [(17, "E1"), (150, "F"), (1, "ACCT01"), (55, "ESZ6")])
    src = _CS(_codec.Decoder().feed(raw)[0])
    build = live_builder(front_end, b"FIX.4.4", b"DCGW", b"CLRFIX44")
    st52 = b"52=20261124-10:00:01.000\x01"
    for seq in (1, 57, 123456, 99999999):
        assert build(src, seq, st52, sum(st52)) == _bc(
            src, front_end, b"FIX.4.4", b"DCGW", b"CLRFIX44", seq, b"20261124-10:00:01.000")


@given(front_end=st.sampled_from(["fix", "ilink2"]), mt=st.sampled_from(["8", "D", "AB", "BZ", "9"]),
       body=st.lists(st.tuples(st.integers(1, 999).filter(lambda t: t not in (8, 9, 10, 34, 35, 43, 49, 50,
                                                                            52, 56, 90, 91, 95, 96, 97,
                                                                            115, 116, 122, 212, 213)),
                               st.text(alphabet="ABCXYZ0129.-", min_size=1, max_size=12)), max_size=10),
       seq=st.integers(1, 10**9), sub=st.sampled_from([None, "T1"]))
@settings(max_examples=200)
def test_live_builder_matches_build_copy_property(front_end, mt, body, seq, sub):
    from dcgateway.fix import codec as _codec
    from dcgateway.fix.dropcopy import CopySource as _CS
    from dcgateway.fix.dropcopy import build_copy as _bc
    from dcgateway.fix.dropcopy import live_builder
    header = [(49, "ABC123N"), (56, "DCGW"), (34, 3)] + ([(50, sub)] if sub else []) + \
        [(52, "20261124-10:00:00.000")]
    src = _CS(_codec.Decoder().feed(_codec.encode_fields("FIX.4.2", mt, header, body))[0])
    st52 = b"52=20261124-10:00:01.123\x01"
    got = live_builder(front_end, b"FIX.4.2", b"DCGW", b"CLR001N")(src, seq, st52, sum(st52))
    assert got == _bc(src, front_end, b"FIX.4.2", b"DCGW", b"CLR001N", seq, b"20261124-10:00:01.123")
    assert _codec.checksum_ok(got)
