"""Failover with exact delivered sets: three NATS servers, two gateway nodes (processes), the
real simulators failing over by themselves (a list of node addresses, a silent node taken for
dead after three heartbeat intervals), under load. In every case, at the end, each target holds
exactly what its groups select from everything the sources sent: 0 lost, 0 unflagged
duplicates, each source in order, its own sequence gapless.

* the node serving the sessions is SIGKILLed at random moments, five times, and restarted;
* it is SIGSTOPped past its lease: the other node takes over; SIGCONTed, it sends nothing more
  (it cuts its connections at once, and the journal stream holds no record of it after the
  other node's takeover);
* one NATS server of three is SIGKILLed and restarted; the one leading the leases bucket is
  SIGKILLed: the same node keeps serving and copies resume while it is down;
* a groups change made with the CLI routes at the serving node, and at the next one after a
  failover;
* a cold restart of everything (every node and every NATS server) loses nothing.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
import pytest_asyncio

from dcgateway.auth import logon_signer
from dcgateway.cluster.natslocal import LocalNatsCluster
from dcgateway.cluster.replog import WRITER_HEADER, replay
from dcgateway.config import load_config
from dcgateway.routing import RoutingTable
from simulators.source import SourceSimulator
from simulators.target import TargetSimulator
from tests.simulators.support import GROUPS, SUB_IDS, assert_exact, expected, run_until_all
from tests.tasks import cancel_and_wait

from .nodes import REPO, Nodes, issue_cluster_keys
from .support import close_nats, cluster_config

pytestmark = pytest.mark.asyncio
LEASE_S = 2.0
HEARTBEAT = 1
SILENCE_S = 3 * HEARTBEAT + 0.5


def _never(_t: TargetSimulator) -> bool:
    return False


class Run:
    """Nodes n1, n2 and the simulators of one scenario (every process stopped at the end)."""

    def __init__(self, tmp: Path, nats_cluster: LocalNatsCluster, groups: str = GROUPS,
                 lease_s: float = LEASE_S) -> None:
        self.path = cluster_config(tmp / "gw", nats_cluster.urls, nodes=2, lease_s=lease_s,
                                   groups=groups)
        self.nodes = Nodes(self.path, tmp)
        self.nats = nats_cluster
        self.sources: list[SourceSimulator] = []
        self.targets: list[TargetSimulator] = []
        self.tasks: list[asyncio.Task] = []
        self.runs: list[asyncio.Task] = []

    async def start(self, *, count: int, rate: float) -> tuple[str, int]:
        self.creds = await asyncio.to_thread(issue_cluster_keys, self.path)
        for n in ("n1", "n2"):
            await asyncio.to_thread(self.nodes.start, n)
        primary = await self.nodes.wait_primary()
        addrs = self.nodes.addresses
        host, port = addrs[0]
        for comp in ("CLR001N", "CLRFIX44"):
            self.targets.append(TargetSimulator(
                host, port, comp, signer=logon_signer(*self.creds[comp]), heartbeat=HEARTBEAT,
                begin_string="FIX.4.4" if comp == "CLRFIX44" else "FIX.4.2", addresses=addrs,
                reconnect_timeout=120, keep_raw=True, silence_timeout=SILENCE_S))
        self.tasks = [asyncio.create_task(t.run(until=_never, timeout=240, logout=False))
                      for t in self.targets]
        await asyncio.sleep(0.5)
        for comp, seed in (("ABC123N", 7), ("ABD123N", 9)):
            self.sources.append(SourceSimulator(
                host, port, comp, signer=logon_signer(*self.creds[comp]), sub_ids=SUB_IDS[comp],
                seed=seed, count=count, rate=rate, auto_reconnect=True, reconnect_timeout=120,
                logout_at_end=True, addresses=addrs, heartbeat=HEARTBEAT,
                silence_timeout=SILENCE_S))
        self.runs = [asyncio.create_task(s.run()) for s in self.sources]
        # the routing table is read while the cluster is whole: the groups do not change in
        # these runs, and a KV bucket whose server was just restarted may still be electing
        self.routing = await asyncio.to_thread(self.table)
        return primary

    def table(self) -> RoutingTable:
        cfg = load_config(self.path)
        groups = cfg.groups
        from dcgateway.state import open_state
        state = open_state(cfg)
        try:
            groups = state.groups.current()
        finally:
            state.close()
        return RoutingTable.build(groups, {s.comp_id: s for s in cfg.sessions})

    async def finish(self, timeout: float = 120) -> None:
        """Sources done; each target then holds exactly its expected set."""
        summaries = await asyncio.wait_for(asyncio.gather(*self.runs), timeout)
        assert all(s["error"] is None for s in summaries), summaries
        want = expected(self.routing, *self.sources)
        for t, task in zip(self.targets, self.tasks):
            n = len(want.get(t.comp_id, []))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 120            # a takeover on a busy machine is slow
            while len(t.delivered) < n and not task.done() and loop.time() < deadline:
                await asyncio.sleep(0.05)
            t.stop()
            await task
            # settle: a takeover may still be under way (a target logs on again to the new
            # primary, which waits out the lease: 5 s here) when the last copy has arrived
            await run_until_all(t, n, timeout=30, settle=60)
            assert_exact(t, want.get(t.comp_id, []))
        for s in self.sources:
            await s.close()

    async def close(self) -> None:
        for t in self.targets:
            t.stop()
        await cancel_and_wait(*self.tasks, *self.runs)
        for s in self.sources:
            await s.close()
        for t in self.targets:
            t.client.abort()                # a target left logged on: its socket closed
        await asyncio.sleep(0)
        await asyncio.to_thread(self.nodes.stop_all)


@pytest_asyncio.fixture
async def run(tmp_path: Path, nats_cluster: LocalNatsCluster) -> AsyncIterator[Run]:
    r = Run(tmp_path, nats_cluster)
    try:
        yield r
    finally:
        await r.close()


@pytest_asyncio.fixture
async def own_run(tmp_path: Path, own_nats_cluster: LocalNatsCluster) -> AsyncIterator[Run]:
    r = Run(tmp_path, own_nats_cluster)
    try:
        yield r
    finally:
        await r.close()


async def journal_writers(r: Run) -> list[tuple[str, str]]:
    """(writer, kind) of every journal record, in stream order."""
    name = r.nodes.cluster.name
    nc = await nats.connect(servers=r.nats.urls)
    try:
        js = nc.jetstream()
        last = (await js.stream_info(f"{name.upper()}_JOURNAL")).state.last_seq
        out: list[tuple[str, str]] = []
        await replay(nc, f"{name.upper()}_JOURNAL", f"{name}.>", last,
                     lambda seq, subj, hdrs, data: out.append(
                         (hdrs.get(WRITER_HEADER, ""),
                          "takeover" if subj.endswith(".ctl") else "record")))
        return out
    finally:
        await close_nats(nc)


async def test_primary_killed_five_times_under_load_loses_nothing(run: Run) -> None:
    rng = random.Random(20261202)
    primary, rev = await run.start(count=3000, rate=300)
    for _ in range(5):
        await asyncio.sleep(rng.uniform(0.5, 1.5))
        await asyncio.to_thread(run.nodes.kill, primary)
        await asyncio.to_thread(run.nodes.start, primary)     # back, as a standby first
        primary, rev = await run.nodes.wait_primary(timeout=LEASE_S + 20, after=rev)
    await run.finish()
    assert sum(s.stats["redirects"] for s in run.sources) > 0
    r = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "dcgateway", "cluster", "status", "--json", "--config",
        str(run.path)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["primary"] == primary and all(n["alive"] for n in doc["nodes"])
    assert {s["node"] for s in doc["sessions"]} == {primary}
    assert doc["stream"]["replicas"] == 3 and len(doc["stream"]["followers"]) == 2


async def test_sigstop_past_the_lease_then_sigcont_sends_nothing_more(run: Run) -> None:
    primary, rev = await run.start(count=2500, rate=300)
    await asyncio.sleep(1.5)
    run.nodes.signal(primary, signal.SIGSTOP)
    stopped = time.monotonic()
    other, rev = await run.nodes.wait_primary(timeout=LEASE_S + 20, after=rev)
    assert other != primary and time.monotonic() - stopped >= LEASE_S - 0.5
    await asyncio.sleep(2.0)                       # the clients move and traffic goes on
    run.nodes.signal(primary, signal.SIGCONT)
    await asyncio.sleep(2.0)
    log = run.nodes.log_text(primary)
    assert "lost lease primary" in log
    await run.finish()
    writers = await journal_writers(run)
    takeovers = [w for w, kind in writers if kind == "takeover"]
    assert len(takeovers) == 2
    after = writers[[i for i, (w, k) in enumerate(writers) if k == "takeover"][-1]:]
    assert all(w == takeovers[-1] for w, _ in after), "a record of the stopped node"


async def test_a_nats_server_killed_and_restarted_loses_nothing(
        tmp_path: Path, own_nats_cluster: LocalNatsCluster) -> None:
    """With the contract's lease (5 s), one NATS server of three at a time."""
    r = Run(tmp_path, own_nats_cluster, lease_s=5)
    try:
        await r.start(count=3000, rate=300)
        for i in (0, 1):
            await asyncio.sleep(1.5)
            await asyncio.to_thread(r.nats.kill_server, i)
            await asyncio.sleep(2.0)
            r.nats.start_server(i)
            await asyncio.to_thread(r.nats.wait_ready, 60)
        await r.finish()
    finally:
        await r.close()


