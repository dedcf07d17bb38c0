"""``dcgateway demo --cluster``: the cluster mode on one machine, and a node lost on purpose.

It starts three NATS servers with JetStream (Debian's ``nats-server``) under
``data_dir/cluster-demo``, writes a cluster configuration from the given one (same entities,
sessions and groups file; two nodes on free ports), issues a key pair per Session ID into the
cluster, runs the two nodes as ``dcgateway run --node`` processes and the simulators (which know
both addresses and fail over by themselves), and prints once a second what the sources sent,
what each target received and what each node says on its ``/metrics``. After ``kill_after``
seconds it SIGKILLs the node serving the sessions and restarts it a little later: the totals
show the other node taking the sessions over. At the end each target's delivered set is compared
with what its groups select from everything the sources sent: lost and unflagged duplicates are
printed (both 0).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from ..config import GatewayConfig, load_config
from ..routing import RoutingTable
from .natslocal import LocalNatsCluster, free_ports

LEASE_S = 3.0
_METRIC = re.compile(r"^(dcgateway_messages_received_total|dcgateway_messages_sent_total|"
                     r"dcgateway_cluster_lease_held)\{[^}]*\} ([0-9.e+]+)$", re.M)


def demo_cluster_config(config: GatewayConfig, folder: Path, servers: list[str]) -> Path:
    """A two-node cluster configuration beside the demo's NATS servers."""
    g = config.gateway
    ports = free_ports(4)
    ents = "\n".join(
        f"  - {{name: {e.name}, administrators: ["
        + ", ".join(f"{{name: {a.name}, email: {a.email}}}" for a in e.administrators) + "]}"
        for e in config.entities)
    sess = "\n".join(f"  - {{comp_id: {s.comp_id}, role: {s.role}, entity: {s.entity}, "
                     f"profile: {s.profile}, begin_string: {s.begin_string}}}"
                     for s in config.sessions)
    text = textwrap.dedent(f"""\
        gateway:
          comp_id: {g.comp_id}
          listen: {{host: 127.0.0.1, port: 0}}
          metrics: {{host: 127.0.0.1, port: 0}}
          data_dir: var
          market_close: {{time: "{g.market_close.time.strftime('%H:%M')}", tz: {g.market_close.tz.key}}}
          week_start: {{day: {('monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday', 'sunday')[g.week_start.day]}, time: "{g.week_start.time.strftime('%H:%M')}", tz: {g.week_start.tz.key}}}
          heartbeat_min_s: 1
        groups_file: {config.groups_file}
        cluster:
          name: demo
          nats: {{servers: [{", ".join(servers)}]}}
          replicas: 3
          lease_s: {LEASE_S:g}
          nodes:
            - {{node_id: n1, listen: {{host: 127.0.0.1, port: {ports[0]}}}, metrics: {{host: 127.0.0.1, port: {ports[1]}}}}}
            - {{node_id: n2, listen: {{host: 127.0.0.1, port: {ports[2]}}}, metrics: {{host: 127.0.0.1, port: {ports[3]}}}}}
        """) + "entities:\n" + ents + "\nsessions:\n" + sess + "\n"
    path = folder / "gateway.yaml"
    path.write_text(text)
    return path


def issue_keys(config: GatewayConfig) -> dict[str, tuple[str, str]]:
    """A fresh key pair per Session ID, in the cluster: comp_id -> (access key id, secret)."""
    from ..state import open_state
    state = open_state(config)
    try:
        km = state.keys
        km.store.ensure_master_key()
        by_scope = {}
        for scope in sorted({s.key_scope for s in config.sessions}):
            rec = km.create(scope, who="demo")
            by_scope[scope] = (rec.access_key_id, rec.secret_key)
    finally:
        state.close()
    return {s.comp_id: by_scope[s.key_scope] for s in config.sessions}


