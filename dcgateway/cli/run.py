"""``dcgateway run``, ``check-config`` and ``demo``: the gateway in the foreground, the
configuration checked, the demo with its simulators."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from ..errors import UsageError
from .common import Output, add_command, load


def _cmd_check_config(args: argparse.Namespace, out: Output) -> int:
    config = load(args, serving=True)
    n, m = len(config.sessions), len(config.groups)
    out.result({"ok": True, "sessions": n, "groups": m}, f"ok: {n} sessions, {m} groups")
    return 0


def _cmd_run(args: argparse.Namespace, out: Output) -> int:
    config = load(args, serving=True)
    logging.basicConfig(level=getattr(logging, args.log_level),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.node is not None or config.cluster is not None:     # one node of a cluster
        if args.node is None and config.cluster is not None:
            raise UsageError(f"{config.path} has a cluster: section; run each node with "
                             "--node NODE_ID (one of "
                             + ", ".join(n.node_id for n in config.cluster.nodes) + ")")
        from ..cluster.node import run_node
        from ..cluster.nodeconfig import for_node
        return run_node(for_node(config, args.node))
    from ..gateway import run  # here, not at the top: `dcgateway --help` stays light
    return run(config)


def register_check_config(subparsers: Any, common: argparse.ArgumentParser) -> None:
    add_command(subparsers, common, "check-config", _cmd_check_config,
                "validate gateway.yaml and the groups file; print every error with its path")


def register_run(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = add_command(subparsers, common, "run", _cmd_run,
                         "run the gateway in the foreground (SIGTERM/SIGINT: graceful stop; "
                         "SIGHUP: reload groups)")
    parser.add_argument("--log-level", default="INFO",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    parser.add_argument("--node", metavar="NODE_ID",
                        help="run as this node of the cluster: section (its listen and "
                             "metrics addresses, its files under data_dir/NODE_ID)")


def _cmd_demo(args: argparse.Namespace, out: Output) -> int:
    if args.cluster:
        from ..cluster.demo import cluster_demo
        return cluster_demo(load(args, serving=True), rate=200.0 if args.rate is None else args.rate,
                            duration=args.duration, kill_after=args.kill_after)
    from ..demo import demo
    return demo(load(args, serving=True), rate=500.0 if args.rate is None else args.rate,
                duration=args.duration)


def _positive(text: str) -> float:
    """An argparse type: a number above 0 (a rate, a duration), else a usage error (exit 2)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
    return value


def register_demo(subparsers: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(subparsers, common, "demo", _cmd_demo,
                    "the gateway with the demo config plus the simulators, live totals; Ctrl-C stops")
    p.add_argument("--rate", type=_positive, default=None,
                   help="messages per second per source simulator (default 500; 200 with --cluster)")
    p.add_argument("--duration", type=_positive, metavar="SECONDS",
                   help="stop by itself after this long (default: until Ctrl-C)")
    p.add_argument("--cluster", action="store_true",
                   help="three local NATS servers, two gateway nodes and the simulators; the "
                        "serving node is killed and the sessions move (needs nats-server)")
    p.add_argument("--kill-after", type=_positive, default=10.0, metavar="SECONDS",
                   help="with --cluster: when the serving node is killed (default 10)")


