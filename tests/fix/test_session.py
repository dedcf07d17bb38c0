"""FixSession (acceptor side) against the FIX Session Layer Test Cases, no event loop.

Peer messages are built with ``codec.encode_fields``; everything the session sends is parsed back
with ``codec.Decoder`` and asserted tag by tag. Test case numbers follow the FIX Session Layer Test
Cases (1S logon, 2 header processing, 3/4/6 heartbeats, 8 resend, 10/11 sequence reset, 13 logout).
"""

from __future__ import annotations

import pytest

from dcgateway.fix import codec
from dcgateway.fix import tags as T
from dcgateway.fix.codec import Decoder, RawMessage
from dcgateway.fix.session import (
    TRANSITIONS,
    AppMessage,
    AuthDecision,
    AuthFailed,
    Disconnect,
    FixSession,
    LoggedOn,
    LoggedOut,
    ProtocolError,
    ResendRequested,
    ResendServed,
    SessionConfig,
    SessionNotReady,
    SessionRejectSent,
    SessionState,
)
from dcgateway.fix.session_types import PeerReject
from dcgateway.fix.store import MemoryStore
from dcgateway.fix.timefmt import parse_utc_timestamp, utc_timestamp

GW = b"DCGW"
SRC = b"SRC1001"
T0 = 1_750_000_000.0


def make_config(**kw) -> SessionConfig:
    kw.setdefault("begin_string", b"FIX.4.2")
    return SessionConfig(our_comp_id=GW, their_comp_id=SRC, **kw)


class Peer:
    """The counterparty: builds messages with codec.encode_fields and numbers them."""

    def __init__(self, begin: bytes = b"FIX.4.2") -> None:
        self.begin = begin
        self.seq = 1

    def build(self, msg_type, body=(), *, seq=None, now=T0, sending_time=None, extra=(),
              sender=SRC, target=GW, omit=(), begin=None) -> bytes:
        if seq is None:
            seq = self.seq
            self.seq += 1
        header = [(49, sender), (56, target), (34, seq),
                  (52, sending_time if sending_time is not None else utc_timestamp(now))]
        header = [(t, v) for t, v in header if t not in omit] + list(extra)
        return codec.encode_fields(begin or self.begin, msg_type, header, body)

    def logon(self, hbi=30, body_extra=(), **kw) -> bytes:
        return self.build("A", [(98, 0), (108, hbi), *body_extra], **kw)

    def app(self, text="x", **kw) -> bytes:
        return self.build("8", [(37, "ORD1"), (17, f"EX{text}"), (150, "0"), (55, "ESZ6")], **kw)

    def possdup(self, msg_type="8", body=((37, "ORD1"), (55, "ESZ6")), *, seq, now=T0,
                orig=None, **kw) -> bytes:
        extra = [(43, "Y")]
        if orig is not False:
            extra.append((122, orig if orig is not None else utc_timestamp(now - 5)))
        return self.build(msg_type, list(body), seq=seq, now=now, extra=extra, **kw)


def parse(data: bytes) -> list[RawMessage]:
    items = Decoder().feed(data)
    assert all(isinstance(i, RawMessage) for i in items), items
    for m in items:
        assert codec.checksum_ok(m.raw)
    return items


def fields(msg: RawMessage) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for tag, value in msg.fields():
        out.setdefault(tag, value)
    return out


class Harness:
    """A session plus its peer; ``feed`` returns what the session sent back, parsed."""

    def __init__(self, config=None, store=None, authenticator=None, now=T0, begin=b"FIX.4.2"):
        self.config = config or make_config(begin_string=begin)
        self.store = store if store is not None else MemoryStore()
        self.session = FixSession(self.config, self.store, authenticator, now)
        self.peer = Peer(self.config.begin_string)
        self.all_events: list = []

    def feed(self, raw: bytes, now=T0) -> list[RawMessage]:
        self.session.receive_data(raw, now)
        return self.sent()

    def sent(self) -> list[RawMessage]:
        return parse(self.session.data_to_send())

    def events(self) -> list:
        ev = self.session.events()
        self.all_events.extend(ev)
        return ev

    def logon(self, hbi=30, now=T0, **kw) -> list[RawMessage]:
        out = self.feed(self.peer.logon(hbi=hbi, now=now, **kw), now)
        return out

    def delivered(self, events=None) -> list[int]:
        evs = self.events() if events is None else events
        return [e.msg.seq_num for e in evs if isinstance(e, AppMessage)]


def closes_after_logout_reply(h: "Harness", now: float = T0) -> None:
    """FIX Test Cases 2.i, 2.k, 2.o: after an error Logout the session waits for the peer's
    Logout (acting on nothing else meanwhile), then disconnects."""
    assert not h.session.closed and h.session.state is SessionState.LOGOUT_SENT
    assert h.feed(h.peer.app(), now) == []           # ignored while ending
    h.feed(h.peer.build("5", [(58, "bye")]), now)
    assert h.session.closed and only(h.events(), Disconnect)


def closes_after_grace(h: "Harness", now: float = T0) -> None:
    """Without the peer's Logout the session disconnects after the grace (2 s)."""
    assert not h.session.closed and h.session.next_timer() == now + 2.0
    h.session.on_timer(now + 2.0)
    assert h.session.closed


def logged_on(**kw) -> Harness:
    h = Harness(**kw)
    [reply] = h.logon()
    assert reply.msg_type == b"A"
    assert h.session.state is SessionState.ACTIVE
    h.events()
    return h


def only(events, cls):
    return [e for e in events if isinstance(e, cls)]


def assert_no_internal_error(events):
    assert not [e for e in events if isinstance(e, ProtocolError) and e.kind == "internal_error"]


# ---------------------------------------------------------------------------------------------
# 1S: logon
# ---------------------------------------------------------------------------------------------

def test_1S_a_valid_logon_is_answered_with_logon_echoing_fields():
    h = Harness()
    [reply] = h.logon(hbi=30, body_extra=[(141, "N"), (1603, "BRIO"), (1604, "8.0"), (1605, "ABC")])
    f = fields(reply)
    assert reply.begin_string == b"FIX.4.2" and reply.msg_type == b"A"
    assert (f[49], f[56], f[34]) == (GW, SRC, b"1")
    assert f[98] == b"0" and f[108] == b"30" and f[141] == b"N"
    assert (f[1603], f[1604], f[1605]) == (b"BRIO", b"8.0", b"ABC")
    assert not {354, 355, 1400, 1401, 1402} & set(f)         # no signature in the reply
    assert parse_utc_timestamp(f[52]) == pytest.approx(T0, abs=0.01)
    assert h.events() == [LoggedOn(30, False)]
    assert h.session.state is SessionState.ACTIVE and h.session.heartbeat_interval == 30
    assert (h.store.next_in, h.store.next_out) == (2, 2)
    assert h.store.get_outbound(1, 1) == [(1, reply.raw)]


def test_1S_d_first_message_not_logon_disconnects_without_reply():
    h = Harness()
    out = h.feed(h.peer.build("0"))
    assert out == []
    ev = h.events()
    assert only(ev, ProtocolError)[0].kind == "logon_not_first"
    assert only(ev, Disconnect)
    assert h.session.closed and h.session.state is SessionState.CLOSED
    assert h.store.next_in == 1 and h.store.next_out == 1


