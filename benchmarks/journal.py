"""Journal benchmark: the append hot path, group-commit throughput with real fdatasync, resend
reads and recovery, on ~250-byte ExecutionReports fanned out to 4 targets.

Prints one JSON line:
  {"bench": "journal", "append_us": X, "append_flush_us": Y, "appends_per_s_fsync": N,
   "fsync_p50_us": .., "fsync_p99_us": .., "batch_p50": .., "batch_mean": .., "fsyncs": ..,
   "resend_2500_ms": .., "recover_checkpoint_ms": .., "recover_rebuild_ms": .., ...}

append_us: ``Journal.append`` alone (buffering, index runs, state), median of --rounds.
append_flush_us: append plus its share of ``flush_writes`` (one pwrite per --batch appends).
appends_per_s_fsync (saturated): a producer on the event loop (uvloop if installed) appends --batch messages
per loop iteration and notifies the GroupCommitter, which fsyncs in its worker thread; measured
from the first append until everything is durable.
roll_*: what a segment roll costs the event loop (``--roll-segment`` bytes a segment, --batch
appends and a commit per loop turn, a short rest between turns, the sync thread running, every
fsync made ``--roll-fsync-ms`` slower, as on a slow disk): the p50, p99.9 and the longest of the
loop's turns when the sync thread does the roll's disk work (the gateway's way), beside
``roll_owner_*``, the same run with the loop doing it itself (the journal without a worker): the
difference is the roll's three fsyncs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from dcgateway.fix import codec
from dcgateway.journal import GroupCommitter, SegmentJournal

TARGETS = ("CLR1", "CLR2", "RISK", "AUDIT")


def execution_report(seq: int) -> bytes:
    header = [(49, "ABC123N"), (56, "DCGW"), (34, seq), (50, "TRADER1"),
              (52, "20261124-20:10:11.123")]
    body = [(37, "ORD123456"), (11, "CL0000001234"), (17, "EXEC%012d" % seq), (20, 0),
            (150, "1"), (39, "1"), (1, "ACCT01"), (55, "ESZ6"), (207, "XCME"), (54, 1),
            (38, 100), (44, "4512.25"), (32, 10), (31, "4512.25"), (151, 90), (14, 10),
            (60, "20261124-20:10:11.123")]
    return codec.encode_fields("FIX.4.2", "8", header, body)


def bench_append(root: Path, n: int, batch: int, msgs: list[bytes]) -> tuple[float, float]:
    """(µs per append, µs per append including its share of flush_writes), fsync off."""
    d = Path(tempfile.mkdtemp(dir=root))
    j = SegmentJournal(d, fsync=False, segment_bytes=1 << 30)
    j.recover()
    append, flush = j.append, j.flush_writes
    t_append = 0.0
    t0 = time.perf_counter()
    for b in range(0, n, batch):
        ta = time.perf_counter()
        for i in range(b + 1, b + batch + 1):
            append("ABC123N", i, 1.7e9, msgs[i % len(msgs)], [(t, i) for t in TARGETS])
        t_append += time.perf_counter() - ta
        flush()
    total = time.perf_counter() - t0
    j.close()
    shutil.rmtree(d)
    return t_append / n * 1e6, total / n * 1e6


async def group_commit(j: SegmentJournal, n: int, batch: int, msgs: list[bytes]) -> dict:
    fsyncs: list[tuple[float, int]] = []
    gc = GroupCommitter(j, asyncio.get_running_loop(), lambda lsn: None,
                        on_fsync=lambda s, k: fsyncs.append((s, k)))
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(gc.run())
        t0 = time.perf_counter()
        i = 0
        while i < n:
            for _ in range(batch):
                i += 1
                j.append("ABC123N", i, time.time(), msgs[i % len(msgs)], [(t, i) for t in TARGETS])
            gc.notify()
            await asyncio.sleep(0)
        await gc.flush(timeout=60)
        elapsed = time.perf_counter() - t0
        task.cancel()
    lat = sorted(s for s, _ in fsyncs)
    sizes = sorted(k for _, k in fsyncs)
    return {"appends_per_s_fsync": round(n / elapsed),
            "fsync_p50_us": round(pct(lat, 50) * 1e6), "fsync_p99_us": round(pct(lat, 99) * 1e6),
            "fsyncs": len(fsyncs), "batch_p50": pct(sizes, 50),
            "batch_mean": round(statistics.mean(sizes), 1), "batch_max": sizes[-1]}


async def paced(j: SegmentJournal, rate: int, seconds: float, batch: int, msgs: list[bytes]) -> dict:
    """--rate messages/s in batches of --batch (one socket read's worth), as a live gateway would
    see them: fsync latency, batch sizes and append-to-durable latency at that load."""
    fsyncs: list[tuple[float, int]] = []
    pending: list[tuple[int, float]] = []          # (last lsn of a batch, time appended)
    waits: list[float] = []

    def on_durable(lsn: int) -> None:
        now = time.perf_counter()
        k = 0
        while k < len(pending) and pending[k][0] <= lsn:
            waits.append(now - pending[k][1])
            k += 1
        del pending[:k]

    gc = GroupCommitter(j, asyncio.get_running_loop(), on_durable,
                        on_fsync=lambda s, k: fsyncs.append((s, k)))
    interval = batch / rate
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(gc.run())
        start = time.perf_counter()
        due, i, busy = start, 0, 0.0
        while due - start < seconds:
            now = time.perf_counter()
            if now < due:
                await asyncio.sleep(due - now)
            t0 = time.perf_counter()
            for _ in range(batch):
                i += 1
                lsn = j.append("ABC123N", i, time.time(), msgs[i % len(msgs)],
                               [(t, i) for t in TARGETS])
            pending.append((lsn, time.perf_counter()))
            gc.notify()
            busy += time.perf_counter() - t0
            due += interval
        await gc.flush(timeout=60)
        elapsed = time.perf_counter() - start
        task.cancel()
    lat = sorted(s for s, _ in fsyncs)
    sizes = sorted(k for _, k in fsyncs)
    waits.sort()
    return {"paced_rate": round(i / elapsed), "paced_fsync_p50_us": round(pct(lat, 50) * 1e6),
            "paced_fsync_p99_us": round(pct(lat, 99) * 1e6), "paced_batch_p50": pct(sizes, 50),
            "paced_batch_max": sizes[-1],
            "paced_durable_p50_us": round(pct(waits, 50) * 1e6),
            "paced_durable_p99_us": round(pct(waits, 99) * 1e6),
            "paced_loop_busy_pct": round(busy / elapsed * 100, 1)}


async def rolls(d: Path, segment_bytes: int, batch: int, turns: int, msgs: list[bytes],
                owner: bool, fsync_delay: float) -> dict[str, int]:
    """The loop's time per turn (``batch`` appends and a commit) across several rolls."""

    def slow_disk(op: str) -> None:
        if op == "fsync":
            time.sleep(fsync_delay)

    j = SegmentJournal(d, segment_bytes=segment_bytes, write_hook=slow_disk)
    j.recover()
    gc = GroupCommitter(j, asyncio.get_running_loop(), lambda lsn: None)
    turn: list[float] = []
    i = 0
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(gc.run())
        await asyncio.sleep(0.01)
        if owner:
            j.hand_rolls_to(False)
        for _ in range(turns):
            t0 = time.perf_counter()
            for _ in range(batch):
                i += 1
                j.append("ABC123N", i, time.time(), msgs[i % len(msgs)],
                         [(t, i) for t in TARGETS])
            gc.commit_now()
            turn.append(time.perf_counter() - t0)
            await asyncio.sleep(0.0005)
        await gc.flush(timeout=60)
        task.cancel()
    segments = len(list(d.glob("*.seg")))
    j.close()
    turn.sort()
    key = "roll_owner_" if owner else "roll_"
    return {key + "fsync_added_ms": round(fsync_delay * 1e3, 1),
            key + "turn_p50_us": round(pct(turn, 50) * 1e6),
            key + "turn_p999_us": round(pct(turn, 99.9) * 1e6),
            key + "turn_max_us": round(turn[-1] * 1e6), key + "segments": segments}


def pct(xs: list, p: float):
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


def run_loop(coro):
    try:
        import uvloop
        factory = uvloop.new_event_loop
    except ImportError:          # pragma: no cover
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro), factory is not None


