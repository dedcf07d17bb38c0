"""The fan-out benchmark's comparison relay: the FIX work any drop copy relay must do, and nothing
more, in one uvloop process.

What it does, per source message: frame it by BodyLength, verify its CheckSum (a garbled frame is
dropped, as the FIX session layer requires), find the end of its standard header, and write every
logged-on target a copy whose header is rebuilt for that target: 8 = FIX.4.2, 35 unchanged,
49 = the relay's CompID, 56 = the target, 34 = the target's own sequence number, 52 = now,
115 = the source's SenderCompID, 116 = its SenderSubID (50) when present, 122 = its SendingTime;
then the body byte for byte and a recomputed 9 and 10. The body's byte sum comes from the CheckSum
verification, so per copy only the short header is summed. One ``write`` per target per read.

What it leaves out, and the gateway does not: authentication (any configured CompID logs on), a
journal or any durability, a resend store (a ResendRequest gets a SequenceReset-GapFill),
routing tables and filters, metrics. So it is a reference for what one Python process can do
with the FIX work alone, not a target to pass.

Session layer, just enough for the benchmark's load: Logon answered with a Logon, Heartbeat when
idle, TestRequest answered, Logout answered. When a target's socket pushes back past
--high-water, reading from the sources pauses until every target has drained (memory stays
bounded). Prints ``bare_relay listening on HOST:PORT`` once listening and its counters as one
JSON line on stdout when stopped (SIGTERM/SIGINT, or --max-seconds).

  python benchmarks/bare_relay.py --port 0 --source SRC1 --targets CLR1,CLR2,CLR3,CLR4
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import signal
import socket
import sys
import time
from pathlib import Path
from typing import cast

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _fixwire import ADMIN_TYPES, HEADER_RUN, SOH, Framer, encode, fields_of, utc_now  # noqa: E402

BEGIN = b"FIX.4.2"
PREFIX = b"8=FIX.4.2\x019="


class Relay:
    """The shared state: who is logged on, which targets push back, the counters."""

    def __init__(self, comp_id: bytes, sources: set[bytes], targets: set[bytes],
                 high_water: int) -> None:
        self.comp_id = comp_id
        self.sources, self.targets = sources, targets
        self.high_water = high_water
        self.live: dict[bytes, Conn] = {}
        self.live_targets: list[Conn] = []
        self.pushing_back = 0
        self.stats = dict.fromkeys(("logons", "refused", "in_app", "copies", "bad_frames",
                                    "garbage_bytes", "source_gaps", "writes"), 0)

    def set_source_reading(self, on: bool) -> None:
        for conn in self.live.values():
            if conn.role == "source" and conn.transport is not None:
                (conn.transport.resume_reading if on else conn.transport.pause_reading)()


class Conn(asyncio.Protocol):
    """One FIX session (source or target, known once its Logon arrives)."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.transport: asyncio.Transport | None = None
        self.framer = Framer()
        self.role = ""
        self.comp = b""
        self.next_in = 1
        self.next_out = 1
        self.heartbeat = 30.0
        self.last_out = time.monotonic()
        self.parts: list[bytes] = []            # this read's copies to this target
        self.headers: dict[bytes, tuple[bytes, int]] = {}   # MsgType -> "35=..|49|56|34=", sum
        self.pushed_back = False

    # -- transport callbacks ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)   # uvloop's is no subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(self.relay.high_water, self.relay.high_water // 4)

    def connection_lost(self, exc: Exception | None) -> None:
        r = self.relay
        if r.live.get(self.comp) is self:
            del r.live[self.comp]
            if self in r.live_targets:
                r.live_targets.remove(self)
        self.resume_writing()
        self.transport = None

    def pause_writing(self) -> None:
        if self.role == "target" and not self.pushed_back:
            self.pushed_back = True
            self.relay.pushing_back += 1
            if self.relay.pushing_back == 1:
                self.relay.set_source_reading(False)

    def resume_writing(self) -> None:
        if self.pushed_back:
            self.pushed_back = False
            self.relay.pushing_back -= 1
            if self.relay.pushing_back == 0:
                self.relay.set_source_reading(True)

    def data_received(self, data: bytes) -> None:
        framer = self.framer
        bad, garbage = framer.bad, framer.garbage
        frames = framer.feed(data)
        self.relay.stats["bad_frames"] += framer.bad - bad
        self.relay.stats["garbage_bytes"] += framer.garbage - garbage
        if self.role == "source":
            self.copy(frames)
            return
        for i, (frame, _) in enumerate(frames):
            if self.transport is None:
                return
            self.session_message(frame)
            if self.role == "source":              # what follows its Logon takes the hot path
                self.copy(frames[i + 1:])
                return

    # -- the hot path ---------------------------------------------------------------------------
    def copy(self, frames: list[tuple[bytes, int]]) -> None:
        """Every application message of this read to every live target, then one write each."""
        r = self.relay
        targets = r.live_targets
        now = utc_now()
        copied = 0
        for frame, total in frames:
            p = frame.find(b"\x0135=")
            q = frame.find(SOH, p + 4)
            mt = frame[p + 4:q]
            hend = HEADER_RUN.match(frame, q + 1).end()    # type: ignore[union-attr]
            s = frame.find(b"\x0134=", q, hend)
            seq = int(frame[s + 4:frame.find(SOH, s + 4)]) if s >= 0 else 0
            if seq != self.next_in:
                r.stats["source_gaps"] += seq > self.next_in
            self.next_in = max(self.next_in, seq + 1)
            if mt in ADMIN_TYPES:
                self.session_message(frame, counted=True)
                continue
            s = frame.find(b"\x0152=", q, hend)
            orig = frame[s + 4:frame.find(SOH, s + 4)] if s >= 0 else now
            s = frame.find(b"\x0150=", q, hend)
            sub = b"116=%s\x01" % frame[s + 4:frame.find(SOH, s + 4)] if s >= 0 else b""
            common = b"52=%s\x01115=%s\x01%s122=%s\x01" % (now, self.comp, sub, orig)
            body = frame[hend:-7]
            tail_sum = sum(common) + total - sum(frame[:hend])     # common + body bytes
            tail_len = len(common) + len(body)
            for t in targets:
                head = t.headers.get(mt)
                if head is None:
                    hb = b"35=%s\x0149=%s\x0156=%s\x0134=" % (mt, r.comp_id, t.comp)
                    head = t.headers[mt] = (hb, sum(hb))
                sq = b"%d\x01" % t.next_out
                t.next_out += 1
                nine = b"%s%d\x01" % (PREFIX, len(head[0]) + len(sq) + tail_len)
                chk = (sum(nine) + head[1] + sum(sq) + tail_sum) & 255
                t.parts += (nine, head[0], sq, common, body, b"10=%03d\x01" % chk)
            copied += 1
        if copied:
            r.stats["in_app"] += copied
            r.stats["copies"] += copied * len(targets)
            at = time.monotonic()
            for t in targets:
                if t.parts and t.transport is not None:
                    t.transport.write(b"".join(t.parts))
                    r.stats["writes"] += 1
                    t.last_out = at
                t.parts.clear()

    # -- the session layer ----------------------------------------------------------------------
    def send(self, mt: bytes, body: list[tuple[int, bytes]]) -> None:
        if self.transport is None:
            return
        fields = [(35, mt), (49, self.relay.comp_id), (56, self.comp),
                  (34, b"%d" % self.next_out), (52, utc_now()), *body]
        self.next_out += 1
        self.transport.write(encode(BEGIN, fields))
        self.last_out = time.monotonic()

    def session_message(self, frame: bytes, counted: bool = False) -> None:
        f = fields_of(frame)
        mt = f.get(35)
        if not self.role:
            self.logon(f)
            return
        if not counted and f.get(34, b"").isdigit():
            self.next_in = max(self.next_in, int(f[34]) + 1)
        if mt == b"1":
            self.send(b"0", [(112, f.get(112, b""))])
        elif mt == b"2" and self.transport is not None:    # no store: gap-fill all of it
            now = utc_now()
            self.transport.write(encode(BEGIN, [
                (35, b"4"), (49, self.relay.comp_id), (56, self.comp), (34, f.get(7, b"1")),
                (43, b"Y"), (52, now), (122, now), (123, b"Y"), (36, b"%d" % self.next_out)]))
        elif mt == b"4" and f.get(36, b"").isdigit():
            self.next_in = int(f[36])
        elif mt == b"5":
            self.send(b"5", [])
            if self.transport is not None:
                self.transport.close()

    def logon(self, f: dict[int, bytes]) -> None:
        r = self.relay
        comp = f.get(49, b"")
        role = "source" if comp in r.sources else "target" if comp in r.targets else ""
        why = (b"first message must be a Logon" if f.get(35) != b"A" else
               b"wrong BeginString or TargetCompID" if f.get(8) != BEGIN or f.get(56) != r.comp_id
               else b"unknown SenderCompID" if not role
               else b"already logged on" if comp in r.live else b"")
        if why or not f.get(108, b"").isdigit():
            r.stats["refused"] += 1
            self.comp = comp
            self.send(b"5", [(58, why or b"bad HeartBtInt")])
            if self.transport is not None:
                self.transport.close()
            return
        self.role, self.comp = role, comp
        self.heartbeat = max(1.0, float(int(f[108])))
        self.next_in = int(f.get(34, b"1")) + 1
        self.send(b"A", [(98, b"0"), (108, f[108])])
        r.live[comp] = self
        if role == "target":
            r.live_targets.append(self)
        r.stats["logons"] += 1

    def tick(self, now: float) -> None:
        if self.role and now - self.last_out >= self.heartbeat:
            self.send(b"0", [])