@pytest.mark.parametrize("hbi", [4, 61, "x"])
def test_1S_heartbeat_interval_out_of_range_is_logged_out(hbi):
    h = Harness()
    [logout] = h.logon(hbi=hbi)
    assert logout.msg_type == b"5"
    assert fields(logout)[58] == b"HeartBtInt(108) must be between 5 and 60 seconds"
    assert only(h.events(), Disconnect) and h.session.closed


def test_1S_missing_heartbeat_interval_is_logged_out():
    h = Harness()
    [logout] = h.feed(h.peer.build("A", [(98, 0)]))
    assert logout.msg_type == b"5" and b"HeartBtInt(108)" in fields(logout)[58]
    assert h.session.closed


def test_1S_logon_with_wrong_begin_string_is_logged_out():
    h = Harness()
    [logout] = h.feed(h.peer.logon(begin=b"FIX.4.4"))
    assert logout.msg_type == b"5" and logout.begin_string == b"FIX.4.2"
    assert fields(logout)[58] == b"incorrect BeginString"
    assert h.session.closed


def test_1S_logon_with_wrong_target_comp_id_is_logged_out():
    h = Harness()
    [logout] = h.feed(h.peer.logon(target=b"OTHER"))
    assert logout.msg_type == b"5" and fields(logout)[58] == b"CompID problem"
    assert h.session.closed and h.store.next_in == 1


def test_1S_logon_carrying_orig_sending_time_is_logged_out():
    h = Harness()
    [logout] = h.feed(h.peer.logon(extra=[(122, utc_timestamp(T0))]))
    assert logout.msg_type == b"5" and b"OrigSendingTime(122)" in fields(logout)[58]
    assert h.session.closed


def test_1S_logon_sending_time_out_of_tolerance_is_logged_out():
    h = Harness()
    [logout] = h.feed(h.peer.logon(now=T0 - 500), T0)
    assert logout.msg_type == b"5" and fields(logout)[58] == b"SendingTime accuracy problem"
    assert h.session.closed


def test_1S_reset_seq_num_flag_resets_both_sequences():
    store = MemoryStore(next_in=40, next_out=70)
    store.save_outbound(69, b"old")
    h = Harness(store=store)
    [reply] = h.logon(seq=1, body_extra=[(141, "Y")])
    f = fields(reply)
    assert f[34] == b"1" and f[141] == b"Y"
    assert h.events() == [LoggedOn(30, True)]
    assert (store.next_in, store.next_out) == (2, 2)
    assert store.get_outbound(60, 80) == []


def test_1S_reset_requires_seq_one_and_can_be_refused():
    h = Harness(store=MemoryStore(5, 5))
    [logout] = h.logon(seq=3, body_extra=[(141, "Y")])
    assert logout.msg_type == b"5" and b"must be 1" in fields(logout)[58]
    assert h.store.next_in == 5

    h = Harness(config=make_config(allow_reset_on_logon=False), store=MemoryStore(5, 5))
    [logout] = h.logon(seq=1, body_extra=[(141, "Y")])
    assert logout.msg_type == b"5" and b"ResetSeqNumFlag" in fields(logout)[58]
    assert h.store.next_in == 5


def test_1S_b_logon_seq_too_high_is_accepted_then_resend_requested():
    h = Harness(store=MemoryStore(next_in=5, next_out=3))
    reply, rr = h.logon(seq=10)
    assert reply.msg_type == b"A" and fields(reply)[34] == b"3"
    assert rr.msg_type == b"2"
    f = fields(rr)
    assert (f[7], f[16], f[34]) == (b"5", b"9", b"4")
    ev = h.events()
    assert ev == [LoggedOn(30, False), ResendRequested(5, 9)]
    assert h.store.next_in == 5
    # the peer gap-fills 5..9; the Logon itself (10) was already acted on
    out = h.feed(h.peer.possdup("4", [(123, "Y"), (36, 10)], seq=5))
    assert out == [] and h.store.next_in == 11
    assert h.delivered(h.events()) == []
    h.feed(h.peer.app(seq=11))
    assert h.delivered() == [11]


def test_1S_e_logon_seq_too_low_is_logged_out_with_next_expected():
    h = Harness(store=MemoryStore(next_in=10, next_out=7))
    [logout] = h.logon(seq=5)
    f = fields(logout)
    assert logout.msg_type == b"5"
    assert f[58] == b"MsgSeqNum too low, expecting 10 but received 5"
    assert f[789] == b"10"
    assert h.session.closed and only(h.events(), Disconnect)
    assert h.store.next_in == 10


def test_logon_timeout_closes_the_connection():
    h = Harness(now=T0)
    assert h.session.next_timer() == T0 + 60
    h.session.on_timer(T0 + 59)
    assert not h.session.closed
    h.session.on_timer(T0 + 60)
    assert h.session.closed and only(h.events(), Disconnect)[0].reason == "logon timeout"


# ---------------------------------------------------------------------------------------------
# Authentication
# ---------------------------------------------------------------------------------------------

def test_authenticator_failure_logs_out_without_revealing_the_reason():
    seen = []

    def auth(msg, now):
        seen.append((msg.msg_type, now))
        return AuthDecision(False, "bad_signature", "authentication failed")

    h = Harness(authenticator=auth, store=MemoryStore(next_in=1, next_out=1))
    data_before = h.store.next_in
    h.session.receive_data(h.peer.logon(body_extra=[(141, "Y")], seq=1), T0 + 1)
    data = h.session.data_to_send()
    [logout] = parse(data)
    assert seen == [(b"A", T0 + 1)]
    assert logout.msg_type == b"5" and fields(logout)[58] == b"authentication failed"
    assert b"bad_signature" not in data
    ev = h.events()
    assert AuthFailed("bad_signature") in ev and only(ev, Disconnect)
    assert not only(ev, LoggedOn)
    assert h.store.next_in == data_before and h.session.closed


def test_authenticator_that_raises_is_a_failure_not_an_exception():
    def auth(msg, now):
        raise RuntimeError("secret-key-material")

    h = Harness(authenticator=auth)
    h.session.receive_data(h.peer.logon(), T0)
    data = h.session.data_to_send()
    assert b"secret" not in data
    assert fields(parse(data)[0])[58] == b"authentication failed"
    ev = h.events()
    assert AuthFailed("authenticator_error") in ev
    assert all("secret" not in repr(e) for e in ev)


def test_refused_logons_do_not_consume_outbound_sequence_numbers():
    # An unauthenticated peer must not be able to move the session's outbound sequence or fill
    # its store, however many times it tries; nor learn it: the refusal carries 34=1, as the
    # refusal of a CompID that is not configured does.
    store = MemoryStore(next_in=3, next_out=7)
    for attempt in range(5):
        h = Harness(authenticator=lambda m, n: AuthDecision(False, "bad_signature",
                                                            "authentication failed"), store=store)
        [logout] = h.logon(seq=3)
        assert logout.msg_type == b"5" and logout.seq_num == 1
    assert store.next_out == 7 and store.get_outbound(1, 100) == []
    ok = Harness(store=store)
    [reply] = ok.logon(seq=3)
    assert reply.msg_type == b"A" and reply.seq_num == 7 and store.next_out == 8


