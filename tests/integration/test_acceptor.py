"""The acceptor and session engine over real sockets on 127.0.0.1, driven by an independent
simplefix-based initiator (simulators/fixclient.py)."""

from __future__ import annotations

import asyncio
import signal

import pytest

from dcgateway.auth import logon_signer
from dcgateway.config import load_config
from simulators.fixclient import FixClient, get, sending_time

from .conftest import issue_keys, signed_client, write_config

pytestmark = pytest.mark.asyncio


async def test_logon_heartbeat_testrequest_logout(start_gateway):
    gw = await start_gateway()
    c = gw.client("ABC123N", heartbeat=30)
    reply = await c.logon()
    assert get(reply, 35) == "A"
    assert (get(reply, 49), get(reply, 56), get(reply, 108), get(reply, 34)) == ("DCGW", "ABC123N", "30", "1")
    c.send("1", [(112, "PING-1")])
    hb = await c.expect("0", skip=())
    assert get(hb, 112) == "PING-1"
    bye = await c.logout("done")
    assert get(bye, 35) == "5"
    assert await c.wait_closed() == []
    await c.close()


async def test_refusals_before_authentication_all_look_the_same(start_gateway):
    """An unauthenticated peer learns nothing: an unknown SenderCompID, a wrong TargetCompID
    (even with a valid signature), a bad signature and a bad signature for a session that is
    logged on all get the same Logout, seq 1, ``authentication failed``; the precise reason is
    only in the metric's label."""
    gw = await start_gateway()
    live = gw.client("ABC123N")
    assert get(await live.logon(), 35) == "A"
    used = gw.client("ABD123N")                # a session with a history: its next_out > 1
    assert get(await used.logon(), 35) == "A"
    await used.logout()
    await used.close()
    wrong_sig = lambda header, body: [(354, 20), (355, gw.creds["ABD123N"][0]),   # noqa: E731
                                      (1400, "CME-1-SHA-256"), (1401, 43), (1402, "A" * 43)]
    peers = [gw.client("NOSUCH1"),
             FixClient("127.0.0.1", gw.port, "ABD123N", target="NOTUS", sender_sub_id="OPS",
                       signer=logon_signer(*gw.creds["ABD123N"])),
             gw.client("ABD123N", signer=wrong_sig),
             gw.client("ABC123N", signer=wrong_sig),
             # a configured session, the wrong BeginString: not "incorrect BeginString", and
             # the answer in the peer's own BeginString (nothing of the session's)
             FixClient("127.0.0.1", gw.port, "ABD123N", begin_string="FIX.4.4",
                       signer=wrong_sig)]
    answers = []
    for c in peers:
        reply = await c.logon()
        answers.append((get(reply, 35), get(reply, 34), get(reply, 58), get(reply, 789)))
        assert get(reply, 8) == ("FIX.4.4" if c is peers[-1] else "FIX.4.2")
        assert await c.wait_closed() == []
        await c.close()
    assert answers == [("5", "1", "authentication failed", None)] * 5
    refused = gw.metric_labels("dcgateway_connections_refused_total", "reason")
    assert refused["unknown_session"] == 1 and refused["wrong_target_comp_id"] == 1
    assert refused["already_logged_on"] == 1
    await live.logout()
    await live.close()


async def test_first_message_not_logon_disconnects(start_gateway):
    gw = await start_gateway()
    c = gw.client("ABC123N")
    await c.connect()
    c.send("1", [(112, "x")])
    assert await c.wait_closed() == []
    await c.close()


async def test_1S_b_duplicate_identity_is_disconnected_silently(start_gateway):
    """FIX Test Case 1S.b: a correctly signed Logon for a session already logged on is
    disconnected without a message; the logged-on session is not disturbed."""
    gw = await start_gateway()
    first = gw.client("ABC123N")
    assert get(await first.logon(), 35) == "A"
    await asyncio.sleep(0.002)               # another millisecond: another signature
    second = gw.client("ABC123N")
    await second.connect()
    second.send_raw(second.logon_message())
    assert await second.wait_closed() == []  # nothing received before the close
    await second.close()
    first.send("1", [(112, "still-here")])
    assert get(await first.expect("0", skip=()), 112) == "still-here"
    await first.logout()
    await first.close()


async def test_1S_d_logon_with_a_wrong_body_length_disconnects_at_once(start_gateway):
    """FIX Test Case 1S.d: an invalid first message (here a Logon whose BodyLength is off)
    disconnects at once, well before the Logon timeout."""
    gw = await start_gateway(logon_timeout=30)
    c = gw.client("ABC123N")
    await c.connect()
    raw = c.logon_message()
    body_len = raw.split(b"\x01")[1]
    bad = raw.replace(body_len, b"9=%d" % (int(body_len[2:]) + 3), 1)
    t0 = asyncio.get_running_loop().time()
    c.send_raw(bad + b"\x01" * 3)
    assert await c.wait_closed(timeout=5) == []
    assert asyncio.get_running_loop().time() - t0 < 5
    await c.close()
    assert gw.metric("dcgateway_connections_refused_total", reason="invalid_first_message") == 1


