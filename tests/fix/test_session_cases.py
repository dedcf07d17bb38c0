"""The FIX session test cases (FIX Vol. 2 "Test cases") with the session's data dictionary, as a
third-party engine's acceptance scripts exercise them: an invalid message gets the Reject the
case names (45, 371, 372, 373) and is never handed on as an application message; the session
goes on where FIX says it goes on; an error Logout waits for the peer's Logout; answers carry
the reversed routing; FIX 4.4 lets a Logon reset both sequences on a logged-on session."""

from __future__ import annotations

import pytest

from dcgateway.fix import codec
from dcgateway.fix.dictionary import load_dictionary, with_secure_logon
from dcgateway.fix.session import AppMessage, AuthDecision, AuthFailed, LoggedOn, SessionState
from dcgateway.fix.timefmt import utc_timestamp
from dcgateway.fix.validate import Validator

from .test_session import T0, Harness, fields, make_config

V42 = Validator(load_dictionary("FIX.4.2"))
V44 = Validator(load_dictionary("FIX.4.4"))


def logged_on(begin: bytes = b"FIX.4.2", **kw) -> Harness:
    h = Harness(config=make_config(begin_string=begin,
                                   validator=V44 if begin == b"FIX.4.4" else V42, **kw))
    [reply] = h.logon()
    assert reply.msg_type == b"A"
    h.events()
    return h


def er(override: dict[int, str | None] | None = None) -> list:
    """A valid FIX 4.2 ExecutionReport body (fill), with fields replaced (None removes one)."""
    body: dict[int, str | None] = {37: "O1", 17: "E1", 20: "0", 150: "2", 39: "2",
                                   55: "ESZ6", 54: "1", 151: "0", 14: "10", 6: "4500.25"}
    body.update(override or {})
    return [(t, v) for t, v in body.items() if v is not None]


def rejected(h: Harness, raw: bytes) -> dict[int, bytes]:
    """Feed ``raw``: exactly one Reject comes back, nothing is delivered, the seq is used, the
    session stays up."""
    seq_before = h.store.next_in
    [rej] = h.feed(raw)
    assert rej.msg_type == b"3", rej
    assert not [e for e in h.events() if isinstance(e, AppMessage)]
    assert h.store.next_in == seq_before + 1
    assert h.session.state is SessionState.ACTIVE
    return fields(rej)


def test_valid_message_is_delivered():
    h = logged_on()
    assert h.feed(h.peer.build("8", er())) == []
    assert [e.msg.seq_num for e in h.events() if isinstance(e, AppMessage)] == [2]


def test_14a_undefined_tag_is_rejected_with_373_0():
    h = logged_on()
    f = rejected(h, h.peer.build("8", er() + [(4999, "x")]))
    assert (f[45], f[371], f[372], f[373]) == (b"2", b"4999", b"8", b"0")


def test_14c_tag_not_defined_for_the_message_type_is_rejected_with_373_2():
    h = logged_on()
    f = rejected(h, h.peer.build("8", er() + [(108, "30")]))     # HeartBtInt on a report
    assert (f[371], f[373]) == (b"108", b"2")


def test_14f_malformed_value_is_rejected_with_373_6():
    h = logged_on()
    f = rejected(h, h.peer.build("8", er() + [(38, "+200.00")]))
    assert (f[371], f[373]) == (b"38", b"6")


def test_14e_value_out_of_range_is_rejected_with_373_5():
    h = logged_on()
    f = rejected(h, h.peer.build("8", er({54: "Z"})))
    assert (f[371], f[373]) == (b"54", b"5")


def reason(f: dict[int, bytes], begin: bytes, from_fix_4_3: bytes) -> bytes | None:
    """The 373 a Reject must carry for a reason FIX 4.3 introduced: the test cases say
    ">= FIX 4.3: SessionRejectReason = ..."; to a FIX 4.2 peer it is left out (its dictionary
    has 0-11 only, and QuickFIX rejects our Reject for a 13 or a 16), and 58 says why."""
    assert f[58], f
    return f.get(373) if begin == b"FIX.4.2" else f[373]


