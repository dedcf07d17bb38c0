"""Delivery under faults, over real sockets: a full disk in the middle of a source's burst (no
message lost, no target seq burnt), a journal error on disconnect, a ResendRequest pipelined
behind a Logon, a draining target that heartbeats, a stuck target released after the close
grace, a spilled target catching up in order, copies reserved just before a Logon, and a source's
sequence reset made durable before the Logon reply."""

from __future__ import annotations

import asyncio
import errno
import shutil
from pathlib import Path

import pytest

from dcgateway.net.connection import CLOSE_GRACE_S
from simulators.fixclient import FixClient, get

from .conftest import write_config
from .test_fanout import CONTRACT, connect_all, fill, new_order

pytestmark = pytest.mark.asyncio


def _folder(tmp_path: Path, extra: str = "") -> Path:
    f = tmp_path / "gw"
    write_config(f, extra=extra)
    shutil.copy(CONTRACT / "groups.yaml", f / "groups.yaml")
    return f


async def _wait(pred, timeout: float = 10.0, step: float = 0.05) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if pred():
            return True
        await asyncio.sleep(step)
    return pred()


async def _collect(c: FixClient, until, timeout: float = 20.0) -> list:
    """Every message (heartbeats included) until ``until(msgs)`` or EOF or ``timeout``; answers
    TestRequests."""
    got: list = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    checked = -1                     # ``until`` is re-evaluated as ``got`` grows by a tenth (or
    while loop.time() < deadline:    # when the line goes quiet): thousands of messages stay linear
        if len(got) - checked > len(got) // 10:
            checked = len(got)
            if until(got):
                break
        try:
            m = await c.recv(min(0.1, max(0.01, deadline - loop.time())))
        except asyncio.TimeoutError:
            checked = -1
            continue
        if m is None:
            break
        got.append(m)
        if get(m, 35) == "1":
            c.send("0", [(112, get(m, 112))])
    return got


async def _fill_until_paused(src: FixClient, gw, target: str, prefix: str) -> int:
    """Send orders in chunks of 2000 until the gateway's write buffer to ``target`` is above its
    high mark (the kernel buffers on both sides absorb a few MB first); returns how many."""
    slot = gw.gw.slots[target]
    sent = 0
    for _ in range(50):
        src.send_raw(b"".join(src.build("D", new_order(f"{prefix}{sent + i}"))
                              for i in range(2000)))
        sent += 2000
        if await _wait(lambda: slot.connection is not None and slot.connection.write_paused,
                       0.3):
            return sent
    raise AssertionError("the target's write buffer never filled")


async def _in_sync(src: FixClient, timeout: float = 10.0) -> None:
    """TestRequest round trip after a Logon, answering the gateway's ResendRequests with a gap
    fill the way a FIX engine would (the messages refused on the full disk are re-sent by the
    tests that need them; here only the live flow matters)."""
    src.send("1", [(112, "in-sync")])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        m = await src.recv(max(0.01, deadline - loop.time()))
        assert m is not None, "the gateway closed the source"
        if get(m, 35) == "2":
            begin, end = int(get(m, 7)), int(get(m, 16))
            src.send("4", [(123, "Y"), (36, end + 1)], seq=begin, poss_dup=True,
                     orig_sending_time=get(m, 52))
        elif get(m, 35) == "0" and get(m, 112) == "in-sync":
            return
    raise AssertionError("no answer to the TestRequest")


# -- disk full while sources keep sending ----------------------------------------------------------

