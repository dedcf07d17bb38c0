"""Codec: framing by BodyLength, CheckSum verification, size cap, resync, encoding."""

from __future__ import annotations

import re

import pytest
import simplefix
from hypothesis import given, settings
from hypothesis import strategies as st

from dcgateway.fix import codec
from dcgateway.fix import tags as T
from dcgateway.fix.codec import DecodeError, Decoder, RawMessage

HEADER = [(49, "ABC123N"), (56, "DCGW"), (34, 7), (50, "TRADER1"), (52, "20261124-20:10:11.123")]
BODY = [(37, "ORD1"), (17, "EX1"), (150, "F"), (39, "2"), (1, "ACCT01"), (55, "ESZ6"), (54, 1)]


def sample(seq: int = 7, body=BODY, msg_type: str = "8") -> bytes:
    header = [(t, seq if t == 34 else v) for t, v in HEADER]
    return codec.encode_fields("FIX.4.2", msg_type, header, body)


def messages(items):
    return [i for i in items if isinstance(i, RawMessage)]


def errors(items):
    return [i for i in items if isinstance(i, DecodeError)]


def test_encode_matches_simplefix_and_fix_rules():
    raw = sample()
    ref = simplefix.FixMessage()
    ref.append_pair(8, "FIX.4.2")
    ref.append_pair(35, "8")
    for t, v in HEADER + BODY:
        ref.append_pair(t, v)
    assert raw == ref.encode()
    assert codec.checksum_ok(raw)


def test_decode_gives_header_body_and_fields():
    raw = sample()
    [m] = Decoder().feed(raw)
    assert m.raw == raw
    assert m.begin_string == b"FIX.4.2" and m.msg_type == b"8"
    assert m.header[T.SENDER_COMP_ID] == b"ABC123N" and m.seq_num == 7
    assert m.body == codec.fields_bytes(BODY)
    assert m.get(T.SYMBOL) == b"ESZ6" and m.get(T.SENDER_SUB_ID) == b"TRADER1"
    assert m.get(9999) is None
    assert [t for t, _ in m.fields()][:3] == [8, 9, 35]


def test_body_value_inside_data_field_is_not_mistaken_for_a_field():
    # 95/96 RawData may contain SOH and text that looks like "55=..."; get() must skip it.
    data = b"x\x0155=FAKE\x01y"
    body = codec.fields_bytes([(95, len(data))]) + b"96=" + data + b"\x01" + codec.fields_bytes([(55, "REAL")])
    raw = codec.encode(b"FIX.4.2", b"8", codec.fields_bytes(HEADER), body)
    [m] = Decoder().feed(raw)
    assert m.get(96) == data
    assert m.get(55) == b"REAL"


def test_bad_checksum_is_reported_and_skipped_then_next_message_decodes():
    good = sample(seq=8)
    bad = bytearray(sample())
    bad[-4:-1] = b"%03d" % ((int(bad[-4:-1]) + 1) % 256)
    items = Decoder().feed(bytes(bad) + good)
    assert [e.kind for e in errors(items)] == ["checksum"]
    assert [m.seq_num for m in messages(items)] == [8]


def test_garbage_before_and_between_messages_is_skipped():
    a, b = sample(seq=1), sample(seq=2)
    items = Decoder().feed(b"\x00noise" + a + b"junk junk" + b)
    assert [m.seq_num for m in messages(items)] == [1, 2]
    assert [e.kind for e in errors(items)] == ["garbage", "garbage"]
    assert sum(e.discarded for e in errors(items)) == len(b"\x00noise") + len(b"junk junk")


