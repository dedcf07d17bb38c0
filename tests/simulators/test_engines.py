"""The simulators' FIX engine duties against a scripted fake gateway, so that every check is
seen to fire: a real gateway never sends a gap, an unflagged duplicate or a bad copy on purpose.

The fake is a bare asyncio server that speaks through dcgateway's own encoder and copy builder
(the formats the real gateway puts on the wire)."""

from __future__ import annotations

import asyncio

import pytest

from dcgateway.fix.codec import Decoder, RawMessage, encode_fields
from dcgateway.fix.dropcopy import CopySource, build_copy
from simulators.fixclient import sending_time
from simulators.source import SourceSimulator
from simulators.target import TargetSimulator

pytestmark = pytest.mark.asyncio
GW = b"DCGW"


class FakeGateway:
    """Accepts connections; the test drives each one with :meth:`recv` and :meth:`send`."""

    def __init__(self, begin: bytes, peer: bytes) -> None:
        self.begin, self.peer = begin, peer
        self.conns: asyncio.Queue = asyncio.Queue()
        self.server: asyncio.base_events.Server | None = None
        self.seen: list[RawMessage] = []

    async def start(self) -> int:
        async def accept(r, w):
            await self.conns.put((r, w, Decoder(), []))
        self.server = await asyncio.start_server(accept, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def recv(self, conn, msg_type: bytes | None = None, timeout: float = 5,
                   skip_heartbeats: bool = False) -> RawMessage:
        """Next message from the peer (of ``msg_type``: Heartbeats before it are skipped)."""
        r, _, dec, buf = conn
        while True:
            while not buf:
                data = await asyncio.wait_for(r.read(65536), timeout)
                assert data, "peer closed"
                buf.extend(dec.feed(data))
            m = buf.pop(0)
            self.seen.append(m)
            if skip_heartbeats and m.msg_type == b"0":
                continue
            if msg_type is None or m.msg_type == msg_type:
                return m
            assert m.msg_type == b"0", f"expected 35={msg_type!r}, got {m!r}"

    def admin(self, conn, msg_type: bytes, seq: int, body=(), header=()) -> None:
        h = [(49, GW), (56, self.peer), (34, seq), *header, (52, sending_time())]
        conn[1].write(encode_fields(self.begin, msg_type, h, list(body)))

    def copy(self, conn, original: bytes, seq: int, front_end: str = "fix",
             poss_dup: bool = False) -> None:
        [src] = Decoder().feed(original)
        now = sending_time().encode()
        conn[1].write(build_copy(CopySource(src), front_end, self.begin, GW, self.peer, seq, now,
                                 poss_dup=poss_dup, orig_sending_time=now))


def order_report(exec_id: str, seq: int, poss_dup: bool = False) -> bytes:
    """An ExecutionReport from source ABC123N, as the source sent it."""
    now = sending_time()
    header = [(49, "ABC123N"), (56, "DCGW"), (34, seq), (50, "OPS")]
    header += [(43, "Y"), (52, now), (122, now)] if poss_dup else [(52, now)]
    return encode_fields("FIX.4.2", "8", header, [
        (37, "O1"), (11, "C1"), (17, exec_id), (20, 0), (150, 2), (39, 2), (1, "ACCT01"),
        (55, "ESZ6"), (207, "XCME"), (54, 1), (38, 5), (32, 5), (31, "4500"), (151, 0),
        (14, 5), (6, "4500")])


async def test_target_requests_gaps_and_counts_every_kind_of_duplicate():
    fake = FakeGateway(b"FIX.4.4", b"CLRFIX44")
    port = await fake.start()
    t = TargetSimulator("127.0.0.1", port, "CLRFIX44", begin_string="FIX.4.4", keep_raw=True)
    run = asyncio.create_task(t.run(until=lambda t: t.state == "logged_out", timeout=10))
    conn = await fake.conns.get()
    logon = await fake.recv(conn, b"A")
    assert logon.seq_num == 1
    e = {i: order_report(f"E{i}", i + 10) for i in range(1, 5)}
    fake.admin(conn, b"A", 1, [(98, 0), (108, 30)])
    fake.copy(conn, e[1], 2)
    fake.copy(conn, e[3], 4)                                    # 3 is missing
    rr = await fake.recv(conn, b"2")
    assert (rr.get(7), rr.get(16)) == (b"3", b"0")
    fake.copy(conn, e[2], 3, poss_dup=True)                     # the gap, re-sent
    fake.copy(conn, e[1], 5)                                    # E1 again, no 43=Y
    fake.admin(conn, b"0", 3)                                   # seq 3 again, no 43=Y
    fake.copy(conn, e[2], 6, poss_dup=True)                     # E2 again, flagged
    fake.copy(conn, e[1], 2, poss_dup=True)                     # stale seq 2, flagged
    fake.admin(conn, b"1", 7, [(112, "ARE-YOU-THERE")])
    hb = await fake.recv(conn, b"0")
    assert hb.get(112) == b"ARE-YOU-THERE"
    fake.admin(conn, b"4", 8, [(123, "Y"), (36, 10)], header=[(43, "Y"), (122, sending_time())])
    fake.copy(conn, e[4], 10)
    fake.admin(conn, b"2", 11, [(7, 1), (16, 0)])               # the gateway asks us to resend
    gap_fill = await fake.recv(conn, b"4")
    assert (gap_fill.seq_num, gap_fill.get(123), gap_fill.get(36), gap_fill.poss_dup) == \
        (1, b"Y", b"4", True)                                   # 1..3: Logon, 2 and 0
    fake.admin(conn, b"5", 12, [(58, "bye")])
    await fake.recv(conn, b"5")
    stats = await asyncio.wait_for(run, 10)
    assert list(t.delivered) == [("ABC123N", f"8:E{i}") for i in range(1, 5)]
    assert [d.poss_dup for d in t.delivered.values()] == [False, True, False, False]
    assert t.unflagged_duplicates == 2 and t.duplicates == 2 and t.gaps_requested == 1
    assert t.counts_by_category == {"execution": 4} and t.last_seq == 12
    assert stats["counters"]["test_requests_answered"] == 1 and t.logout_texts == ["bye"]
    assert len(t.format_errors) == 2 and "without PossDupFlag" in t.format_errors[0]
    assert {m.msg_type for m in fake.seen} <= {b"A", b"0", b"2", b"4", b"5"}   # read-only
    conn[1].close()
    await fake.close()


async def test_target_unwraps_ilink2_and_asks_explicit_ranges_in_chunks():
    fake = FakeGateway(b"FIX.4.2", b"CLR001N")
    port = await fake.start()
    t = TargetSimulator("127.0.0.1", port, "CLR001N", resend_mode="explicit", resend_chunk=3)
    run = asyncio.create_task(t.run(count=7, timeout=10))
    conn = await fake.conns.get()
    await fake.recv(conn, b"A")
    fake.admin(conn, b"A", 9, [(98, 0), (108, 30)])            # 1..8 are waiting for it
    originals = {i: order_report(f"X{i}", 100 + i, poss_dup=(i == 5)) for i in range(1, 9)}
    for begin, end in ((1, 3), (4, 6), (7, 8)):
        rr = await fake.recv(conn, b"2")
        assert (rr.get(7), rr.get(16)) == (b"%d" % begin, b"%d" % end)
        for i in range(begin, end + 1):
            if i != 8:
                fake.copy(conn, originals[i], i, "ilink2", poss_dup=True)
            else:
                fake.admin(conn, b"4", 8, [(123, "Y"), (36, 9)],
                           header=[(43, "Y"), (122, sending_time())])
    await fake.recv(conn, b"5")
    fake.admin(conn, b"5", 10)
    await asyncio.wait_for(run, 10)
    d = t.delivered[("ABC123N", "8:X5")]
    assert (d.source_seq, d.msg_type, d.category, d.poss_dup) == (105, "8", "execution", True)
    assert len(t.delivered) == 7 and t.front_end == "ilink2" and t.unflagged_duplicates == 0
    assert t.resend_requests == [(1, 3), (4, 6), (7, 8)]
    conn[1].close()
    await fake.close()


async def test_source_resends_with_possdup_and_gap_fills_admin_after_a_relogon():
    fake = FakeGateway(b"FIX.4.2", b"ABC123N")
    port = await fake.start()
    src = SourceSimulator("127.0.0.1", port, "ABC123N", count=5, seed=3)
    run = asyncio.create_task(src.run())
    conn = await fake.conns.get()
    await fake.recv(conn, b"A")
    fake.admin(conn, b"A", 1, [(98, 0), (108, 30)])
    firsts = [await fake.recv(conn) for _ in range(5)]
    tr = await fake.recv(conn, b"1")                            # run() syncs at the end
    fake.admin(conn, b"0", 2, [(112, tr.get(112))])
    summary = await asyncio.wait_for(run, 5)
    assert summary["sent"] == 5 and [m.seq for m in src.sent_log] == [2, 3, 4, 5, 6]
    assert [f.raw for f in firsts] == [m.raw for m in src.sent_log]

    # the "gateway" restarts having kept only up to seq 3: Logon reply, then ResendRequest
    conn[1].close()
    reconnect = asyncio.create_task(src.reconnect())
    conn = await fake.conns.get()
    relogon = await fake.recv(conn, b"A")
    assert relogon.seq_num == 8                                 # continues the sequence
    fake.admin(conn, b"A", 3, [(98, 0), (108, 30)])
    await asyncio.wait_for(reconnect, 5)
    fake.admin(conn, b"1", 4, [(112, "PING")])
    assert (await fake.recv(conn, b"0")).get(112) == b"PING"
    fake.admin(conn, b"2", 5, [(7, 4), (16, 0)])
    again = [await fake.recv(conn, skip_heartbeats=True) for _ in range(4)]
    assert [m.seq_num for m in again] == [4, 5, 6, 7]
    for m, first in zip(again[:3], firsts[2:]):
        assert m.msg_type == first.msg_type and m.body == first.body and m.poss_dup
        assert m.header[122] == first.header[52] and m.header[50] == first.header[50]
    gap = again[3]                                  # TestRequest 7, Logon 8 (Heartbeat is 9)
    assert (gap.msg_type, gap.get(123), gap.get(36), gap.poss_dup) == (b"4", b"Y", b"10", True)
    assert src.stats["resent"] == 3 and src.stats["gap_filled"] == 3
    await src.close()
    conn[1].close()
    await fake.close()
