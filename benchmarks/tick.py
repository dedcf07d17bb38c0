"""Per-read cost benchmark: the whole in-process path of one source read (session, fan-out,
journal append and commit, one take and one write per target) in µs of one core, with the
sockets replaced by in-memory transports, so that what is measured is the gateway's own work
and not the kernel's loopback or the load's pacing.

A real :class:`~dcgateway.gateway.Gateway` is built on a temporary data_dir (one FIX 4.2 source,
--targets fix targets, one group copying every category), its Logons are accepted without a
signature (a stub authenticator: signatures are checked once per Logon, not per read), and the
source's reads are fed to its connection: --msgs ExecutionReports per read, --reads reads. The
journal runs in the chosen durability mode; in ``fsync`` mode a read's copies leave only after
the sync thread's fdatasync, so the figure there adds the hand-off, not the fsync (the loop
waits for it outside the timed span).

``--pace-us N`` sleeps N µs (the whole process, not the loop) after each read, as a gateway at a
moderate rate idles between reads: the figure then includes coming back to cold caches, which
the tight loop hides (at 2,000 msgs/s a read in the running gateway costs about twice the tight
loop's figure; a 500 µs pace shows most of that without sockets or another process).

Per read also its p50, p99 and p99.9 (µs) and how many reads took over 1 ms: with --pace-us,
the tail of the gateway's own work at a moderate rate, apart from the machine's wake-ups.

Prints one JSON line:
  {"bench": "tick", "durability": "os", "targets": 4, "msgs_per_read": 2, "reads": 20000,
   "us_per_read": X, "us_per_msg": Y, "cpu_us_per_read": Z, "read_p50_us": A,
   "read_p99_us": B, "read_p999_us": C, "reads_over_1ms": D, "copies": N}

  .venv/bin/python benchmarks/tick.py [--durability os|fsync] [--targets 4] [--msgs 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dcgateway.config import load_config  # noqa: E402
from dcgateway.fix import codec  # noqa: E402
from dcgateway.fix.session_types import AuthDecision  # noqa: E402
from dcgateway.fix.timefmt import utc_timestamp  # noqa: E402
from dcgateway.gateway import Gateway  # noqa: E402
from dcgateway.net.connection import FixConnection  # noqa: E402
from dcgateway.routing import CATEGORIES  # noqa: E402

CONFIG = """\
gateway:
  comp_id: GW
  listen: {{host: 127.0.0.1, port: 0}}
  metrics: {{host: 127.0.0.1, port: 0}}
  data_dir: data
  market_close: {{time: "16:00", tz: America/Chicago}}
  week_start: {{day: sunday, time: "16:00", tz: America/Chicago}}
  journal_durability: {durability}
entities:
  - {{name: BENCH, administrators: [{{name: bench, email: bench@localhost}}]}}
groups_file: groups.yaml
sessions:
  - {{comp_id: SRC1, role: source, entity: BENCH, profile: fix, begin_string: FIX.4.2}}
{targets}"""

GROUPS = """\
groups:
  - entity: BENCH
    name: fanout
    front_end: fix
    filters: {{categories: [{categories}]}}
    sources: [SRC1]
    targets: [{targets}]