def new_order(begin: bytes) -> list:
    """A valid NewOrderSingle body for ``begin`` (4.2 requires HandlInst 21)."""
    return ([(11, "C1")] + ([(21, "1")] if begin == b"FIX.4.2" else [])
            + [(55, "ESZ6"), (54, "1"), (60, "20261124-10:00:00"), (38, "5"), (40, "1")])


@pytest.mark.parametrize("begin, want", [(b"FIX.4.2", None), (b"FIX.4.4", b"13")])
def test_14h_repeated_tag_is_rejected_with_373_13_from_fix_4_3(begin: bytes,
                                                                want: bytes | None) -> None:
    h = logged_on(begin)
    f = rejected(h, h.peer.build("D", new_order(begin) + [(55, "GEZ6")]))
    assert (f[371], reason(f, begin, b"13")) == (b"55", want)
    assert b"more than once" in f[58]


@pytest.mark.parametrize("begin, want", [(b"FIX.4.2", None), (b"FIX.4.4", b"16")])
def test_14i_repeating_group_count_mismatch_is_rejected_with_373_16_from_fix_4_3(
        begin: bytes, want: bytes | None) -> None:
    h = logged_on(begin)
    body = new_order(begin) + [(78, "2"), (79, "A1"), (80, "5")]      # NoAllocs 2, one entry
    f = rejected(h, h.peer.build("D", body))
    assert (f[371], reason(f, begin, b"16")) == (b"78", want)
    assert b"NumInGroup" in f[58]


def test_14b_missing_required_header_field_is_rejected_and_the_session_goes_on():
    h = logged_on()
    f = rejected(h, h.peer.build("8", er(), omit=(56,)))
    assert (f[371], f[373]) == (b"56", b"1")
    assert h.feed(h.peer.build("8", er())) == []                  # still in session


def test_14d_empty_required_header_field_is_rejected_and_the_session_goes_on():
    h = logged_on()
    raw = h.peer.build("8", er(), target=b"")
    f = rejected(h, raw)
    assert f[373] in (b"4", b"1") and f[371] == b"56"


def test_14g_header_field_after_body_fields_is_rejected_and_the_session_goes_on():
    h = logged_on()
    seq = h.peer.seq
    h.peer.seq += 1
    header = [(49, "SRC1001"), (56, "DCGW"), (52, utc_timestamp(T0))]
    raw = codec.encode_fields(b"FIX.4.2", "8", header, er() + [(34, seq)])
    f = rejected(h, raw)
    assert (f[45], f[371], reason(f, b"FIX.4.2", b"14")) == (str(seq).encode(), b"34", None)


def test_resent_message_with_a_bad_expire_time_is_rejected():
    h = logged_on()
    h.feed(h.peer.build("8", er()))
    h.events()
    raw = h.peer.build("D", [(11, "C1"), (21, "1"), (55, "ESZ6"), (54, "1"),
                             (60, "20261124-10:00:00"), (40, "1"), (126, "tomorrow")])
    f = rejected(h, raw)
    assert (f[371], f[373]) == (b"126", b"6")


def test_2q_reject_names_the_ref_msg_type_even_when_it_is_invalid():
    h = logged_on()
    f = rejected(h, h.peer.build("#!", [(58, "hi")]))
    assert (f[372], f[373]) == (b"#!", b"11")


def test_reject_carries_the_reversed_routing():
    h = logged_on()
    extra = [(115, "FIRM1"), (116, "DESK2"), (128, "HUB"), (144, "NY")]
    f = rejected(h, h.peer.build("8", er() + [(4999, "x")], extra=extra))
    assert (f[128], f[129], f[145], f[115]) == (b"FIRM1", b"DESK2", b"NY", b"HUB")


def test_reject_without_routing_carries_none():
    h = logged_on()
    f = rejected(h, h.peer.build("8", er() + [(4999, "x")]))
    assert not {115, 116, 128, 129, 144, 145} & set(f)


def test_2i_comp_id_problem_logout_waits_for_the_peers_logout():
    h = logged_on()
    rej, logout = h.feed(h.peer.build("8", er(), sender=b"INTRUDER"))
    assert (rej.msg_type, fields(rej)[373], logout.msg_type) == (b"3", b"9", b"5")
    assert not h.session.closed and h.session.state is SessionState.LOGOUT_SENT
    h.feed(h.peer.build("5", [(58, "ok")]))
    assert h.session.closed


