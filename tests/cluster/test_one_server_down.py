"""With one NATS server of three down the cluster keeps its quorum, and everything that creates
an ephemeral consumer must keep working: the state store's bucket watches (every node, every
command) and the journal's read-back (a takeover). nats-server 2.9 places such a consumer on
any of the stream's servers, the dead one included, and never answers its creation; these
tests failed before the creation was made again (``cluster.connect.new_consumer``)."""

from __future__ import annotations

import json
from pathlib import Path

import nats
import pytest

from dcgateway.cluster.kvmirror import ClusterStateError
from dcgateway.cluster.natslocal import LocalNatsCluster
from dcgateway.cluster.replog import ensure_stream, replay
from dcgateway.config import load_config
from dcgateway.state import open_state

from .support import close_nats, cluster_config, run_cli, unique_name, wait_until

#: Opening the state makes four watches: before the fix, each open failed with a chance of
#: 1 - (2/3)**4 (about 80 %); six in a row all succeeding is what the fix gives.
OPENS = 6


def _opens(config) -> bool:
    try:
        open_state(config).close()
    except ClusterStateError:
        return False
    return True


def test_the_state_store_and_the_cli_work_with_one_server_down(
        tmp_path: Path, own_nats_cluster: LocalNatsCluster) -> None:
    config_path = cluster_config(tmp_path, own_nats_cluster.urls)
    config = load_config(config_path)
    open_state(config).close()                       # the buckets exist, replicated on three
    own_nats_cluster.kill_server(0)
    wait_until(lambda: _opens(config), timeout=60, interval=0.5,
               what="the buckets' streams to elect leaders on the two servers left")
    for _ in range(OPENS):
        state = open_state(config)
        try:
            assert {g.name for g in state.groups.current()}
        finally:
            state.close()
    for _ in range(3):
        done = run_cli("keys", "list", "--json", config=config_path)
        assert done.returncode == 0, done.stderr
        assert isinstance(json.loads(done.stdout), (list, dict))


@pytest.mark.asyncio
async def test_the_journal_is_read_back_with_one_server_down(
        own_nats_cluster: LocalNatsCluster) -> None:
    name = unique_name("d")
    stream = f"{name.upper()}_J"
    nc = await nats.connect(servers=own_nats_cluster.urls)
    try:
        js = nc.jetstream()
        await ensure_stream(js, stream, [f"{name}.>"], 3, 3600)
        for i in range(20):
            await js.publish(f"{name}.rec", str(i).encode())
        own_nats_cluster.kill_server(0)
        for _ in range(OPENS):                       # each read-back is a consumer of its own
            got: list[bytes] = []
            n = await replay(nc, stream, f"{name}.>", 20,
                             lambda seq, subj, h, data: got.append(data), timeout=30)
            assert n == 20 and got == [str(i).encode() for i in range(20)]
    finally:
        await close_nats(nc)
