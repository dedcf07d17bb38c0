"""Failover with exact delivered sets: three NATS servers, two gateway nodes (processes), the
real simulators failing over by themselves, under load:

* the node serving the sessions is SIGKILLed at random moments, five times, and restarted;
* at the end each target holds exactly what its groups select from everything the sources
  sent: 0 lost, 0 unflagged duplicates, each source in order, its sequence gapless.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from dcgateway.auth import logon_signer
from dcgateway.cluster.natslocal import LocalNatsCluster
from simulators.source import SourceSimulator
from simulators.target import TargetSimulator
from tests.simulators.support import GROUPS, SUB_IDS, assert_exact, expected, run_until_all

from .nodes import Nodes, issue_cluster_keys
from .support import cluster_config

pytestmark = pytest.mark.asyncio
LEASE_S = 2.0


def _never(_t: TargetSimulator) -> bool:
    return False


@pytest.fixture
def nodes(tmp_path: Path, nats_cluster: LocalNatsCluster):
    path = cluster_config(tmp_path / "gw", nats_cluster.urls, nodes=2, lease_s=LEASE_S,
                          groups=GROUPS)
    n = Nodes(path, tmp_path)
    try:
        yield n
    finally:
        n.stop_all()


def sims(nodes: Nodes, creds, *, count: int, rate: float):
    addrs = nodes.addresses
    host, port = addrs[0]
    targets = [TargetSimulator(host, port, comp, signer=logon_signer(*creds[comp]),
                               begin_string="FIX.4.4" if comp == "CLRFIX44" else "FIX.4.2",
                               addresses=addrs, reconnect_timeout=60, keep_raw=True)
               for comp in ("CLR001N", "CLRFIX44")]
    sources = [SourceSimulator(host, port, comp, signer=logon_signer(*creds[comp]),
                               sub_ids=SUB_IDS[comp], seed=seed, count=count, rate=rate,
                               auto_reconnect=True, reconnect_timeout=60, logout_at_end=True,
                               addresses=addrs)
               for comp, seed in (("ABC123N", 7), ("ABD123N", 9))]
    return sources, targets


async def finish(nodes: Nodes, sources, targets, tasks, runs, timeout: float = 90) -> None:
    summaries = await asyncio.wait_for(asyncio.gather(*runs), timeout)
    assert all(s["error"] is None for s in summaries), summaries
    want = expected(nodes_table(nodes), *sources)
    for t, task in zip(targets, tasks):
        n = len(want[t.comp_id])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while len(t.delivered) < n and not task.done() and loop.time() < deadline:
            await asyncio.sleep(0.05)
        t.stop()
        await task
        await run_until_all(t, n, timeout=30)
        assert_exact(t, want[t.comp_id])
    for s in sources:
        await s.close()


def nodes_table(nodes: Nodes):
    from dcgateway.routing import RoutingTable
    cfg = nodes.config
    return RoutingTable.build(cfg.groups, {s.comp_id: s for s in cfg.sessions})


async def test_primary_killed_five_times_under_load_loses_nothing(nodes: Nodes) -> None:
    rng = random.Random(20261202)
    creds = await asyncio.to_thread(issue_cluster_keys, nodes.config_path)
    for n in ("n1", "n2"):
        await asyncio.to_thread(nodes.start, n)
    primary, rev = await nodes.wait_primary()
    sources, targets = sims(nodes, creds, count=3000, rate=300)
    tasks = [asyncio.create_task(t.run(until=_never, timeout=180, logout=False))
             for t in targets]
    await asyncio.sleep(0.5)
    runs = [asyncio.create_task(s.run()) for s in sources]
    for _ in range(5):
        await asyncio.sleep(rng.uniform(0.5, 1.5))
        await asyncio.to_thread(nodes.kill, primary)
        await asyncio.to_thread(nodes.start, primary)     # back, as a standby first
        primary, rev = await nodes.wait_primary(timeout=LEASE_S + 20, after=rev)
    await finish(nodes, sources, targets, tasks, runs)
    assert sum(s.stats["redirects"] for s in sources) > 0
