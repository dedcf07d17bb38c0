"""``dcgateway replay``: what a target was sent, read from the journal (safe while the gateway
runs: it takes no lock)."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from typing import Any

from ..errors import UsageError
from ..journal.replay import last_seq, read_sent
from .common import Output, add_command, load, node_view, require_admin


def _cmd_replay(args: argparse.Namespace, out: Output) -> int:
    config = load(args, groups=False)
    sdef = config.session(args.target)
    if sdef is None or sdef.role != "target":
        raise UsageError(f"{args.target!r} is not a target session in {config.path}")
    require_admin(config, args.actor, sdef.entity)
    if args.from_seq < 1 or (args.to_seq is not None and args.to_seq < args.from_seq):
        raise UsageError("expected 1 <= --from-seq <= --to-seq")
    view, _, node = node_view(config, args.node)
    jdir = view.gateway.data_dir / "journal"
    to_seq = args.to_seq if args.to_seq is not None else last_seq(jdir, args.target)
    rows = []
    lines = []
    for e in read_sent(jdir, args.target, args.from_seq, to_seq):
        when = datetime.fromtimestamp(e.received, timezone.utc).isoformat(timespec="microseconds")
        text = e.raw.decode("latin-1").replace("\x01", "|")
        rows.append({"target_seq": e.target_seq, "received": when, "source": e.source,
                     "source_seq": e.source_seq, "message": text})
        lines.append(f"{e.target_seq}\t{when}\t{e.source}:{e.source_seq}\t{text}")
    where = f" of node {node}" if node is not None else ""
    doc: dict[str, Any] = {"target": args.target, "copies": rows}
    if node is not None:
        doc["node"] = node
    out.result(doc, "\n".join(lines) if lines else f"nothing in the journal{where} for "
                                                     f"{args.target} in {args.from_seq}..{to_seq}")
    return 0


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(subparsers, common, "replay", _cmd_replay,
                    "print what a target was sent (its sequence number, when, source, the "
                    "original message), from the journal")
    p.add_argument("--target", required=True, metavar="COMP_ID")
    p.add_argument("--from-seq", type=int, required=True, metavar="N")
    p.add_argument("--to-seq", type=int, metavar="M")
    p.add_argument("--node", metavar="ID",
                   help="in a cluster: this node's copy of the journal (default: the serving "
                        "node's, rebuilt from the cluster's stream when it took over)")