def test_an_unauthenticated_logon_learns_nothing_of_the_session():
    """Before authentication every refusal is the same Logout: a wrong BeginString, a missing
    or malformed MsgSeqNum, a seq too low: "authentication failed" with 34=1 in the peer's own
    BeginString, nothing of the session's sequence or its configured BeginString."""
    refuse = lambda m, n: AuthDecision(False, "bad_signature", "authentication failed")  # noqa: E731
    answers = []
    for logon in (lambda h: h.peer.logon(begin=b"FIX.4.4"),
                  lambda h: h.peer.logon(omit=(34,)),
                  lambda h: h.peer.logon(seq="x1"),
                  lambda h: h.peer.logon(seq=1)):
        h = Harness(authenticator=refuse, store=MemoryStore(next_in=40, next_out=9))
        [logout] = h.feed(logon(h))
        f = fields(logout)
        answers.append((logout.begin_string, f[34], f[58]))
        assert h.session.closed and h.store.next_out == 9
    assert answers == [(b"FIX.4.4", b"1", b"authentication failed")] + [
        (b"FIX.4.2", b"1", b"authentication failed")] * 3


def test_an_authenticated_logon_with_a_wrong_begin_string_is_told_so():
    h = Harness(store=MemoryStore(next_out=9))
    [logout] = h.feed(h.peer.logon(begin=b"FIX.4.4"))
    assert fields(logout)[58] == b"incorrect BeginString" and logout.seq_num == 9


def test_authenticator_runs_before_sequence_checks():
    # a seq-too-low Logon from an unauthenticated peer must not learn our 789
    h = Harness(authenticator=lambda m, n: AuthDecision(False, "unknown_key"),
                store=MemoryStore(next_in=10, next_out=1))
    [logout] = h.logon(seq=1)
    assert 789 not in fields(logout)


# ---------------------------------------------------------------------------------------------
# 2: message header processing
# ---------------------------------------------------------------------------------------------

def test_2_a_in_sequence_application_messages_are_delivered():
    h = logged_on()
    assert h.feed(h.peer.app()) == []
    assert h.feed(h.peer.app()) == []
    ev = h.events()
    assert h.delivered(ev) == [2, 3]
    assert ev[0].msg.get(T.SYMBOL) == b"ESZ6"
    assert h.store.next_in == 4


def test_2_b_seq_too_high_requests_resend_once_and_delivers_in_order_after_fill():
    h = logged_on()
    h.feed(h.peer.app(seq=2))
    [rr] = h.feed(h.peer.app(seq=5))
    assert rr.msg_type == b"2" and (fields(rr)[7], fields(rr)[16]) == (b"3", b"4")
    assert h.feed(h.peer.app(seq=6)) == []            # the gap is already requested
    assert only(h.events(), ResendRequested) == [ResendRequested(3, 4)]
    assert h.store.next_in == 3
    h.feed(h.peer.possdup(seq=3))
    h.feed(h.peer.possdup(seq=4))
    assert h.delivered(h.all_events) + h.delivered() == [2, 3, 4, 5, 6]
    assert h.store.next_in == 7


def test_2_c_seq_too_low_without_possdup_is_fatal():
    h = logged_on()
    h.feed(h.peer.app(seq=2))
    [logout] = h.feed(h.peer.app(seq=2))
    f = fields(logout)
    assert logout.msg_type == b"5"
    assert f[58] == b"MsgSeqNum too low, expecting 3 but received 2" and f[789] == b"3"
    ev = h.events()
    assert only(ev, ProtocolError)[-1].kind == "seq_too_low"
    closes_after_logout_reply(h)


def test_2_e_possdup_duplicate_is_ignored():
    h = logged_on()
    h.feed(h.peer.app(seq=2))
    assert h.feed(h.peer.possdup(seq=2)) == []
    assert h.delivered() == [2]
    assert h.store.next_in == 3 and not h.session.closed


def test_2f_possdup_with_orig_sending_time_after_sending_time_is_rejected_then_logged_out():
    """Test Case 2f: Reject (373=10), inbound seq incremented, Logout, then the disconnect
    once the peer answers (or after the grace)."""
    h = logged_on()
    rej, logout = h.feed(h.peer.possdup(seq=2, orig=utc_timestamp(T0 + 60)))
    f = fields(rej)
    assert rej.msg_type == b"3" and f[373] == b"10" and f[45] == b"2"
    assert logout.msg_type == b"5" and b"SendingTime" in fields(logout)[58]
    assert h.delivered() == [] and h.store.next_in == 3
    closes_after_logout_reply(h)


def test_2f_possdup_below_the_expected_seq_with_a_late_orig_sending_time_is_logged_out():
    """Test Case 2f as QuickFIX's acceptance script runs it: the resent message is a duplicate
    (MsgSeqNum too low, PossDupFlag=Y) whose 122 is after its 52: Reject, then Logout."""
    h = logged_on()
    h.feed(h.peer.app("a", seq=2))
    rej, logout = h.feed(h.peer.possdup(seq=2, orig=utc_timestamp(T0 + 60)))
    assert (rej.msg_type, fields(rej)[373], logout.msg_type) == (b"3", b"10", b"5")
    assert h.store.next_in == 3                       # a duplicate consumes nothing


def test_2_possdup_without_orig_sending_time_is_rejected():
    h = logged_on()
    [rej] = h.feed(h.peer.possdup(seq=2, orig=False))
    f = fields(rej)
    assert (f[45], f[371], f[372], f[373]) == (b"2", b"122", b"8", b"1")
    assert only(h.events(), SessionRejectSent) == [SessionRejectSent(2, 1, f[58].decode())]
    assert h.store.next_in == 3          # a rejected message consumes its seq
    # the same rule for a duplicate below the expected seq; that consumes nothing
    [rej] = h.feed(h.peer.possdup(seq=1, orig=False))
    assert fields(rej)[373] == b"1" and h.store.next_in == 3


def test_2_d_garbled_and_checksum_errors_are_ignored_without_using_a_seq():
    h = logged_on()
    good = h.peer.app(seq=2)
    wrong = b"001" if good.endswith(b"=000\x01") else b"000"
    bad_checksum = good[:-4] + wrong + b"\x01"
    body_len = int(good.split(b"\x01")[1][2:])
    garbled = good.replace(b"9=%d\x01" % body_len, b"9=%d\x01" % (body_len - 1), 1)
    out = h.feed(b"garbage!" + bad_checksum + garbled)
    assert out == []
    kinds = {e.kind for e in only(h.events(), ProtocolError)}
    assert {"garbage", "checksum", "garbled"} <= kinds
    assert h.store.next_in == 2 and not h.session.closed
    h.feed(good)
    assert h.delivered() == [2]


def test_2_h_begin_string_mismatch_after_logon_is_fatal():
    h = logged_on()
    [logout] = h.feed(h.peer.app(begin=b"FIX.4.4"))
    assert logout.msg_type == b"5" and fields(logout)[58] == b"incorrect BeginString"
    closes_after_grace(h)


