"""A stand-in for a gateway node in the lease and fence tests (run as its own process, so the
tests can SIGSTOP, SIGCONT and SIGKILL it): it takes the primary lease when it is free, becomes
the journal stream's writer, and every 20 ms gives target ``T`` its next sequence number in a
record (the number continues from the stream, as a node's recovery does), logging each step to a
file, one line each, flushed: ``acquired``, ``sent SEQ``, ``acked STREAMSEQ``, ``lost``,
``fenced``. ``--no-local-check`` skips the lease check before sending, to show that the stream's
fence alone refuses a stale writer."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from dcgateway.cluster.connect import connect
from dcgateway.cluster.leases import PRIMARY, LeaseManager, open_leases
from dcgateway.cluster.replog import Fenced, ReplicatedLog, ensure_stream, replay
from dcgateway.config.cluster import Address, ClusterNode, ClusterSettings, NatsSettings


async def main(a: argparse.Namespace) -> None:
    out = open(a.out, "a", buffering=1)

    def say(line: str) -> None:
        out.write(line + "\n")

    settings = ClusterSettings(NatsSettings(tuple(a.servers.split(","))),
                               (ClusterNode(a.node, Address("127.0.0.1", 1),
                                            Address("127.0.0.1", 2)),),
                               replicas=3, lease_s=a.lease_s, name=a.name)
    nc = await connect(settings, a.node)
    js = nc.jetstream(timeout=5)
    stream, subjects = f"{a.name.upper()}_J", f"{a.name}.>"
    await ensure_stream(js, stream, [subjects], 3, 3600)
    kv = await open_leases(js, f"{a.name}_leases", 3, a.lease_s)
    state = {"writer": None, "next": 1, "lost": False}
    acquired = asyncio.Event()
    leases = LeaseManager(kv, a.node, a.lease_s, want=[PRIMARY],
                          on_acquired=lambda name: acquired.set(),
                          on_lost=lambda name: (say("lost"), state.update(lost=True)))
    lease_task = asyncio.create_task(leases.run())
    await acquired.wait()
    say("acquired")
    log = ReplicatedLog(nc, stream, f"{a.name}.ctl", a.node,
                        on_acked=lambda seq: say(f"acked {seq}"),
                        on_fenced=lambda: say("fenced"))
    last = await log.last_sequence()
    nxt = 1

    def seen(seq: int, subject: str, headers: dict, data: bytes) -> None:
        nonlocal nxt
        if subject.endswith(".tgt"):
            nxt = json.loads(data)["seq"] + 1
    await replay(nc, stream, subjects, last, seen)
    try:
        await log.take_over(after=last)
    except Fenced:
        say("fenced")
        return
    runner = asyncio.create_task(log.run())
    while not log.fenced:
        if a.no_local_check or leases.holds(PRIMARY):
            try:
                log.append(f"{a.name}.tgt", json.dumps({"seq": nxt, "by": a.node}).encode())
            except Fenced:
                break
            say(f"sent {nxt}")
            nxt += 1
        elif state["lost"]:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(1.0)
    runner.cancel()
    lease_task.cancel()
    await asyncio.gather(runner, lease_task, return_exceptions=True)
    try:
        await asyncio.wait_for(nc.close(), 10)
    except Exception:
        pass


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--servers", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--node", required=True)
    p.add_argument("--lease-s", type=float, default=2.0)
    p.add_argument("--out", required=True)
    p.add_argument("--no-local-check", action="store_true")
    asyncio.run(main(p.parse_args()))
    sys.exit(0)