async def test_connection_that_never_logs_on_is_closed(start_gateway):
    gw = await start_gateway(logon_timeout=1)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    data = await asyncio.wait_for(reader.read(100), 5)
    assert data == b""                       # closed by the gateway, nothing sent
    writer.close()
    await writer.wait_closed()


async def test_garbage_before_logon_disconnects(start_gateway):
    gw = await start_gateway()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"GET / HTTP/1.1\r\n" * 400)
    data = await asyncio.wait_for(reader.read(100), 5)
    assert data == b""
    writer.close()
    await writer.wait_closed()


async def test_sequence_numbers_survive_restart(start_gateway, tmp_path):
    folder = tmp_path / "gw"
    gw = await start_gateway(folder)
    c = gw.client("ABC123N")
    await c.logon()
    for i in range(5):
        c.send("D", [(11, f"ORD{i}"), (21, 1), (55, "ESZ6"), (54, 1), (38, 1), (40, 1), (60, "20261124-10:00:00")])
    c.send("1", [(112, "sync")])
    await c.expect("0", skip=())
    await c.logout()
    await c.close()
    assert gw.gw.fanout.messages_in == 5
    sent_by_gateway = c.expected_in
    await gw.stop()

    gw2 = await start_gateway(folder)
    c2 = gw2.client("ABC123N")
    c2.next_seq = c.next_seq                 # the client's own sequence continues
    reply = await c2.logon()
    assert get(reply, 35) == "A"
    assert int(get(reply, 34)) == sent_by_gateway   # gateway's outbound continued too
    await c2.logout()
    await c2.close()


async def test_client_seq_too_low_after_restart_gets_logout_with_789(start_gateway, tmp_path):
    folder = tmp_path / "gw"
    gw = await start_gateway(folder)
    c = gw.client("ABC123N")
    await c.logon()
    for i in range(3):
        c.send("D", [(11, f"ORD{i}"), (21, 1), (55, "ESZ6"), (54, 1), (38, 1), (40, 1), (60, "20261124-10:00:00")])
    await c.logout()
    await c.close()
    await gw.stop()
    gw2 = await start_gateway(folder)
    c2 = gw2.client("ABC123N")
    reply = await c2.logon(seq=2)            # the gateway expects 6
    assert get(reply, 35) == "5"
    assert get(reply, 789) == "6"
    await c2.close()


async def test_gateway_requests_resend_on_inbound_gap(start_gateway):
    gw = await start_gateway()
    c = gw.client("ABC123N")
    await c.logon()
    c.send("D", [(11, "A1"), (21, 1), (55, "ESZ6"), (54, 1), (38, 1), (40, 1), (60, "20261124-10:00:00")], seq=5)
    rr = await c.expect("2")
    assert (get(rr, 7), get(rr, 16)) == ("2", "4")
    # fill the gap with a gap fill, then the queued message 5 is processed
    c.send("4", [(123, "Y"), (36, 5)], seq=2, poss_dup=True, orig_sending_time=sending_time())
    c.next_seq = 6
    c.send("1", [(112, "after-gap")])
    hb = await c.expect("0", skip=())
    assert get(hb, 112) == "after-gap"
    assert gw.gw.fanout.messages_in == 1
    await c.logout()
    await c.close()


async def test_resend_request_is_served_with_gap_fill_for_admin(start_gateway):
    gw = await start_gateway()
    c = gw.client("ABC123N")
    await c.logon()                          # gateway sent its Logon as 1
    c.send("1", [(112, "t1")])
    await c.expect("0", skip=())             # gateway sent Heartbeat as 2
    c.send("2", [(7, 1), (16, 0)])
    gf = await c.expect("4")
    assert get(gf, 123) == "Y" and get(gf, 43) == "Y"
    assert get(gf, 34) == "1" and int(get(gf, 36)) == 3
    await c.logout()
    await c.close()


async def test_graceful_shutdown_sends_logout_to_every_session(start_gateway):
    gw = await start_gateway()
    a, b = gw.client("ABC123N"), gw.client("CLR001N")
    await a.logon()
    await b.logon()
    stopping = asyncio.create_task(gw.stop())
    for c in (a, b):
        lo = await c.expect("5")
        assert "shutting down" in get(lo, 58)
        c.send("5", [(58, "ack")])
    await stopping
    for c in (a, b):
        await c.close()