ABC_ONLY = """
groups:
  - entity: CLEARCO
    name: abc-all
    front_end: fix
    filters: {categories: [execution, acknowledgment, order, mass_action]}
    sources: [ABC123N]
    targets: [CLRFIX44]
"""


async def test_a_groups_change_routes_at_the_serving_node_and_after_failover(
        tmp_path: Path, nats_cluster: LocalNatsCluster) -> None:
    r = Run(tmp_path, nats_cluster, groups=ABC_ONLY)
    try:
        primary, rev = await r.start(count=3000, rate=300)
        await asyncio.sleep(1.0)
        cli = await asyncio.to_thread(subprocess.run, [
            sys.executable, "-m", "dcgateway", "groups", "create", "--entity", "CLEARCO",
            "--name", "abd-fills", "--front-end", "ilink2", "--filter", "categories=execution",
            "--source", "ABD123N", "--target", "CLR001N", "--json", "--config", str(r.path)],
            cwd=REPO, capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0, cli.stderr
        changed = time.monotonic()
        clr = r.targets[0]
        while not clr.delivered and time.monotonic() - changed < 5:
            await asyncio.sleep(0.05)
        assert clr.delivered, "the serving node did not route with the new group"
        # the table follows within a second; the bound adds a matching message and its copy
        assert time.monotonic() - changed < 3.0
        await asyncio.to_thread(r.nodes.kill, primary)
        await r.nodes.wait_primary(timeout=LEASE_S + 20, after=rev)
        before = len(clr.delivered)
        await asyncio.sleep(3.0)
        assert len(clr.delivered) > before, "the next node does not route with it"
        summaries = await asyncio.wait_for(asyncio.gather(*r.runs), 120)
        assert all(s["error"] is None for s in summaries)
        fix = r.targets[1]
        want = expected(await asyncio.to_thread(r.table), r.sources[0])
        fix.stop()
        await r.tasks[1]
        await run_until_all(fix, len(want["CLRFIX44"]), timeout=30)
        assert_exact(fix, want["CLRFIX44"])
        assert clr.unflagged_duplicates == 0 and clr.error is None
    finally:
        await r.close()


async def test_a_cold_restart_of_everything_loses_nothing(own_run: Run) -> None:
    await own_run.start(count=2500, rate=300)
    await asyncio.sleep(2.0)
    for n in ("n1", "n2"):
        await asyncio.to_thread(own_run.nodes.kill, n)
    await asyncio.to_thread(own_run.nats.stop)                  # every server, gracefully
    await asyncio.sleep(1.0)
    await asyncio.to_thread(own_run.nats.start, 60)
    for n in ("n1", "n2"):
        await asyncio.to_thread(own_run.nodes.start, n)
    await own_run.nodes.wait_primary(timeout=LEASE_S + 30)
    await own_run.finish()


async def test_a_graceful_stop_hands_over_at_once(run: Run) -> None:
    """SIGTERM: the serving node logs its sessions out, gives its lease up and exits; the other
    node takes over without waiting for the lease to run out; nothing is lost."""
    primary, term = await run.start(count=1500, rate=300)
    await asyncio.sleep(1.0)
    t0 = time.monotonic()
    code = await asyncio.to_thread(run.nodes.stop, primary, 15.0)
    assert code == 0 and time.monotonic() - t0 < 12
    other, _ = await run.nodes.wait_primary(timeout=10, after=term)
    assert other != primary
    await asyncio.to_thread(run.nodes.start, primary)
    await run.finish()


async def _leases_leader_alone(r: Run) -> int:
    """Index of the NATS server leading the leases bucket's stream (``KV_<name>_leases``), the
    journal stream's leader moved off it first when it is the same server (bounded): the test
    measures what the leases bucket's election does; the journal's own election pauses copies
    whatever the leases do (docs/cluster.md)."""
    nc = await nats.connect(servers=r.nats.urls)
    names = [s.name for s in r.nats.servers]
    journal = f"{r.nodes.cluster.name.upper()}_JOURNAL"
    try:
        js = nc.jetstream()
        info = await js.stream_info(f"KV_{r.nodes.cluster.name}_leases")
        assert info.cluster is not None and info.cluster.leader
        leader = info.cluster.leader
        for _ in range(50):
            j = await js.stream_info(journal)
            if j.cluster is not None and j.cluster.leader and j.cluster.leader != leader:
                return names.index(leader)
            if j.cluster is not None and j.cluster.leader == leader:
                await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{journal}", b"", timeout=5)
            await asyncio.sleep(0.2)
        raise AssertionError("the journal's leader did not move off the leases bucket's")
    finally:
        await close_nats(nc)


async def _longest_gap(r: Run, seconds: float) -> float:
    """Longest time without a new copy at any target, over the next ``seconds``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    last_n, last_t, gap = -1, loop.time(), 0.0
    while loop.time() < end:
        n = sum(len(t.delivered) for t in r.targets)
        if n != last_n:
            last_n, last_t = n, loop.time()
        gap = max(gap, loop.time() - last_t)
        await asyncio.sleep(0.05)
    return gap


#: The longest a target may wait for copies when the leases bucket's leader dies (an audit
#: measured 15-33 s when it moved the sessions; the bucket's election takes 4-9 s, which the
#: serving node rides out; a journal connection to the dead server reconnects and resends
#: after its acknowledgement timeout, 2 s).
RESUME_BOUND_S = 6.0


async def test_the_leases_leader_killed_moves_nothing_and_loses_nothing(
        tmp_path: Path, own_nats_cluster: LocalNatsCluster) -> None:
    """With the contract's lease (5 s): the NATS server leading the leases bucket (not the
    journal stream: its own election pauses copies whatever the leases do) is SIGKILLed while
    traffic flows; the serving node keeps serving (same lease term, one takeover in the
    journal), copies resume while the server is still down, nothing is lost."""
    r = Run(tmp_path, own_nats_cluster, lease_s=5)
    try:
        primary, term = await r.start(count=3000, rate=150)
        await asyncio.sleep(3.0)
        victim = await _leases_leader_alone(r)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(r.nats.kill_server, victim)
        gap = await _longest_gap(r, 14.0)           # the server stays down meanwhile
        print(f"longest gap without copies after the leases leader died: {gap:.2f}s")
        assert await r.nodes.primary_lease() == (primary, term), "the sessions moved"
        r.nats.start_server(victim)
        await asyncio.to_thread(r.nats.wait_ready, 60)
        await r.finish()
        assert gap < RESUME_BOUND_S, f"copies stopped for {gap:.1f}s"
        assert "lost lease" not in r.nodes.log_text(primary)
        takeovers = [w for w, kind in await journal_writers(r) if kind == "takeover"]
        assert len(takeovers) == 1, takeovers
    finally:
        await r.close()
