"""A takeover that cannot finish (the stream's replay times out, say) must not keep the primary
lease: the node gives it up at once so another node can try, does not take it again for a
while (doubling, bounded), says so in its log, its metrics and its presence entry; and while a
takeover runs, nobody (``cluster status``, the other nodes' Logouts) calls that node serving.

The node runs in this process (:class:`~dcgateway.cluster.node.ClusterNode` on a real NATS
cluster) with its journal rebuild replaced by one that fails when the test says so."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import nats
import pytest
from nats import errors as nats_errors
from prometheus_client import CollectorRegistry

from dcgateway.cluster import node as node_module
from dcgateway.cluster.connect import Names
from dcgateway.cluster.kvmirror import open_bucket
from dcgateway.cluster.leases import PRIMARY, LeaseManager
from dcgateway.cluster.marks import Mark, stream_problem
from dcgateway.cluster.natslocal import LocalNatsCluster
from dcgateway.cluster.node import (
    BACKING_OFF,
    REFUSING,
    SERVING,
    TAKING_OVER,
    ClusterNode,
    elsewhere_text,
)
from dcgateway.cluster.nodeconfig import for_node
from dcgateway.cluster.replog import ensure_stream
from dcgateway.cluster.status import cluster_status, status_text
from dcgateway.config import load_config
from tests.tasks import cancel_and_wait

from .nodes import accepts_connections
from .support import close_nats, cluster_config


async def until(check, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout:g}s"
        await asyncio.sleep(0.02)


def _healthz(port: int) -> tuple[int, str]:
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _sample(registry: CollectorRegistry, name: str) -> float | None:
    return registry.get_sample_value(name)


def test_logouts_never_name_a_node_that_is_only_taking_over() -> None:
    serving = {"node": "n2", "address": "127.0.0.1:9879", "state": SERVING}
    assert "at 127.0.0.1:9879" in elsewhere_text("CLR001N", serving)
    for state in (TAKING_OVER, BACKING_OFF, None):
        text = elsewhere_text("CLR001N", {**serving, "state": state})
        assert "127.0.0.1:9879" not in text and "log on again" in text
    # a presence entry without a state (a node of an earlier version) serves when it holds
    assert "at 127.0.0.1:9879" in elsewhere_text("CLR001N", {"node": "n2",
                                                             "address": "127.0.0.1:9879"})


@pytest.mark.asyncio
async def test_a_failed_takeover_gives_the_lease_up_and_backs_off(
        tmp_path: Path, nats_cluster: LocalNatsCluster, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    path = cluster_config(tmp_path, nats_cluster.urls, lease_s=2)
    config = for_node(load_config(path), "n1")
    assert config.cluster is not None
    release = asyncio.Event()
    calls: list[float] = []

    async def stuck_then_failing(*args: object, **kwargs: object) -> None:
        calls.append(time.monotonic())
        await release.wait()
        raise nats_errors.TimeoutError()
    monkeypatch.setattr(node_module, "rebuild", stuck_then_failing)

    node = ClusterNode(config)
    registry = CollectorRegistry()
    node.metrics.attach(registry)
    stop = asyncio.Event()
    task = asyncio.create_task(node.run(stop))
    nc = await nats.connect(servers=nats_cluster.urls)
    try:
        kv = await open_bucket(nc.jetstream(), f"{config.cluster.name}_leases", 3, ttl=2)
        other = LeaseManager(kv, "n2", 2.0)

        # n1 wins the free lease and takes over (its replay hangs): it holds the lease but
        # does not serve, and says so; its standby listener still answers meanwhile
        await until(lambda: calls, what="a takeover")
        assert node.serving() and node.state == TAKING_OVER
        assert accepts_connections(config.gateway.listen.port)
        assert await asyncio.to_thread(_healthz, config.gateway.metrics.port) == \
            (200, "taking over\n")
        doc = await asyncio.to_thread(cluster_status, config)
        n1 = next(n for n in doc["nodes"] if n["node_id"] == "n1")
        assert doc["lease_holder"] == "n1" and doc["primary"] is None
        assert n1["holds_lease"] and not n1["serving"] and n1["state"] == TAKING_OVER
        assert {s["node"] for s in doc["sessions"]} == {None}
        assert "taking over" in status_text(doc)
        assert _sample(registry, "dcgateway_cluster_serving") == 0.0

        # the replay fails: the lease is given up at once (free now, not lease_s later)
        with caplog.at_level(logging.ERROR, logger="dcgateway.cluster"):
            release.set()
            await until(lambda: node.state == BACKING_OFF, what="backing off")
        assert not node.serving()
        assert await other.try_acquire(PRIMARY), "the lease was not given up"
        assert any("could not take over" in r.getMessage() and "gave the primary lease up"
                   in r.getMessage() for r in caplog.records)
        assert 0.9 <= node.backoff_s <= 1.1
        assert _sample(registry, "dcgateway_cluster_takeover_failures_total") == 1.0
        assert (_sample(registry, "dcgateway_cluster_takeover_backoff_seconds") or 0) > 0
        doc = await asyncio.to_thread(cluster_status, config)
        assert next(n for n in doc["nodes"] if n["node_id"] == "n1")["state"] == BACKING_OFF
        status, text = await asyncio.to_thread(_healthz, config.gateway.metrics.port)
        assert status == 200 and text.startswith("standing by (backing off")

        # the other node gives it back: n1 takes it again only after its hold-off, fails
        # again, and waits twice as long
        assert node.leases is not None
        not_before = node.leases.not_before[PRIMARY]
        await other.release(PRIMARY)
        await until(lambda: len(calls) == 2, what="a second takeover")
        assert calls[1] >= not_before
        await until(lambda: node.state == BACKING_OFF and node.takeover_failures == 2,
                    what="the second failure")
        assert 1.8 <= node.backoff_s <= 2.2
        assert _sample(registry, "dcgateway_cluster_takeover_failures_total") == 2.0
    finally:
        stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), 30)
        finally:
            await cancel_and_wait(task)
            await close_nats(nc)


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


async def _serve_then_stop(config, appended: int) -> tuple[int, str]:
    """Node n1 takes over, journals ``appended`` source messages (acknowledged by the
    stream), stops gracefully; (the stream's last sequence, its mark's message id)."""
    node = ClusterNode(config)
    stop = asyncio.Event()
    task = asyncio.create_task(node.run(stop))
    try:
        await until(lambda: node.state == SERVING and node.gateway is not None, 60, "serving")
        journal, gw = node.journal, node.gateway
        assert journal is not None and gw is not None and gw.committer is not None
        for i in range(1, appended + 1):
            journal.append("ABC123N", i, time.time(), b"8=FIX.4.2\x019=5\x0135=8\x01",
                           [("CLR001N", i)])
        gw.committer.notify()
        want = journal.log.next_seq - 1 if journal.log is not None else 0
        await until(lambda: journal.acked_stream_seq >= want, 30, "acknowledged")
        await until(lambda: (m := node.mark_file.read()) is not None and m.seq >= want, 10,
                    "the mark written")
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
    mark = node.mark_file.read()
    assert mark is not None
    return mark.seq, mark.msg_id


@pytest.mark.asyncio
async def test_a_stream_shorter_than_what_was_acknowledged_is_refused(
        tmp_path: Path, nats_cluster: LocalNatsCluster,
        caplog: pytest.LogCaptureFixture) -> None:
    """The audit's quorum loss, reproduced without killing servers: the journal stream is
    replaced by a shorter one (deleted and created again, as a stream that came back without
    its newest records). The node that saw the records acknowledged refuses to serve from it
    and keeps its local journal; a node that never served refuses too (the cluster's mark)."""
    path = cluster_config(tmp_path, nats_cluster.urls, lease_s=2)
    base = load_config(path)
    assert base.cluster is not None
    n1, n2 = for_node(base, "n1"), for_node(base, "n2")
    stream = Names(base.cluster.name).journal
    seq, msg_id = await _serve_then_stop(n1, appended=20)
    assert seq >= 21 and msg_id
    local = n1.gateway.data_dir / "journal"
    before = _tree(local)
    assert before

    nc = await nats.connect(servers=nats_cluster.urls)
    try:
        js = nc.jetstream()
        stored = await js.get_msg(stream, seq)
        assert (stored.headers or {}).get("Nats-Msg-Id") == msg_id
        await js.delete_stream(stream)            # the nodes create it again, empty
        await ensure_stream(js, stream, [f"{base.cluster.name}.>"], 3, 3600)
        for i in range(5):
            await js.publish(f"{base.cluster.name}.other", b"x%d" % i)

        nodes = {"n1": ClusterNode(n1), "n2": ClusterNode(n2)}
        registries = {}
        for name, node in nodes.items():
            registries[name] = CollectorRegistry()
            node.metrics.attach(registries[name])
        stop = asyncio.Event()
        with caplog.at_level(logging.CRITICAL, logger="dcgateway.cluster"):
            task = asyncio.create_task(nodes["n1"].run(stop))
            try:
                await until(lambda: nodes["n1"].state == REFUSING, 60, "n1 refusing")
                n = nodes["n1"]
                assert n.gateway is None and not n.serving()
                assert n.stream_missing == seq - 5
                assert _sample(registries["n1"], "dcgateway_cluster_stream_missing_records") \
                    == seq - 5
                status, text = await asyncio.to_thread(_healthz, n1.gateway.metrics.port)
                assert status == 503 and text.startswith("refusing to serve: ")
                assert "ends at record 5" in text
                crit = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
                assert crit and "REFUSES TO SERVE" in crit[0]
                assert f"ends at record 5, but record {seq} was acknowledged" in crit[0]
                assert _tree(local) == before, "the local journal was touched"
                doc = await asyncio.to_thread(cluster_status, n1)
                assert doc["primary"] is None
                assert next(x for x in doc["nodes"] if x["node_id"] == "n1")["state"] == REFUSING
                assert "REFUSES TO SERVE" in status_text(doc)
                stop.set()
                await asyncio.wait_for(task, 60)

                # n2 never served and has no mark of its own: the cluster's mark stops it
                stop = asyncio.Event()
                task = asyncio.create_task(nodes["n2"].run(stop))
                await until(lambda: nodes["n2"].state == REFUSING, 60, "n2 refusing")
                assert nodes["n2"].mark_file.read() is None
                assert "the cluster's" in nodes["n2"].refusal
                assert nodes["n2"].gateway is None
            finally:
                stop.set()
                await asyncio.wait_for(asyncio.shield(task), 60)
                await cancel_and_wait(task)
        assert _tree(local) == before
        assert (await js.stream_info(stream)).state.last_seq == 5, "a refusing node wrote"

        # a stream as long as the mark, written again after the loss: refused by the id
        for i in range(seq):
            await js.publish(f"{base.cluster.name}.other", b"y%d" % i)
        info = await js.stream_info(stream)
        problem = await stream_problem(js, stream, info.state.first_seq, info.state.last_seq,
                                       Mark(stream, seq, msg_id))
        assert problem is not None and "written again" in problem[0]
        assert await stream_problem(js, stream, 1, info.state.last_seq,
                                    Mark(stream, seq)) is None        # no id: the length only
    finally:
        await close_nats(nc)