def test_wrong_body_length_resyncs_on_next_message():
    # BodyLength too large: the decoder waits for that many bytes, then finds no 10= there and
    # resyncs on the next "8=FIX" after the bad frame's start, so every later message survives.
    bad = sample(seq=1).replace(b"\x019=", b"\x019=1", 1)
    assert int(bad.split(b"\x019=")[1].split(b"\x01")[0]) > 1000
    d = Decoder()
    items = d.feed(bad) + d.feed(b"".join(sample(seq=s) for s in range(2, 12)))
    assert [m.seq_num for m in messages(items)] == list(range(2, 12))
    assert errors(items)[0].kind == "garbled"
    # BodyLength too small: 10= is not where it says; resync at once.
    short = sample(seq=1).replace(b"\x019=", b"\x019=", 1)
    n = int(short.split(b"\x019=")[1].split(b"\x01")[0])
    short = short.replace(b"\x019=%d" % n, b"\x019=%d" % (n - 5), 1)
    items = Decoder().feed(short + sample(seq=2))
    assert [m.seq_num for m in messages(items)] == [2]


def test_msgtype_not_third_field_is_garbled():
    raw = codec.encode(b"FIX.4.2", b"0", b"")
    # swap 35 to after 49: build by hand with correct length and checksum
    body = b"49=X\x0135=0\x01"
    head = b"8=FIX.4.2\x019=%d\x01" % len(body)
    cs = sum(head + body) % 256
    items = Decoder().feed(head + body + b"10=%03d\x01" % cs + raw)
    assert errors(items)[0].kind == "garbled"
    assert len(messages(items)) == 1


def test_oversized_body_length_is_not_buffered():
    d = Decoder(max_size=1024)
    huge = b"8=FIX.4.2\x019=99999999\x0135=D\x01" + b"A" * 2000
    items = d.feed(huge)
    assert errors(items) and errors(items)[0].kind in {"too_large", "garbled"}
    assert d.buffered < 1024
    items = d.feed(sample(seq=3))
    assert [m.seq_num for m in messages(items)] == [3]


def test_size_cap_rejects_frame_one_byte_over():
    raw = sample()
    assert messages(Decoder(max_size=len(raw)).feed(raw))
    items = Decoder(max_size=len(raw) - 1).feed(raw)
    assert not messages(items) and errors(items)[0].kind == "too_large"


def test_duplicate_header_tag_is_flagged():
    raw = codec.encode_fields("FIX.4.2", "0", HEADER + [(49, "OTHER")])
    [m] = Decoder().feed(raw)
    assert m.header_error == 49


def test_encode_with_precomputed_body_sum_equals_plain_encode():
    body = codec.fields_bytes(BODY)
    hdr = codec.fields_bytes(HEADER)
    assert codec.encode(b"FIX.4.4", b"8", hdr, body, sum(body)) == codec.encode(b"FIX.4.4", b"8", hdr, body)


def test_field_errors_carry_reject_reason():
    raw = codec.encode(b"FIX.4.2", b"8", codec.fields_bytes(HEADER), b"55=\x01")
    [m] = Decoder().feed(raw)
    try:
        m.fields()
    except codec.FieldError as e:
        assert e.reason == T.SessionRejectReason.TAG_WITHOUT_VALUE and e.tag == 55
    else:
        raise AssertionError("empty value accepted")


# ------------------------------------------------------------------ properties (hypothesis)

values = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="="),
                 min_size=1, max_size=30)
body_tags = st.integers(min_value=1, max_value=9999).filter(
    lambda t: t not in T.HEADER_TAGS and t not in T.DATA_LENGTH_TAGS and t not in T.DATA_LENGTH_TAGS.values()
    and t != 10)
bodies = st.lists(st.tuples(body_tags, values), max_size=12)
msg_types = st.sampled_from(["0", "8", "D", "AB", "BZ", "j"])


@given(msg_type=msg_types, body=bodies, seq=st.integers(min_value=1, max_value=10**9))
def test_roundtrip(msg_type, body, seq):
    raw = codec.encode_fields("FIX.4.4", msg_type, [(49, "S"), (56, "T"), (34, seq)], body)
    [m] = Decoder().feed(raw)
    assert m.msg_type == msg_type.encode()
    assert m.seq_num == seq
    assert m.body == codec.fields_bytes(body)
    assert m.fields()[3:-1] == [(49, b"S"), (56, b"T"), (34, b"%d" % seq)] + [(t, v.encode()) for t, v in body]


