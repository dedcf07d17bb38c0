"""Fan-out benchmark: one source, K targets, the real gateway (subprocess, uvloop, journal with
fsync on), against a bare uvloop relay (no journal, no filters, no FIX work) measured by the same
driver in the same run.

Phases, for the gateway and then for the relay:
  * throughput: the source sends --messages ExecutionReports flat out; deliveries/s = K * N over
    the time from the first byte sent to the last copy received by the slowest target;
  * latency: the source offers --rate messages/s for --seconds; each message carries its send time
    (perf_counter_ns, tag 5000) and every target measures receipt - send for every copy.
Nothing is lost: every target must count exactly what was sent ("lost" must be 0).

Prints one JSON line:
  {"bench": "fanout", "targets": K, "msgs_in_per_s": ..., "deliveries_per_s": ..., "p50_us": ...,
   "p99_us": ..., "p999_us": ..., "lost": 0, "bare_relay_deliveries_per_s": ...,
   "ratio_to_bare_relay": ...}
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import uvloop

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dcgateway.auth import logon_signer, open_key_manager  # noqa: E402
from dcgateway.config import load_config  # noqa: E402
from dcgateway.fix import codec  # noqa: E402
from dcgateway.fix.timefmt import utc_timestamp  # noqa: E402
from simulators.fixclient import FixClient  # noqa: E402

TS_RE = re.compile(rb"\x015000=(\d+)\x01")
TRAILER = b"\x0110="


def write_config(folder: Path, k: int) -> Path:
    targets = [f"T{i:03d}" for i in range(1, k + 1)]
    sessions = "\n".join(
        [ "  - {comp_id: SRC, role: source, entity: FIRM, profile: fix, begin_string: FIX.4.4}"]
        + [f"  - {{comp_id: {t}, role: target, entity: FIRM, profile: fix, begin_string: FIX.4.4}}"
           for t in targets])
    (folder / "gateway.yaml").write_text(textwrap.dedent("""
        gateway:
          comp_id: DCGW
          listen: {host: 127.0.0.1, port: 0}
          metrics: {host: 127.0.0.1, port: 0}
          data_dir: var
          market_close: {time: "16:00", tz: America/Chicago}
          week_start: {day: sunday, time: "16:00", tz: America/Chicago}
          write_buffer_high: 4194304
          write_buffer_low: 1048576
        entities:
          - {name: FIRM, administrators: [{name: ops, email: ops@firm.example}]}
        groups_file: groups.yaml
        sessions:
    """) + sessions + "\n")
    (folder / "groups.yaml").write_text(textwrap.dedent(f"""
        groups:
          - entity: FIRM
            name: bench
            front_end: fix
            filters: {{categories: [execution, acknowledgment, order]}}
            sources: [SRC]
            targets: [{", ".join(targets)}]
    """))
    return folder / "gateway.yaml"


def issue_keys(config_path: Path) -> dict[str, tuple[str, str]]:
    cfg = load_config(config_path)
    g = cfg.gateway
    km = open_key_manager(g.keystore.path, g.keystore.master_key_file, g.data_dir / "audit.jsonl")
    km.store.ensure_master_key()
    out = {}
    for s in cfg.sessions:
        rec = km.create(s.key_scope, who="bench")
        out[s.comp_id] = (rec.access_key_id, rec.secret_key)
    return out


def execution_report(seq: int, stamp: int = 0, sending_time: bytes | None = None) -> bytes:
    st = sending_time or utc_timestamp(time.time())
    return codec.encode(b"FIX.4.4", b"8", _header(seq, st), _body(seq) + b"5000=%d\x01" % stamp)


def _header(seq: int, sending_time: bytes) -> bytes:
    return codec.fields_bytes([(49, "SRC"), (56, "DCGW"), (34, seq), (50, "TRADER1"),
                               (52, sending_time)])


def _body(seq: int) -> bytes:
    """Every field but the timestamp (5000), which ends the body."""
    return codec.fields_bytes([
        (37, "ORD123456"), (11, "CL%010d" % seq), (17, "EX%014d" % seq), (150, "F"), (39, "1"),
        (1, "ACCT01"), (55, "ESZ6"), (207, "XCME"), (54, 1), (38, 100), (44, "4512.25"),
        (32, 10), (31, "4512.25"), (151, 90), (14, 10), (60, "20261124-20:10:11.123")])


class Counter(asyncio.Protocol):
    """Reads one target's socket: counts complete messages (by their "SOH 10=" trailer), and in
    the latency phase records receipt - send for each. A Protocol, so the receipt time is taken
    in the read callback itself (a StreamReader would add a task wake-up per read to what is
    measured as gateway latency)."""

    def __init__(self) -> None:
        self.count = 0
        self.last_at = 0.0
        self.measure = False
        self.lat_ns: list[int] = []
        self._tail = b""
        self.transport: asyncio.Transport | None = None

    @classmethod
    def take_over(cls, client: FixClient) -> "Counter":
        """Read a logged-on client's socket from now on (what its stream already buffered is
        counted too)."""
        assert client.writer is not None and client.reader is not None
        counter = cls()
        counter.transport = client.writer.transport
        buffered = bytes(client.reader._buffer)     # noqa: SLF001 - bytes read past the Logon
        client.reader._buffer.clear()               # noqa: SLF001
        counter.transport.set_protocol(counter)
        if buffered:
            counter.data_received(buffered)
        return counter

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter_ns()
        buf = self._tail + data
        self.count += buf.count(TRAILER) - self._tail.count(TRAILER)
        self._tail = buf[-4:]
        self.last_at = time.perf_counter()
        if self.measure:
            self.lat_ns.extend(now - int(m) for m in TS_RE.findall(data) if m != b"0")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def wait_counts(counters: list[Counter], target: int, timeout: float) -> bool:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if all(c.count >= target for c in counters):
            return True
        await asyncio.sleep(0.002)
    return False


async def throughput(writer: asyncio.StreamWriter, counters: list[Counter], first_seq: int,
                     n: int, baseline: int, timeout: float) -> tuple[float, float, int]:
    st = utc_timestamp(time.time())
    stream = b"".join(execution_report(s, 0, st) for s in range(first_seq, first_seq + n))
    t0 = time.perf_counter()
    chunk = 1 << 16
    for i in range(0, len(stream), chunk):
        writer.write(stream[i:i + chunk])
        await writer.drain()
    sent_at = time.perf_counter()
    await wait_counts(counters, baseline + n, timeout)
    t1 = max(c.last_at for c in counters)
    lost = sum(max(0, baseline + n - c.count) for c in counters)
    return n / (sent_at - t0), len(counters) * n / (t1 - t0), lost


async def latency(writer: asyncio.StreamWriter, counters: list[Counter], first_seq: int,
                  rate: int, seconds: float, baseline: int, timeout: float) -> tuple[list[int], int]:
    for c in counters:
        c.measure = True
    n = int(rate * seconds)
    tick = 0.001
    per_tick = max(1, int(rate * tick))
    seq = first_seq
    start = time.perf_counter()
    sent = 0
    while sent < n:
        due = start + (sent / rate)
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        # This tick's messages are written together, so they share one send time, taken just
        # before they are encoded (the encoding is not gateway latency).
        count = min(per_tick, n - sent)
        bodies = [_body(s) for s in range(seq, seq + count)]
        st = utc_timestamp(time.time())
        stamp = b"5000=%d\x01" % time.perf_counter_ns()
        writer.write(b"".join(codec.encode(b"FIX.4.4", b"8", _header(s, st), body + stamp)
                              for s, body in zip(range(seq, seq + count), bodies)))
        seq += count
        sent += count
    await wait_counts(counters, baseline + n, timeout)
    lost = sum(max(0, baseline + n - c.count) for c in counters)
    lat = [x for c in counters for x in c.lat_ns]
    for c in counters:
        c.measure = False
    return lat, lost


def pct(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] / 1000.0


async def run_gateway(k: int, args) -> dict:
    with tempfile.TemporaryDirectory(prefix="dcgw-bench-") as tmp:
        folder = Path(tmp)
        cfg = write_config(folder, k)
        creds = issue_keys(cfg)
        prof = ["-m", "cProfile", "-o", args.profile] if args.profile else []
        proc = subprocess.Popen([sys.executable, *prof, "-m", "dcgateway", "run", "--config", str(cfg),
                                 "--log-level", "WARNING"], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, cwd=REPO)
        try:
            line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
            port = int(line.rsplit(":", 1)[1])
            clients = []
            for t in sorted(c for c in creds if c != "SRC"):
                c = FixClient("127.0.0.1", port, t, begin_string="FIX.4.4", heartbeat=60,
                              signer=logon_signer(*creds[t]), sender_sub_id="OPS")
                assert (await c.logon()).get(35) == b"A"
                clients.append(c)
            src = FixClient("127.0.0.1", port, "SRC", begin_string="FIX.4.4", heartbeat=60,
                            signer=logon_signer(*creds["SRC"]), sender_sub_id="OPS")
            assert (await src.logon()).get(35) == b"A"
            counters = [Counter.take_over(c) for c in clients]
            assert src.writer is not None
            first = src.next_seq
            msgs_in, deliveries, lost1 = await throughput(src.writer, counters, first,
                                                          args.messages, 0, args.timeout)
            lat, lost2 = await latency(src.writer, counters, first + args.messages, args.rate,
                                       args.seconds, args.messages, args.timeout)
            for counter in counters:
                counter.close()
            await src.close()
            return {"msgs_in_per_s": msgs_in, "deliveries_per_s": deliveries,
                    "lat": lat, "lost": lost1 + lost2}
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()


RELAY = r"""
import asyncio, sys, uvloop
targets = []
async def source(reader, writer):
    while True:
        data = await reader.read(1 << 18)
        if not data:
            return
        for t in targets:
            t.write(data)
