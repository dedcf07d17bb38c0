"""Backlog benchmark: one target a million copies behind, then catching up.

One real gateway (``dcgateway run`` in its own process, on the fan-out benchmark's config: FIX 4.2
source SRC1, profile fix, one group copying every category to both targets; fresh data_dir, key
pairs from ``dcgateway keys create``), two targets: CLR1 (A) reads everything live, CLR2 (B) is
logged on but does not read (its socket stays open, it sends Heartbeats, its receive window fills:
the harder case than an offline target, which the gateway knows not to write to).

Processes: the gateway; this script (the source and A on one uvloop); B (``--worker target``,
this file again: its catch-up must not share a CPU with what is measured); a monitor (``--worker
monitor``): the gateway's VmRSS (/proc/PID/status) every 0.5 s and ``GET /healthz`` every 100 ms
(after the previous answer), outside the busy loops so that it does not measure them.

Phases:
  * ``accumulate``: the source sends --behind ExecutionReports (``_fixload.Orders``, valid FIX
    4.2; user-defined tag 9999 carries ``<index>:<send ns>``) as fast as the gateway takes them
    (or at --accumulate-rate).
    Figures: source msgs/s accepted (overall and per tenth of the backlog; "accepted" is written
    into the socket: the first MiBs sit in buffers), A's receive rate and lag p50/p99 (per
    tenth too), gateway CPU, RSS at the start, max, final, max per tenth, the gateway's own
    backlog gauge for B and the data_dir size afterwards.
  * ``catch_up``: B starts reading while the source goes on at --rate msgs/s. Catch-up ends at
    the first copy B receives less than --caught-up-ms after it was sent (B is at the live
    edge). Figures: seconds, copies/s, A's lag p50/p99 over copies sent during the catch-up,
    /healthz latency (max, p50, polls, failures), RSS max, gateway CPU; then the source goes on
    for --tail s, stops, and B must hold every copy of the run exactly once, in order, on a
    gapless MsgSeqNum sequence (A the same, per phase).
With --control B reads from the start: the same run without a backlog, to compare against.
``gateway_spills``: per target, how often the gateway logged that it serves it from the journal.

Prints exactly one JSON line on stdout (progress on stderr):
  {"bench": "backlog", "behind": N, "rate": R, "b_mode": "logged_on_not_reading",
   "accumulate": {...}, "catch_up": {...}, "ok": true, "errors": []}
Every process it starts is stopped (SIGTERM, then SIGKILL) on the way out, Ctrl-C included;
every wait is bounded, the whole run by --max-seconds; the temporary folder is removed.

  .venv/bin/python benchmarks/backlog.py [--behind 1000000] [--rate 2000] [--max-seconds 1800]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from array import array
from collections.abc import Sequence
from pathlib import Path

import uvloop

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import fanout
from benchmarks._fixload import Load, Orders, Session, cpu_seconds, now_ns, own_cpu

Child, GATEWAY, SOURCE = fanout.Child, fanout.GATEWAY, fanout.SOURCE
LIVE, BEHIND = fanout.target_ids(2)     # CLR1 reads live, CLR2 falls behind
TAG = 9999
MB = 1024.0                             # VmRSS is in kB
SPILL = re.compile(r"target (\S+) is slow: \d+ copies queued")   # the gateway's log


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def pct_ms(values: Sequence[int] | array, q: float) -> float | None:
    """Nearest-rank percentile of nanosecond values, in ms (0.01 ms)."""
    s = sorted(values)
    if not s:
        return None
    return round(s[min(len(s) - 1, max(0, -int(-q * len(s) // 1) - 1))] / 1e6, 2)


def load_args(port: int, creds: str, drain_timeout: float = 20.0) -> argparse.Namespace:
    return argparse.Namespace(host="127.0.0.1", port=port, gateway=GATEWAY, source=SOURCE,
                              targets="", creds=creds, tag=TAG, heartbeat=30, batch=64,
                              stall_timeout=60.0, logon_timeout=20.0,
                              drain_timeout=drain_timeout, metrics="", pid=0)


# -- the monitor (its own process) ----------------------------------------------------------------

def vm_rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def healthz(port: int, timeout: float = 5.0) -> int:
    """One ``GET /healthz`` on a fresh connection: the status code (0: no answer)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            for _ in range(64):                     # the answer is a few hundred bytes
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        m = re.match(rb"HTTP/1\.[01] (\d{3}) ", data)
        return int(m.group(1)) if m else 0
    except OSError:
        return 0


