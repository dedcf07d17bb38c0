"""The simulators across gateway restarts: a graceful stop (in process) and a kill -9 of a
gateway subprocess. The source keeps its sequence and answers the restarted gateway's
ResendRequest; the targets log on again and get everything, exactly once or flagged 43=Y."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from dcgateway.config import load_config
from tests.integration.conftest import issue_keys

from .support import (
    assert_exact,
    expected,
    gateway_folder,
    routing_table,
    run_until_all,
    source,
    target,
    wait_for,
)

pytestmark = pytest.mark.asyncio


def never(_t) -> bool:
    return False


async def finish(t, task, n: int, timeout: float = 20) -> None:
    """Let a background ``run`` deliver ``n`` messages, stop it, then settle (see support)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(t.delivered) < n and not task.done() and loop.time() < deadline:
        await asyncio.sleep(0.05)
    t.stop()
    await task
    await run_until_all(t, n)


@pytest.mark.parametrize("durability", ["fsync", "os"])
async def test_graceful_restart_loses_nothing(tmp_path, start_gateway, durability):
    folder = gateway_folder(tmp_path, extra=f"journal_durability: {durability}")
    gw = await start_gateway(folder)
    ilink = target(gw.port, gw.creds, "CLR001N")
    fix = target(gw.port, gw.creds, "CLRFIX44")
    tasks = [asyncio.create_task(t.run(until=never, timeout=30, logout=False))
             for t in (ilink, fix)]
    abc = source(gw.port, gw.creds, "ABC123N", count=900, rate=2000, auto_reconnect=True)
    run = asyncio.create_task(abc.run())
    await wait_for(lambda: len(abc.sent_log) >= 300)
    await gw.stop()                                  # Logout to everyone, then the port closes
    gw2 = await start_gateway(folder)
    for sim in (abc, ilink, fix):
        sim.port = gw2.port
    summary = await asyncio.wait_for(run, 20)
    assert summary["sent"] == 900 and summary["rejects"] == 0
    assert abc.stats["reconnects"] == 1 and abc.stats["disconnects"] == 1
    assert any("shutting down" in t for t in abc.logout_texts)
    want = expected(routing_table(folder), abc)
    for t, task in zip((ilink, fix), tasks):
        await finish(t, task, len(want[t.comp_id]))
        assert_exact(t, want[t.comp_id])
        assert t.counters["logons"] >= 2


@pytest.mark.parametrize("durability", ["fsync", "os"])
async def test_kill_9_source_resends_what_the_gateway_never_journaled(
        tmp_path, gateway_process, loop_errors, durability):
    """SIGSTOP the gateway, let the source write 3000 more messages into the socket (never
    read, so never journaled), kill -9, restart on a new port: the gateway must ask the source
    for them after the Logon reply, in ResendRequests of at most 2500, and the targets must get
    them all, live ones in order and without 43=Y confusion. In both local durability
    modes."""
    folder = gateway_folder(tmp_path, extra=f"journal_durability: {durability}")
    creds = issue_keys(load_config(folder / "gateway.yaml"))
    gp = gateway_process(folder / "gateway.yaml")
    port = await asyncio.to_thread(gp.start)
    ilink = target(port, creds, "CLR001N")
    fix = target(port, creds, "CLRFIX44", resend_mode="explicit")
    tasks = [asyncio.create_task(t.run(until=never, timeout=40, logout=False))
             for t in (ilink, fix)]
    abc = source(port, creds, "ABC123N", count=6000, rate=6000, auto_reconnect=True)
    abd = source(port, creds, "ABD123N", count=300, rate=500, seed=5, auto_reconnect=True)
    runs = [asyncio.create_task(s.run()) for s in (abc, abd)]
    await wait_for(lambda: len(abc.sent_log) >= 1000)
    os.kill(gp.proc.pid, signal.SIGSTOP)
    stopped_at = len(abc.sent_log)
    await wait_for(lambda: len(abc.sent_log) >= stopped_at + 3000)
    await asyncio.to_thread(gp.kill9)
    gp2 = gateway_process(folder / "gateway.yaml")
    port2 = await asyncio.to_thread(gp2.start)
    for sim in (abc, abd, ilink, fix):
        sim.port = port2
    summaries = await asyncio.wait_for(asyncio.gather(*runs), 25)
    assert [s["sent"] for s in summaries] == [6000, 300]
    assert all(s["rejects"] == 0 for s in summaries), [abc.rejects, abd.rejects]
    assert abc.stats["resend_requests"] >= 2, abc.stats      # > 2500 missing: chunked
    assert abc.stats["resent"] >= 3000, abc.stats
    want = expected(routing_table(folder), abc, abd)
    for t, task in zip((ilink, fix), tasks):
        await finish(t, task, len(want[t.comp_id]))
        assert_exact(t, want[t.comp_id])
        assert t.counters["logons"] == 2
    # a fix copy's 122 is the source's first SendingTime, also for what the source re-sent
    first_sent = {("ABC123N", m.key): m.raw for m in abc.sent_log}
    first_sent.update({("ABD123N", m.key): m.raw for m in abd.sent_log})
    for key, d in fix.delivered.items():
        assert f"\x0152={d.orig_sending_time}\x01".encode() in first_sent[key], key
    gp2.signal(signal.SIGTERM)
    code, _ = await asyncio.to_thread(gp2.wait)
    assert code == 0