def test_sequence_reset_logon_in_session_resets_both_sides_in_fix44():
    h = logged_on(b"FIX.4.4")
    h.feed(h.peer.build("8", er({20: None, 150: "F"})))
    assert h.store.next_in == 3 and h.store.next_out == 2
    [reply] = h.feed(h.peer.build("A", [(98, 0), (108, 30), (141, "Y")], seq=1))
    f = fields(reply)
    assert reply.msg_type == b"A" and (f[34], f[141]) == (b"1", b"Y")
    assert (h.store.next_in, h.store.next_out) == (2, 2)
    assert [e for e in h.events() if isinstance(e, LoggedOn)] == [LoggedOn(30, True)]
    assert h.session.state is SessionState.ACTIVE


def test_a_sequence_reset_logon_in_session_is_authenticated_like_any_logon():
    """A forged or replayed 141=Y Logon on a live FIX 4.4 session must not reset it: the same
    authenticator as the first Logon, a Logout and a disconnect when it refuses."""
    decisions = [AuthDecision(True), AuthDecision(False, "bad_signature", "authentication failed")]
    h = Harness(config=make_config(begin_string=b"FIX.4.4", validator=V44),
                authenticator=lambda m, n: decisions.pop(0))
    [reply] = h.logon()
    assert reply.msg_type == b"A"
    h.feed(h.peer.build("8", er({20: None, 150: "F"})))
    before = (h.store.next_in, h.store.next_out)
    [logout] = h.feed(h.peer.build("A", [(98, 0), (108, 30), (141, "Y")], seq=1))
    assert logout.msg_type == b"5" and fields(logout)[58] == b"authentication failed"
    assert logout.seq_num == before[1]                       # the live session's own Logout
    assert (h.store.next_in, h.store.next_out) == (before[0], before[1] + 1)   # not reset
    assert h.session.closed
    assert AuthFailed("bad_signature") in h.events()


def test_an_in_session_logons_sending_time_is_judged_by_the_authenticator():
    """A stale 52 on a 141=Y Logon is the replay protection's to judge, as on the first Logon
    (so it counts toward the port closure), not the session's SendingTime check."""
    seen = []

    def auth(msg, now):
        seen.append(msg.msg_type)
        return AuthDecision(True) if len(seen) == 1 else AuthDecision(
            False, "stale_sending_time", "authentication failed")
    h = Harness(config=make_config(begin_string=b"FIX.4.4", validator=V44), authenticator=auth)
    assert h.logon()[0].msg_type == b"A"
    stale = utc_timestamp(T0 - 300)
    [logout] = h.feed(h.peer.build("A", [(98, 0), (108, 30), (141, "Y")], seq=1,
                                   sending_time=stale))
    assert logout.msg_type == b"5" and fields(logout)[58] == b"authentication failed"
    assert seen == [b"A", b"A"] and AuthFailed("stale_sending_time") in h.events()


def test_sequence_numbers_beyond_what_a_session_keeps_are_malformed():
    """NewSeqNo, BeginSeqNo, EndSeqNo: 373=6 past 18 digits (never a number the store cannot
    keep, nor an int of thousands of digits), the session goes on; a MsgSeqNum past it ends the
    session with a Logout saying why; a tag number past FIX's int is 373=0."""
    for body, tag in (([(123, "Y"), (36, "18446744073709551626")], b"36"),
                      ([(123, "Y"), (36, "9" * 5000)], b"36"),
                      ([(7, "9" * 30), (16, "0")], b"7"),
                      ([(7, "1"), (16, "9" * 5000)], b"16")):
        h = logged_on()
        f = rejected(h, h.peer.build("4" if tag == b"36" else "2", body))
        assert (f[371], f[373]) == (tag, b"6"), body
    h = logged_on()                                      # SequenceReset-Reset: seq unchanged
    [rej] = h.feed(h.peer.build("4", [(36, "9" * 5000)]))
    assert fields(rej)[373] == b"6" and h.store.next_in == 2
    h = logged_on()                                      # leading zeros are not digits that count
    assert h.feed(h.peer.build("4", [(123, "Y"), (36, "0" * 30 + "5")])) == []
    assert h.store.next_in == 5
    h = logged_on()
    [logout] = h.feed(h.peer.build("8", er(), seq=10 ** 18))
    assert logout.msg_type == b"5" and b"is not a sequence number" in fields(logout)[58]
    h = logged_on()
    f = rejected(h, h.peer.build("8", er() + [(2 ** 31, "x")]))
    assert f[373] == b"0"