def test_2_i_comp_id_mismatch_is_rejected_then_logged_out():
    h = logged_on()
    rej, logout = h.feed(h.peer.app(sender=b"INTRUDER"))
    f = fields(rej)
    assert rej.msg_type == b"3" and (f[373], f[371], f[45]) == (b"9", b"49", b"2")
    assert logout.msg_type == b"5" and fields(logout)[58] == b"CompID problem"
    assert h.store.next_in == 3 and h.delivered() == []
    closes_after_logout_reply(h)


def test_2_sending_time_out_of_tolerance_is_rejected_then_logged_out():
    h = logged_on()
    rej, logout = h.feed(h.peer.app(now=T0 - 121), T0)
    f = fields(rej)
    assert rej.msg_type == b"3" and (f[373], f[371]) == (b"10", b"52")
    assert logout.msg_type == b"5" and fields(logout)[58] == b"SendingTime accuracy problem"
    assert h.delivered() == []
    closes_after_grace(h)


def test_sending_time_missing_or_malformed_is_rejected_and_consumes_the_seq():
    h = logged_on()
    [rej] = h.feed(h.peer.app(omit=(52,)))
    assert (fields(rej)[373], fields(rej)[371]) == (b"1", b"52")
    [rej] = h.feed(h.peer.app(sending_time="2025-06-15 12:00"))
    assert (fields(rej)[373], fields(rej)[371]) == (b"6", b"52")
    assert h.store.next_in == 4 and not h.session.closed and h.delivered() == []


def test_missing_msg_seq_num_is_fatal():
    h = logged_on()
    [logout] = h.feed(h.peer.app(omit=(34,)))
    assert logout.msg_type == b"5" and fields(logout)[58] == b"MsgSeqNum(34) missing"
    closes_after_grace(h)


@pytest.mark.parametrize("msg_type,body,reason,tag", [
    ("1", [], 1, 112),                                       # TestRequest without TestReqID
    ("2", [(7, "abc"), (16, 0)], 6, 7),                      # incorrect data format
    ("2", [(7, 1)], 1, 16),                                  # ResendRequest without EndSeqNo
    ("8", [(37, "O1"), (58, ""), (55, "ES")], 4, 58),        # tag without value
    ("8", [(37, "O1"), (49, "SRC1001"), (55, "ES")], 14, 49),  # header tag after the body
    ("0", [(112, "X"), (34, 9)], 14, 34),
])
def test_invalid_messages_are_rejected_with_reason_and_ref_tag(msg_type, body, reason, tag):
    h = logged_on()
    [rej] = h.feed(h.peer.build(msg_type, body))
    f = fields(rej)
    assert rej.msg_type == b"3"
    # a FIX 4.2 peer gets no 373 for a reason FIX 4.3 introduced (14): 371 and 58 say it
    want = b"%d" % reason if reason <= 11 else None
    assert (f[45], f[371], f[372], f.get(373)) == (b"2", b"%d" % tag, msg_type.encode(), want)
    assert f[58]
    assert only(h.events(), SessionRejectSent)[0].reason == reason     # the metric's reason
    assert h.store.next_in == 3 and not h.session.closed


def test_empty_header_value_on_an_application_message_is_rejected():
    h = logged_on()
    [rej] = h.feed(h.peer.app(extra=[(50, "")]))
    assert (fields(rej)[373], fields(rej)[371]) == (b"4", b"50")
    assert h.delivered() == [] and h.store.next_in == 3


def test_header_tag_appearing_twice_is_rejected():
    h = logged_on()
    [rej] = h.feed(h.peer.app(extra=[(50, "A"), (50, "B")]))
    # FIX 4.2 has no SessionRejectReason for it (13 came with 4.3): 371 and 58 say it
    assert (fields(rej).get(373), fields(rej)[371]) == (None, b"50")
    assert b"more than once" in fields(rej)[58]
    assert h.delivered() == []
    h44 = logged_on(config=make_config(begin_string=b"FIX.4.4"))
    [rej] = h44.feed(h44.peer.app(extra=[(50, "A"), (50, "B")]))
    assert (fields(rej)[373], fields(rej)[371]) == (b"13", b"50")


def test_2_invalid_msg_type_is_rejected():
    h = logged_on()
    [rej] = h.feed(h.peer.build("#!", [(58, "hi")]))
    assert fields(rej)[373] == b"11" and fields(rej)[372] == b"#!"     # 2q: 372 when known
    assert h.store.next_in == 3


def test_body_data_field_that_looks_like_header_tags_is_not_rejected():
    h = logged_on()
    data = b"1\x0149=FAKE\x0158=\x01"
    body = codec.fields_bytes([(37, "O1"), (95, len(data))]) + b"96=" + data + b"\x01"
    header = codec.fields_bytes([(49, SRC), (56, GW), (34, 2), (52, utc_timestamp(T0))])
    assert h.feed(codec.encode(b"FIX.4.2", b"8", header, body)) == []
    [app] = only(h.events(), AppMessage)
    assert app.msg.get(96) == data


def test_second_logon_is_fatal():
    h = logged_on()
    [logout] = h.feed(h.peer.logon())
    assert logout.msg_type == b"5"
    assert only(h.events(), ProtocolError)[0].kind == "second_logon"
    closes_after_grace(h)


def test_peer_reject_is_counted_and_reported_not_answered():
    h = logged_on()
    assert h.feed(h.peer.build("3", [(45, 1), (373, 5), (58, "bad value")])) == []
    assert only(h.events(), PeerReject) == [PeerReject(1, b"3", "5", "bad value")]
    assert h.store.next_in == 3


def test_out_of_order_queue_is_bounded_and_dropped_messages_are_requested_again():
    h = logged_on(config=make_config(max_queued=2))
    h.feed(h.peer.app(seq=10))
    h.feed(h.peer.app(seq=11))
    h.feed(h.peer.app(seq=12))                      # dropped: queue full
    h.feed(h.peer.app(seq=13))                      # dropped too, reported once
    ev = h.events()
    assert ResendRequested(2, 9) in ev
    assert [e.kind for e in only(ev, ProtocolError)] == ["queue_full"]
    [rr] = h.feed(h.peer.possdup("4", [(123, "Y"), (36, 10)], seq=2))
    assert (fields(rr)[7], fields(rr)[16]) == (b"12", b"13")
    h.feed(h.peer.possdup(seq=12))
    h.feed(h.peer.possdup(seq=13))
    assert h.delivered(h.all_events) + h.delivered() == [10, 11, 12, 13]
    assert h.store.next_in == 14


def test_out_of_order_queue_is_bounded_in_bytes_too():
    size = len(Peer().app(seq=5))
    h = logged_on(config=make_config(max_queued_bytes=size + 10))
    h.feed(h.peer.app(seq=5))
    h.feed(h.peer.app(seq=6))                       # the second does not fit
    assert [e.kind for e in only(h.events(), ProtocolError)] == ["queue_full"]
    [rr] = h.feed(h.peer.possdup("4", [(123, "Y"), (36, 5)], seq=2))
    assert h.delivered() == [5]
    assert (fields(rr)[7], fields(rr)[16]) == (b"6", b"6")


