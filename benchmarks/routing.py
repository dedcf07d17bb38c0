"""Routing + copy-building benchmark: per source message, the routing-table lookup with field
filters, one CopySource (body slice and sum, once), and one copy per matching target.

Prints one JSON line:
  {"bench": "routing", "us_route_build_1_target": X, "us_route_build_4_targets": Y, ...}
Times are µs per source message (not per copy), median of --rounds rounds. The 4-target case
mixes two ilink2 targets (RTRF envelope, built once) and two fix targets (header rewrite).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from dcgateway.config import Filters, GroupDef, IncludeExclude, SessionDef
from dcgateway.fix import codec
from dcgateway.fix.dropcopy import CopySource, build_copy
from dcgateway.routing import RoutingTable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import codec as codec_bench  # noqa: E402  (benchmarks/codec.py)

NOW = b"20261124-20:10:11.500"


def execution_report(seq: int) -> codec.RawMessage:
    """The codec benchmark's 257-byte ExecutionReport, decoded (the same bytes in both)."""
    (m,) = codec.Decoder().feed(codec_bench.execution_report(seq))
    return m


def table(n_targets: int) -> RoutingTable:
    profiles = ["fix", "ilink2", "fix", "ilink2"][:n_targets]
    sessions = {"ABC123N": SessionDef("ABC123N", "source", "TRADECO", "ilink2", "FIX.4.2", "ABC")}
    groups = []
    for i, profile in enumerate(profiles):
        name = f"T{i}"
        begin = "FIX.4.2" if profile == "ilink2" else "FIX.4.4"
        sessions[name] = SessionDef(name, "target", "CLEARCO", profile, begin, name)
        filters = Filters(frozenset({"execution"}),
                          account=IncludeExclude(frozenset({"ACCT01", "ACCT02"})),
                          symbol=IncludeExclude(None, frozenset({"GEZ6"})))
        groups.append(GroupDef("CLEARCO", f"g{i}", profile, filters, ("ABC123N",), (name,)))
    return RoutingTable.build(groups, sessions)


def run(t: RoutingTable, msgs: list[codec.RawMessage], n_targets: int) -> float:
    begin = {"fix": b"FIX.4.4", "ilink2": b"FIX.4.2"}
    comp = {f"T{i}": f"T{i}".encode() for i in range(4)}
    seq = 0
    t0 = time.perf_counter()
    for m in msgs:
        routes = t.route("ABC123N", m)
        src = CopySource(m)
        seq += 1
        for r in routes:
            build_copy(src, r.front_end, begin[r.front_end], b"DCGW", comp[r.target], seq, NOW)
    dt = time.perf_counter() - t0
    assert len(t.route("ABC123N", msgs[0])) == n_targets
    return dt / len(msgs) * 1e6


def route_only(t: RoutingTable, msgs: list[codec.RawMessage]) -> float:
    t0 = time.perf_counter()
    for m in msgs:
        t.route("ABC123N", m)
    return (time.perf_counter() - t0) / len(msgs) * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    out: dict[str, object] = {"bench": "routing"}
    for n in (1, 4):
        t = table(n)
        # fresh messages per round: RawMessage caches its plain-body check
        rounds = [run(t, [execution_report(i) for i in range(args.messages)], n)
                  for _ in range(args.rounds)]
        suffix = f"{n}_target{'s' if n > 1 else ''}"
        out[f"us_route_build_{suffix}"] = round(statistics.median(rounds), 3)
        routes = [route_only(t, [execution_report(i) for i in range(args.messages)])
                  for _ in range(args.rounds)]
        out[f"us_route_only_{suffix}"] = round(statistics.median(routes), 3)
    out.update({"message_bytes": len(execution_report(1).raw), "rounds": args.rounds,
                "python": sys.version.split()[0]})
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