def monitor(pid: int, metrics_port: int, seconds: float) -> int:
    """Lines ``rss NS KB`` every 0.5 s and ``hz NS MS STATUS`` every 100 ms (NS: CLOCK_MONOTONIC,
    shared by every process of the machine) until the gateway or this script's parent is gone,
    or ``seconds`` passed."""
    lock = threading.Lock()
    parent, deadline = os.getppid(), time.monotonic() + seconds
    done = threading.Event()

    def emit(line: str) -> None:
        with lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def rss() -> None:
        while not done.is_set() and time.monotonic() < deadline:
            kb = vm_rss_kb(pid)
            if kb is None:
                done.set()
                return
            emit(f"rss {time.monotonic_ns()} {kb}")
            done.wait(0.5)

    sampler = threading.Thread(target=rss, daemon=True)
    sampler.start()
    while not done.is_set() and time.monotonic() < deadline and os.getppid() == parent:
        t0 = time.monotonic_ns()
        status = healthz(metrics_port)
        emit(f"hz {t0} {(time.monotonic_ns() - t0) / 1e6:.3f} {status}")
        done.wait(0.1)
    done.set()
    sampler.join(2)
    return 0


def read_monitor(text: str) -> tuple[list[tuple[int, int]], list[tuple[int, float, int]]]:
    """The monitor's log: [(ns, rss kB)], [(ns, healthz ms, status)]."""
    rss, hz = [], []
    for line in text.splitlines():
        f = line.split()
        try:
            if f[0] == "rss" and len(f) == 3:
                rss.append((int(f[1]), int(f[2])))
            elif f[0] == "hz" and len(f) == 4:
                hz.append((int(f[1]), float(f[2]), int(f[3])))
        except (IndexError, ValueError):
            continue
    return rss, hz


def rss_mb(rss: list[tuple[int, int]], t0: int, t1: int) -> list[float]:
    return [round(kb / MB, 1) for t, kb in rss if t0 <= t <= t1]


def health_figures(hz: list[tuple[int, float, int]], t0: int, t1: int) -> dict:
    polls = [(ms, st) for t, ms, st in hz if t0 <= t <= t1]
    lat = sorted(ms for ms, _ in polls)
    return {"polls": len(polls), "failures": sum(st != 200 for _, st in polls),
            "max_ms": round(lat[-1], 2) if lat else None,
            "p50_ms": round(lat[len(lat) // 2], 2) if lat else None}


# -- target B (its own process) ---------------------------------------------------------------

async def pipe_reader(pipe: object) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=1 << 20)
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), pipe)
    return reader


class Lagging(Session):
    """A target session that logs on, stops reading, and, once told to read, notes the first copy
    that reaches it less than ``threshold_ns`` after it was sent: it has caught up."""

    def __init__(self, load: Load, comp: bytes, threshold_ns: int) -> None:
        super().__init__(load, "target", comp)
        self.threshold_ns = threshold_ns
        self.reading = False
        self.caught: asyncio.Future = load.loop.create_future()

    def account(self, idxs: list[int], stamps: tuple[bytes, ...], t: int) -> None:
        super().account(idxs, stamps, t)
        if self.reading and not self.caught.done() and t - int(stamps[-1]) <= self.threshold_ns:
            self.caught.set_result((t, self.uniq, len(self.lat)))


