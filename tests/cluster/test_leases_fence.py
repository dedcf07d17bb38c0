"""Session ownership and the fence, with real processes on a real three-server NATS cluster:

* a lease is held by one node; a node SIGSTOPped past its lease loses it to another, and once
  SIGCONTed sends nothing more (its own clock tells it at once);
* the fence without that check: a stale writer woken up tries to append and JetStream refuses
  it (expected last sequence), so one target sequence number never goes to two records;
* a killed holder's lease is free within ``lease_s`` and another node takes it.

The workers (:mod:`tests.cluster.leaseworker`) give target T sequence numbers in journal records
the way a node does; the stream is read back at the end and must hold each number exactly once,
in order, with no record of the stale writer after the new writer's takeover."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nats
import pytest

from dcgateway.cluster.natslocal import LocalNatsCluster
from dcgateway.cluster.replog import WRITER_HEADER, replay

from .support import close_nats, unique_name, wait_until

LEASE_S = 2.0
REPO = Path(__file__).resolve().parents[2]


class Worker:
    def __init__(self, tmp: Path, cluster: LocalNatsCluster, name: str, node: str,
                 *extra: str) -> None:
        self.out = tmp / f"{node}.log"
        self.err = open(tmp / f"{node}.err", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.cluster.leaseworker", "--servers",
             ",".join(cluster.urls), "--name", name, "--node", node, "--lease-s", str(LEASE_S),
             "--out", str(self.out), *extra], cwd=REPO, stdin=subprocess.DEVNULL,
            stderr=self.err)

    def lines(self) -> list[str]:
        return self.out.read_text().splitlines() if self.out.exists() else []

    def sent(self) -> int:
        return sum(1 for line in self.lines() if line.startswith("sent "))

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(10)
        self.err.close()


def stream_records(cluster: LocalNatsCluster, name: str) -> list[tuple[int, str, dict]]:
    async def read() -> list[tuple[int, str, dict]]:
        nc = await nats.connect(servers=cluster.urls)
        js = nc.jetstream()
        last = (await js.stream_info(f"{name.upper()}_J")).state.last_seq
        out: list[tuple[int, str, dict]] = []
        await replay(nc, f"{name.upper()}_J", f"{name}.>", last,
                     lambda seq, subj, hdrs, data: out.append(
                         (seq, hdrs.get(WRITER_HEADER, ""), json.loads(data))))
        await close_nats(nc)
        return out
    return asyncio.run(read())


def check_one_sequence(records: list[tuple[int, str, dict]]) -> dict[str, list[int]]:
    """Target T's numbers are 1..N, each once; a writer appears in one run after its takeover
    and never after another writer's takeover. Returns the numbers each writer gave."""
    seqs = [r[2]["seq"] for r in records if "seq" in r[2]]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    takeovers = [r for r in records if r[2].get("type") == "takeover"]
    current, by = None, {}
    for _, writer, doc in records:
        if doc.get("type") == "takeover":
            current = writer
            continue
        assert writer == current, f"a record of {writer} after {current} took over"
        by.setdefault(writer, []).append(doc["seq"])
    assert len(takeovers) >= 2
    return by


@pytest.mark.parametrize("local_check", [True, False], ids=["lease", "fence-only"])
def test_sigstop_past_the_lease_then_sigcont_sends_nothing_more(
        tmp_path: Path, nats_cluster: LocalNatsCluster, local_check: bool) -> None:
    name = unique_name("f")
    extra = () if local_check else ("--no-local-check",)
    w1 = Worker(tmp_path, nats_cluster, name, "n1", *extra)
    w2 = None
    try:
        wait_until(lambda: "acquired" in w1.lines() and w1.sent() >= 10, 30,
                   what="n1 serving")
        w2 = Worker(tmp_path, nats_cluster, name, "n2")
        time.sleep(0.5)
        assert "acquired" not in w2.lines()          # n1 holds it: n2 waits
        os.kill(w1.proc.pid, signal.SIGSTOP)
        stopped_at, sent_before = time.monotonic(), w1.sent()
        wait_until(lambda: "acquired" in w2.lines(), LEASE_S + 10, what="n2 taking over")
        assert time.monotonic() - stopped_at >= LEASE_S - 0.5
        wait_until(lambda: w2.sent() >= 10, 10, what="n2 serving")
        os.kill(w1.proc.pid, signal.SIGCONT)
        wait_until(lambda: ("lost" if local_check else "fenced") in w1.lines(), 10,
                   what="n1 noticing")
        time.sleep(1.0)
        if local_check:
            assert w1.sent() == sent_before, "n1 sent after it woke up"
        else:                  # it tried: the stream refused it (no record of it below)
            assert w1.sent() > sent_before
        assert w2.sent() > 10 and "lost" not in w2.lines()
    finally:
        w1.stop()
        if w2 is not None:
            w2.stop()
    by = check_one_sequence(stream_records(nats_cluster, name))
    assert len(by) == 2


def test_a_killed_holders_lease_is_free_within_lease_s(
        tmp_path: Path, nats_cluster: LocalNatsCluster) -> None:
    name = unique_name("k")
    w1 = Worker(tmp_path, nats_cluster, name, "n1")
    w2 = None
    try:
        wait_until(lambda: w1.sent() >= 5, 30, what="n1 serving")
        w2 = Worker(tmp_path, nats_cluster, name, "n2")
        time.sleep(0.5)
        w1.proc.kill()
        w1.proc.wait(10)
        killed = time.monotonic()
        wait_until(lambda: w2.sent() >= 5, LEASE_S + 10, what="n2 serving")
        # free after lease_s, taken at the next try (every lease_s / 4), on a busy machine
        assert time.monotonic() - killed < LEASE_S + 5
    finally:
        w1.stop()
        if w2 is not None:
            w2.stop()
    check_one_sequence(stream_records(nats_cluster, name))
