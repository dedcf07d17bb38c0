"""The command line in cluster mode when NATS cannot do its part: one ``error:`` line naming the
NATS servers and what failed, exit code 1, never a Python traceback (neither ours nor the NATS
client's own "encountered error" logging). Two ways: no server answers at all, and a server
answers but JetStream has no quorum (two servers of three killed)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import nats

from dcgateway.cluster.connect import ErrorReporter, Names, nats_error_text
from dcgateway.cluster.kvmirror import open_bucket
from dcgateway.cluster.natslocal import LocalNatsCluster, free_ports
from dcgateway.cluster.replog import ensure_stream
from dcgateway.config import load_config

from .support import close_nats, cluster_config, run_cli


def _one_clean_error(r, servers: list[str]) -> str:
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "encountered error" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert all(s in lines[0] for s in servers), lines[0]
    return lines[0]


def test_no_nats_server_answers(tmp_path: Path) -> None:
    servers = [f"nats://127.0.0.1:{p}" for p in free_ports(3)]       # nobody listens there
    path = cluster_config(tmp_path, servers)
    line = _one_clean_error(run_cli("cluster", "status", config=path), servers)
    assert "connecting" in line
    line = _one_clean_error(run_cli("groups", "list", config=path), servers)
    assert "did not answer" in line


def test_no_jetstream_quorum(tmp_path: Path, own_nats_cluster: LocalNatsCluster) -> None:
    path = cluster_config(tmp_path, own_nats_cluster.urls)
    name = load_config(path).cluster.name
    asyncio.run(_create_stream_and_leases(own_nats_cluster.urls, name))
    ok = run_cli("groups", "list", config=path)                 # creates the state buckets
    assert ok.returncode == 0, ok.stderr
    ok = run_cli("cluster", "status", config=path)
    assert ok.returncode == 0 and "not created" not in ok.stdout, (ok.stdout, ok.stderr)
    for i in (1, 2):
        own_nats_cluster.kill_server(i)
    # the survivor notices the lost quorum within its election timeout: until then it may
    # still answer; bounded
    deadline = time.monotonic() + 60
    while (r := run_cli("cluster", "status", config=path)).returncode == 0:
        assert time.monotonic() < deadline, "status still answers without a quorum"
        time.sleep(1.0)
    line = _one_clean_error(r, own_nats_cluster.urls)
    assert "leases bucket" in line or "journal stream" in line
    line = _one_clean_error(run_cli("groups", "list", config=path), own_nats_cluster.urls)
    assert "state buckets" in line


async def _create_stream_and_leases(urls: list[str], name: str) -> None:
    """What a node creates at its start: the journal stream and the leases bucket."""
    nc = await nats.connect(servers=urls)
    try:
        js = nc.jetstream()
        await ensure_stream(js, Names(name).journal, [f"{name}.>"], 3, 3600)
        await open_bucket(js, Names(name).bucket("leases"), 3, ttl=2)
    finally:
        await close_nats(nc)


def test_error_callback_logs_one_line_per_kind_of_failure(caplog) -> None:
    now = [0.0]
    reporter = ErrorReporter("node-x", every=30.0, clock=lambda: now[0])
    with caplog.at_level(logging.DEBUG, logger="dcgateway.cluster"):
        for _ in range(5):
            asyncio.run(reporter.on_error(ConnectionRefusedError(111, "Connection refused")))
        now[0] = 31.0
        asyncio.run(reporter.on_error(ConnectionRefusedError(111, "Connection refused")))
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["NATS connection node-x: Connection refused",
                     "NATS connection node-x: Connection refused (and 4 more like it)"]
    assert all(r.exc_info is None for r in caplog.records)
    assert nats_error_text(asyncio.TimeoutError()) == "no answer in time (timeout)"
