"""Hostile-input fuzzing of the codec and the session engine (no event loop).

What is covered here and nowhere else (test_codec.py / test_session_props.py hold the plain
round-trip, arbitrary-bytes and mixed-hostile-input properties):

* codec: bit flips and truncations of one message inside a stream of intact ones: nothing raises,
  every yielded frame is checksum-valid and a slice of the input, every byte is accounted for
  (yielded + discarded + buffered), the intact messages before the damage are all decoded and the
  ones after it are decoded as a contiguous suffix that includes every message starting more than
  ``max_size`` bytes after the damage (a damaged BodyLength can never reach further);
* codec: a huge BodyLength (any value over the cap, or too many digits) never makes the decoder
  buffer more than ``max_size``, whatever follows and however it is chunked;
* codec and session: a message with a 1 MiB field is discarded without being buffered; the session
  stays logged on, uses no sequence number, and processes the next message;
* session: checksum-valid messages with missing, repeated, empty, unknown and non-ASCII fields,
  mixed with garbled frames (bad CheckSum, short BodyLength, 35 not third, garbage): each in-order
  checksum-valid message is processed or rejected (35=3 with 45, and 373 where its FIX version
  has the reason) and consumes exactly one MsgSeqNum, or ends the session with a Logout carrying
  a reason text; garbled ones are ignored and consume nothing (FIX Vol. 2 "garbled messages",
  Session Test Case 2.d);
* session: damaged Logons before logon are ignored and the following valid Logon still logs on.

Randomness is Hypothesis's, derandomized (fixed seed, no example database) so every run of this
file does the same work.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dcgateway.fix import codec
from dcgateway.fix import tags as T
from dcgateway.fix.codec import DecodeError, Decoder, RawMessage
from dcgateway.fix.session import (
    AppMessage,
    Disconnect,
    FixSession,
    LoggedOn,
    ProtocolError,
    SessionConfig,
    SessionState,
)
from dcgateway.fix.store import MemoryStore
from dcgateway.fix.timefmt import utc_timestamp

GW = b"DCGW"
SRC = b"SRC1001"
T0 = 1_750_000_000.0
TS = utc_timestamp(T0)

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

Fields = list[tuple[int, bytes]]


# ---------------------------------------------------------------------------------------------
# builders
# ---------------------------------------------------------------------------------------------

def frame(fields: Fields, msg_type: bytes = b"8", begin: bytes = b"FIX.4.2") -> bytes:
    """A checksum-valid, correctly framed message with ``fields`` (any bytes) after 35."""
    return codec.encode(begin, msg_type, b"".join(b"%d=%s\x01" % (t, v) for t, v in fields))


def header(seq: int) -> Fields:
    return [(49, SRC), (56, GW), (34, b"%d" % seq), (52, TS)]


def app_fields(seq: int, tag: str = "1") -> Fields:
    return header(seq) + [(37, b"ORD" + tag.encode()), (17, b"EX" + tag.encode()), (150, b"0"),
                          (39, b"0"), (1, b"ACCT01"), (55, b"ESZ6"), (54, b"1")]


def app(seq: int, tag: str = "1") -> bytes:
    return frame(app_fields(seq, tag))


def logon(seq: int = 1) -> bytes:
    return frame(header(seq) + [(98, b"0"), (108, b"30")], b"A")


def bad_checksum(raw: bytes) -> bytes:
    cs = int(raw[-4:-1])
    return raw[:-4] + b"%03d\x01" % ((cs + 1) % 256)


def short_body_length(raw: bytes) -> bytes:
    """BodyLength 3 bytes short: 10= is not where it says (garbled, resync)."""
    head, rest = raw.split(b"\x019=", 1)
    n, tail = rest.split(b"\x01", 1)
    return head + b"\x019=%d\x01" % (int(n) - 3) + tail


def msgtype_not_third(seq: int) -> bytes:
    """Correct BodyLength and CheckSum, but 49 before 35 (garbled per FIX Vol. 1)."""
    body = b"49=%s\x0135=8\x0156=%s\x0134=%d\x0152=%s\x01" % (SRC, GW, seq, TS)
    head = b"8=FIX.4.2\x019=%d\x01" % len(body)
    return head + body + b"10=%03d\x01" % (sum(head + body) % 256)


def logged_on(**cfg) -> FixSession:
    s = FixSession(SessionConfig(b"FIX.4.2", GW, SRC, **cfg), MemoryStore(), None, T0)
    s.receive_data(logon(), T0)
    assert s.state is SessionState.ACTIVE and s.store.next_in == 2
    s.events()
    s.data_to_send()
    return s


def parse_out(data: bytes) -> list[RawMessage]:
    items = Decoder(1 << 22).feed(data)
    assert all(isinstance(i, RawMessage) and codec.checksum_ok(i.raw) for i in items), items
    return items  # type: ignore[return-value]


def field_map(m: RawMessage) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for t, v in m.fields():
        out.setdefault(t, v)
    return out


def no_internal_error(events) -> None:
    assert not [e for e in events if isinstance(e, ProtocolError) and e.kind == "internal_error"], events


# ---------------------------------------------------------------------------------------------
# codec: bit flips and truncations
# ---------------------------------------------------------------------------------------------

CODEC_CAP = 1024           # small cap: the sentinels after the damage must outrun it


@st.composite
def damaged(draw, raw: bytes) -> bytes:
    how = draw(st.sampled_from(["flip", "flips", "truncate", "flip+truncate"]))
    out = bytearray(raw)
    if "flip" in how:
        for _ in range(1 if how != "flips" else draw(st.integers(2, 6))):
            i = draw(st.integers(0, len(out) - 1))
            out[i] ^= 1 << draw(st.integers(0, 7))
    if "truncate" in how:
        del out[draw(st.integers(1, len(out) - 1)):]
    return bytes(out)


@FUZZ
@given(st.data())
def test_bit_flipped_or_truncated_message_never_yields_a_bad_frame_and_decoding_resumes(data):
    before = [app(s, f"B{s}") for s in range(1, data.draw(st.integers(0, 3), "intact before") + 1)]
    victim = app(50, data.draw(st.text("0123456789", min_size=1, max_size=40), "victim tag"))
    bad = data.draw(damaged(victim), "damage")
    noise = data.draw(st.binary(max_size=20), "noise").replace(b"8=FIX", b"8=FIY")
    sentinels = [app(100 + k, f"S{k}") for k in range(14)]          # ~1.9 KB > CODEC_CAP
    stream = b"".join(before) + noise + bad + b"".join(sentinels)
    damage_at = len(b"".join(before)) + len(noise)
    starts, off = [], damage_at + len(bad)
    for s in sentinels:
        starts.append(off)
        off += len(s)

    d = Decoder(CODEC_CAP)
    items: list[RawMessage | DecodeError] = []
    chunk = data.draw(st.integers(1, 400), "chunk")
    for i in range(0, len(stream), chunk):
        items += d.feed(stream[i:i + chunk])               # must not raise
        assert d.buffered <= CODEC_CAP
    msgs = [m for m in items if isinstance(m, RawMessage)]
    errs = [e for e in items if isinstance(e, DecodeError)]

    # every yielded frame is checksum-valid and a verbatim slice of the input
    for m in msgs:
        assert codec.checksum_ok(m.raw) and m.raw in stream
    # every byte is accounted for: yielded, reported as discarded, or still buffered
    assert sum(len(m.raw) for m in msgs) + sum(e.discarded for e in errs) + d.buffered == len(stream)
    assert all(e.kind in {"garbage", "garbled", "checksum", "too_large"} for e in errs)
    # the damage only ever affects what comes after it
    raws = [m.raw for m in msgs]
    assert raws[:len(before)] == before
    # after it: a contiguous, in-order suffix of the sentinels, including every sentinel that
    # starts beyond the reach of the damaged frame's BodyLength (the cap)
    got = [r for r in raws[len(before):] if r in sentinels]
    assert got == sentinels[len(sentinels) - len(got):]
    must = [s for s, at in zip(sentinels, starts) if at >= damage_at + CODEC_CAP]
    assert must and got[-len(must):] == must
    if bad != victim:
        # reported, unless the damage kept the frame whole and its CheckSum right (two flips
        # that cancel out, e.g. '.'->',' and '8'->':'): the codec cannot tell, and hands the
        # frame on whole for the session to judge its fields
        assert errs or (codec.checksum_ok(bad) and bad in raws), "damage went unreported"


# ---------------------------------------------------------------------------------------------
# codec: huge BodyLength and the 1 MiB field
# ---------------------------------------------------------------------------------------------

@FUZZ
@given(length=st.one_of(st.integers(CODEC_CAP, 9_999_999), st.integers(10**7, 10**12)),
       tail=st.binary(max_size=3 * CODEC_CAP), chunk=st.integers(1, 2 * CODEC_CAP),
       msg_type=st.sampled_from([b"D", b"8", b"A", b""]))
def test_huge_body_length_is_never_buffered_and_next_message_decodes(length, tail, chunk, msg_type):
    head = b"8=FIX.4.2\x019=%d\x01" % length + (b"35=" + msg_type + b"\x01" if msg_type else b"")
    good = app(7)
    stream = head + tail.replace(b"8=FIX", b"8=FIY") + good
    d = Decoder(CODEC_CAP)
    items: list[RawMessage | DecodeError] = []
    for i in range(0, len(stream), chunk):
        items += d.feed(stream[i:i + chunk])
        assert d.buffered <= CODEC_CAP
    errs = [e for e in items if isinstance(e, DecodeError)]
    assert errs[0].kind == ("too_large" if length < 10**7 else "garbled")
    assert [m.raw for m in items if isinstance(m, RawMessage)] == [good]
    assert d.buffered == 0


MIB = 1 << 20


def one_mib_message(seq: int) -> bytes:
    return frame(header(seq) + [(37, b"ORDBIG"), (58, b"x" * MIB), (55, b"ESZ6")])


@pytest.mark.parametrize("chunk", [MIB + 4096, 65536, 1500, 7])
def test_one_mib_field_is_discarded_not_buffered(chunk):
    big = one_mib_message(5)
    stream = app(4) + big + app(6)
    d = Decoder()                                   # default cap: 64 KiB
    items: list[RawMessage | DecodeError] = []
    limit = len(stream) if chunk > 7 else 200_000   # byte-by-byte-ish: the head of the big frame
    for i in range(0, limit, chunk):
        items += d.feed(stream[i:min(i + chunk, limit)])
        assert d.buffered <= codec.DEFAULT_MAX_SIZE
    if limit < len(stream):
        items += d.feed(stream[limit:])
    assert [m.seq_num for m in items if isinstance(m, RawMessage)] == [4, 6]
    errs = [e for e in items if isinstance(e, DecodeError)]
    assert errs[0].kind == "too_large"
    assert sum(e.discarded for e in errs) == len(big)
    assert d.buffered == 0


def test_one_mib_field_under_a_larger_configured_cap_is_decoded_intact():
    big = one_mib_message(5)
    [m] = Decoder(2 * MIB).feed(big)
    assert isinstance(m, RawMessage) and m.raw == big and m.get(58) == b"x" * MIB


# ---------------------------------------------------------------------------------------------
# session: malformed but checksum-valid messages, mixed with garbled ones
# ---------------------------------------------------------------------------------------------

NON_ASCII = st.binary(min_size=1, max_size=6).map(lambda b: bytes(0x80 | c for c in b))
PRINTABLE = st.binary(min_size=1, max_size=12).map(
    lambda b: bytes(0x21 + c % 94 for c in b).replace(b"=", b"+"))
#: Inserted tags: anything but the ones whose *value* steers sequencing (34 MsgSeqNum, 43
#: PossDupFlag, 97 PossResend, 123/36 seq reset), and the data-length tags, whose misuse is a
#: known gap covered by test_malformed_application_body_is_rejected_not_delivered below.
INSERTABLE_TAGS = st.integers(1, 20000).filter(
    lambda t: t not in {8, 9, 10, 34, 35, 36, 43, 97, 123}
    and t not in T.DATA_LENGTH_TAGS and t not in T.DATA_LENGTH_TAGS.values())


@st.composite
def mutated_fields(draw, fields: Fields) -> Fields:
    out = list(fields)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["drop", "repeat", "non_ascii", "empty", "insert"]))
        if op == "insert":
            out.insert(draw(st.integers(0, len(out))), (draw(INSERTABLE_TAGS), draw(PRINTABLE)))
            continue
        if not out:
            continue
        i = draw(st.integers(0, len(out) - 1))
        tag, value = out[i]
        if op == "drop":
            del out[i]
        elif op == "repeat":
            out.insert(draw(st.integers(0, len(out))), (tag, value))
        elif op == "non_ascii":
            j = draw(st.integers(0, len(value)))
            out[i] = (tag, value[:j] + draw(NON_ASCII) + value[j:])
        else:
            out[i] = (tag, b"")
    return out


STEP_KINDS = ["valid", "malformed", "malformed", "bad_checksum", "short_body_length",
              "msgtype_not_third", "garbage"]
GARBLED_KINDS = {"garbage", "garbled", "checksum"}


def _malformed(data, seq: int) -> tuple[bytes, bytes]:
    msg_type = data.draw(st.sampled_from([b"8", b"D", b"0", b"1"]), "msg type")
    if msg_type == b"0":
        base = header(seq)
    elif msg_type == b"1":
        base = header(seq) + [(112, b"PING%d" % seq)]
    else:
        base = app_fields(seq, str(seq))
    return frame(data.draw(mutated_fields(base), "mutation"), msg_type), msg_type


@FUZZ
@given(st.data())
def test_malformed_checksum_valid_messages_consume_exactly_one_seq_garbled_ones_none(data):
    s = logged_on()
    steps = data.draw(st.lists(st.sampled_from(STEP_KINDS), min_size=1, max_size=8), "steps")
    for kind in steps + ["valid"]:                      # a valid message last: still in step
        expected = s.store.next_in
        out_seq = s.store.next_out
        if kind in {"valid", "malformed"}:
            raw, msg_type = (app(expected, str(expected)), b"8") if kind == "valid" \
                else _malformed(data, expected)
        elif kind == "bad_checksum":
            raw = bad_checksum(app(expected))
        elif kind == "short_body_length":
            raw = short_body_length(app(expected))
        elif kind == "msgtype_not_third":
            raw = msgtype_not_third(expected)
        else:
            raw = data.draw(st.binary(min_size=1, max_size=200), "garbage").replace(
                b"8=FIX", b"8=FIY") + b"\x00"           # never ends in a prefix of 8=FIX
        s.receive_data(raw, T0 + 1)                     # must not raise
        events = s.events()
        out = parse_out(s.data_to_send())
        no_internal_error(events)
        assert all(m.seq_num == out_seq + k for k, m in enumerate(out))
        assert s.store.next_out == out_seq + len(out)

        if kind not in {"valid", "malformed"}:
            # garbled: ignored, nothing sent, no MsgSeqNum used (Test Case 2.d)
            assert out == [] and s.store.next_in == expected and s.state is SessionState.ACTIVE
            assert events and all(isinstance(e, ProtocolError) and e.kind in GARBLED_KINDS
                                  for e in events), events
            continue
        ending = s.closed or s.state is SessionState.LOGOUT_SENT
        event(f"{kind}: " + ("ending" if ending else "ACTIVE"))
        if ending:
            # a fatal fault (MsgSeqNum missing, CompID problem, ...): Logout with a reason, then
            # the session ends (at once, or after the peer's Logout or a short grace, Test Cases
            # 2.i/2.k/2.o); never more than this message's seq consumed
            assert kind == "malformed"
            assert out and out[-1].msg_type == b"5" and field_map(out[-1]).get(58), out
            assert all(m.msg_type in {b"3", b"5"} for m in out)
            assert s.closed == any(isinstance(e, Disconnect) for e in events)
            assert s.store.next_in in {expected, expected + 1}
            return
        assert s.state is SessionState.ACTIVE
        assert s.store.next_in == expected + 1, (raw, events, out)
        apps = [e for e in events if isinstance(e, AppMessage)]
        rejects = [m for m in out if m.msg_type == b"3"]
        if rejects:
            event(f"{kind}: rejected")
            [rej] = rejects
            f = field_map(rej)
            assert f[45] == b"%d" % expected and f.get(58)
            # 373 when the session's FIX version defines the reason, else 371 and 58 say it
            assert f[373].isdigit() if 373 in f else f.get(371)
            assert apps == []
        elif msg_type in {b"8", b"D"}:
            assert [(e.msg.seq_num, e.msg.raw) for e in apps] == [(expected, raw)]
        else:
            assert apps == []
            if msg_type == b"1":                         # answered with its TestReqID
                [hb] = out
                assert hb.msg_type == b"0" and hb.get(112) == Decoder().feed(raw)[0].get(112)
            else:
                assert out == []
    assert not s.closed


def test_bad_checksum_and_garbled_frames_between_valid_messages_use_no_seq():
    """The fixed-example counterpart of the property: 2, garbled x4, 3 -> both delivered."""
    s = logged_on()
    stream = (app(2) + bad_checksum(app(3)) + short_body_length(app(3)) + msgtype_not_third(3)
              + b"\xff\xfe junk \x00" + app(3))
    s.receive_data(stream, T0)
    events = s.events()
    assert [e.msg.seq_num for e in events if isinstance(e, AppMessage)] == [2, 3]
    assert sorted(e.kind for e in events if isinstance(e, ProtocolError)) == \
        ["checksum", "garbage", "garbled", "garbled"]
    assert s.data_to_send() == b"" and s.store.next_in == 4


# ---------------------------------------------------------------------------------------------
# session: a 1 MiB field
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("chunk", [MIB + 4096, 65536, 4096])
def test_one_mib_message_to_a_session_is_discarded_and_the_session_carries_on(chunk):
    s = logged_on()
    big = one_mib_message(2)
    for i in range(0, len(big), chunk):
        s.receive_data(big[i:i + chunk], T0 + 1)
        assert s._decoder.buffered <= s.config.max_message_size   # never holds the big frame
    events = s.events()
    assert [e.kind for e in events if isinstance(e, ProtocolError)][:1] == ["too_large"]
    assert all(isinstance(e, ProtocolError) and e.kind in GARBLED_KINDS | {"too_large"}
               for e in events)
    assert s.data_to_send() == b"" and s.store.next_in == 2 and s.state is SessionState.ACTIVE
    s.receive_data(app(2), T0 + 1)
    assert [e.msg.seq_num for e in s.events() if isinstance(e, AppMessage)] == [2]
    assert s.store.next_in == 3


# ---------------------------------------------------------------------------------------------
# session: before logon
# ---------------------------------------------------------------------------------------------

@FUZZ
@given(st.data())
def test_damaged_logons_before_logon_are_ignored_and_a_valid_logon_still_logs_on(data):
    s = FixSession(SessionConfig(b"FIX.4.2", GW, SRC), MemoryStore(), None, T0)
    pieces = [data.draw(damaged(logon()), f"damaged logon {k}")
              for k in range(data.draw(st.integers(1, 3), "how many"))]
    stream = b"".join(pieces) + logon()
    chunk = data.draw(st.integers(1, 64), "chunk")
    events = []
    for i in range(0, len(stream), chunk):
        s.receive_data(stream[i:i + chunk], T0)
        events += s.events()
        if s.closed:
            break
    no_internal_error(events)
    out = parse_out(s.data_to_send())
    assert all(m.msg_type in {b"A", b"5"} for m in out)
    # Reference framing of the same bytes in one piece: the session must agree with it whatever
    # the chunking. The valid Logon is lost only when a damaged frame's BodyLength puts its
    # trailer exactly on the Logon's trailer (that frame then fails its CheckSum and is skipped
    # whole, as FIX BodyLength framing does; a frame cut inside its BeginString is resynced, see below).
    ref = Decoder().feed(stream)
    framed = [m.raw for m in ref if isinstance(m, RawMessage)]
    if any(r != logon() for r in framed):
        return                   # several flips cancelled out in the sum: a real (odd) message
    if framed == [logon()]:
        assert [e for e in events if isinstance(e, LoggedOn)] == [LoggedOn(30, False)], events
        assert s.state is SessionState.ACTIVE and s.store.next_in == 2
        assert [m.msg_type for m in out] == [b"A"]
    else:
        assert ref[-1].kind == "checksum" and ref[-1].discarded > len(logon())
        assert s.state is SessionState.AWAITING_LOGON and out == [] and s.store.next_in == 1
    assert all(isinstance(e, LoggedOn) or (isinstance(e, ProtocolError) and e.kind in
               GARBLED_KINDS | {"too_large"}) for e in events), events


@pytest.mark.parametrize("cut", [5, 6, 7, 8, 9])
def test_message_after_a_frame_cut_inside_its_begin_string_is_decoded(cut):
    items = Decoder().feed(logon()[:cut] + logon())
    assert [m.raw for m in items if isinstance(m, RawMessage)] == [logon()]


# ---------------------------------------------------------------------------------------------
# found by fuzzing: malformed application bodies that the cheap screen lets through
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    b"150=F\x0195=abc\x011=ACCT01\x01",
    b"150=F\x0195=9\x0196=ab\x011=ACCT01\x01",
    b"150=F\x01junk\x011=ACCT01\x01",
], ids=["data-length-not-a-number", "data-field-shorter-than-length", "field-without-equals"])
def test_malformed_application_body_is_rejected_not_delivered(body):
    s = logged_on()
    s.receive_data(codec.encode(b"FIX.4.2", b"8", b"".join(b"%d=%s\x01" % f for f in header(2)),
                                body), T0)
    events = s.events()
    no_internal_error(events)
    assert [e for e in events if isinstance(e, AppMessage)] == []
    [rej] = parse_out(s.data_to_send())
    assert rej.msg_type == b"3" and field_map(rej)[45] == b"2" and field_map(rej)[373].isdigit()
    assert s.store.next_in == 3