async def _disk_full_burst(gw, n: int = 8000):
    """Source ABC123N and target CLRFIX44 logged on; the journal's disk starts failing every write
    (ENOSPC) and the source keeps sending. With the default 1 MiB append buffer, ~4-5k orders
    later ``Journal.append`` raises (journal.py _flush_full) in the middle of a batch. Returns
    (source client, target client, the journal's first unjournaled source seq, loop errors)."""
    loop = asyncio.get_running_loop()
    errors: list = []
    loop.set_exception_handler(lambda _l, ctx: errors.append(ctx))
    g = gw.gw
    cl = await connect_all(gw, "ABC123N", "CLRFIX44")
    src, tgt = cl["ABC123N"], cl["CLRFIX44"]
    j = g.journal
    healthy = j._hook

    def enospc(op: str) -> None:
        if op == "write":
            raise OSError(errno.ENOSPC, "No space left on device")

    j._hook = enospc
    src.send_raw(b"".join(src.build("D", new_order(f"F{i}")) for i in range(n)))
    assert await _wait(lambda: g.slots["ABC123N"].connection is None, 15), \
        "the source was never disconnected: append did not fail"
    first_unjournaled = j._source_next["ABC123N"]     # last APP record accepted + 1
    assert first_unjournaled < n + 2                    # part of the burst really was refused
    j._hook = healthy                                  # the disk recovers
    await g.committer.flush(timeout=10)
    await src.close()
    return src, tgt, first_unjournaled, errors


async def test_disk_full_refused_source_messages_are_asked_for_again(tmp_path, start_gateway):
    """Q4: the session advanced next_in past messages that Journal.append refused (the exception
    leaves Fanout._from_source mid-batch), and the Disconnect marker (gateway.py _on_event) then
    writes that next_in to the journal. On reconnect the gateway does not ask for them: they are
    lost although the source was never told anything was wrong."""
    gw = await start_gateway(_folder(tmp_path))
    src, tgt, first_lost, _ = await _disk_full_burst(gw)
    try:
        expected = gw.gw.slots["ABC123N"].store.next_in
        reply = await src.logon()                 # 34 = the seq after the burst
        assert get(reply, 35) == "A"
        msgs = await _collect(src, lambda ms: any(get(m, 35) == "2" for m in ms), timeout=3)
        rr = [m for m in msgs if get(m, 35) == "2"]
        assert rr and int(get(rr[0], 7)) <= first_lost, (
            f"orders from seq {first_lost} were never journaled, yet the gateway expects "
            f"{expected} and asks only from {get(rr[0], 7) if rr else None}")
    finally:
        await src.close()
        await tgt.close()


async def test_disk_full_burns_no_target_seq_and_target_keeps_flowing(tmp_path, start_gateway):
    """Q2/Q3: Fanout._from_source reserves every route's seq (TargetStore.reserve) before
    Journal.append; when append raises, the seq is burnt (never journaled, never queued). The
    outbox then waits for it forever (Outbox.take: pending[0][0] != cursor), so the
    connected target gets nothing more, live copies and heartbeats alike."""
    gw = await start_gateway(_folder(tmp_path))
    src, tgt, _, _ = await _disk_full_burst(gw)
    try:
        # log on at the seq the gateway expects (no gap to fill), then one live order
        reply = await src.logon(seq=gw.gw.slots["ABC123N"].store.next_in)
        assert get(reply, 35) == "A"
        await _in_sync(src)                       # as a FIX engine would, before sending on
        before = gw.gw.outboxes["CLRFIX44"].store.next_out
        src.send("D", new_order("LIVE-AFTER-RECOVERY"))
        # the target reads the whole burst's copies first (thousands, parsed by simplefix: slow
        # on a loaded machine); a stall never ends, so the bound only needs to be generous
        # (only the newest message is looked at: _collect asks after each one, and rescanning
        # thousands of simplefix messages every time made the wait quadratic)
        got = await _collect(tgt, lambda ms: bool(ms) and get(ms[-1], 11) == "LIVE-AFTER-RECOVERY",
                             timeout=40)
        st = gw.gw.outboxes["CLRFIX44"]
        live = [m for m in got if get(m, 11) == "LIVE-AFTER-RECOVERY"]
        assert live, (f"target stalled at seq {st.cursor}; {len(st.pending)} copies and "
                      f"{len(st.admin)} session messages stuck behind it")
        assert int(get(live[0], 34)) == before    # the next seq: none was burnt
    finally:
        await src.close()
        await tgt.close()