"""


class AcceptAll:
    """Logons accepted without a signature (checked once per Logon, not per read)."""

    def __call__(self, logon: codec.RawMessage, now: float) -> AuthDecision:
        return AuthDecision(True)

    def is_locked(self, session: str) -> bool:
        return False


class Transport:
    """Just enough of an asyncio transport: counts what is written."""

    def __init__(self) -> None:
        self.written = 0
        self.writes = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.written += len(data)
        self.writes += 1

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def logon(sender: str, now: float) -> bytes:
    return codec.encode_fields("FIX.4.2", "A", [(49, sender), (56, "GW"), (34, 1),
                                                (52, utc_timestamp(now))],
                               [(98, 0), (108, 30)])


def report(seq: int, now: float) -> bytes:
    st = utc_timestamp(now)
    return codec.encode_fields("FIX.4.2", "8", [(49, "SRC1"), (56, "GW"), (34, seq),
                                                (50, "TRADER1"), (52, st)],
                               [(37, "ORD123456"), (11, f"CL{seq:010d}"), (17, f"EX{seq:012d}"),
                                (20, 0), (150, "1"), (39, "1"), (1, "ACCT01"), (55, "ESZ6"),
                                (207, "XCME"), (54, 1), (38, 100), (44, "4512.25"), (32, 10),
                                (31, "4512.25"), (151, 90), (14, 10), (6, "4512.25"), (60, st)])


async def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    targets = [f"CLR{i}" for i in range(1, args.targets + 1)]
    (folder / "groups.yaml").write_text(GROUPS.format(categories=", ".join(CATEGORIES),
                                                      targets=", ".join(targets)))
    (folder / "gateway.yaml").write_text(CONFIG.format(durability=args.durability, targets="".join(
        f"  - {{comp_id: {t}, role: target, entity: BENCH, profile: fix, "
        f"begin_string: FIX.4.2}}\n" for t in targets)))
    gw = Gateway(load_config(folder / "gateway.yaml"),
                 authenticator=AcceptAll())  # type: ignore[arg-type]
    await gw.start()
    assert gw.committer is not None
    committer = asyncio.create_task(gw.committer.run())
    # In fsync mode a target's copies wait until its session file (the outbound seq's floor) is
    # on disk too: the gateway's background sync of the session files runs as in `serve`.
    session_sync = asyncio.create_task(gw.session_sync.run())
    conns: dict[str, tuple[FixConnection, Transport]] = {}
    now = time.time()
    for comp in [*targets, "SRC1"]:
        conn = FixConnection(gw.acceptor, time.time, 1 << 16)
        tr = Transport()
        conn.connection_made(tr)                    # type: ignore[arg-type]
        conn.data_received(logon(comp, now))
        conns[comp] = (conn, tr)
    await asyncio.sleep(0.1)
    src = conns["SRC1"][0]
    seq = 2
    chunks = []
    for _ in range(args.reads):
        chunks.append(b"".join(report(seq + i, now) for i in range(args.msgs)))
        seq += args.msgs
    busy = 0.0
    durations: list[float] = []
    pace = args.pace_us / 1e6
    prof = None
    if args.profile:
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    cpu0 = time.process_time()
    for i, chunk in enumerate(chunks if not args.dry else ()):
        t0 = time.perf_counter()
        src.data_received(chunk)
        took = time.perf_counter() - t0
        busy += took
        durations.append(took)
        if pace:
            time.sleep(pace)                        # idle, as between reads at a moderate rate
        if i % 64 == 63 or args.durability == "fsync":
            await asyncio.sleep(0)                  # let the loop run its callbacks
    await gw.committer.flush(timeout=30)
    await asyncio.sleep(0.05)
    cpu = time.process_time() - cpu0
    if prof is not None:
        import pstats
        prof.disable()
        pstats.Stats(prof, stream=sys.stderr).sort_stats(args.profile).print_stats(40)
    copies = sum(gw.outboxes[t].copies_written for t in targets)
    for task in (committer, session_sync):
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
    for conn, _ in conns.values():
        conn.close("benchmark over", abort=True)
    if gw._http is not None:
        gw._http.close()
    gw.close()
    return {"bench": "tick", "durability": args.durability, "targets": args.targets,
            "msgs_per_read": args.msgs, "reads": args.reads, "pace_us": args.pace_us,
            "us_per_read": round(busy / args.reads * 1e6, 2) if not args.dry else None,
            "us_per_msg": round(busy / args.reads / args.msgs * 1e6, 2),
            "cpu_us_per_read": round(cpu / args.reads * 1e6, 2),
            **read_percentiles(durations),
            "copies": copies, "python": sys.version.split()[0]}


def read_percentiles(durations: list[float]) -> dict[str, float | int | None]:
    """p50/p99/p99.9 of one read's time in µs, and the reads over 1 ms: the tail the gateway's
    own work makes, without the sockets, the load or the other process's wake-ups."""
    s = sorted(durations)

    def pick(q: float) -> float | None:
        return round(s[min(len(s) - 1, int(len(s) * q))] * 1e6, 1) if s else None
    return {"read_p50_us": pick(0.5), "read_p99_us": pick(0.99), "read_p999_us": pick(0.999),
            "reads_over_1ms": sum(1 for d in s if d > 1e-3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--durability", choices=("os", "fsync"), default="os")
    ap.add_argument("--targets", type=int, default=4)
    ap.add_argument("--msgs", type=int, default=2, help="ExecutionReports per source read")
    ap.add_argument("--reads", type=int, default=20_000)
    ap.add_argument("--pace-us", type=float, default=0.0,
                    help="sleep this many µs after each read (cold caches, as at a moderate "
                         "rate); 0: the tight loop")
    ap.add_argument("--dry", action="store_true",
                    help="build everything but feed no read: run under valgrind --tool=callgrind "
                         "with and without it, the difference over --reads is the instructions "
                         "per read, a figure a busy machine does not move")
    ap.add_argument("--profile", default="", metavar="SORT",
                    help="cProfile the timed reads, top 40 by SORT (tottime, cumulative) "
                         "on stderr (the times then include the profiler's cost)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dcgw-tick-") as d:
        import os
        os.chdir(d)
        result = uvloop.run(run(args, Path(d)))
    print(json.dumps(result))
    want = 0 if args.dry else args.reads * args.msgs * args.targets
    if result["copies"] != want:                  # a figure of rejected reads means nothing
        print(f"tick: {result['copies']} copies written, expected {want}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
