"""The replicated log's guarantees on a real three-server cluster: pipelined appends land in
order, each once, acknowledged in order; and the fence holds even when a stale writer's predicted
sequence number coincides with the stream's real last one (the expected message id names the
writer, the sequence alone would not)."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest

from dcgateway.cluster.natslocal import LocalNatsCluster
from dcgateway.cluster.replog import WRITER_HEADER, ReplicatedLog, ensure_stream, replay
from tests.tasks import cancel_and_wait

from .support import close_nats, unique_name

pytestmark = pytest.mark.asyncio


async def _log(nc, stream: str, name: str, writer: str, acked: list[int],
               fenced: list[str]) -> ReplicatedLog:
    return ReplicatedLog(nc, stream, f"{name}.ctl", writer, on_acked=acked.append,
                         on_fenced=lambda: fenced.append(writer))


async def _records(nc, stream: str, name: str) -> list[tuple[int, str, bytes]]:
    last = (await nc.jetstream().stream_info(stream)).state.last_seq
    out: list[tuple[int, str, bytes]] = []
    await replay(nc, stream, f"{name}.>", last,
                 lambda seq, subj, h, data: out.append((seq, h.get(WRITER_HEADER, ""), data)))
    return out


async def test_pipelined_appends_land_in_order_once(nats_cluster: LocalNatsCluster) -> None:
    name = unique_name("r")
    stream = f"{name.upper()}_J"
    nc = await nats.connect(servers=nats_cluster.urls)
    try:
        await ensure_stream(nc.jetstream(), stream, [f"{name}.>"], 3, 3600)
        acked: list[int] = []
        fenced: list[str] = []
        log = await _log(nc, stream, name, "w1", acked, fenced)
        start = await log.take_over()
        runner = asyncio.create_task(log.run())
        seqs = [log.append(f"{name}.rec", json.dumps({"n": i}).encode(), msg_id=f"S.0.{i}")
                for i in range(1, 5001)]
        assert seqs == list(range(start + 1, start + 5001))
        async with asyncio.timeout(60):
            while log.acked < seqs[-1]:
                await asyncio.sleep(0.01)
        await cancel_and_wait(runner)
        assert acked == sorted(acked) and acked[-1] == seqs[-1] and not fenced
        assert log.publishes < 5000 + 50                     # no resend storm
        recs = await _records(nc, stream, name)
        assert [json.loads(d)["n"] for _, _, d in recs[1:]] == list(range(1, 5001))
        await log.close()
    finally:
        await close_nats(nc)


async def test_a_stale_writer_whose_sequence_coincides_is_still_fenced(
        nats_cluster: LocalNatsCluster) -> None:
    name = unique_name("r")
    stream = f"{name.upper()}_J"
    nc1 = await nats.connect(servers=nats_cluster.urls)
    nc2 = await nats.connect(servers=nats_cluster.urls)
    try:
        await ensure_stream(nc1.jetstream(), stream, [f"{name}.>"], 3, 3600)
        acked1: list[int] = []
        acked2: list[int] = []
        fenced: list[str] = []
        a = await _log(nc1, stream, name, "a", acked1, fenced)
        await a.take_over()
        a.append(f"{name}.rec", b'{"by": "a", "target_seq": 1}')
        await a.flush()
        async with asyncio.timeout(10):
            while not acked1:
                await asyncio.sleep(0.01)
        # a stalls (paused) with three records appended, not sent; b takes over and writes
        # until the stream's last sequence is exactly what a's third record expects
        stale = [a.append(f"{name}.rec", b'{"by": "a", "target_seq": %d}' % n)
                 for n in (2, 3, 4)]
        b = await _log(nc2, stream, name, "b", acked2, fenced)
        await b.take_over()
        while b.next_seq < stale[-1]:
            b.append(f"{name}.rec", b'{"by": "b", "target_seq": 2}')
        await b.flush()
        async with asyncio.timeout(10):
            while not acked2 or acked2[-1] < b.next_seq - 1:
                await asyncio.sleep(0.01)
        assert (await a.last_sequence()) == stale[-1] - 1     # the sequence alone would pass
        runner = asyncio.create_task(a.run())
        async with asyncio.timeout(10):
            while not a.fenced:
                await asyncio.sleep(0.01)
        await cancel_and_wait(runner)
        assert fenced == ["a"]
        recs = await _records(nc1, stream, name)
        writers = [w.split(".")[0] for _, w, _ in recs]
        assert writers[-1] == "b" and writers.count("a") == 2     # its takeover and record 1
        await a.close()
        await b.close()
    finally:
        await close_nats(nc1, nc2)