async def lagging_target(a: argparse.Namespace) -> dict:
    """stdout: ``ready`` (logged on, not reading); stdin ``go``: read; stdout ``caught NS COPIES``;
    stdin ``total T``: read until T copies arrived (or none for --drain-timeout s); the result."""
    loop = asyncio.get_running_loop()
    load = Load(load_args(a.port, a.creds, a.drain_timeout), loop)
    _, b = await loop.create_connection(
        lambda: Lagging(load, BEHIND.encode(), int(a.caught_up_ms * 1e6)), "127.0.0.1", a.port)
    load.targets.append(b)
    await load.logged_on([b])
    b.start_phase(0, a.cap)
    assert b.transport is not None
    if not a.control:
        b.transport.pause_reading()
    beats = asyncio.create_task(load.heartbeats())     # writing still works: the session lives
    stdin = await pipe_reader(sys.stdin)               # no thread: nothing blocks an exit
    print("ready", flush=True)
    try:
        if (await stdin.readline()).strip() != b"go":
            raise RuntimeError("no go")
        at_go = b.uniq
        b.reading = True
        b.transport.resume_reading()
        await asyncio.wait([b.caught, b.logged_out], timeout=a.max_seconds,
                           return_when=asyncio.FIRST_COMPLETED)     # or the gateway is gone
        caught_ns, caught_uniq, caught_lat = (b.caught.result() if b.caught.done()
                                              else (0, b.uniq, len(b.lat)))
        print(f"caught {caught_ns} {caught_uniq - at_go}", flush=True)
        line = (await stdin.readline()).decode().split()
        if len(line) != 2 or line[0] != "total":
            raise RuntimeError(f"expected 'total T', got {line!r}")
        total = int(line[1])
        last, since = -1, time.monotonic()
        while b.uniq < total and time.monotonic() - since < a.drain_timeout and b.transport:
            if b.uniq != last:
                last, since = b.uniq, time.monotonic()
            await asyncio.sleep(0.01)
    finally:
        beats.cancel()
        await load.logout()
    return {"total": total, "uniq": b.uniq, "lost": total - min(b.uniq, total), "dup": b.dup,
            "out_of_order": b.out_of_order, "foreign": b.foreign, "seq_errors": b.seq_errors,
            "bad_frames": b.bad, "live_p50_ms": pct_ms(b.lat[caught_lat:], 0.50),
            "live_p99_ms": pct_ms(b.lat[caught_lat:], 0.99), "errors": load.errors}


def worker(a: argparse.Namespace) -> int:
    if a.worker == "monitor":
        return monitor(a.pid, a.metrics_port, a.max_seconds)
    gc.disable()
    loop = uvloop.new_event_loop()
    try:
        res = loop.run_until_complete(asyncio.wait_for(lagging_target(a), a.max_seconds))
    except (RuntimeError, OSError, TimeoutError, ValueError) as exc:
        res = {"errors": [f"target {BEHIND} aborted: {exc!r}"]}
    finally:
        loop.close()
    print(json.dumps(res), flush=True)
    return 0