async def test_flooding_client_that_does_not_read_is_bounded(start_gateway):
    """TestRequests flood in, the client never reads the Heartbeats: the gateway stops reading
    from it once its write buffer passes the high watermark, so what it buffers stays bounded."""
    gw = await start_gateway(extra="write_buffer_high: 65536\nwrite_buffer_low: 16384")
    c = gw.client("ABC123N")
    await c.logon()
    msgs = b"".join(c.build("1", [(112, "F%d" % i)]) for i in range(100_000))
    assert c.writer is not None
    c.writer.transport.set_write_buffer_limits(high=len(msgs) + 1)
    c.send_raw(msgs)
    conn = gw.gw.slots["ABC123N"].connection
    assert conn is not None and conn.transport is not None
    for _ in range(100):                     # bounded wait: at most 10 s
        if conn.write_paused:
            break
        await asyncio.sleep(0.1)
    assert conn.write_paused
    # Bound: the high mark plus the answers to one read (the loop reads at most 256 KiB at a
    # time, and a Heartbeat is about as long as the TestRequest it answers).
    bound = 65536 + 2 * 256 * 1024
    first = conn.transport.get_write_buffer_size()
    assert first < bound
    await asyncio.sleep(1.0)
    assert conn.write_paused and conn.transport.get_write_buffer_size() == first
    await c.close()


async def _subprocess_source(tmp_path, gateway_process):
    """A real gateway process on the default config, and source ABC123N logged on to it.
    Returns (config path, credentials, process, client)."""
    cfg = write_config(tmp_path / "gw")
    creds = issue_keys(load_config(cfg))
    gp = gateway_process(cfg)
    c = signed_client(gp.start(), "ABC123N", creds)
    assert get(await c.logon(), 35) == "A"
    return cfg, creds, gp, c


async def test_sigterm_stops_subprocess_gateway_with_logout(tmp_path, gateway_process):
    _, _, gp, c = await _subprocess_source(tmp_path, gateway_process)
    gp.signal(signal.SIGTERM)
    lo = await c.expect("5", timeout=10)
    assert "shutting down" in get(lo, 58)
    c.send("5", [(58, "ack")])
    code, err = await asyncio.to_thread(gp.wait)
    assert code == 0, err
    assert "Traceback" not in err
    await c.close()


async def test_state_survives_kill_9(tmp_path, gateway_process):
    cfg, creds, gp, c = await _subprocess_source(tmp_path, gateway_process)
    for i in range(20):
        c.send("D", [(11, f"K{i}"), (21, 1), (55, "ESZ6"), (54, 1), (38, 1), (40, 1), (60, "20261124-10:00:00")])
    c.send("1", [(112, "synced")])
    await c.expect("0", skip=())             # the gateway has processed (and synced) all 20
    gp.kill9()
    await c.close()
    gp2 = gateway_process(cfg)
    port2 = gp2.start()
    c2 = signed_client(port2, "ABC123N", creds)
    c2.next_seq = c.next_seq
    reply = await c2.logon()
    assert get(reply, 35) == "A", reply      # not "MsgSeqNum too high/low"
    assert int(get(reply, 34)) == c.expected_in
    # The session state was synced before the Heartbeat went out; the journal's group commit of
    # the last messages may not have been when the process died. Then the gateway asks for them
    # again (never more than was sent), and the source answers as a FIX engine does.
    c2.send("1", [(112, "after-restart")])
    while True:
        m = await c2.recv(5)
        assert m is not None
        if get(m, 35) == "2":
            begin, end = int(get(m, 7)), int(get(m, 16))
            assert 2 <= begin and end <= c.next_seq - 1, (begin, end)
            c2.send("4", [(123, "Y"), (36, end + 1)], seq=begin, poss_dup=True,
                    orig_sending_time=sending_time())
        elif get(m, 35) == "0" and get(m, 112) == "after-restart":
            break
    await c2.logout()
    await c2.close()
    gp2.signal(signal.SIGTERM)
    code, _ = await asyncio.to_thread(gp2.wait)
    assert code == 0


async def test_flooding_source_is_read_one_chunk_per_turn_so_commits_keep_up(tmp_path,
                                                                              gateway_process):
    """A source that sends a burst of megabytes is read one chunk per loop turn: under uvloop,
    libuv would otherwise read up to 32 x 256 KiB from it before the journal's group commit ran
    once, and the gateway would pause every source (20,000 records not durable). The real
    process (uvloop) is used; the burst is processed whole, in order, and no pause is logged."""
    _, _, gp, c = await _subprocess_source(tmp_path, gateway_process)
    n = 30_000
    c.send_raw(b"".join(c.build("D", [(11, f"B{i}"), (21, 1), (55, "ESZ6"), (54, 1), (38, 1), (40, 1), (60, "20261124-10:00:00")])
                        for i in range(n)))
    c.send("1", [(112, "after-burst")])
    hb = await c.expect("0", skip=(), timeout=60)
    assert get(hb, 112) == "after-burst"
    await c.logout()
    await c.close()
    gp.signal(signal.SIGTERM)
    code, err = await asyncio.to_thread(gp.wait, 30)
    assert code == 0, err
    assert "pausing reads from sources" not in err, err[-2000:]