def bench_reads_and_recovery(d: Path, n: int) -> dict:
    out = {}
    j = SegmentJournal(d)
    j.recover()
    t0 = time.perf_counter()
    got = j.read_target("CLR2", n // 2, n // 2 + 2499)
    out["resend_2500_ms"] = round((time.perf_counter() - t0) * 1e3, 2)
    assert len(got) == 2500
    j.close()
    j = SegmentJournal(d)
    t0 = time.perf_counter()
    j.recover()
    out["recover_checkpoint_ms"] = round((time.perf_counter() - t0) * 1e3, 1)
    j.close()
    (d / "index" / "checkpoint").unlink()
    j = SegmentJournal(d)
    t0 = time.perf_counter()
    rec = j.recover()
    out["recover_rebuild_ms"] = round((time.perf_counter() - t0) * 1e3, 1)
    out["recover_rebuild_records"] = rec.records
    j.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=64, help="appends per loop iteration / flush")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate", type=int, default=50_000, help="paced run: messages/s")
    ap.add_argument("--seconds", type=float, default=3.0, help="paced run: duration")
    ap.add_argument("--paced-batch", type=int, default=25, help="paced run: messages per read")
    ap.add_argument("--dir", default=None, help="where to put the journal (default: a temp dir)")
    ap.add_argument("--roll-segment", type=int, default=4 << 20,
                    help="roll phase: segment size in bytes")
    ap.add_argument("--roll-turns", type=int, default=2000, help="roll phase: loop turns")
    ap.add_argument("--roll-fsync-ms", type=float, default=20.0,
                    help="roll phase: added to every fsync (a slow disk)")
    args = ap.parse_args(argv)
    msgs = [execution_report(i) for i in range(1, 101)]
    root = Path(tempfile.mkdtemp(prefix="dcgw-bench-journal-", dir=args.dir))
    try:
        runs = [bench_append(root, args.messages, args.batch, msgs) for _ in range(args.rounds)]
        d = root / "gc"
        j = SegmentJournal(d)
        j.recover()
        gc, uv = run_loop(group_commit(j, args.messages, args.batch, msgs))
        j.close()
        rr = bench_reads_and_recovery(d, args.messages)
        j = SegmentJournal(root / "paced")
        j.recover()
        pc, _ = run_loop(paced(j, args.rate, args.seconds, args.paced_batch, msgs))
        j.close()
        rl: dict[str, int] = {}
        for owner in (False, True):
            got, _ = run_loop(rolls(root / f"roll{int(owner)}", args.roll_segment, args.batch,
                                    args.roll_turns, msgs, owner, args.roll_fsync_ms / 1e3))
            rl.update(got)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({"bench": "journal",
                      "append_us": round(statistics.median(r[0] for r in runs), 2),
                      "append_flush_us": round(statistics.median(r[1] for r in runs), 2),
                      **gc, **rr, **pc, **rl, "messages": args.messages, "message_bytes": len(msgs[0]),
                      "targets": len(TARGETS), "batch": args.batch, "uvloop": uv,
                      "python": sys.version.split()[0]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
