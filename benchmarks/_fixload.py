"""The fan-out benchmark's load process: one FIX 4.2 source and K targets against the system under
test (the gateway, or the comparison relay), in a process of their own. ``benchmarks/fanout.py``
starts it; it prints one JSON line.

Phases, one after another on the same sessions (``--phases flat:N,rate:R:S,...``):
  * ``flat:N``: the source writes N ExecutionReports as fast as the socket takes them;
  * ``rate:R:S``: R messages/s for S seconds, paced by the event loop's timer (about 1 ms ticks:
    each tick writes every message that has fallen due, so 10,000/s is bursts of about 10).
Each phase waits until every target has every copy (or until no copy arrived for
--drain-timeout), then --settle seconds before the next.

Measured per copy: the time the target's read returned minus the send time the source wrote into
the message (``--tag``, value ``<index>:<ns>``, the last field of the body; CLOCK_MONOTONIC, one
process). A batch is built first and stamped just before its last step (BodyLength, CheckSum,
join), so the stamp does not include the building. Every target checks that it receives every
copy exactly once and in the source's order (lost / dup / out_of_order), that its own MsgSeqNum
(34) has no gap, and re-verifies BodyLength and CheckSum on every 64th read. Per phase it also
reports the CPU used by ``--pid`` (the system under test, all threads, from /proc; 100 = one core)
and by itself, and with ``--metrics URL`` the change of the system's Prometheus series over the
phase (scraped before and after; the caller turns histogram buckets into quantiles).

Plain bytes on the hot path, no FIX library; dcgateway's ``signed_logon`` signs the Logons when
``--creds`` names a key-pair file (``{CompID: [access_key_id, secret_key]}``). Every wait has a
timeout and the whole run is bounded by --max-seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import resource
import socket
import sys
import time
import urllib.request
from array import array
from pathlib import Path
from typing import cast

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _fixwire import ADMIN_TYPES, TRAILER, Framer, encode, fields_of, utc_now  # noqa: E402

BEGIN = b"FIX.4.2"
SEQ_RE = re.compile(rb"\x0134=(\d+)\x01")
now_ns = time.monotonic_ns
#: An order's life in three ExecutionReports (FIX 4.2: 20 ExecTransType, 150 ExecType,
#: 39 OrdStatus, 32/31 last fill, 151 leaves, 14 cum, 6 avg px): new, partial fill, fill.
STATES = ((b"0", b"0", b"0", b"0", b"10", b"0", b"0"),
          (b"1", b"1", b"4", b"4512.25", b"6", b"4", b"4512.25"),
          (b"2", b"2", b"6", b"4512.50", b"0", b"10", b"4512.40"))


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, every thread included (proc(5), /proc/PID/stat 14 and 15)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def scrape(url: str, prefixes: tuple[str, ...]) -> dict[str, float]:
    """Series whose name starts with one of ``prefixes``, summed over labels (histogram buckets
    kept apart by ``le``: ``name{le}``)."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(prefixes):
            continue
        name, _, value = line.rpartition(" ")
        series = name.split("{", 1)[0]
        if 'le="' in name:
            series += "{" + name.split('le="', 1)[1].split('"', 1)[0] + "}"
        out[series] = out.get(series, 0.0) + float(value)
    return out


