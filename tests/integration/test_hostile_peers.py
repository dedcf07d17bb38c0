"""Hostile peers are bounded by configuration, closed with a reason and counted: a flood past the
per-session inbound rate limit, thousands of sockets past max_connections, a Logon dribbled byte by
byte past the logon timeout, an unknown CompID. Other sessions keep working meanwhile."""

from __future__ import annotations

import asyncio

import pytest

from simulators.fixclient import get

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


async def test_thousands_of_sockets_past_max_connections_are_closed_at_once(start_gateway):
    import resource
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    n = max(60, min(2000, (soft - 300) // 2))    # both ends live in this process
    gw = await start_gateway(extra="max_connections: 20")
    conns = []
    for _ in range(n):
        conns.append(await asyncio.open_connection("127.0.0.1", gw.port))
        assert len(gw.gw.acceptor.connections) <= 20  # never more held than configured
    for _ in range(200):                                     # bounded: at most 10 s
        if gw.gw.counts.get("refused:max_connections", 0) >= n - 20:
            break
        await asyncio.sleep(0.05)
    assert len(gw.gw.acceptor.connections) <= 20
    closed = 0
    for reader, _ in conns:
        try:
            if await asyncio.wait_for(reader.read(1), 0.5) == b"":
                closed += 1
        except (asyncio.TimeoutError, ConnectionResetError):
            pass
    assert closed >= n - 20
    assert await asyncio.to_thread(refused, gw, "max_connections") >= n - 20
    for _, writer in conns:
        writer.close()
    await asyncio.sleep(0.3)
    c = gw.client("ABC123N")                                 # room again for a real session
    assert get(await c.logon(), 35) == "A"
    await c.close()


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