async def test_journal_error_on_disconnect_stays_out_of_the_loop(tmp_path, start_gateway):
    """Q6: connection_lost -> Acceptor.connection_closed -> Gateway._on_event(Disconnect) ->
    Journal.append_source_next_in -> _flush_full raises JournalError into the event loop."""
    gw = await start_gateway(_folder(tmp_path))
    src, tgt, _, errors = await _disk_full_burst(gw)
    await tgt.close()
    found = [f"{e.get('message')}: {e.get('exception')!r}" for e in errors]
    errors.clear()
    assert found == []


# -- ordering on a target's wire --------------------------------------------------------------------

async def test_pipelined_resend_request_is_answered_after_the_logon_reply(tmp_path, start_gateway):
    """Q3: Outbox.add_session writes retransmissions (43=Y) at once and queues new
    messages by seq, so when a target sends its Logon and a ResendRequest in one packet the
    retransmitted copies reach it before the Logon reply: a FIX violation (the Logon reply must
    be the first message of the session)."""
    gw = await start_gateway(_folder(tmp_path))
    cl = await connect_all(gw, "ABC123N")
    for i in range(5):
        cl["ABC123N"].send("D", new_order(f"P{i}"))
    cl["ABC123N"].send("1", [(112, "sync")])
    await cl["ABC123N"].expect("0", skip=())
    await gw.gw.committer.flush(timeout=5)
    t = gw.client("CLRFIX44")
    try:
        await t.connect()
        t.send_raw(t.logon_message() + t.build("2", [(7, 1), (16, 0)]))
        first = await t.recv(5)
        assert first is not None and get(first, 35) == "A", (
            f"first message after Logon was 35={get(first, 35)} 34={get(first, 34)} "
            f"43={get(first, 43)}")
    finally:
        await t.close()
        await cl["ABC123N"].close()


# -- slow and stuck targets -------------------------------------------------------------------------

SLOW = "heartbeat_min_s: 1\nwrite_buffer_high: 4096\nwrite_buffer_low: 1024"


async def test_slow_target_that_heartbeats_is_not_timed_out_during_catch_up(tmp_path,
                                                                             start_gateway,
                                                                             caplog):
    """Q5/Q6: pause_writing -> hold_reading("write_buffer") also for targets, and each
    resume_writing refills the buffer in the same callback (flush writes 256 KiB), so the
    gateway never reads from a target that is catching up: its Heartbeats/TestRequest answers sit
    unread and FixSession declares a heartbeat timeout on a live, reading target."""
    gw = await start_gateway(_folder(tmp_path, SLOW))
    cl = await connect_all(gw, "ABC123N")
    t = gw.client("CLRFIX44", heartbeat=1, rcvbuf=4096, read_size=4096)
    async def heartbeats() -> None:            # a well-behaved slow reader keeps heartbeating
        while True:
            await asyncio.sleep(0.5)
            t.send("0")

    beating = None
    try:
        assert get(await t.logon(), 35) == "A"
        beating = asyncio.create_task(heartbeats())
        n = await _fill_until_paused(cl["ABC123N"], gw, "CLRFIX44", "S")
        copies = 0
        eof = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while loop.time() < deadline and copies < n:
            try:
                m = await t.recv(0.5)
            except asyncio.TimeoutError:
                continue
            if m is None:
                eof = True
                break
            copies += get(m, 35) == "D"
            if get(m, 35) == "1":
                t.send("0", [(112, get(m, 112))])
            await asyncio.sleep(0.0005)          # slow but steady (and a 4 KiB receive buffer)
        timeouts = sum("heartbeat timeout" in r.getMessage() for r in caplog.records)
        assert copies == n and not eof and timeouts == 0, (
            f"disconnected (heartbeat timeouts: {timeouts}) after {copies}/{n} copies although "
            "it read and heartbeated all along")
    finally:
        if beating is not None:
            beating.cancel()
        await t.close()
        await cl["ABC123N"].close()


