"""Hostile peers are bounded by configuration, closed with a reason and counted: a flood past the
per-session inbound rate limit, thousands of sockets past max_connections, a Logon dribbled byte by
byte past the logon timeout, an unknown CompID. Other sessions keep working meanwhile."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest

from dcgateway.config import load_config
from simulators.fixclient import get

from .conftest import issue_keys, signed_client, write_config
from .test_fanout import drain, new_order
from .test_metrics_endpoint import samples, scrape

pytestmark = pytest.mark.asyncio


def refused(gw, reason: str) -> float:
    text = scrape(gw.gw.metrics_port)[1]
    return samples(text)[("dcgateway_connections_refused_total", frozenset({("reason", reason)}))]


async def test_flood_past_the_inbound_rate_limit_is_logged_out(start_gateway):
    gw = await start_gateway(extra="max_inbound_msgs_per_s: 500")
    other = gw.client("ABD123N")
    assert get(await other.logon(), 35) == "A"
    flood = gw.client("ABC123N")
    assert get(await flood.logon(), 35) == "A"
    flood.send_raw(b"".join(flood.build("1", [(112, f"F{i}")]) for i in range(3000)))
    got = await flood.wait_closed(10)
    logouts = [m for m in got if get(m, 35) == "5"]
    assert logouts and "rate above 500/s" in get(logouts[-1], 58)
    assert await asyncio.to_thread(refused, gw, "rate_limit") == 1
    other.send("1", [(112, "still-fine")])                   # the other session is untouched
    assert get(await other.expect("0", skip=()), 112) == "still-fine"
    await other.close()
    await flood.close()


async def test_thousands_of_idle_sockets_are_bounded_and_a_logon_still_gets_in(start_gateway):
    """Idle sockets past max_connections never hold more than the bound: a newcomer evicts the
    oldest stale unauthenticated one, or is refused when none is stale yet (closed, counted), and
    a signed Logon gets in while the flood is still connected."""
    import resource
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    n = max(60, min(2000, (soft - 300) // 2))    # both ends live in this process
    gw = await start_gateway(extra="max_connections: 20")
    conns = []
    for _ in range(n):
        conns.append(await asyncio.open_connection("127.0.0.1", gw.port))
        assert len(gw.gw.acceptor.connections) <= 20  # never more held than configured

    def evicted() -> float:
        return (gw.metric("dcgateway_connections_refused_total", reason="evicted_before_logon")
                + gw.metric("dcgateway_connections_refused_total", reason="max_connections"))
    for _ in range(200):                                     # bounded: at most 10 s
        if evicted() >= n - 20:
            break
        await asyncio.sleep(0.05)
    assert len(gw.gw.acceptor.connections) <= 20
    closed = 0
    for reader, _ in conns:
        try:
            if await asyncio.wait_for(reader.read(1), 0.5) == b"":
                closed += 1
        except (asyncio.TimeoutError, ConnectionResetError):
            closed += 1                                      # reset: closed too
    assert closed >= n - 20
    assert (await asyncio.to_thread(refused, gw, "evicted_before_logon")
            + await asyncio.to_thread(refused, gw, "max_connections")) >= n - 20
    c = gw.client("ABC123N")                                 # the flood is still connected
    assert get(await c.logon(), 35) == "A"
    await c.close()
    for _, writer in conns:
        writer.close()


async def test_logon_dribbled_byte_by_byte(start_gateway):
    gw = await start_gateway(logon_timeout=1.5)
    slow = gw.client("ABC123N")
    await slow.connect()
    logon = slow.logon_message()
    for i in range(0, len(logon), 40):                       # within the timeout: accepted
        slow.send_raw(logon[i:i + 40])
        await asyncio.sleep(0.01)
    assert get(await slow.recv(5), 35) == "A"
    await slow.close()
    dribble = gw.client("ABD123N")
    await dribble.connect()
    logon = dribble.logon_message()
    reader = dribble.reader
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for i in range(len(logon) - 1):                          # past it: closed, counted
        try:
            dribble.send_raw(logon[i:i + 1])
        except (BrokenPipeError, ConnectionResetError):      # the gateway closed us
            break
        await asyncio.sleep(0.02)
        if reader.at_eof() or loop.time() - t0 > 3.0:        # closed by ~2 s (1.5 s + timer)
            break
    try:
        data = await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:                             # closed with our bytes unread: RST
        data = b""
    assert data == b""
    assert await asyncio.to_thread(refused, gw, "logon_timeout") == 1
    await dribble.close()


async def test_unknown_comp_id_is_counted_by_reason(start_gateway):
    gw = await start_gateway()
    c = gw.client("INTRUDR")
    assert get(await c.logon(), 35) == "5"
    await c.close()
    assert await asyncio.to_thread(refused, gw, "unknown_session") == 1


async def test_3000_idle_connections_cannot_delay_a_signed_logon(tmp_path, gateway_process):
    """3,000 idle connections from the same address as the legitimate clients, reopened the
    moment they are closed (a separate process), against a real gateway process: each signed
    Logon is answered within a second, and the logged-on flow goes on."""
    folder = tmp_path / "gw"
    write_config(folder)
    (folder / "groups.yaml").write_text(
        "groups:\n  - {entity: CLEARCO, name: all, front_end: fix, filters: {categories: "
        "[execution, acknowledgment, order]}, sources: [ABC123N], targets: [CLRFIX44]}\n")
    creds = issue_keys(load_config(folder / "gateway.yaml"))
    port = gateway_process(folder / "gateway.yaml").start()
    src, tgt = signed_client(port, "ABC123N", creds), signed_client(port, "CLRFIX44", creds)
    assert get(await src.logon(), 35) == "A" and get(await tgt.logon(), 35) == "A"
    flood = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).with_name("flood.py")), "127.0.0.1", str(port),
        "3000", "60", str(tmp_path / "flood.json"), stdout=asyncio.subprocess.PIPE)
    try:
        assert (await asyncio.wait_for(flood.stdout.readline(), 30)).strip() == b"ready"
        delays, sent = [], 0
        for i in range(5):
            for _ in range(20):
                src.send("D", new_order(f"FL{sent}"))
                sent += 1
            c = signed_client(port, "ABD123N", creds)
            t0 = time.monotonic()
            reply = await c.logon(timeout=10, reset=True)
            delays.append(time.monotonic() - t0)
            assert get(reply, 35) == "A", (get(reply, 58), get(reply, 789), i)
            await c.logout()
            await c.close()
            await asyncio.sleep(0.5)
        copies = await drain(tgt, count=sent)
        assert [get(m, 11) for m in copies] == [f"FL{i}" for i in range(sent)]
        assert max(delays) < 1.0, delays
        await asyncio.sleep(0.6)                          # its totals file is rewritten
        totals = json.loads((tmp_path / "flood.json").read_text())
    finally:
        flood.kill()
        await flood.communicate()
    await src.close()
    await tgt.close()
    assert totals["opened"] >= 3000 and totals["closed_by_gateway"] >= 1000, totals
    print("logon delays under the flood:", [f"{d * 1000:.0f} ms" for d in delays], totals)