class Piped(Child):
    """A child whose stdin and stdout are pipes to this script (stderr to its log file)."""

    def __init__(self, cmd: list[str], log_file: Path) -> None:
        self.log = log_file
        with open(log_file, "wb") as fh:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=fh, cwd=REPO)
        self.reader: asyncio.StreamReader | None = None

    def tell(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    async def line(self, timeout: float) -> str:
        if self.reader is None:
            self.reader = await pipe_reader(self.proc.stdout)
        text = await asyncio.wait_for(self.reader.readline(), timeout)
        if not text:
            raise RuntimeError(f"target {BEHIND} exited: {self.output()[-600:]}")
        return text.decode(errors="replace").strip()

    def stop(self) -> None:
        with contextlib.suppress(OSError, AttributeError):
            self.proc.stdin.close()                     # type: ignore[union-attr]
        super().stop()


# -- the phases (this process: the source and target A) ---------------------------------------

def backlog_gauge(metrics_port: int) -> int | None:
    """The gateway's ``dcgateway_target_backlog_messages`` for B."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    m = re.search(r'^dcgateway_target_backlog_messages\{[^}]*session="%s"[^}]*\} (\S+)$'
                  % BEHIND, text, re.M)
    return int(float(m.group(1))) if m else None


def tenths(n: int) -> list[tuple[int, int]]:
    """[lo, hi) index ranges of about a tenth of n each, covering 0..n."""
    step = max(1, -(-n // 10))
    return [(lo, min(lo + step, n)) for lo in range(0, n, step)]


async def accumulate(load: Load, orders: Orders, live: Session, n: int, rate: int,
                     pid: int) -> dict:
    live.start_phase(0, n)
    c0, l0, t0 = cpu_seconds(pid), own_cpu(), now_ns()
    marks = [t0]
    for lo, hi in tenths(n):
        await load.send(orders, hi - lo, rate)
        marks.append(now_ns())
        log(f"accumulate: {hi:,} sent, {(hi - lo) * 1e9 / (marks[-1] - marks[-2]):,.0f} msgs/s, "
            f"A has {live.uniq:,}")
    complete = await load.drained(n)
    c1, l1, t1 = cpu_seconds(pid), own_cpu(), now_ns()
    if not complete:
        load.error("accumulate: A stopped receiving before every copy arrived")
    in_order = live.seen is None and live.uniq == n    # then lat[i] is index i's
    windows = tenths(n)
    rates = [round((hi - lo) * 1e9 / (marks[k + 1] - marks[k])) for k, (lo, hi)
             in enumerate(windows)]
    return {
        "sent": n, "send_s": round((marks[-1] - t0) / 1e9, 2),
        "source_msgs_per_s": round(n * 1e9 / (marks[-1] - t0)), "source_msgs_per_s_by_tenth": rates,
        "a_drained_s": round((t1 - t0) / 1e9, 2),
        "a_msgs_per_s": round(live.uniq * 1e9 / max(1, live.last_rx - t0)),
        "a_p50_ms": pct_ms(live.lat, 0.50), "a_p99_ms": pct_ms(live.lat, 0.99),
        "a_max_ms": pct_ms(live.lat, 1.0),
        "a_p99_ms_by_tenth": [pct_ms(live.lat[lo:hi], 0.99) for lo, hi in windows]
        if in_order else None,
        "a_lost": n - live.uniq, "a_dup": live.dup, "a_out_of_order": live.out_of_order,
        "gateway_cpu_pct": round(100 * (c1 - c0) * 1e9 / (t1 - t0), 1),
        "load_cpu_pct": round(100 * (l1 - l0) * 1e9 / (t1 - t0), 1),
        "_marks": marks, "_end": t1,
    }


async def paced(load: Load, orders: Orders, rate: int, stop: asyncio.Event,
                deadline: float) -> None:
    """``rate`` msgs/s until ``stop`` (or ``deadline``): every ~2 ms what has fallen due."""
    src = load.source
    assert src is not None
    t0, sent0, per = now_ns(), load.sent, 1e9 / rate
    while not stop.is_set() and time.monotonic() < deadline:
        due = int((now_ns() - t0) / per) + 1 - (load.sent - sent0)
        if due > 0:
            if src.transport is None:
                raise RuntimeError("source connection lost")
            if not src.writable.is_set():
                await asyncio.wait_for(src.writable.wait(), 60)
            src.write(orders.finish(orders.prepare(load.sent, due, src.next_out), now_ns()))
            src.next_out += due
            load.sent += due
        await asyncio.sleep(0.002)


async def catch_up(load: Load, orders: Orders, live: Session, b: Piped,
                   a: argparse.Namespace, pid: int) -> dict:
    n0 = load.sent
    live.start_phase(n0, int(a.rate * (a.max_seconds + a.tail + 60)))
    stop = asyncio.Event()
    c0 = cpu_seconds(pid)
    go = now_ns()
    sender = asyncio.create_task(paced(load, orders, a.rate, stop, time.monotonic()
                                       + a.max_seconds))
    try:
        b.tell("go")
        log(f"catch_up: B reads, the source sends {a.rate:,}/s")
        reply = asyncio.ensure_future(b.line(a.max_seconds))
        await asyncio.wait([reply, sender], return_when=asyncio.FIRST_COMPLETED)
        if not reply.done():                          # the source failed: say why
            reply.cancel()
            sender.result()
            raise RuntimeError("catch_up: the source stopped before B caught up")
        _, caught_ns, caught_uniq = reply.result().split()
        caught_sent = load.sent
        took = round((int(caught_ns) - go) / 1e9, 2) if int(caught_ns) else None
        log(f"catch_up: B {'caught up after %s s' % took if took else 'did not catch up'} "
            f"({int(caught_uniq):,} copies); {a.tail} s more at {a.rate:,}/s")
        await asyncio.sleep(a.tail)
    finally:
        stop.set()
        await sender
    c1, t_stop = cpu_seconds(pid), now_ns()
    total = load.sent
    b.tell(f"total {total}")
    res = json.loads(await b.line(a.drain_timeout + 60))
    if not await load.drained(total - n0):
        load.error("catch_up: A stopped receiving before every copy arrived")
    caught, seconds = int(caught_ns), (int(caught_ns) - go) / 1e9
    during = live.lat[:max(0, caught_sent - n0)] if live.seen is None else live.lat
    return {
        "caught_up": bool(caught), "seconds": round(seconds, 2) if caught else None,
        "copies": int(caught_uniq),
        "copies_per_s": round(int(caught_uniq) / seconds) if caught and seconds > 0 else None,
        "source_sent": total - n0,
        "source_msgs_per_s": round((total - n0) * 1e9 / (t_stop - go)),
        "a_p50_ms": pct_ms(during, 0.50), "a_p99_ms": pct_ms(during, 0.99),
        "a_max_ms": pct_ms(during, 1.0), "a_lost": total - n0 - live.uniq, "a_dup": live.dup,
        "a_out_of_order": live.out_of_order,
        "b_live_p50_ms": res.get("live_p50_ms"), "b_live_p99_ms": res.get("live_p99_ms"),
        "b_total": total, "b_received": res.get("uniq"), "b_gaps": res.get("lost"),
        "b_dups": res.get("dup"), "b_out_of_order": res.get("out_of_order"),
        "b_seq_errors": res.get("seq_errors"), "b_bad_frames": res.get("bad_frames"),
        "b_foreign": res.get("foreign"),
        "gateway_cpu_pct": round(100 * (c1 - c0) * 1e9 / (t_stop - go), 1),
        "_go": go, "_caught": caught or t_stop, "_end": now_ns(), "_b_errors": res.get("errors"),
    }


async def bench(a: argparse.Namespace, port: int, metrics_port: int, creds: Path, pid: int,
                b: Piped, data_dir: Path) -> tuple[dict, dict, list[str]]:
    assert (await b.line(60)) == "ready", "target B did not log on"
    load = Load(load_args(port, str(creds), a.drain_timeout), asyncio.get_running_loop())
    live = await load.connect("target", LIVE)
    load.targets.append(live)
    await load.logged_on([live])
    load.source = await load.connect("source", SOURCE)
    await load.logged_on([load.source])
    beats = asyncio.create_task(load.heartbeats())
    orders = Orders(SOURCE.encode(), GATEWAY.encode(), TAG, b"%x" % (time.time_ns() >> 20))
    try:
        await asyncio.sleep(a.settle)
        acc = await accumulate(load, orders, live, a.behind, a.accumulate_rate, pid)
        await asyncio.sleep(a.settle)
        acc["gateway_backlog_b"] = await asyncio.to_thread(backlog_gauge, metrics_port)
        acc["data_dir_mb"] = round(sum(f.stat().st_size for f in data_dir.rglob("*")
                                       if f.is_file()) / 1e6, 1)
        acc["_final"] = now_ns()
        log(f"accumulate: done; the gateway's backlog for B {acc['gateway_backlog_b']}, "
            f"data_dir {acc['data_dir_mb']} MB")
        cu = await catch_up(load, orders, live, b, a, pid)
    finally:
        beats.cancel()
        await load.logout()
    return acc, cu, load.errors


def figures(acc: dict, cu: dict, mon: str) -> None:
    """RSS and /healthz figures from the monitor's samples, into the phases' dicts."""
    rss, hz = read_monitor(mon)
    marks, go = acc.pop("_marks"), cu.pop("_go")
    during = rss_mb(rss, marks[0], acc["_final"])
    before = [round(kb / MB, 1) for t, kb in rss if t < marks[0]]
    acc.update(rss_mb_start=before[-1] if before else (during[0] if during else None),
               rss_mb_max=max(during, default=None),
               rss_mb_final=during[-1] if during else None,
               rss_mb_max_by_tenth=[max(rss_mb(rss, marks[k], marks[k + 1]), default=None)
                                    for k in range(len(marks) - 1)],
               rss_samples=len(during), healthz=health_figures(hz, marks[0], acc.pop("_end")))
    acc.pop("_final")
    caught, end = cu.pop("_caught"), cu.pop("_end")
    cu["healthz"] = health_figures(hz, go, caught)
    cu["rss_mb_max"] = max(rss_mb(rss, go, end), default=None)
    cu["rss_mb_final"] = (rss_mb(rss, go, end) or [None])[-1]


def check(acc: dict, cu: dict, errors: list[str]) -> None:
    errors.extend(f"accumulate: {k} = {acc.get(k)}" for k in ("a_lost", "a_dup", "a_out_of_order")
                  if acc.get(k) != 0)
    if not cu.get("caught_up"):
        errors.append("catch_up: B never reached the live edge")
    for key in ("a_lost", "a_dup", "a_out_of_order", "b_gaps", "b_dups", "b_out_of_order",
                "b_seq_errors", "b_bad_frames", "b_foreign"):
        if cu.get(key) != 0:
            errors.append(f"catch_up: {key} = {cu.get(key)}")
    if cu["healthz"]["failures"]:
        errors.append(f"catch_up: {cu['healthz']['failures']} /healthz polls failed")
    errors.extend(f"B: {e}" for e in cu.pop("_b_errors", None) or [])


def run(a: argparse.Namespace, work: Path, children: list[Child]) -> dict:
    log("making key pairs")
    creds = fanout.make_keys(work, 2)
    config = fanout.write_config(work / "gw", work, 2, a.dcgw_set)
    gw = Child([*fanout.dcgateway_cmd(), "run", "--config", str(config)], work / "gateway.log")
    children.append(gw)
    port = int(gw.wait_for(fanout.LISTENING, 60).group(1))
    m = fanout.METRICS_AT.search(gw.output())
    if m is None:
        raise RuntimeError("the gateway did not log its metrics port")
    metrics_port = int(m.group(1))
    me = str(Path(__file__).resolve())
    mon = Child([sys.executable, me, "--worker", "monitor", "--pid", str(gw.proc.pid),
                 "--metrics-port", str(metrics_port), "--max-seconds", str(a.max_seconds + 120)],
                work / "monitor.log")
    children.append(mon)
    cap = a.behind + int(a.rate * (a.max_seconds + a.tail + 60))
    b = Piped([sys.executable, me, "--worker", "target", "--port", str(port), "--creds",
               str(creds), "--cap", str(cap), "--caught-up-ms", str(a.caught_up_ms),
               "--drain-timeout", str(a.drain_timeout), "--max-seconds", str(a.max_seconds),
               *(["--control"] if a.control else [])], work / "target-b.log")
    children.append(b)
    log(f"gateway pid {gw.proc.pid} on port {port}; B ({BEHIND}) logs on and "
        f"{'reads live (control)' if a.control else 'stops reading'}")
    errors: list[str] = []
    acc, cu = {}, {}
    loop = uvloop.new_event_loop()
    gc.disable()                  # no cycles made here; a collection would be measured as lag
    try:
        acc, cu, load_errors = loop.run_until_complete(asyncio.wait_for(
            bench(a, port, metrics_port, creds, gw.proc.pid, b, work / "gw" / "data"),
            a.max_seconds))
        errors += load_errors
        figures(acc, cu, mon.output())
        check(acc, cu, errors)
    except (RuntimeError, OSError, TimeoutError, ValueError, AssertionError) as exc:
        errors.append(f"aborted: {exc!r}")
    except KeyboardInterrupt:                           # the sessions log out (bounded), then up
        for task in asyncio.all_tasks(loop):
            task.cancel()
        with contextlib.suppress(BaseException):
            loop.run_until_complete(asyncio.sleep(4))
        raise
    finally:
        loop.close()
        gc.enable()
    for child in (b, mon, gw):
        child.stop()
    spills: dict[str, int] = {}
    for comp in SPILL.findall(gw.output()):
        spills[comp] = spills.get(comp, 0) + 1
    if gw.proc.returncode:
        errors.append(f"gateway exited rc={gw.proc.returncode}: {gw.output()[-400:]}")
    return {"bench": "backlog", "behind": a.behind, "rate": a.rate,
            "b_mode": "reads_live_control" if a.control else "logged_on_not_reading",
            "caught_up_ms": a.caught_up_ms,
            "accumulate_rate": a.accumulate_rate or "flat", "tail_s": a.tail,
            "dcgw_set": a.dcgw_set, "gateway_spills": spills, "accumulate": acc, "catch_up": cu,
            "ok": not errors, "errors": errors, "python": sys.version.split()[0]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--behind", type=int, default=1_000_000, help="copies B falls behind")
    ap.add_argument("--rate", type=int, default=2000, help="source msgs/s during the catch-up")
    ap.add_argument("--accumulate-rate", type=int, default=0,
                    help="source msgs/s while B falls behind (0: as fast as accepted)")
    ap.add_argument("--max-seconds", type=float, default=1800.0, help="bound on the whole run")
    ap.add_argument("--caught-up-ms", type=float, default=250.0,
                    help="B has caught up at its first copy younger than this")
    ap.add_argument("--tail", type=float, default=2.0, help="seconds at --rate after catch-up")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds before each phase")
    ap.add_argument("--drain-timeout", type=float, default=20.0,
                    help="a target receiving nothing this long has all it will get")
    ap.add_argument("--dcgw-set", action="append", default=[], metavar="KEY=VALUE",
                    help="a gateway setting added to the config (repeatable)")
    ap.add_argument("--control", action="store_true",
                    help="B reads live from the start: the same flood without a backlog")
    ap.add_argument("--worker", choices=("target", "monitor"), help=argparse.SUPPRESS)
    for opt in ("--port", "--metrics-port", "--pid", "--cap"):
        ap.add_argument(opt, type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--creds", default="", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        return worker(a)
    if a.behind < 1 or a.rate < 1 or a.max_seconds <= 0:
        raise SystemExit("--behind >= 1, --rate >= 1, --max-seconds > 0")
    signal.signal(signal.SIGTERM, signal.default_int_handler)   # SIGTERM cleans up like Ctrl-C
    work = Path(tempfile.mkdtemp(prefix="dcgw-backlog-"))      # holds key pairs: removed below
    children: list[Child] = []
    try:
        try:
            out = run(a, work, children)
        except RuntimeError as exc:
            out = {"bench": "backlog", "behind": a.behind, "rate": a.rate, "ok": False,
                   "errors": [str(exc)]}
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        for child in reversed(children):
            child.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out), flush=True)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