def test_large_gap_is_requested_in_chunks_as_each_fills():
    h = logged_on(config=make_config(resend_chunk=3))
    [rr] = h.feed(h.peer.app(seq=20))
    assert (fields(rr)[7], fields(rr)[16]) == (b"2", b"4")
    h.feed(h.peer.possdup(seq=2))
    assert h.feed(h.peer.possdup(seq=3)) == []      # still inside the outstanding request
    [rr] = h.feed(h.peer.possdup(seq=4))
    assert (fields(rr)[7], fields(rr)[16]) == (b"5", b"7")
    assert h.feed(h.peer.possdup("4", [(123, "Y"), (36, 20)], seq=5)) == []
    assert h.delivered(h.events()) == [2, 3, 4, 20]
    assert h.store.next_in == 21
    assert only(h.all_events, ResendRequested) == [ResendRequested(2, 4), ResendRequested(5, 7)]


def test_each_gap_is_requested_exactly_not_the_queued_messages_between():
    h = logged_on()
    [rr] = h.feed(h.peer.app(seq=5))
    assert (fields(rr)[7], fields(rr)[16]) == (b"2", b"4")
    assert h.feed(h.peer.app(seq=9)) == []          # known, but one request at a time
    assert h.feed(h.peer.app(seq=7)) == []
    h.feed(h.peer.possdup(seq=2))
    h.feed(h.peer.possdup(seq=3))
    [rr] = h.feed(h.peer.possdup(seq=4))            # 5 drains from the queue; next gap is 6
    assert (fields(rr)[7], fields(rr)[16]) == (b"6", b"6")
    [rr] = h.feed(h.peer.possdup(seq=6))            # 7 drains; next gap is 8
    assert (fields(rr)[7], fields(rr)[16]) == (b"8", b"8")
    assert h.feed(h.peer.possdup(seq=8)) == []
    assert h.delivered() == [2, 3, 4, 5, 6, 7, 8, 9]


def test_resend_request_received_with_gap_is_served_first_then_gap_requested():
    h = logged_on()
    h.session.send_app(b"8", b"37=O1\x01", T0)
    h.sent()
    out = h.feed(h.peer.build("2", [(7, 2), (16, 0)], seq=4))
    assert [m.msg_type for m in out] == [b"8", b"2"]
    assert fields(out[0])[43] == b"Y" and fields(out[1])[7] == b"2" and fields(out[1])[16] == b"3"
    h.feed(h.peer.possdup("4", [(123, "Y"), (36, 4)], seq=2))
    assert h.store.next_in == 5                     # the ResendRequest's own seq was consumed


def test_pre_decoded_items_from_the_acceptor_are_processed():
    h = Harness()
    logon = h.peer.logon()
    app = h.peer.app()
    items = Decoder().feed(logon + app)
    h.session.receive_messages(items, T0)
    assert [m.msg_type for m in h.sent()] == [b"A"]
    assert h.delivered() == [2]


def test_exceptions_never_escape_and_become_internal_error_events():
    class BrokenStore(MemoryStore):
        def get_outbound(self, begin, end):
            raise OSError("disk on fire")

    h = logged_on(store=BrokenStore())
    h.session.receive_data(h.peer.build("2", [(7, 1), (16, 0)]), T0)   # must not raise
    ev = h.events()
    assert only(ev, ProtocolError) == [ProtocolError("internal_error", "OSError: disk on fire")]
    [logout] = h.sent()
    assert fields(logout)[58] == b"internal error"          # no internals sent to the peer
    assert only(ev, Disconnect) and h.session.closed
    h.session.receive_data(h.peer.app(), T0)       # closed: ignored, no raise
    h.session.on_timer(T0 + 100)
    assert h.session.events() == []


# ---------------------------------------------------------------------------------------------
# 3/4/6: heartbeats and test requests
# ---------------------------------------------------------------------------------------------

def test_heartbeat_sent_after_idle_interval():
    h = logged_on()
    assert h.session.next_timer() == T0 + 30
    h.session.on_timer(T0 + 29)
    assert h.sent() == []
    h.feed(h.peer.app(now=T0 + 29), T0 + 29)        # inbound traffic does not reset our timer
    h.session.on_timer(T0 + 30)
    [hb] = h.sent()
    assert hb.msg_type == b"0" and 112 not in fields(hb) and fields(hb)[34] == b"2"
    assert h.session.next_timer() == T0 + 60


def test_test_request_is_answered_with_heartbeat_echoing_the_id():
    h = logged_on()
    [hb] = h.feed(h.peer.build("1", [(112, "PING-7")]))
    assert hb.msg_type == b"0" and fields(hb)[112] == b"PING-7"
    assert h.store.next_in == 3


def test_silence_sends_test_request_then_logs_out():
    h = logged_on()
    h.feed(h.peer.app(now=T0 + 20), T0 + 20)
    h.session.on_timer(T0 + 55)                     # 35 s of silence < 36
    assert [m.msg_type for m in h.sent()] == [b"0"]  # only our own heartbeat (30 s idle)
    h.session.on_timer(T0 + 56)
    [tr] = h.sent()
    assert tr.msg_type == b"1"
    test_id = fields(tr)[112]
    assert h.session.next_timer() == T0 + 86
    h.session.on_timer(T0 + 85.5)
    assert h.sent() == [] and not h.session.closed
    h.session.on_timer(T0 + 86)
    [logout] = h.sent()
    assert logout.msg_type == b"5" and fields(logout)[58] == b"heartbeat timeout"
    ev = h.events()
    assert ProtocolError("heartbeat_timeout", "heartbeat timeout") in ev
    closes_after_grace(h, T0 + 86)
    assert test_id


def test_silence_excused_while_the_shell_does_not_read_is_not_held_against_the_peer():
    """The shell holds a source's reads while the journal is behind: its heartbeats wait in
    the socket. Excused meanwhile, it is not timed out; once read again the clock runs."""
    h = logged_on()
    h.session.on_timer(T0 + 36)                     # 36 s of silence: a TestRequest
    assert b"1" in [m.msg_type for m in h.sent()]
    for t in range(37, 90, 5):                      # held: excused at every tick
        h.session.excuse_silence(T0 + t)
        h.session.on_timer(T0 + t)
    assert not h.session.closed
    assert [m.msg_type for m in h.sent() if m.msg_type != b"0"] == []   # heartbeats only
    h.session.on_timer(T0 + 87 + 36)                # read again, and silent 36 s: asked again
    assert b"1" in [m.msg_type for m in h.sent()]
    h.session.on_timer(T0 + 87 + 36 + 30)           # and no answer: timed out as ever
    assert b"5" in [m.msg_type for m in h.sent()]


def test_heartbeat_answering_test_request_keeps_the_session():
    h = logged_on()
    h.session.on_timer(T0 + 36)
    tr = [m for m in h.sent() if m.msg_type == b"1"][0]
    h.feed(h.peer.build("0", [(112, fields(tr)[112])], now=T0 + 37), T0 + 37)
    h.session.on_timer(T0 + 66.5)
    assert not h.session.closed
    assert all(m.msg_type != b"5" for m in h.sent())


# ---------------------------------------------------------------------------------------------
# 8: serving ResendRequest
# ---------------------------------------------------------------------------------------------