async def target(reader, writer):
    targets.append(writer)
    await reader.read()
async def main():
    s = await asyncio.start_server(source, "127.0.0.1", 0)
    t = await asyncio.start_server(target, "127.0.0.1", 0)
    print(s.sockets[0].getsockname()[1], t.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
uvloop.run(main())
"""


async def run_relay(k: int, args) -> dict:
    proc = subprocess.Popen([sys.executable, "-c", RELAY], stdout=subprocess.PIPE, text=True)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
        sport, tport = map(int, line.split())
        loop = asyncio.get_running_loop()
        counters = [(await loop.create_connection(Counter, "127.0.0.1", tport))[1]
                    for _ in range(k)]
        await asyncio.sleep(0.2)
        _, swriter = await asyncio.open_connection("127.0.0.1", sport)
        msgs_in, deliveries, lost = await throughput(swriter, counters, 1, args.messages, 0,
                                                     args.timeout)
        swriter.close()
        for counter in counters:
            counter.close()
        return {"deliveries_per_s": deliveries, "lost": lost}
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


async def main_async(args) -> dict:
    # The driver's own cyclic GC would pause its reads and be measured as gateway latency; it
    # creates no reference cycles, so collection is off while it measures.
    gc.disable()
    gw = await run_gateway(args.targets, args)
    relay = await run_relay(args.targets, args)
    lat = gw["lat"]
    return {"bench": "fanout", "targets": args.targets,
            "msgs_in_per_s": round(gw["msgs_in_per_s"]),
            "deliveries_per_s": round(gw["deliveries_per_s"]),
            "offered_rate": args.rate, "latency_samples": len(lat),
            "p50_us": round(pct(lat, 0.50), 1), "p99_us": round(pct(lat, 0.99), 1),
            "p999_us": round(pct(lat, 0.999), 1), "lost": gw["lost"] + relay["lost"],
            "bare_relay_deliveries_per_s": round(relay["deliveries_per_s"]),
            "ratio_to_bare_relay": round(gw["deliveries_per_s"] / relay["deliveries_per_s"], 3),
            "messages": args.messages, "fsync": True, "python": sys.version.split()[0]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", type=int, default=4)
    ap.add_argument("--messages", type=int, default=100_000, help="throughput phase, flat out")
    ap.add_argument("--rate", type=int, default=10_000, help="latency phase, messages/s offered")
    ap.add_argument("--seconds", type=float, default=3.0, help="latency phase duration")
    ap.add_argument("--timeout", type=float, default=120.0, help="bound on each phase's wait")
    ap.add_argument("--profile", metavar="FILE", help="run the gateway under cProfile, stats to FILE")
    args = ap.parse_args(argv)
    print(json.dumps(uvloop.run(main_async(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
