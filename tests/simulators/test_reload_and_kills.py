"""Issue 4's hardest promises with the real simulators: delivered sets stay exact (nothing lost,
each source in order, any repeat flagged 43=Y) across repeated kill -9 of the gateway at random
moments, and across groups reloads while traffic flows."""

from __future__ import annotations

import asyncio
import random
import signal

import pytest

from dcgateway.config import load_config
from tests.integration.conftest import issue_keys

from .support import (
    GROUPS,
    assert_exact,
    expected,
    gateway_folder,
    routing_table,
    source,
    target,
    wait_for,
)
from .test_gateway_restart import finish, never

pytestmark = pytest.mark.asyncio


async def test_repeated_kill_9_at_random_moments_loses_nothing(tmp_path, gateway_process,
                                                               loop_errors):
    rng = random.Random(20261124)
    folder = gateway_folder(tmp_path)
    creds = issue_keys(load_config(folder / "gateway.yaml"))
    gp = gateway_process(folder / "gateway.yaml")
    port = await asyncio.to_thread(gp.start)
    ilink = target(port, creds, "CLR001N")
    fix = target(port, creds, "CLRFIX44")
    tasks = [asyncio.create_task(t.run(until=never, timeout=60, logout=False)) for t in (ilink, fix)]
    abc = source(port, creds, "ABC123N", count=4000, rate=1500, auto_reconnect=True,
                 reconnect_timeout=30)
    abd = source(port, creds, "ABD123N", count=1500, rate=600, seed=9, auto_reconnect=True,
                 reconnect_timeout=30)
    runs = [asyncio.create_task(s.run()) for s in (abc, abd)]
    kills = 0
    for _ in range(3):
        await asyncio.sleep(rng.uniform(0.3, 0.9))          # a random moment under traffic
        await asyncio.to_thread(gp.kill9)
        kills += 1
        gp = gateway_process(folder / "gateway.yaml")
        port = await asyncio.to_thread(gp.start)
        for sim in (abc, abd, ilink, fix):
            sim.port = port
    summaries = await asyncio.wait_for(asyncio.gather(*runs), 45)
    assert [s["sent"] for s in summaries] == [4000, 1500]
    assert all(s["rejects"] == 0 for s in summaries), (abc.rejects, abd.rejects)
    want = expected(routing_table(folder), abc, abd)
    for t, task in zip((ilink, fix), tasks):
        await finish(t, task, len(want[t.comp_id]), timeout=30)
        assert_exact(t, want[t.comp_id])
    assert kills == 3
    gp.signal(signal.SIGTERM)
    code, _ = await asyncio.to_thread(gp.wait)
    assert code == 0


async def test_groups_reloads_under_traffic_lose_and_duplicate_nothing(tmp_path, start_gateway):
    folder = gateway_folder(tmp_path)
    gw = await start_gateway(folder)
    ilink = target(gw.port, gw.creds, "CLR001N")
    task = asyncio.create_task(ilink.run(until=never, timeout=40, logout=False))
    abc = source(gw.port, gw.creds, "ABC123N", count=3000, rate=2000)
    run = asyncio.create_task(abc.run())
    # Rewrite the groups file while ABC123N streams: the group that feeds CLR001N stays as it
    # is, another group comes and goes, so CLR001N's set must come out exactly as expected.
    extra = """  - entity: CLEARCO
    name: transient-orders
    front_end: fix
    filters: {categories: [order]}
    sources: [ABC123N]
    targets: [CLRFIX44]
"""
    for i in range(6):
        await wait_for(lambda: len(abc.sent_log) >= (i + 1) * 400, timeout=15)
        text = GROUPS if i % 2 else GROUPS + extra
        (folder / "groups.yaml").write_text(text)
        assert gw.gw.reload_groups()
    summary = await asyncio.wait_for(run, 20)
    assert summary["sent"] == 3000
    assert gw.metric("dcgateway_config_reloads_total") >= 6
    want = expected(routing_table(folder), abc)["CLR001N"]
    await finish(ilink, task, len(want))
    assert_exact(ilink, want)