def _send_mix(h: Harness) -> None:
    """Our seq 1 = Logon reply; 2, 3 app; 4 heartbeat; 5 app (with 115/122 extra header)."""
    h.session.send_app(b"8", b"37=A\x0155=ESZ6\x01", T0 + 1)
    h.session.send_app(b"8", b"37=B\x01", T0 + 2)
    h.session.on_timer(T0 + 32)
    h.session.send_app(b"9", b"37=C\x01", T0 + 33,
                       extra_header=b"115=SRC9\x01122=20250615-10:00:00.000\x01")
    h.sent()


def test_8_resend_request_resends_app_messages_and_gap_fills_admin():
    h = logged_on()
    _send_mix(h)
    out = h.feed(h.peer.build("2", [(7, 1), (16, 0)], now=T0 + 40), T0 + 40)
    assert [(m.msg_type, fields(m)[34]) for m in out] == [
        (b"4", b"1"), (b"8", b"2"), (b"8", b"3"), (b"4", b"4"), (b"9", b"5")]
    gf1, a2, a3, gf4, a5 = out
    assert (fields(gf1)[123], fields(gf1)[36], fields(gf1)[43]) == (b"Y", b"2", b"Y")
    assert fields(gf4)[36] == b"5"
    [orig2] = h.store.get_outbound(2, 2)
    orig2 = parse(orig2[1])[0]
    f = fields(a2)
    assert f[43] == b"Y" and f[122] == orig2.header[52]
    assert parse_utc_timestamp(f[52]) == pytest.approx(T0 + 40, abs=0.01)
    assert a2.body == orig2.body == b"37=A\x0155=ESZ6\x01"
    f5 = fields(a5)
    assert f5[115] == b"SRC9" and f5[122] == b"20250615-10:00:00.000"  # stored 122 kept
    assert only(h.events(), ResendServed) == [ResendServed(1, 5, 3, 2)]
    assert h.store.next_out == 6                    # retransmissions use no new seq


def test_8_a_resent_message_keeps_its_poss_resend():
    """A drop copy of a message its source marked PossResend (97=Y) may repeat what the target
    booked under another seq; retransmitted, it is still that: 43=Y and 97=Y both (FIX Vol. 2:
    PossDupFlag and PossResend are independent). Found by a QuickFIX target: the resent copy
    had lost its 97."""
    h = logged_on()
    h.session.send_app(b"8", b"37=A\x01", T0 + 1,
                       extra_header=b"115=SRC9\x0197=Y\x01122=20250615-10:00:00.000\x01")
    h.session.send_app(b"8", b"37=B\x01", T0 + 2, extra_header=b"115=SRC9\x01")
    h.sent()
    out = h.feed(h.peer.build("2", [(7, 2), (16, 3)], now=T0 + 40), T0 + 40)
    a, b = (fields(m) for m in out)
    assert (a[34], a[43], a[97], a[115], a[122]) == (
        b"2", b"Y", b"Y", b"SRC9", b"20250615-10:00:00.000")
    assert (b[34], b[43], 97 in b) == (b"3", b"Y", False)
    assert [t for t in (m.header for m in out)][0].get(97) == b"Y"


def test_8_resend_request_with_explicit_end_and_missing_store_entries():
    store = MemoryStore()
    h = logged_on(store=store)
    for i in range(4):
        h.session.send_app(b"8", b"37=%d\x01" % i, T0)
    h.sent()
    del store._sent[3]                               # lost: must be gap-filled
    out = h.feed(h.peer.build("2", [(7, 2), (16, 4)]))
    assert [(m.msg_type, fields(m)[34]) for m in out] == [(b"8", b"2"), (b"4", b"3"), (b"8", b"4")]
    assert fields(out[1])[36] == b"4"


def test_8_resend_request_for_everything_is_answered_whole():
    """16=0 asks for everything sent: an engine that asked for 1..0 (QuickFIX) waits for the
    whole range before it asks again, so a partial answer would stall it."""
    h = logged_on()
    for i in range(3000):
        h.session.send_app(b"8", b"37=%d\x01" % i, T0)
    h.sent()
    out = h.feed(h.peer.build("2", [(7, 1), (16, 0)]))
    assert [int(fields(m)[34]) for m in out] == list(range(1, 3002))     # gap fill for 1 + 3000
    assert only(h.events(), ResendServed) == [ResendServed(1, 3001, 3000, 1)]
    assert h.session.resend_backlog == 0


def test_8_a_large_resend_is_answered_in_slices_the_shell_asks_for():
    h = logged_on(config=make_config(resend_slice=400))
    for i in range(1000):
        h.session.send_app(b"8", b"37=%d\x01" % i, T0)
    h.sent()
    out = h.feed(h.peer.build("2", [(7, 1), (16, 0)]))
    assert int(fields(out[0])[34]) == 1 and int(fields(out[-1])[34]) == 400
    assert h.session.resend_backlog == 601 and only(h.events(), ResendServed) == []
    seqs = [int(fields(m)[34]) for m in out]
    while h.session.resend_backlog:
        h.session.continue_resend(T0 + 1)
        seqs += [int(fields(m)[34]) for m in h.sent()]
    assert seqs == list(range(1, 1002))
    assert only(h.events(), ResendServed) == [ResendServed(1, 1001, 1000, 1)]
    h.session.continue_resend(T0 + 2)                   # nothing owed: nothing sent
    assert h.sent() == []


def test_8_a_gap_fill_at_a_slice_boundary_ends_where_the_next_slice_starts():
    h = logged_on(config=make_config(resend_slice=3))
    for i in range(4):
        h.session.send_app(b"8", b"37=%d\x01" % i, T0)
    h.session._send(b"0", b"", T0)                      # seqs 6, 7: admin, gap-filled
    h.session._send(b"0", b"", T0)
    h.session.send_app(b"8", b"37=9\x01", T0)
    h.sent()
    out = h.feed(h.peer.build("2", [(7, 4), (16, 0)]))
    h.session.continue_resend(T0)
    out += h.sent()
    got = [(m.msg_type, int(fields(m)[34]), int(fields(m).get(36, b"0"))) for m in out]
    assert got == [(b"8", 4, 0), (b"8", 5, 0), (b"4", 6, 7), (b"4", 7, 8), (b"8", 8, 0)]


def test_8_a_long_run_of_nothing_stored_is_one_gap_fill_not_one_per_slice():
    """After a power loss the outbound seq jumps past a margin: a ResendRequest over it gets
    one GapFill to the next stored message, whatever the slice size."""
    h = logged_on(config=make_config(resend_slice=10))
    for i in range(3):
        h.session.send_app(b"8", b"37=%d\x01" % i, T0)
    h.store.set_next_out(h.store.next_out + 5000)       # seqs 5..5004: never sent
    h.session.send_app(b"8", b"37=last\x01", T0)       # 5005
    h.sent()
    out = h.feed(h.peer.build("2", [(7, 2), (16, 0)]))
    while h.session.resend_backlog:
        h.session.continue_resend(T0)
        out += h.sent()
    got = [(m.msg_type, int(fields(m)[34]), int(fields(m).get(36, b"0"))) for m in out]
    assert got == [(b"8", 2, 0), (b"8", 3, 0), (b"8", 4, 0), (b"4", 5, 5005), (b"8", 5005, 0)]