async def serve(args: argparse.Namespace) -> dict[str, int]:
    relay = Relay(args.comp_id.encode(), {s.encode() for s in args.source.split(",") if s},
                  {t.encode() for t in args.targets.split(",") if t}, args.high_water)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Conn(relay), args.host, args.port)
    port = server.sockets[0].getsockname()[1]
    print(f"bare_relay listening on {args.host}:{port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gc.freeze()                          # the hot path makes no cycles: collections stay rare
    gc.set_threshold(100_000, 50, 100)
    deadline = time.monotonic() + args.max_seconds
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except TimeoutError:
            pass
        now = time.monotonic()
        for conn in list(relay.live.values()):
            conn.tick(now)
    server.close()
    for conn in list(relay.live.values()):
        if conn.transport is not None:
            conn.transport.abort()
    return relay.stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    ap.add_argument("--comp-id", default="GW", help="the relay's CompID (49 on what it sends)")
    ap.add_argument("--source", default="SRC1", help="source SenderCompIDs, comma separated")
    ap.add_argument("--targets", default="CLR1,CLR2,CLR3,CLR4", help="target SenderCompIDs")
    ap.add_argument("--high-water", type=int, default=1 << 20,
                    help="bytes queued to one target before the sources stop being read")
    ap.add_argument("--max-seconds", type=float, default=3600.0, help="stops by itself after")
    args = ap.parse_args(argv)
    stats = uvloop.run(serve(args))
    print(json.dumps({"tool": "bare_relay", **stats}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