def test_sequence_reset_logon_in_session_ends_a_fix42_session():
    h = logged_on()
    [logout] = h.feed(h.peer.build("A", [(98, 0), (108, 30), (141, "Y")], seq=1))
    assert logout.msg_type == b"5"


def test_reset_on_logon_starts_both_sides_at_1():
    h = Harness(config=make_config(validator=V42, reset_on_logon=True))
    h.store.set_next_in(40)
    h.store.set_next_out(17)
    [reply] = h.logon()                             # 34=1 without 141
    assert (fields(reply)[34], fields(reply)[141]) == (b"1", b"Y")
    assert (h.store.next_in, h.store.next_out) == (2, 2)


SIGNED = [(354, "20"), (355, "A" * 20), (1400, "CME-1-SHA-256"), (1401, "43"), (1402, "s" * 43),
          (1603, "OMS"), (1604, "1.0"), (1605, "ACME")]


def test_1b_invalid_logon_gets_a_logout_naming_the_problem_and_a_disconnect():
    """Test Case 1B.c/d ("Logon invalid"): a Logon that fails the session's dictionary
    (MaxMessageSize 383 is a number) is answered with a Logout saying why, then the connection is closed;
    the session never becomes active."""
    h = Harness(config=make_config(validator=V42))
    [logout] = h.feed(h.peer.build("A", [(98, 0), (108, 30), (383, "big")]))
    assert logout.msg_type == b"5" and b"invalid Logon" in fields(logout)[58]
    assert h.session.state is not SessionState.ACTIVE
    assert not [e for e in h.events() if isinstance(e, LoggedOn)]


def test_the_signed_logon_tags_validate_in_every_dictionary():
    """Every Logon is signed, so the secure-logon tags are part of each session's Logon: plain
    FIX 4.4 does not define 1400-1402 or 1603-1605, the session's dictionary does."""
    plain = Harness(config=make_config(begin_string=b"FIX.4.4", validator=V44))
    [refused] = plain.feed(plain.peer.logon(body_extra=SIGNED))
    assert refused.msg_type == b"5"
    signed_v44 = Validator(with_secure_logon(load_dictionary("FIX.4.4")))
    h = Harness(config=make_config(begin_string=b"FIX.4.4", validator=signed_v44))
    [reply] = h.feed(h.peer.logon(body_extra=SIGNED))
    assert reply.msg_type == b"A"
    assert [fields(reply).get(t) for t in (1603, 1604, 1605)] == [b"OMS", b"1.0", b"ACME"]
    assert with_secure_logon(with_secure_logon(load_dictionary("ILINK2"))) is \
        with_secure_logon(load_dictionary("ILINK2"))       # nothing to add: the same object


def test_14a_tags_that_are_not_tag_numbers_are_named_in_ref_tag_id():
    """Test Case 14a with a tag below the valid range (0) and a negative one (-1): Reject
    373=0 whose RefTagID (371) is the number as written, the text shows it as sent."""
    h = logged_on()
    for bad, seq in ((b"0", 2), (b"-1", 3)):
        raw = codec.encode(b"FIX.4.2", b"0", b"49=%s\x0156=%s\x0134=%d\x0152=%s\x01" % (
            h.config.their_comp_id, h.config.our_comp_id, seq, utc_timestamp(T0)),
            bad + b"=HI\x01")
        f = rejected(h, raw)
        assert (f[45], f[371], f[372], f[373]) == (str(seq).encode(), bad, b"0", b"0")
        assert f[58] == b"Invalid tag number: " + bad