async def _scrape(port: int) -> dict[str, float] | None:
    """in, out and lease-held totals from a node's /metrics (None: not serving it)."""
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 0.5)
        w.write(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        body = (await asyncio.wait_for(r.read(), 1.0)).decode("latin-1")
        w.close()
    except (OSError, asyncio.TimeoutError):
        return None
    out = {"in": 0.0, "out": 0.0, "held": 0.0}
    for name, value in _METRIC.findall(body):
        key = {"dcgateway_messages_received_total": "in",
               "dcgateway_messages_sent_total": "out"}.get(name, "held")
        out[key] += float(value)
    return out


class Demo:
    def __init__(self, config: GatewayConfig, out: Any, rate: float) -> None:
        self.base = config
        self.out = out
        self.rate = rate
        self.folder = Path(config.gateway.data_dir) / "cluster-demo"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Any] = {}
        self.nats: LocalNatsCluster | None = None

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def start_node(self, node: str) -> None:
        log = self.logs.setdefault(node, open(self.folder / f"{node}.log", "ab"))
        self.procs[node] = subprocess.Popen(
            [sys.executable, "-m", "dcgateway", "run", "--node", node, "--config",
             str(self.path)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    async def totals(self, t0: float, sources: list[Any], targets: list[Any]) -> str:
        parts = [f"[{time.monotonic() - t0:5.0f}s] sent {sum(s.next_seq - 1 for s in sources):>7,}"]
        parts.append("got " + " ".join(f"{t.comp_id} {len(t.delivered):>6,}" for t in targets))
        for n in self.cfg.cluster.nodes if self.cfg.cluster else ():
            proc = self.procs.get(n.node_id)
            if proc is None or proc.poll() is not None:
                parts.append(f"{n.node_id} DOWN")
                continue
            m = await _scrape(n.metrics.port)
            if m is None or not m["held"]:
                parts.append(f"{n.node_id} standby")
            else:
                parts.append(f"{n.node_id} SERVING in {m['in']:>7,.0f} out {m['out']:>7,.0f}")
        return " | ".join(parts)

    async def run(self, duration: float | None, kill_after: float, stop: asyncio.Event) -> int:
        from simulators.source import SourceSimulator
        from simulators.target import TargetSimulator

        from ..auth import logon_signer
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.nats = LocalNatsCluster(self.folder / "nats")
        await asyncio.to_thread(self.nats.start, 60)
        self.path = demo_cluster_config(self.base, self.folder, self.nats.urls)
        self.cfg = load_config(self.path)
        assert self.cfg.cluster is not None
        creds = await asyncio.to_thread(issue_keys, self.cfg)
        addrs = [(n.listen.host, n.listen.port) for n in self.cfg.cluster.nodes]
        self.say(f"NATS: {', '.join(self.nats.urls)} (JetStream, R3); nodes: "
                 + ", ".join(f"{n.node_id} FIX {n.listen} metrics {n.metrics}"
                             for n in self.cfg.cluster.nodes)
                 + f"; logs in {self.folder}")
        for n in ("n1", "n2"):
            self.start_node(n)
        await asyncio.sleep(2.0)
        targets = [TargetSimulator(*addrs[0], s.comp_id, signer=logon_signer(*creds[s.comp_id]),
                                   begin_string=s.begin_string, addresses=addrs, heartbeat=1,
                                   silence_timeout=3.5, reconnect_timeout=60)
                   for s in self.cfg.sessions if s.role == "target"]
        sources = [SourceSimulator(*addrs[0], s.comp_id, signer=logon_signer(*creds[s.comp_id]),
                                   begin_string=s.begin_string, rate=self.rate, seed=i + 1,
                                   addresses=addrs, heartbeat=1, silence_timeout=3.5,
                                   auto_reconnect=True, reconnect_timeout=60,
                                   logout_at_end=True)
                   for i, s in enumerate(x for x in self.cfg.sessions if x.role == "source")]
        tasks = [asyncio.create_task(t.run(timeout=10 ** 9, logout=False)) for t in targets]
        await asyncio.sleep(1.0)
        runs = [asyncio.create_task(s.run()) for s in sources]
        t0 = time.monotonic()
        killed: tuple[str, float] | None = None
        while not stop.is_set() and (duration is None or time.monotonic() - t0 < duration):
            await asyncio.sleep(1.0)
            self.say(await self.totals(t0, sources, targets))
            now = time.monotonic() - t0
            if killed is None and now >= kill_after:
                victim = await self._serving()
                if victim is not None:
                    self.say(f"*** SIGKILL {victim}, the node serving every session: the "
                             f"other node takes them over within {LEASE_S:g}s")
                    self.procs[victim].send_signal(signal.SIGKILL)
                    self.procs[victim].wait(10)
                    killed = (victim, now)
            elif killed is not None and killed[1] > 0 and now >= killed[1] + LEASE_S + 3:
                self.say(f"*** {killed[0]} restarted (it stands by)")
                self.start_node(killed[0])
                killed = (killed[0], -1.0)
        return await self._finish(sources, targets, tasks, runs)

    async def _serving(self) -> str | None:
        assert self.cfg.cluster is not None
        for n in self.cfg.cluster.nodes:
            m = await _scrape(n.metrics.port)
            if m is not None and m["held"]:
                return n.node_id
        return None

    async def _finish(self, sources: list[Any], targets: list[Any], tasks: list[Any],
                      runs: list[Any]) -> int:
        from simulators.source import expected_deliveries
        self.say("stopping: the sources finish, the targets receive everything, then the nodes")
        for s in sources:
            s.stop()
        await asyncio.wait(runs, timeout=30)
        table = RoutingTable.build(_groups(self.cfg), {s.comp_id: s for s in self.cfg.sessions})
        want: dict[str, set[tuple[str, str]]] = {}
        for s in sources:
            for t, keys in expected_deliveries(table, s.sender, s.sent_log).items():
                want.setdefault(t, set()).update(keys)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(
                not want.get(t.comp_id, set()) <= set(t.delivered) for t in targets):
            await asyncio.sleep(0.2)
        ok = True
        for t in targets:
            w = want.get(t.comp_id, set())
            lost = len(w - set(t.delivered))
            ok = ok and lost == 0 and t.unflagged_duplicates == 0
            self.say(f"{t.comp_id}: expected {len(w):,}, delivered {len(t.delivered):,}, "
                     f"lost {lost}, unflagged duplicates {t.unflagged_duplicates}")
            t.stop()
        await asyncio.wait(tasks, timeout=10)
        for s in sources:
            await s.close()
        for t in targets:
            t.client.abort()
        return 0 if ok else 1

    def close(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        for log in self.logs.values():
            log.close()
        if self.nats is not None:
            self.nats.stop()


def _groups(config: GatewayConfig) -> Any:
    from ..state import open_state
    state = open_state(config)
    try:
        return state.groups.current()
    finally:
        state.close()


def cluster_demo(config: GatewayConfig, *, rate: float = 200.0, duration: float | None = None,
                 kill_after: float = 10.0, out: Any = sys.stdout) -> int:
    """``dcgateway demo --cluster`` in the foreground until Ctrl-C or ``duration``."""
    from ..runtime import run_until_signalled

    async def main(stop: asyncio.Event) -> int:
        demo = Demo(config, out, rate)
        try:
            return await demo.run(duration, kill_after, stop)
        finally:
            await asyncio.to_thread(demo.close)

    return run_until_signalled(main)