@given(st.binary(max_size=3000))
@settings(max_examples=300)
def test_arbitrary_bytes_never_raise_and_stay_bounded(data):
    d = Decoder(max_size=1024)
    for i in range(0, len(data), 97):
        for item in d.feed(data[i:i + 97]):
            if isinstance(item, RawMessage):
                assert codec.checksum_ok(item.raw)
    assert d.buffered <= 1024


@given(st.lists(st.tuples(msg_types, bodies), min_size=1, max_size=5), st.data())
@settings(max_examples=100)
def test_split_at_every_boundary_gives_same_messages(specs, data):
    stream = b"".join(codec.encode_fields("FIX.4.2", mt, [(49, "S"), (56, "T"), (34, i + 1)], b)
                      for i, (mt, b) in enumerate(specs))
    expected = [m.raw for m in Decoder().feed(stream)]
    assert len(expected) == len(specs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    d = Decoder()
    got = []
    prev = 0
    for c in cuts + [len(stream)]:
        got += [m.raw for m in d.feed(stream[prev:c]) if isinstance(m, RawMessage)]
        prev = c
    assert got == expected


def test_every_single_split_point():
    stream = sample(seq=1) + sample(seq=2)
    for cut in range(len(stream) + 1):
        d = Decoder()
        items = d.feed(stream[:cut]) + d.feed(stream[cut:])
        assert [m.seq_num for m in messages(items)] == [1, 2], cut
        assert not errors(items)


@given(st.binary(min_size=1, max_size=40), st.integers(0, 2000))
@settings(max_examples=200)
def test_noise_inserted_never_loses_following_message(noise, where):
    good = sample(seq=5)
    stream = noise.replace(b"8=FIX", b"8=FIY") + good
    items = Decoder().feed(stream)
    assert messages(items) and messages(items)[-1].raw == good


@given(st.binary(max_size=3000), st.data())
def test_byte_sum_is_sum_for_any_bytes(data, draw):
    assert codec.byte_sum(data) == sum(data)
    stop = draw.draw(st.integers(0, len(data)))
    assert codec.byte_sum(data, stop) == sum(data[:stop])


def test_byte_sum_at_chunk_edges_with_high_bytes():
    # 256 bytes of 0xFF is the largest chunk sum Adler-32 must hold without wrapping at 65521
    for n in (0, 1, 255, 256, 257, 511, 512, 513, 70_000):
        data = b"\xff" * n
        assert codec.byte_sum(data) == 255 * n
        assert codec.byte_sum(data, n // 2) == 255 * (n // 2)


def _plain_message(body: bytes) -> RawMessage:
    raw = codec.encode(b"FIX.4.4", b"8", b"49=A\x0156=B\x0134=1\x0152=20261124-20:10:11.123\x01",
                       body)
    items = Decoder().feed(raw)
    assert isinstance(items[0], RawMessage)
    return items[0]


def test_session_screen_flags_every_data_length_tag_before_get_trusts_it():
    """body_suspect marks a body "plain" for RawMessage.get (no data field, so one find is
    enough); that is sound only if the screen catches every data-length tag."""
    from dcgateway.fix.session_admin import body_suspect
    for length_tag, data_tag in T.DATA_LENGTH_TAGS.items():
        msg = _plain_message(b"1=ACCT\x01%d=5\x01%d=a\x0155=\x0155=X\x01" % (length_tag, data_tag))
        assert body_suspect(msg), length_tag
        # not marked plain: get() reads the data field as one value, not its inner "55="
        assert msg.get(55) == b"X"
    msg = _plain_message(b"1=ACCT\x0155=ESZ6\x01")
    assert not body_suspect(msg)
    assert msg._plain is True and msg.get(55) == b"ESZ6"


# ----------------------------------------- the decoder's fast path agrees with the careful one

header_extra = st.lists(st.one_of(
    st.tuples(st.sampled_from(sorted(T.HEADER_TAGS - {8, 9, 35, 10, 90, 91, 212, 213})), values),
    st.just((90, "3")).map(lambda f: [f, (91, "a\x01b")]),        # data field holding a SOH
    st.just((212, "4")).map(lambda f: [f, (213, "<x/>")]),
    st.just((49, "DUP")),                                           # a header tag twice
    # written as is: tags that only look like header tags (a leading zero, too many digits, no
    # digits), an empty value or one holding '=', 8/9/35 again, and the data-length tags
    # without their data field or with one that does not match its length
    st.sampled_from([b"049=x", b"0=x", b"=x", b"x=1", b"1128=9", b"0052=1", b"52=", b"49=a=b",
                     b"8=FIX.4.4", b"35=D", b"9=12", b"90=2", b"90=x", b"90=3\x0191=ab",
                     b"212=1\x01213=a\x01", b"97", b"630=1"]),
), max_size=4)


def _stream_piece(msg_type: str, extra: list, body: list, seq: int, damage: int) -> bytes:
    fields: list = [(49, "S"), (56, "T"), (34, seq)]
    for f in extra:
        fields.extend(f if isinstance(f, list) else [f])
    header = b"".join(f + b"\x01" if isinstance(f, bytes) else b"%d=%s\x01" % (f[0], str(f[1]).encode())
                      for f in fields)
    raw = codec.encode(b"FIX.4.4", msg_type.encode(), header,
                       b"".join(b"%d=%s\x01" % (t, v.encode()) for t, v in body))
    if damage == 1:                     # bit flip somewhere
        i = seq % len(raw)
        raw = raw[:i] + bytes([raw[i] ^ (1 << (seq % 8))]) + raw[i + 1:]
    elif damage == 2:                   # cut short, then the next message
        raw = raw[:seq % len(raw)]
    elif damage == 3:                   # garbage before it
        raw = b"garbage\x01" + raw
    return raw


def _decoded(stream: bytes, cuts: list[int]) -> list:
    d = Decoder(max_size=2048)
    items = []
    prev = 0
    for c in cuts + [len(stream)]:
        items += d.feed(stream[prev:c])
        prev = c
    return [(i.kind, i.discarded) if isinstance(i, DecodeError) else
            (i.raw, i.begin_string, i.msg_type, i.header, i.body_start, i.body_end,
             i.header_error) for i in items] + [d.buffered]


@given(st.lists(st.tuples(msg_types, header_extra, bodies, st.integers(1, 10**6),
                          st.sampled_from([0, 0, 0, 1, 2, 3])), min_size=1, max_size=6),
       st.data())
@settings(max_examples=600)
def test_fast_frame_path_agrees_with_the_careful_path(specs, data):
    """Decoder.feed takes one regex match and a byte loop for a well-formed frame and its plain
    header (:func:`codec._plain_header`); whatever
    the stream, chunking, damage or header (data fields, a repeated tag), it must decode exactly
    as the field-by-field path does."""
    stream = b"".join(_stream_piece(*s) for s in specs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=4)))
    fast = _decoded(stream, cuts)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(codec, "_FAST_START", re.compile(rb"(?!)"))       # never matches
        careful = _decoded(stream, cuts)
    assert fast == careful


def test_fast_frame_path_reads_header_data_fields_and_repeats():
    raw = codec.encode_fields("FIX.4.4", "8", [(49, "S"), (56, "T"), (34, 7), (90, 3),
                                              (91, "a\x01b"), (52, "20261124-20:10:11.123")],
                              [(1, "A")])
    [m] = Decoder().feed(raw)
    assert m.header[91] == b"a\x01b" and m.header[52] == b"20261124-20:10:11.123"
    assert m.body == b"1=A\x01" and m.header_error is None
    raw = codec.encode_fields("FIX.4.4", "8", [(49, "S"), (56, "T"), (34, 7), (56, "U")], [(1, "A")])
    [m] = Decoder().feed(raw)
    assert m.header_error == 56 and m.header[56] == b"U"
