"""Hostile clients beside a normal flow, on a real gateway with the contract's groups.

While ABC123N streams 2000 orders to CLRFIX44, other connections misbehave at the same time:

(a) ABD123N, properly logged on, sends random garbage, bit-flipped and truncated copies of valid
    messages, huge BodyLengths and a message with a 1 MiB field, interleaved with valid fills;
(b) unauthenticated connections send random bytes, and partial / bit-flipped Logons byte by byte.

The normal flow must be complete, in order and gapless; ABD123N's valid fills are each accepted
once and its garbage is ignored and counted (protocol_error:*); ABD123N stays logged on (or is
logged out with a reason text, never an internal error); the gateway still logs a new session on
afterwards; nothing reaches the loop's exception handler (conftest's loop_errors).

Randomness is a fixed-seed ``random.Random``; every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import random
import re

import pytest

from simulators.fixclient import FixClient, get

from .test_fanout import connect_all, fill, new_order

pytestmark = pytest.mark.asyncio

N_ORDERS = 2000
MIB = 1 << 20
SEED = 20261124




def flip(raw: bytes, rng: random.Random) -> bytes:
    """One bit flipped: the CheckSum (a byte sum) can never match afterwards."""
    i = rng.randrange(len(raw))
    return raw[:i] + bytes([raw[i] ^ (1 << rng.randrange(8))]) + raw[i + 1:]


def garbage(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n).replace(b"8=FIX", b"8=FIY") + b"."


#: After a truncated frame: more than its BodyLength of bytes that hold no SOH and no 8=FIX, so
#: the frame is proven garbled before the next real message arrives (FIX framing can only skip a
#: bad frame by its BodyLength; see test_fuzz.py for what happens without the padding).
PAD = b"." * 600


async def read_all(c: FixClient, timeout: float) -> list:
    """Everything that arrives until EOF or ``timeout`` seconds of silence."""
    got = []
    for _ in range(10_000):
        try:
            m = await c.recv(timeout)
        except asyncio.TimeoutError:
            break
        if m is None:
            break
        got.append(m)
    return got


async def stream_orders(src: FixClient) -> None:
    for i in range(N_ORDERS):
        src.send("D", new_order(f"Z{i}", account="ACCT01" if i % 2 else "ACCT02"))
        if i % 40 == 39:                          # let the fuzzers interleave
            await asyncio.wait_for(src.writer.drain(), 5)
            await asyncio.sleep(0.004)


async def collect_copies(tgt: FixClient, deadline: float) -> list:
    loop = asyncio.get_running_loop()
    got = []
    while len(got) < N_ORDERS and loop.time() < deadline:
        try:
            m = await tgt.recv(max(0.05, deadline - loop.time()))
        except asyncio.TimeoutError:
            break
        if m is None:
            break
        mt = get(m, 35)
        if mt == "1":
            tgt.send("0", [(112, get(m, 112) or "")])
        elif mt == "D":
            got.append(m)
    return got


async def fuzz_logged_on(fz: FixClient, rng: random.Random) -> int:
    """Hostile bytes on a logged-on session; returns how many valid fills it sent."""
    valid = 0
    for round_ in range(40):
        which = round_ % 8
        if which == 0:
            fz.send_raw(garbage(rng, rng.randrange(1, 3000)))
        elif which == 1:                          # a bit-flipped copy: seq not consumed
            fz.send_raw(flip(fz.build("8", fill("ACCT02", exec_id=f"F{round_}"), seq=fz.next_seq), rng))
        elif which == 2:                          # a truncated copy
            raw = fz.build("D", new_order(f"T{round_}", "ACCT02"), seq=fz.next_seq)
            fz.send_raw(raw[:rng.randrange(1, len(raw))] + PAD)
        elif which == 3:                          # BodyLength over the cap / too many digits
            fz.send_raw(b"8=FIX.4.2\x019=5000000\x0135=D\x01" + PAD)
            fz.send_raw(b"8=FIX.4.2\x019=123456789\x0135=D\x01" + PAD)
        elif which == 4 and round_ < 8:           # once: a 1 MiB field
            fz.send_raw(fz.build("8", fill("ACCT02", exec_id="BIG") + [(58, "x" * MIB)],
                                 seq=fz.next_seq))
        else:                                      # a valid fill in between
            fz.send("8", fill("ACCT02", exec_id=f"V{round_}"))
            valid += 1
        await asyncio.wait_for(fz.writer.drain(), 5)
        await asyncio.sleep(0.005)
    return valid


async def hostile_unauthenticated(port: int, payload: bytes, rng: random.Random, *,
                                  byte_by_byte: bool) -> bytes:
    """One raw connection that never completes a Logon; returns what the gateway sent."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    try:
        if byte_by_byte:
            for k in range(len(payload)):
                if writer.transport.is_closing():
                    break
                writer.write(payload[k:k + 1])
                try:
                    await asyncio.wait_for(writer.drain(), 5)
                except ConnectionError:              # the gateway disconnected us: done
                    break
                if k % 8 == 0:
                    await asyncio.sleep(0.001)
        else:
            for k in range(0, len(payload), 512):
                if writer.transport.is_closing():
                    break
                writer.write(payload[k:k + 512])
                try:
                    await asyncio.wait_for(writer.drain(), 5)
                except ConnectionError:
                    break
                await asyncio.sleep(rng.random() * 0.003)
        try:
            return await asyncio.wait_for(reader.read(65536), 0.3)
        except (asyncio.TimeoutError, ConnectionError):
            return b""
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 2)
        except (ConnectionError, asyncio.TimeoutError):
            pass