def percentile(sorted_values: array, q: float) -> float | None:
    """Nearest rank, in microseconds."""
    n = len(sorted_values)
    if not n:
        return None
    return round(sorted_values[min(n - 1, max(0, -int(-q * n // 1) - 1))] / 1000, 1)


class Orders:
    """Builds the source's ExecutionReports. ``prepare`` does the costly part (formatting, byte
    sums); ``finish`` adds the send time, BodyLength and CheckSum, and joins: all that is left
    between the stamp and the write."""

    def __init__(self, sender: bytes, gateway: bytes, tag: int, run_id: bytes) -> None:
        self.head = b"35=8\x0149=%s\x0156=%s\x0134=" % (sender, gateway)
        self.tag = b"%d" % tag
        self.run = run_id
        self.bodies = [b"20=0\x01150=%s\x0139=%s\x011=ACCT01\x0155=ESZ6\x01207=XCME\x0154=1\x01"
                       b"38=10\x0144=4512.25\x0132=%s\x0131=%s\x01151=%s\x0114=%s\x016=%s\x0160="
                       % s for s in STATES]

    def prepare(self, idx0: int, count: int, seq0: int) -> list[tuple[bytes, int]]:
        ts = utc_now()
        out = []
        for k in range(count):
            idx = idx0 + k
            order = idx // 3
            part = (b"%s%d\x0150=TRADER1\x0152=%s\x0137=O%s%d\x0111=C%s%d\x0117=E%s%d\x01%s%s\x01"
                    b"%s=%d:" % (self.head, seq0 + k, ts, self.run, order, self.run, order,
                                 self.run, idx, self.bodies[idx % 3], ts, self.tag, idx))
            out.append((part, sum(part)))
        return out

    @staticmethod
    def finish(prepared: list[tuple[bytes, int]], stamp: int) -> bytes:
        st = b"%d\x01" % stamp
        st_sum, st_len = sum(st), len(st)
        out: list[bytes] = []
        for part, part_sum in prepared:
            nine = b"8=FIX.4.2\x019=%d\x01" % (len(part) + st_len)
            out += (nine, part, st, b"10=%03d\x01" % ((sum(nine) + part_sum + st_sum) & 255))
        return b"".join(out)


class Session(asyncio.Protocol):
    """One FIX initiator session of the load: the source, or a target that checks its copies."""

    def __init__(self, load: Load, role: str, comp: bytes) -> None:
        self.load, self.role, self.comp = load, role, comp
        self.transport: asyncio.Transport | None = None
        self.framer = Framer()
        self.rest = b""
        self.fast = False                      # a logged-on target: the per-read path
        self.next_in = self.next_out = 1
        self.last_out = time.monotonic()
        self.writable = asyncio.Event()
        self.writable.set()
        self.logged_on = load.loop.create_future()
        self.logged_out = load.loop.create_future()
        self.logout_sent = False
        self.reads = 0
        self.seq_errors = 0
        self.verified = 0
        self.bad = 0
        self.start_phase(0, 0)

    def start_phase(self, base: int, n: int) -> None:
        self.base, self.n = base, n
        self.expect = base                     # next source index, while all is in order
        self.high = base - 1                   # highest index seen
        self.seen: bytearray | None = None     # per-index flags, made at the first anomaly
        self.uniq = self.dup = self.out_of_order = self.foreign = 0
        self.lat = array("q")
        self.last_rx = 0

    # -- transport callbacks ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)   # uvloop's is no subclass
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(1 << 20, 1 << 18)
        self.write(self.load.logon(self.comp))
        self.next_out = 2

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.writable.set()
        if not self.logout_sent:
            self.load.error(f"{self.role} {self.comp.decode()}: connection lost ({exc})")
        for fut in (self.logged_on, self.logged_out):
            if not fut.done():
                fut.set_result(False)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        t = now_ns()
        if not self.fast:
            for frame, _ in self.framer.feed(data):
                self.on_frame(frame, t)
            return
        buf = self.rest + data if self.rest else data
        end = buf.rfind(TRAILER)
        while end >= 0 and (len(buf) < end + 8 or buf[end + 7] != 1):
            end = buf.rfind(TRAILER, 0, end)
        if end < 0:
            self.rest = buf
            return
        chunk, self.rest = buf[:end + 8], buf[end + 8:]
        self.reads += 1
        marks = self.load.mark_re.findall(chunk)
        seqs = SEQ_RE.findall(chunk)
        n = len(marks)
        first = self.next_in
        if (n == 0 or n != chunk.count(TRAILER) or n != len(seqs)
                or list(map(int, seqs)) != list(range(first, first + n))):
            self.slow_chunk(chunk, t)       # a session message among the copies, or a fault
            return
        self.next_in = first + n
        idxs, stamps = zip(*marks, strict=True)
        self.account(list(map(int, idxs)), stamps, t)
        if not self.reads & 63:
            self.verify(chunk)

    # -- targets: what arrived ------------------------------------------------------------------
    def account(self, idxs: list[int], stamps: tuple[bytes, ...], t: int) -> None:
        n = len(idxs)
        e = self.expect
        if self.seen is None and idxs == list(range(e, e + n)) and e + n <= self.base + self.n:
            self.expect = e + n
            self.high = e + n - 1
            self.uniq += n
        else:
            self.account_slowly(idxs)
        self.lat.extend(map(t.__sub__, map(int, stamps)))
        self.last_rx = t

    def account_slowly(self, idxs: list[int]) -> None:
        if self.seen is None:
            self.seen = bytearray(self.n)
            self.seen[:self.expect - self.base] = b"\x01" * (self.expect - self.base)
        for i in idxs:
            k = i - self.base
            if not 0 <= k < self.n:
                self.foreign += 1
            elif self.seen[k]:
                self.dup += 1
            else:
                self.seen[k] = 1
                self.uniq += 1
                if i < self.high:
                    self.out_of_order += 1
                self.high = max(self.high, i)

    def verify(self, chunk: bytes) -> None:
        """Every frame of a read: BodyLength, CheckSum, and the copy's header (49, 56, 115)."""
        framer = Framer()
        load = self.load
        for frame, _ in framer.feed(chunk):
            self.verified += 1
            if (load.p49 not in frame or b"\x0156=%s\x01" % self.comp not in frame
                    or load.p115 not in frame):
                self.bad += 1
        self.bad += framer.bad + (framer.garbage > 0) + (len(framer.buf) > 0)

    def slow_chunk(self, chunk: bytes, t: int) -> None:
        framer = Framer()
        for frame, _ in framer.feed(chunk):
            self.on_frame(frame, t)
        self.bad += framer.bad + (framer.garbage > 0) + (len(framer.buf) > 0)

    # -- every frame on the slow path -----------------------------------------------------------
    def on_frame(self, frame: bytes, t: int) -> None:
        f = fields_of(frame)
        mt = f.get(35, b"")
        seq = int(f[34]) if f.get(34, b"").isdigit() else 0
        if mt == b"4" and f.get(123) != b"Y" and f.get(36, b"").isdigit():
            self.next_in = int(f[36])
            return
        if seq == self.next_in:
            self.next_in += 1
        elif seq > self.next_in or f.get(43) != b"Y":
            self.seq_errors += 1
            self.next_in = max(self.next_in, seq + 1)
        if mt in ADMIN_TYPES:
            self.on_admin(mt, f)
            return
        m = self.load.mark_re.search(frame)
        if self.role != "target" or m is None:
            self.foreign += 1
            self.load.error(f"{self.comp.decode()} got 35={mt.decode()}: "
                            f"{f.get(58, b'').decode(errors='replace')}")
            return
        self.verified += 1
        self.bad += f.get(49) != self.load.gateway or f.get(56) != self.comp
        self.account([int(m.group(1))], (m.group(2),), t)

    def on_admin(self, mt: bytes, f: dict[int, bytes]) -> None:
        if mt == b"A":
            if not self.logged_on.done():
                self.logged_on.set_result(True)
            self.fast = self.role == "target"
            if self.fast and self.framer.buf:
                self.rest, self.framer.buf = self.framer.buf, b""
        elif mt == b"1":
            self.send(b"0", [(112, f.get(112, b""))])
        elif mt == b"2":                   # no store: gap-fill, and say so in the result
            self.load.error(f"{self.comp.decode()}: ResendRequest {f.get(7)!r}..{f.get(16)!r}")
            now = utc_now()
            self.write(encode(BEGIN, [(35, b"4"), (49, self.comp), (56, self.load.gateway),
                                      (34, f.get(7, b"1")), (43, b"Y"), (52, now), (122, now),
                                      (123, b"Y"), (36, b"%d" % self.next_out)]))
        elif mt == b"4" and f.get(36, b"").isdigit():       # GapFill
            self.next_in = max(self.next_in, int(f[36]))
        elif mt == b"3":
            self.load.error(f"{self.comp.decode()}: Reject {f.get(58, b'').decode()}")
        elif mt == b"5":
            if not self.logout_sent:
                self.load.error(f"{self.comp.decode()}: Logout {f.get(58, b'').decode()}")
                self.send(b"5", [])
            if not self.logged_out.done():
                self.logged_out.set_result(True)
            if not self.logged_on.done():
                self.logged_on.set_result(False)

    # -- outbound ---------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)
            self.last_out = time.monotonic()

    def send(self, mt: bytes, body: list[tuple[int, bytes]]) -> None:
        self.logout_sent = self.logout_sent or mt == b"5"
        self.write(encode(BEGIN, [(35, mt), (49, self.comp), (56, self.load.gateway),
                                  (34, b"%d" % self.next_out), (52, utc_now()), *body]))
        self.next_out += 1


class Load:
    def __init__(self, args: argparse.Namespace, loop: asyncio.AbstractEventLoop) -> None:
        self.args, self.loop = args, loop
        self.gateway = args.gateway.encode()
        self.source_comp = args.source.encode()
        self.mark_re = re.compile(rb"\x01%d=(\d+):(\d+)\x01" % args.tag)
        self.p49 = b"\x0149=%s\x01" % self.gateway
        self.p115 = b"\x01115=%s\x01" % self.source_comp
        self.errors: list[str] = []
        self.creds = json.loads(Path(args.creds).read_text()) if args.creds else {}
        self.targets: list[Session] = []
        self.source: Session | None = None
        self.sent = 0

    def error(self, text: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(text)

    def logon(self, comp: bytes) -> bytes:
        header = [(49, comp), (56, self.gateway), (34, b"1"), (52, utc_now())]
        body = [(98, b"0"), (108, b"%d" % self.args.heartbeat)]
        if not self.creds:
            return encode(BEGIN, [(35, b"A"), *header, *body])
        from dcgateway.auth import signed_logon  # the admin path only
        return signed_logon(BEGIN, header, body, *self.creds[comp.decode()])

    async def connect(self, role: str, comp: str) -> Session:
        _, session = await self.loop.create_connection(
            lambda: Session(self, role, comp.encode()), self.args.host, self.args.port)
        return session

    async def logged_on(self, sessions: list[Session]) -> None:
        await asyncio.wait([s.logged_on for s in sessions], timeout=self.args.logon_timeout)
        failed = [s.comp.decode() for s in sessions
                  if not (s.logged_on.done() and s.logged_on.result())]
        if failed:
            raise RuntimeError(f"no Logon reply for {', '.join(failed)} ({self.errors})")

    async def heartbeats(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for s in [self.source, *self.targets]:
                if s is not None and now - s.last_out >= self.args.heartbeat:
                    s.send(b"0", [])

    async def send(self, orders: Orders, n: int, rate: int) -> None:
        """n messages, flat out (rate 0) or paced; each write waits while the socket pushes
        back (bounded by --stall-timeout)."""
        src = self.source
        assert src is not None
        per = 1e9 / rate if rate else 0.0
        t0 = now_ns()
        i = 0
        while i < n:
            if src.transport is None:
                raise RuntimeError("source connection lost")
            due = min(n, int((now_ns() - t0) / per) + 1 if rate else i + self.args.batch)
            if due > i:
                if not src.writable.is_set():
                    await asyncio.wait_for(src.writable.wait(), self.args.stall_timeout)
                prepared = orders.prepare(self.sent, due - i, src.next_out)
                src.write(orders.finish(prepared, now_ns()))
                src.next_out += due - i
                self.sent += due - i
                i = due
            if not rate:
                await asyncio.sleep(0)      # the targets' reads run between batches
            elif i < n:
                await asyncio.sleep(max(0.001, (t0 + i * per - now_ns()) / 1e9))

    async def drained(self, n: int) -> bool:
        last, since = -1, time.monotonic()
        while True:
            got = sum(min(t.uniq, n) for t in self.targets)
            if got == n * len(self.targets):
                return True
            if got != last:
                last, since = got, time.monotonic()
            elif time.monotonic() - since > self.args.drain_timeout:
                return False
            await asyncio.sleep(0.002)

    async def phase(self, orders: Orders, name: str, n: int, rate: int) -> dict:
        a = self.args
        before = await asyncio.to_thread(scrape, a.metrics, a.metric_prefix) if a.metrics else {}
        for t in self.targets:
            t.start_phase(self.sent, n)
        c0, l0, w0 = cpu_seconds(a.pid) if a.pid else 0.0, own_cpu(), now_ns()
        await self.send(orders, n, rate)
        complete = await self.drained(n)
        c1, l1, w1 = cpu_seconds(a.pid) if a.pid else 0.0, own_cpu(), now_ns()
        after = await asyncio.to_thread(scrape, a.metrics, a.metric_prefix) if a.metrics else {}
        if not complete:
            self.error(f"{name}: targets stopped receiving before every copy arrived")
        span = (max([t.last_rx for t in self.targets] + [w0]) - w0) / 1e9
        wall = (w1 - w0) / 1e9
        lat = array("q", sorted(x for t in self.targets for x in t.lat))
        copies = sum(t.uniq + t.dup for t in self.targets)
        return {
            "phase": name, "rate": rate, "sent": n, "span_s": round(span, 3),
            "msgs_in_per_s": round(n / span) if span else None,
            "deliveries_per_s": round(copies / span) if span else None,
            "p50_us": percentile(lat, 0.50), "p99_us": percentile(lat, 0.99),
            "p999_us": percentile(lat, 0.999), "max_us": percentile(lat, 1.0),
            "samples": len(lat),
            "lost": sum(n - t.uniq for t in self.targets),
            "dup": sum(t.dup for t in self.targets),
            "out_of_order": sum(t.out_of_order for t in self.targets),
            "foreign": sum(t.foreign for t in self.targets),
            "cpu_pct": round(100 * (c1 - c0) / wall, 1) if a.pid else None,
            "load_cpu_pct": round(100 * (l1 - l0) / wall, 1),
            "metrics": {k: round(v - before.get(k, 0.0), 6) for k, v in after.items()
                        if v != before.get(k, 0.0)},
        }

    async def run(self) -> dict:
        a = self.args
        for comp in a.targets.split(","):
            self.targets.append(await self.connect("target", comp))
        await self.logged_on(self.targets)
        self.source = await self.connect("source", a.source)
        await self.logged_on([self.source])
        beats = asyncio.create_task(self.heartbeats())
        orders = Orders(self.source_comp, self.gateway, a.tag, b"%x" % (time.time_ns() >> 20))
        results = []
        try:
            for spec in a.phases.split(","):
                kind, *nums = spec.split(":")
                await asyncio.sleep(a.settle)
                if kind == "flat":
                    results.append(await self.phase(orders, "flat", int(nums[0]), 0))
                else:
                    rate, seconds = int(nums[0]), float(nums[1])
                    results.append(await self.phase(orders, f"rate_{rate}",
                                                    int(rate * seconds), rate))
        finally:
            beats.cancel()
            await self.logout()
        sessions = [self.source, *self.targets]
        seq_errors, bad = sum(s.seq_errors for s in sessions), sum(s.bad for s in sessions)
        if seq_errors or bad:
            self.error(f"{seq_errors} MsgSeqNum gaps or repeats, {bad} bad frames or headers")
        for r in results:
            if r["lost"] or r["dup"] or r["out_of_order"] or r["foreign"]:
                self.error(f"{r['phase']}: lost {r['lost']}, dup {r['dup']}, out of order "
                           f"{r['out_of_order']}, foreign {r['foreign']}")
        return {"ok": not self.errors, "phases": results, "errors": self.errors,
                "seq_errors": seq_errors, "verified": sum(s.verified for s in sessions),
                "bad_frames": bad}

    async def logout(self) -> None:
        live = [s for s in (self.source, *self.targets) if s is not None and s.transport]
        for s in live:
            s.send(b"5", [])
        if live:
            await asyncio.wait([s.logged_out for s in live], timeout=3.0)
        for s in live:
            if s.transport is not None:
                s.transport.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--gateway", default="GW", help="the system's CompID (our 56)")
    ap.add_argument("--source", default="SRC1")
    ap.add_argument("--targets", default="CLR1,CLR2,CLR3,CLR4")
    ap.add_argument("--creds", default="", help="JSON {CompID: [access_key_id, secret_key]}")
    ap.add_argument("--phases", default="rate:2000:10,rate:10000:10,flat:200000")
    ap.add_argument("--pid", type=int, default=0, help="report this process's CPU per phase")
    ap.add_argument("--metrics", default="", help="Prometheus URL scraped before/after a phase")
    ap.add_argument("--metric-prefix", action="append", default=None)
    ap.add_argument("--tag", type=int, default=9999, help="user-defined tag: <index>:<send ns>")
    ap.add_argument("--batch", type=int, default=64, help="messages per write, flat out")
    ap.add_argument("--heartbeat", type=int, default=30)
    ap.add_argument("--settle", type=float, default=1.0)
    ap.add_argument("--drain-timeout", type=float, default=10.0)
    ap.add_argument("--stall-timeout", type=float, default=30.0)
    ap.add_argument("--logon-timeout", type=float, default=10.0)
    ap.add_argument("--max-seconds", type=float, default=600.0)
    args = ap.parse_args(argv)
    args.metric_prefix = tuple(args.metric_prefix or ("dcgateway_",))
    gc.disable()        # no cycles are made here; a collection would be measured as latency
    loop = uvloop.new_event_loop()
    load = Load(args, loop)
    try:
        result = loop.run_until_complete(asyncio.wait_for(load.run(), args.max_seconds))
    except (RuntimeError, OSError, TimeoutError) as exc:
        result = {"ok": False, "phases": [], "errors": [*load.errors, f"aborted: {exc!r}"]}
    finally:
        loop.close()
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 2


if __name__ == "__main__":
    sys.exit(main())