async def test_stuck_target_is_released_after_close_grace(tmp_path, start_gateway):
    """Q5/Q6: a target that stops reading is logged out (here as on a heartbeat timeout), but
    close() is transport.close(), which waits for the write buffer to drain: it never does, so
    without the close grace connection_lost would never run, the slot would stay bound, and the
    target (or its fault-tolerant backup) would be refused for as long as the peer's TCP stays
    up. The target's HeartBtInt is long, so filling its buffer races no timer on any machine."""
    gw = await start_gateway(_folder(tmp_path, SLOW))
    cl = await connect_all(gw, "ABC123N")
    t = gw.client("CLRFIX44", heartbeat=30, rcvbuf=4096, read_size=4096)
    t2 = gw.client("CLRFIX44", heartbeat=30)
    try:
        assert get(await t.logon(), 35) == "A"
        slot = gw.gw.slots["CLRFIX44"]
        await _fill_until_paused(cl["ABC123N"], gw, "CLRFIX44", "K")
        conn = slot.connection
        assert conn is not None and conn.session is not None
        now = gw.gw.clock()
        conn.session.logout("heartbeat timeout", now)   # what the session's timer does
        conn.close_after_pump = True
        conn.pump(now)
        assert conn._closing and slot.connection is conn      # closing, still bound: buffered
        released = await _wait(lambda: slot.connection is None, CLOSE_GRACE_S + 5)
        t2.next_seq = t.next_seq                 # the same session, continuing its sequence
        reply = await t2.logon()
        assert released and get(reply, 35) == "A", (
            f"the stuck connection is still bound and a new Logon is answered "
            f"35={get(reply, 35)} 58={get(reply, 58)}")
    finally:
        await t2.close()
        t.abort()
        await cl["ABC123N"].close()


# -- guarantees that hold (PASS) --------------------------------------------------------------------

async def test_spilled_target_catches_up_in_order_without_gaps(tmp_path, start_gateway):
    """Spill mode (Outbox.add_copy -> spill_from, _from_journal) and its exit: the target
    receives every copy once, in sequence, contiguous with the session's own messages, no 43=Y,
    including copies routed while it was spilled."""
    gw = await start_gateway(_folder(tmp_path, "write_buffer_high: 4096\nwrite_buffer_low: 1024"))
    cl = await connect_all(gw, "ABC123N")
    t = gw.client("CLRFIX44", rcvbuf=4096, read_size=4096)
    assert get(await t.logon(), 35) == "A"
    state = gw.gw.outboxes["CLRFIX44"]
    state.max_pending = 100
    src = cl["ABC123N"]
    sent = 0
    for _ in range(40):                      # until the kernel buffers are full and it spills
        src.send_raw(b"".join(src.build("D", new_order(f"A{sent + i}")) for i in range(2000)))
        sent += 2000
        if await _wait(lambda: state.spill_from is not None, 0.3):
            break
    assert state.spill_from is not None, "never spilled"
    src.send_raw(b"".join(src.build("D", new_order(f"B{i}")) for i in range(500)))
    want = [f"A{i}" for i in range(sent)] + [f"B{i}" for i in range(500)]
    count = [0, 0]                           # messages seen, copies among them (incremental)

    def all_copies(ms: list) -> bool:
        for m in ms[count[0]:]:
            count[1] += get(m, 35) == "D"
        count[0] = len(ms)
        return count[1] >= len(want)

    t.read_size = 65536
    got = await _collect(t, all_copies, timeout=60)
    seqs = [int(get(m, 34)) for m in got]
    assert seqs == list(range(2, 2 + len(seqs))), "not contiguous / out of order"
    copies = [m for m in got if get(m, 35) == "D"]
    assert [get(m, 11) for m in copies] == want
    assert all(get(m, 43) is None for m in copies)
    assert state.spill_from is None and not state.pending
    await t.close()
    await src.close()