async def test_fuzzing_clients_beside_a_normal_flow(folder, start_gateway, caplog):
    gw = await start_gateway(folder)
    loop = asyncio.get_running_loop()
    started = loop.time()
    rng = random.Random(SEED)
    cl = await connect_all(gw, "CLRFIX44", "ABC123N", "ABD123N")
    src, tgt, fz = cl["ABC123N"], cl["CLRFIX44"], cl["ABD123N"]

    probe = gw.client("CLR001N")                  # only to build a signed Logon for (b)
    logon = probe.logon_message()
    unauth = [
        (garbage(rng, 6000), False),                           # random bytes past the 4 KiB limit
        (garbage(rng, 300), True),                             # random bytes, byte by byte
        (logon[:rng.randrange(20, len(logon) - 1)], True),      # partial Logon, byte by byte
        (flip(logon, rng), True),                              # damaged Logon, byte by byte
        (b"8=FIX.4.2\x019=9999999\x0135=A\x01" + PAD, True),   # huge BodyLength before logon
    ]

    copies, valid_fills, *replies = await asyncio.wait_for(asyncio.gather(
        collect_copies(tgt, started + 15),
        fuzz_logged_on(fz, random.Random(SEED + 1)),
        *[hostile_unauthenticated(gw.port, p, random.Random(SEED + 2 + k), byte_by_byte=b)
          for k, (p, b) in enumerate(unauth)],
        stream_orders(src),
    ), 17)
    replies = replies[:-1]                         # stream_orders returns None

    # the normal flow: every order, in order, gapless, exactly once
    assert [get(m, 11) for m in copies] == [f"Z{i}" for i in range(N_ORDERS)]
    seqs = [int(get(m, 34)) for m in copies]
    assert seqs == list(range(seqs[0], seqs[0] + N_ORDERS)) and seqs[0] == 2
    assert all(get(m, 43) is None and get(m, 115) == "ABC123N" for m in copies)

    # (a) is still logged on and in sequence: a TestRequest with its next seq is answered
    fz.send("1", [(112, "STILL-THERE")])
    answers = []
    for _ in range(200):
        try:
            m = await fz.recv(3)
        except asyncio.TimeoutError:
            break
        if m is None:
            break
        answers.append(m)
        if get(m, 35) in {"0", "5"} and (get(m, 112) == "STILL-THERE" or get(m, 35) == "5"):
            break
    logouts = [m for m in answers if get(m, 35) == "5"]
    for lo in logouts:                             # a Logout is allowed, with a reason text
        text = get(lo, 58) or ""
        assert text and "internal error" not in text and "Traceback" not in text, text
    if not logouts:
        assert [get(m, 112) for m in answers if get(m, 35) == "0"][-1:] == ["STILL-THERE"], answers
        assert not [m for m in answers if get(m, 35) == "2"], "a garbled message used a seq"

    # ABD123N's valid fills were each accepted once; its garbage was ignored and counted
    f = gw.gw.fanout
    assert sum(n for (s, _), n in f.in_counts.items() if s == "ABD123N") == valid_fills
    assert sum(n for (s, _), n in f.in_counts.items() if s == "ABC123N") == N_ORDERS
    kinds = {m.group(1) for r in caplog.records
             if (m := re.search(r"protocol error (\w+)", r.getMessage()))}
    assert {"too_large", "garbled", "checksum"} <= kinds, kinds
    assert "internal_error" not in kinds, kinds
    assert gw.metric("dcgateway_connections_refused_total",     # garbage: disconnected
                     reason="invalid_first_message") >= 1
    for r in replies:                              # unauthenticated peers learn nothing useful
        assert b"Traceback" not in r and b"internal" not in r

    # the gateway still logs a new session on
    reply = await probe.logon()
    assert get(reply, 35) == "A", reply
    await probe.close()
    for c in cl.values():
        await c.close()
    assert loop.time() - started < 20


async def test_malformed_data_length_field_is_rejected_and_the_source_stays_up(folder, start_gateway,
                                                                                caplog):
    gw = await start_gateway(folder)
    cl = await connect_all(gw, "ABD123N")
    fz = cl["ABD123N"]
    fz.send("8", [(150, "F"), (95, "abc"), (1, "ACCT02"), (55, "ESZ6")])
    try:
        reply = await fz.recv(3)
    except asyncio.TimeoutError:
        reply = None
    assert reply is not None and get(reply, 35) == "3" and get(reply, 373) == "6", reply
    assert not [r for r in caplog.records if "internal_error" in r.getMessage()]
    fz.send("1", [(112, "UP")])
    assert get(await fz.expect("0", timeout=3), 112) == "UP"
    await fz.close()
