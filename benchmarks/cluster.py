"""Cluster benchmark: what replication costs, and how long a takeover takes.

In one run, with the fan-out benchmark's load (``benchmarks/_fixload.py``: one FIX 4.2 source,
--targets K targets, every copy checked exactly once and in order):

  * ``single``: ``dcgateway run`` in one process, the journal fsynced on its disk (the default);
  * ``cluster``: three ``nats-server`` processes with JetStream on 127.0.0.1 (Debian's package,
    each its own store dir), the journal stream and buckets with 3 replicas (a record is durable
    once a quorum acknowledged it), two nodes (``dcgateway run --node``), the load on the one
    serving the sessions.

Each mode runs the phases ``rate:R:S`` (R messages/s for S seconds: p50/p99 latency per copy)
then ``flat:N`` (N ExecutionReports flat out: deliveries/s). Then the takeover figure: the
simulators (one source at --takeover-rate, one target, both knowing both nodes) run against the
cluster, and the node serving them is SIGKILLed --kills times (restarted each time after the
other took over); the time from the kill to the first copy the target receives from the new
node (after its Logon there) is measured each time.

Prints exactly one JSON line on stdout (progress on stderr):
  {"bench": "cluster", "targets": 4, "replicas": 3,
   "single": {PHASE: {"msgs_in_per_s", "deliveries_per_s", "p50_us", "p99_us", "cpu_pct",
                      "lost", "dup", "out_of_order"}},
   "cluster": {PHASE: {...}}, "ratio": {PHASE: {cluster / single of each figure}},
   "takeover_s": [each kill], "takeover_median_s", "lease_s" (the takeovers'),
   "load_lease_s" (the phases'), "ok", "errors"}

  .venv/bin/python benchmarks/cluster.py [--targets 4] [--messages 100000] [--rate 2000]
      [--seconds 10] [--kills 5]

Every process it starts is stopped on the way out (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HERE = REPO / "benchmarks"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import fanout  # noqa: E402

from dcgateway.cluster.natslocal import LocalNatsCluster, free_ports  # noqa: E402

FIGURES = ("msgs_in_per_s", "deliveries_per_s", "p50_us", "p99_us", "cpu_pct")
COUNTS = ("lost", "dup", "out_of_order")
SERVES = "serves every session"


def cluster_section(servers: list[str], lease_s: float, name: str) -> tuple[str, list[int]]:
    ports = free_ports(4)
    nodes = "\n".join(
        f"    - {{node_id: n{i + 1}, listen: {{host: 127.0.0.1, port: {ports[2 * i]}}}, "
        f"metrics: {{host: 127.0.0.1, port: {ports[2 * i + 1]}}}}}" for i in range(2))
    return (f"cluster:\n  name: {name}\n  nats: {{servers: [{', '.join(servers)}]}}\n"
            f"  replicas: 3\n  lease_s: {lease_s:g}\n  nodes:\n{nodes}\n", ports)


def phases_of(result: dict) -> dict:
    out = {}
    for p in result.get("phases", []):
        out[p["phase"]] = {**{f: p.get(f) for f in FIGURES}, **{c: p.get(c) for c in COUNTS}}
    return out


def run_single(work: Path, creds: Path, args: argparse.Namespace) -> dict:
    return fanout.run_dcgw(0, work, creds, args)


def start_nodes(config: Path, folder: Path) -> dict[str, fanout.Child]:
    nodes = {}
    for n in ("n1", "n2"):
        nodes[n] = fanout.Child([*fanout.dcgateway_cmd(), "run", "--node", n, "--config",
                                 str(config)], folder / f"{n}.log")
        if n == "n1":
            nodes[n].wait_for(fanout.re.compile(SERVES), 60)
    return nodes


def run_cluster(work: Path, creds: Path, args: argparse.Namespace, nats: LocalNatsCluster
                ) -> dict:
    folder = work / "cluster"
    config = fanout.write_config(folder, work, args.targets, [])
    section, ports = cluster_section(nats.urls, args.load_lease_s, "benchflat")
    config.write_text(config.read_text() + section)
    nodes = start_nodes(config, folder)
    try:
        return fanout.run_load(ports[0], nodes["n1"].proc.pid, args, creds)
    finally:
        for child in nodes.values():
            child.stop()


async def takeovers(work: Path, creds_path: Path, args: argparse.Namespace,
                    nats: LocalNatsCluster) -> list[float]:
    """Kill -> first copy received from the new node, ``args.kills`` times."""
    from dcgateway.auth import logon_signer
    from simulators.source import SourceSimulator
    from simulators.target import TargetSimulator
    folder = work / "takeover"
    config = fanout.write_config(folder, work, 1, [])
    section, ports = cluster_section(nats.urls, args.lease_s, "benchtake")
    config.write_text(config.read_text() + section)
    creds = json.loads(creds_path.read_text())
    addrs = [("127.0.0.1", ports[0]), ("127.0.0.1", ports[2])]
    nodes = await asyncio.to_thread(start_nodes, config, folder)
    serving = "n1"
    target = TargetSimulator(*addrs[0], "CLR1", signer=logon_signer(*creds["CLR1"]),
                             gateway=fanout.GATEWAY, begin_string="FIX.4.2", addresses=addrs,
                             reconnect_timeout=60, heartbeat=5)
    source = SourceSimulator(*addrs[0], fanout.SOURCE, signer=logon_signer(*creds["SRC1"]),
                             target=fanout.GATEWAY, rate=args.takeover_rate, addresses=addrs,
                             auto_reconnect=True, reconnect_timeout=60, sync_at_end=False)
    tt = asyncio.create_task(target.run(until=lambda t: False, timeout=3600, logout=False))
    await asyncio.sleep(0.5)
    st = asyncio.create_task(source.run())
    out: list[float] = []
    try:
        for _ in range(args.kills):
            await asyncio.sleep(3.0)
            logons, t0 = target.counters["logons"], time.monotonic()
            nodes[serving].proc.kill()
            nodes[serving].proc.wait()
            while target.counters["logons"] == logons and time.monotonic() - t0 < 60:
                await asyncio.sleep(0.002)
            have = len(target.delivered)
            while len(target.delivered) == have and time.monotonic() - t0 < 60:
                await asyncio.sleep(0.002)
            out.append(round(time.monotonic() - t0, 3))
            print(f"takeover {len(out)}: {out[-1]} s", file=sys.stderr, flush=True)
            other = "n2" if serving == "n1" else "n1"
            nodes[serving] = fanout.Child([*fanout.dcgateway_cmd(), "run", "--node", serving,
                                           "--config", str(config)],
                                          folder / f"{serving}-{len(out)}.log")
            serving = other
    finally:
        source.stop()
        target.stop()
        await asyncio.wait([st, tt], timeout=10)
        for t in (st, tt):
            t.cancel()
        await source.close()
        target.client.abort()
        for child in nodes.values():
            await asyncio.to_thread(child.stop)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", type=int, default=4)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--rate", type=int, default=2000, help="the fixed-rate phase, msgs/s")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--settle", type=float, default=1.0)
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--takeover-rate", type=float, default=500.0)
    ap.add_argument("--lease-s", type=float, default=2.0, help="lease for the takeovers")
    ap.add_argument("--load-lease-s", type=float, default=5.0,
                    help="lease for the throughput and latency phases (the default lease_s)")
    ap.add_argument("--max-seconds", type=float, default=600.0)
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = ap.parse_args(argv)
    args.rates, args.dcgw_set = [args.rate], []
    work = Path(tempfile.mkdtemp(prefix="dcgw-cluster-bench-"))
    errors: list[str] = []
    nats = None
    try:
        creds = fanout.make_keys(work, args.targets)
        print("single-node mode ...", file=sys.stderr, flush=True)
        single = run_single(work, creds, args)
        nats = LocalNatsCluster(work / "nats")
        nats.start(60)
        print("cluster mode (R3) ...", file=sys.stderr, flush=True)
        cluster = run_cluster(work, creds, args, nats)
        print("takeovers ...", file=sys.stderr, flush=True)
        kills = asyncio.run(takeovers(work, creds, args, nats))
    finally:
        if nats is not None:
            nats.stop()
    for name, r in (("single", single), ("cluster", cluster)):
        if not r.get("ok"):
            errors.append(f"{name}: {r.get('errors')}")
    if errors or args.keep:
        print(f"logs kept in {work}", file=sys.stderr, flush=True)
    else:
        shutil.rmtree(work, ignore_errors=True)
    s, c = phases_of(single), phases_of(cluster)
    ratio = {ph: {f: (round(c[ph][f] / s[ph][f], 3) if c.get(ph, {}).get(f) and s[ph].get(f)
                      else None) for f in FIGURES} for ph in s}
    doc = {"bench": "cluster", "targets": args.targets, "replicas": 3, "single": s,
           "cluster": c, "ratio": ratio, "takeover_s": kills,
           "takeover_median_s": statistics.median(kills) if kills else None,
           "lease_s": args.lease_s, "load_lease_s": args.load_lease_s,
           "ok": not errors and len(kills) == args.kills,
           "errors": errors}
    print(json.dumps(doc), flush=True)
    return 0 if doc["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