async def test_copies_reserved_just_before_logon_are_resent_not_gap_filled(tmp_path,
                                                                         start_gateway):
    """A ResendRequest sent right after the Logon waits until everything reserved for the
    target before its Logon is durable (``TargetStore.resend_ready``), so it serves every copy
    (none is gap-filled), whether the copy was routed just before or just after the Logon."""
    gw = await start_gateway(_folder(tmp_path))
    cl = await connect_all(gw, "ABC123N")
    src = cl["ABC123N"]
    n = 300
    t = gw.client("CLRFIX44")
    await t.connect()
    src.send_raw(b"".join(src.build("D", new_order(f"R{i}")) for i in range(n)))
    t.send_raw(t.logon_message())                    # races the orders, no commit wait
    reply = await t.recv(5)
    assert get(reply, 35) == "A"
    t.send("2", [(7, 1), (16, 0)])
    got = await _collect(t, lambda ms: {get(m, 11) for m in ms} >= {f"R{i}" for i in range(n)},
                         timeout=10)
    assert {get(m, 11) for m in got if get(m, 35) == "D"} == {f"R{i}" for i in range(n)}
    reply_seq = int(get(reply, 34))
    for m in got:
        if get(m, 35) == "4":                        # a gap fill may only cover our Logon reply
            assert int(get(m, 34)) == reply_seq and int(get(m, 36)) == reply_seq + 1
    await t.close()
    await src.close()


# -- a source's sequence reset ---------------------------------------------------------------------

async def test_source_reset_marker_is_durable_before_the_logon_reply(tmp_path, start_gateway):
    """A source that logs on with 141=Y is told (Logon reply) that both sides start again at 1.
    The journal's marker saying so must be fsynced before that reply leaves: after a kill -9 the
    journal would otherwise still expect the source's old, higher seq and log it out as too low.
    The group commit is delayed here, so only a sync made for the Logon makes it durable."""
    gw = await start_gateway(_folder(tmp_path, "journal_commit_delay_s: 0.5"))
    cl = await connect_all(gw, "ABC123N")
    src = cl["ABC123N"]
    for i in range(5):
        src.send("D", new_order(f"R{i}"))
    await src.logout()
    await src.close()
    await gw.gw.committer.flush(timeout=5)
    j = gw.gw.journal
    assert j._source_next["ABC123N"] > 5
    c = gw.client("ABC123N")
    try:
        reply = await c.logon(reset=True)
        assert get(reply, 35) == "A" and get(reply, 141) == "Y"
        # at the moment the reply is read, the marker (next in = 2) is durable
        assert j.durable_lsn == j.appended_lsn
        assert j._source_next["ABC123N"] == 2
    finally:
        await c.close()


async def test_a_torn_journal_record_is_cut_and_said_at_the_start(tmp_path, start_gateway,
                                                                   caplog):
    """The machine stopped while a record was being written: the next start cuts it, keeps
    every whole record before it, and says so in a warning (not only in the INFO summary)."""
    import logging
    folder = _folder(tmp_path)
    gw = await start_gateway(folder)
    src = (await connect_all(gw, "ABC123N"))["ABC123N"]
    src.send("8", fill(exec_id="KEPT1"))
    for _ in range(200):
        if gw.gw.journal.durable_lsn >= 1:
            break
        await asyncio.sleep(0.01)
    await src.close()
    await gw.stop()
    seg = max((folder / "var" / "journal").glob("*.seg"))
    with open(seg, "r+b") as f:                  # bytes of a record past the last whole one
        end = len(f.read().rstrip(b"\0"))
        f.seek(end + 256)                        # (clear of the last record, whatever its end)
        f.write(b"\x17" * 40)
    with caplog.at_level(logging.WARNING, logger="dcgateway"):
        gw2 = await start_gateway(folder)
    torn = [r for r in caplog.records if "torn record" in r.getMessage()]
    assert len(torn) == 1 and torn[0].levelno == logging.WARNING
    tgt = (await connect_all(gw2, "CLRFIX44"))["CLRFIX44"]
    tgt.send("2", [(7, 1), (16, 0)])
    assert get(await tgt.expect("8", 10), 17) == "KEPT1"
    await tgt.close()