def test_8_a_new_resend_request_replaces_the_one_being_answered():
    h = logged_on(config=make_config(resend_slice=10))
    for i in range(100):
        h.session.send_app(b"8", b"37=%d\x01" % i, T0)
    h.sent()
    h.feed(h.peer.build("2", [(7, 1), (16, 0)]))
    assert h.session.resend_backlog == 91
    out = h.feed(h.peer.build("2", [(7, 50), (16, 55)]))
    assert [int(fields(m)[34]) for m in out] == [50, 51, 52, 53, 54, 55]
    assert h.session.resend_backlog == 0
    assert only(h.events(), ResendServed) == [ResendServed(50, 55, 6, 0)]


def test_8_a_resend_being_answered_stops_when_the_session_ends():
    h = logged_on(config=make_config(resend_slice=10))
    for i in range(100):
        h.session.send_app(b"8", b"37=%d\x01" % i, T0)
    h.sent()
    h.feed(h.peer.build("2", [(7, 1), (16, 0)]))
    h.session.logout("end of day", T0)
    h.sent()
    h.session.continue_resend(T0)
    assert h.sent() == [] and h.session.resend_backlog == 0


def test_8_resend_request_beyond_last_sent_is_reported():
    h = logged_on()
    assert h.feed(h.peer.build("2", [(7, 50), (16, 0)])) == []
    assert only(h.events(), ProtocolError)[0].kind == "resend_range"


# ---------------------------------------------------------------------------------------------
# 10/11: SequenceReset
# ---------------------------------------------------------------------------------------------

def test_10_b_gap_fill_in_sequence_moves_expected_forward():
    h = logged_on()
    assert h.feed(h.peer.possdup("4", [(123, "Y"), (36, 9)], seq=2)) == []
    assert h.store.next_in == 9


def test_10_e_gap_fill_that_would_lower_the_sequence_is_rejected():
    h = logged_on()
    [rej] = h.feed(h.peer.build("4", [(123, "Y"), (36, 2)]))
    assert (fields(rej)[373], fields(rej)[371]) == (b"5", b"36")
    assert h.store.next_in == 3


def test_10_a_gap_fill_too_high_is_queued_and_requests_resend():
    h = logged_on()
    [rr] = h.feed(h.peer.build("4", [(123, "Y"), (36, 9)], seq=5))
    assert (fields(rr)[7], fields(rr)[16]) == (b"2", b"4")
    h.feed(h.peer.possdup(seq=2))
    h.feed(h.peer.possdup(seq=3))
    h.feed(h.peer.possdup(seq=4))
    assert h.store.next_in == 9


def test_10_c_d_gap_fill_below_expected():
    h = logged_on()
    h.feed(h.peer.app(seq=2))
    assert h.feed(h.peer.possdup("4", [(123, "Y"), (36, 3)], seq=2)) == []   # ignored
    assert h.store.next_in == 3 and not h.session.closed
    [logout] = h.feed(h.peer.build("4", [(123, "Y"), (36, 3)], seq=2))       # no PossDup
    assert logout.msg_type == b"5"
    closes_after_grace(h)


def test_11_sequence_reset_reset_mode_ignores_msg_seq_num():
    h = logged_on()
    assert h.feed(h.peer.build("4", [(36, 20)], seq=999)) == []
    assert h.store.next_in == 20
    assert h.feed(h.peer.build("4", [(123, "N"), (36, 20)], seq=1)) == []   # 11.b: equal
    assert h.store.next_in == 20
    [rej] = h.feed(h.peer.build("4", [(36, 5)], seq=20))                     # 11.c: lower
    assert (fields(rej)[373], fields(rej)[371]) == (b"5", b"36")
    assert h.store.next_in == 20
    h.feed(h.peer.app(seq=20))
    assert h.delivered() == [20]


def test_11_reset_past_queued_messages_processes_them_in_order_and_says_so():
    h = logged_on()
    h.feed(h.peer.app(seq=5))
    h.feed(h.peer.app(seq=8))
    h.feed(h.peer.build("4", [(36, 8)], seq=1))
    ev = h.events()
    assert h.delivered(ev) == [5, 8] and h.store.next_in == 9
    [err] = only(ev, ProtocolError)
    assert err.kind == "sequence_reset_over_queued" and "MsgSeqNum 5 already" in err.text


def test_10_a_gap_fill_past_the_gap_asked_for_keeps_a_queued_message():
    """The source answers ResendRequest 2..3 with a GapFill to 5 although it had sent 4 (and
    we hold it): 4 is delivered once, in order, reported; 2..3 are filled."""
    h = logged_on()
    [rr] = h.feed(h.peer.app(seq=4))
    assert (fields(rr)[7], fields(rr)[16]) == (b"2", b"3")
    assert h.feed(h.peer.possdup("4", [(123, "Y"), (36, 5)], seq=2)) == []
    ev = h.events()
    assert h.delivered(ev) == [4] and h.store.next_in == 5
    [err] = only(ev, ProtocolError)
    assert err.kind == "sequence_reset_over_queued" and "NewSeqNo(36)=5" in err.text
    assert h.feed(h.peer.possdup(seq=4)) == [] and h.delivered() == []   # its resend: ignored
    h.feed(h.peer.app(seq=5))
    assert h.delivered() == [5]


def test_10_a_a_queued_gap_fill_below_a_later_one_is_processed_once():
    h = logged_on()
    h.feed(h.peer.build("4", [(123, "Y"), (36, 6)], seq=4))        # queued: a GapFill 4 -> 6
    h.feed(h.peer.app(seq=5))                                       # queued, below both
    h.feed(h.peer.app(seq=7))
    assert h.feed(h.peer.possdup("4", [(123, "Y"), (36, 7)], seq=2)) == []
    ev = h.events()
    assert h.delivered(ev) == [5, 7] and h.store.next_in == 8 and not h.session.closed
    assert_no_internal_error(ev)


def test_10_a_thousands_of_queued_gap_fills_are_taken_without_recursion():
    """Each queued GapFill processed by a jump only widens it: no stack depth per message."""
    h = logged_on()
    n = 2500
    for seq in range(3, n):                         # queued: GapFills seq -> seq + 2
        h.feed(h.peer.possdup("4", [(123, "Y"), (36, seq + 2)], seq=seq))
    h.events()
    h.feed(h.peer.possdup("4", [(123, "Y"), (36, 4)], seq=2))
    ev = h.events()
    assert_no_internal_error(ev)
    assert h.store.next_in == n + 1 and not h.session.closed
    assert len(only(ev, ProtocolError)) == 1       # one report for the whole jump


def test_11_an_in_session_reset_forgets_the_old_sequences_gap():
    """FIX 4.4 Logon 141=Y on a logged-on session: the queue of the old sequence goes, and so
    does what it owed (its bytes, the highest seq seen, the gap asked for)."""
    h = logged_on(begin=b"FIX.4.4")
    h.feed(h.peer.app(seq=5))
    h.feed(h.peer.app(seq=6))                       # a gap 2..4 asked for, 5 and 6 held
    h.feed(h.peer.logon(seq=1, body_extra=[(141, "Y")]))
    h.events()
    for seq in (2, 3, 4):                           # the new sequence, in order: no
        out = h.feed(h.peer.app(seq=seq))           # ResendRequest for the old gap
        assert [m.msg_type for m in out if m.msg_type == b"2"] == [], seq
    assert h.delivered() == [2, 3, 4]


