"""The target simulator's harder modes against a real gateway: slow reading (backpressure),
dropping and re-establishing its connection, heartbeat duty, and the read-only rule."""

from __future__ import annotations

import asyncio

import pytest

from .support import (
    assert_exact,
    expected,
    gateway_folder,
    routing_table,
    run_until_all,
    source,
    target,
)

pytestmark = pytest.mark.asyncio

#: Small output buffers on the gateway, so a slow target pushes back within a few messages.
SMALL_BUFFERS = "write_buffer_high: 4096\nwrite_buffer_low: 1024"


async def test_slow_reader_gets_everything_in_order_without_slowing_the_source(
        tmp_path, start_gateway):
    folder = gateway_folder(tmp_path, extra=SMALL_BUFFERS)
    gw = await start_gateway(folder)
    slow = target(gw.port, gw.creds, "CLR001N", read_delay=0.01, read_size=1024, rcvbuf=4096,
                  stream_limit=1024)
    fast = target(gw.port, gw.creds, "CLRFIX44")
    await asyncio.gather(slow.run(duration=0.1, logout=False), fast.run(duration=0.1, logout=False))
    abc = source(gw.port, gw.creds, "ABC123N", count=1200, sub_ids=("OPS",))
    abd = source(gw.port, gw.creds, "ABD123N", count=300, seed=3)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    slow_task = asyncio.create_task(slow.run(timeout=25, logout=False, until=lambda t: False))
    await asyncio.gather(abc.run(), abd.run())
    sources_done = loop.time() - t0
    want = expected(routing_table(folder), abc, abd)
    # the sources were not held up: the slow target is still far behind when they are done
    behind = len(want["CLR001N"]) - len(slow.delivered)
    assert behind > 100, (behind, sources_done)
    await run_until_all(fast, len(want["CLRFIX44"]))
    assert_exact(fast, want["CLRFIX44"])
    slow.stop()
    await slow_task
    await run_until_all(slow, len(want["CLR001N"]), timeout=20)
    assert_exact(slow, want["CLR001N"])
    assert slow.gaps_requested == 0                  # backpressure, not loss
    targets = [d.target_seq for d in slow.delivered.values()]
    assert targets == sorted(targets)


async def test_stalled_target_spills_to_the_journal_and_catches_up(tmp_path, start_gateway):
    """A target that all but stops reading while 22,000 copies are made for it: the gateway
    keeps a bounded number in memory and serves the rest from its journal once the target
    reads again; the target gets every one, in order, live (no ResendRequest needed)."""
    folder = gateway_folder(tmp_path, extra=SMALL_BUFFERS)
    gw = await start_gateway(folder)
    stalled = target(gw.port, gw.creds, "CLRFIX44", read_delay=0.5, read_size=1024,
                     rcvbuf=4096, stream_limit=1024, keep_raw=False)
    await stalled.run(duration=0.1, logout=False)
    task = asyncio.create_task(stalled.run(until=lambda t: False, timeout=30, logout=False))
    abc = source(gw.port, gw.creds, "ABC123N", count=22_000, sub_ids=("OPS",))
    await abc.run()
    want = expected(routing_table(folder), abc)["CLRFIX44"]
    assert len(stalled.delivered) < 1000                 # it really was stalled
    state = gw.gw.outboxes["CLRFIX44"]
    if hasattr(state, "spill_from"):                    # the gateway's outbox did spill
        assert state.spill_from is not None
    stalled.read_delay, stalled.client.read_size = 0.0, 65536
    await asyncio.wait_for(_finish(stalled, task, len(want)), 20)
    assert_exact(stalled, want)
    assert stalled.gaps_requested == 0 and stalled.duplicates == 0


async def test_dropping_and_reconnecting_target_still_gets_the_complete_set(
        tmp_path, start_gateway):
    folder = gateway_folder(tmp_path)
    gw = await start_gateway(folder)
    fix = target(gw.port, gw.creds, "CLRFIX44", drop_every=70, max_drops=6)
    ilink = target(gw.port, gw.creds, "CLR001N", drop_every=25, max_drops=4,
                   resend_mode="explicit")
    abc = source(gw.port, gw.creds, "ABC123N", count=700, rate=1500)
    tasks = [asyncio.create_task(t.run(timeout=20, logout=False, until=lambda t: False))
             for t in (fix, ilink)]
    await abc.run()
    want = expected(routing_table(folder), abc)
    for t, task in zip((fix, ilink), tasks):
        await asyncio.wait_for(_finish(t, task, len(want[t.comp_id])), 20)
        assert_exact(t, want[t.comp_id])
        assert 2 <= t.counters["drops"] <= t.max_drops, t.stats()
        assert t.counters["logons"] == t.counters["drops"] + 1
        assert t.gaps_requested >= 1 and t.counters["resent_received"] >= 1
    # what was re-sent after a reconnect carries 43=Y and 122 (checked by assert_exact's
    # unflagged count); what came live does not
    assert any(not d.poss_dup for d in fix.delivered.values())


async def _finish(t, task, n: int) -> None:
    while len(t.delivered) < n and not task.done():
        await asyncio.sleep(0.05)
    t.stop()
    await task
    await run_until_all(t, n)


async def test_target_answers_test_requests_and_stays_logged_on(tmp_path, start_gateway):
    folder = gateway_folder(tmp_path, extra="heartbeat_min_s: 1")
    gw = await start_gateway(folder)
    quiet = target(gw.port, gw.creds, "CLRFIX44", heartbeat=1, send_heartbeats=False)
    await quiet.run(duration=3.0, logout=False)
    assert quiet.counters["test_requests_answered"] >= 1, quiet.stats()
    assert quiet.state == "active" and quiet.counters["disconnects"] == 0
    abc = source(gw.port, gw.creds, "ABC123N", count=20, sub_ids=("OPS",), heartbeat=1)
    await abc.run()
    await run_until_all(quiet, 20)
    assert_exact(quiet, expected(routing_table(folder), abc)["CLRFIX44"])


async def test_application_message_from_a_target_is_refused_with_35j(tmp_path, start_gateway):
    folder = gateway_folder(tmp_path)
    gw = await start_gateway(folder)
    fix = target(gw.port, gw.creds, "CLRFIX44")
    ilink = target(gw.port, gw.creds, "CLR001N")
    await asyncio.gather(fix.run(duration=0.1, logout=False), ilink.run(duration=0.1, logout=False))
    fix.send_forbidden("D")
    await fix.run(until=lambda t: bool(t.rejects), timeout=5, logout=False)
    assert fix.rejects[0]["msg_type"] == "j" and fix.rejects[0]["ref_seq"] == "2"
    assert "read-only" in (fix.rejects[0]["text"] or "")
    stats = await ilink.run(idle=0.3, timeout=5)
    assert stats["delivered"] == 0 and gw.gw.fanout.messages_in == 0
    await fix.run(idle=0.2, timeout=5)
    assert fix.delivered == {} and fix.unflagged_duplicates == 0
