"""Property tests of FixSession: hostile bytes never raise out of receive_data and never break the
session's invariants; out-of-order delivery with resends is exactly-once and in order."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcgateway.fix import codec
from dcgateway.fix.codec import Decoder, RawMessage
from dcgateway.fix.session import (
    AppMessage,
    Disconnect,
    FixSession,
    ProtocolError,
    SessionConfig,
    SessionState,
)
from dcgateway.fix.store import MemoryStore
from dcgateway.fix.timefmt import utc_timestamp

GW = b"DCGW"
SRC = b"SRC1001"
T0 = 1_750_000_000.0
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def peer_msg(msg_type: str, seq: int, body=(), *, possdup: bool = False, now: float = T0) -> bytes:
    header = [(49, SRC), (56, GW), (34, seq), (52, utc_timestamp(now))]
    if possdup:
        header += [(43, "Y"), (122, utc_timestamp(now - 1))]
    return codec.encode_fields("FIX.4.2", msg_type, header, body)


def app(seq: int, **kw) -> bytes:
    return peer_msg("8", seq, [(37, f"O{seq}"), (55, "ESZ6"), (54, 1)], **kw)


def logged_on(**cfg) -> FixSession:
    s = FixSession(SessionConfig(b"FIX.4.2", GW, SRC, **cfg), MemoryStore(), None, T0)
    s.receive_data(peer_msg("A", 1, [(98, 0), (108, 30)]), T0)
    assert s.state is SessionState.ACTIVE
    s.events()
    s.data_to_send()
    return s


def sent(s: FixSession) -> list[RawMessage]:
    items = Decoder().feed(s.data_to_send())
    assert all(isinstance(i, RawMessage) and codec.checksum_ok(i.raw) for i in items), items
    return items


def mutate(raw: bytes, data: st.DataObject) -> bytes:
    how = data.draw(st.sampled_from(["flip", "truncate", "insert", "intact"]))
    if how == "intact" or not raw:
        return raw
    i = data.draw(st.integers(0, len(raw) - 1))
    if how == "flip":
        return raw[:i] + bytes([raw[i] ^ data.draw(st.integers(1, 255))]) + raw[i + 1:]
    if how == "truncate":
        return raw[:i]
    return raw[:i] + data.draw(st.binary(min_size=1, max_size=8)) + raw[i:]


@SETTINGS
@given(st.data())
def test_hostile_input_after_logon_never_raises_and_keeps_invariants(data):
    s = logged_on()
    seq = 2
    next_in = s.store.next_in
    out_seq = s.store.next_out
    delivered: list[int] = []
    for _ in range(data.draw(st.integers(1, 12))):
        kind = data.draw(st.sampled_from(["random", "valid", "mutated"]))
        if kind == "random":
            chunk = data.draw(st.binary(max_size=200))
        else:
            raw = app(seq)
            seq += 1
            chunk = raw if kind == "valid" else mutate(raw, data)
        s.receive_data(chunk, T0 + 1)            # must not raise
        events = s.events()
        assert not [e for e in events
                    if isinstance(e, ProtocolError) and e.kind == "internal_error"]
        delivered += [e.msg.seq_num for e in events if isinstance(e, AppMessage)]
        for m in sent(s):
            assert (m.header[49], m.header[56]) == (GW, SRC)
            if not m.poss_dup:
                assert m.seq_num == out_seq
                out_seq += 1
        assert s.store.next_out == out_seq
        assert s.store.next_in >= next_in
        next_in = s.store.next_in
        if s.closed:
            assert s.state is SessionState.CLOSED
            assert any(isinstance(e, Disconnect) for e in events)
            break
        if s.state is SessionState.LOGOUT_SENT:     # an error Logout: waiting for the reply
            s.on_timer(T0 + 10)
            assert s.closed and any(isinstance(e, Disconnect) for e in s.events())
            break
        assert s.state is SessionState.ACTIVE
    assert delivered == sorted(set(delivered))


@SETTINGS
@given(st.data())
def test_out_of_order_messages_are_delivered_once_in_order_after_resends(data):
    n = data.draw(st.integers(2, 40))
    s = logged_on(max_queued=data.draw(st.integers(1, 50)),
                  resend_chunk=data.draw(st.integers(1, 6)))
    order = data.draw(st.permutations(list(range(2, n + 1))))
    requests: list[tuple[int, int]] = []

    def pump(chunk: bytes) -> None:
        s.receive_data(chunk, T0 + 1)
        for m in sent(s):
            if m.msg_type == b"2":
                f = dict(m.fields())
                requests.append((int(f[7]), int(f[16])))

    for seq in order:
        pump(app(seq))
    answered = 0
    while answered < len(requests):
        begin, end = requests[answered]
        answered += 1
        assert 1 <= begin <= end <= n
        for seq in range(begin, end + 1):
            pump(app(seq, possdup=True))
        assert answered < 1000
    events = s.events()
    delivered = [e.msg.seq_num for e in events if isinstance(e, AppMessage)]
    assert delivered == list(range(2, n + 1))
    assert s.store.next_in == n + 1
    assert not s.closed