def test_10_b_gap_fill_over_nothing_queued_reports_nothing():
    h = logged_on()
    h.feed(h.peer.possdup("4", [(123, "Y"), (36, 9)], seq=2))
    assert only(h.events(), ProtocolError) == []


# ---------------------------------------------------------------------------------------------
# 13: logout
# ---------------------------------------------------------------------------------------------

def test_13_b_peer_logout_is_answered_then_disconnected():
    h = logged_on()
    [reply] = h.feed(h.peer.build("5", [(58, "end of day")]))
    assert reply.msg_type == b"5"
    ev = h.events()
    assert LoggedOut("end of day") in ev and only(ev, Disconnect)
    assert h.session.closed and h.session.state is SessionState.CLOSED
    assert h.store.next_in == 3


def test_13_a_our_logout_completes_on_peer_logout():
    h = logged_on()
    h.session.logout("gateway shutting down", T0 + 1)
    [logout] = h.sent()
    assert logout.msg_type == b"5" and fields(logout)[58] == b"gateway shutting down"
    assert h.session.state is SessionState.LOGOUT_SENT
    with pytest.raises(SessionNotReady):
        h.session.send_app(b"8", b"37=1\x01", T0 + 1)
    h.feed(h.peer.app(now=T0 + 1), T0 + 1)           # still processed while waiting
    assert h.delivered() == [2]
    assert h.feed(h.peer.build("5", [], now=T0 + 2), T0 + 2) == []
    ev = h.events()
    assert only(ev, LoggedOut) and only(ev, Disconnect)[0].reason == "logout complete"
    assert h.session.closed


def test_13_logout_timeout_disconnects():
    h = logged_on()
    h.session.logout("bye", T0)
    h.sent()
    assert h.session.next_timer() == T0 + 10
    h.session.on_timer(T0 + 9)
    assert not h.session.closed
    h.session.on_timer(T0 + 10)
    assert h.session.closed and only(h.events(), Disconnect)[0].reason == "logout timeout"


def test_logout_before_logon_just_closes():
    h = Harness()
    h.session.logout("shutdown", T0)
    assert h.sent() == [] and h.session.closed


# ---------------------------------------------------------------------------------------------
# send_app and the state table
# ---------------------------------------------------------------------------------------------

def test_send_app_refuses_before_logon():
    h = Harness()
    with pytest.raises(SessionNotReady):
        h.session.send_app(b"8", b"37=1\x01", T0)
    assert h.store.next_out == 1 and h.sent() == []


def test_send_app_numbers_stores_and_places_extra_header_after_sending_time():
    h = logged_on()
    body = b"37=O1\x0155=ESZ6\x01"
    seq = h.session.send_app(b"8", body, T0 + 1, extra_header=b"115=SRC9\x01", body_sum=sum(body))
    [m] = h.sent()
    assert seq == 2 and m.seq_num == 2 and m.body == body
    assert [t for t, _ in m.fields()][:8] == [8, 9, 35, 49, 56, 34, 52, 115]
    assert h.store.get_outbound(2, 2) == [(2, m.raw)]
    with pytest.raises(ValueError):
        h.session.send_app(b"0", b"", T0)


def test_store_failing_while_sending_still_closes_without_raising():
    class DeadStore(MemoryStore):
        def save_outbound(self, seq, raw):
            raise OSError("read-only file system")

    h = logged_on()
    h.session.store = DeadStore(h.store.next_in, h.store.next_out)
    h.session.receive_data(h.peer.build("1", [(112, "X")]), T0)
    ev = h.events()
    assert only(ev, ProtocolError)[0].kind == "internal_error"
    assert only(ev, Disconnect) and h.session.closed
    assert h.session.state is SessionState.CLOSED


def test_header_tag_screen_matches_exactly_the_header_and_data_length_tags():
    from dcgateway.fix.session_admin import _SUSPECT
    for tag in range(1, 2000):
        hit = _SUSPECT.search(b"55=X\x01%d=1\x01" % tag) is not None
        assert hit == (tag in T.HEADER_TAGS or tag in T.DATA_LENGTH_TAGS), tag
    assert _SUSPECT.search(b"55=X\x01\x0158=Y\x01")                # empty field


def test_state_table_shape():
    S = SessionState
    assert TRANSITIONS[S.CLOSED] == {}
    for state in S:
        if state is not S.CLOSED:
            assert TRANSITIONS[state]["disconnect"] is S.CLOSED
    assert TRANSITIONS[S.AWAITING_LOGON]["logon"] is S.ACTIVE
    assert "logon" not in TRANSITIONS[S.ACTIVE]
    assert "send_logout" not in TRANSITIONS[S.LOGOUT_SENT]


def test_fix44_session_works_end_to_end():
    h = logged_on(begin=b"FIX.4.4")
    h.feed(h.peer.app())
    assert h.delivered() == [2]
    h.session.send_app(b"8", b"37=1\x01", T0)
    [m] = h.sent()
    assert m.begin_string == b"FIX.4.4"


def test_resend_is_served_only_up_to_the_stores_resend_limit():
    class LimitedStore(MemoryStore):
        limit = 2

        def resend_limit(self) -> int:
            return self.limit

    store = LimitedStore()
    h = logged_on(store=store)                   # our Logon reply is 1
    for i in range(4):
        h.session.send_app(b"8", b"17=E%d\x01150=F\x01" % i, T0)   # 2..5
    h.sent()
    out = h.feed(h.peer.build("2", [(7, 1), (16, 0)]))
    assert [m.seq_num for m in out] == [1, 2]   # gap fill for the Logon, then 2; 3..5 withheld
    assert out[0].msg_type == b"4" and out[1].msg_type == b"8" and out[1].poss_dup
    store.limit = 10
    out = h.feed(h.peer.build("2", [(7, 3), (16, 0)]))
    assert [m.seq_num for m in out] == [3, 4, 5]


def test_a_resend_waits_while_the_store_is_not_ready_and_is_answered_whole_after():
    """A drop copy target's store may not serve yet (its copies below the Logon are still
    being made durable): nothing is answered meanwhile, not a GapFill in their place; the
    request stays owed, and is answered whole when the shell asks again and the store is
    ready."""
    class SlowStore(MemoryStore):
        ready = False

        def resend_ready(self) -> bool:
            return self.ready

    store = SlowStore()
    h = logged_on(store=store)                   # our Logon reply is 1
    for i in range(2):
        h.session.send_app(b"8", b"17=E%d\x01150=F\x01" % i, T0)   # 2, 3
    h.sent()
    assert h.feed(h.peer.build("2", [(7, 1), (16, 0)])) == []
    assert h.session.resend_waiting and h.session.resend_backlog == 3
    h.session.continue_resend(T0)
    assert h.sent() == [] and h.session.resend_waiting
    store.ready = True
    h.session.continue_resend(T0)
    out = h.sent()
    assert [(m.seq_num, m.msg_type) for m in out] == [(1, b"4"), (2, b"8"), (3, b"8")]
    assert all(m.poss_dup for m in out[1:])
    assert not h.session.resend_waiting and h.session.resend_backlog == 0
