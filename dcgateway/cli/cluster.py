"""``dcgateway cluster status``: nodes (alive, address), which node serves each session, the
journal stream and its replicas."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import UsageError
from .common import Output, add_command, load


def _cmd_status(args: argparse.Namespace, out: Output) -> int:
    config = load(args)
    if config.cluster is None:
        raise UsageError(f"{config.path} has no cluster: section (one process: see "
                         "`dcgateway sessions list`)")
    from ..cluster.status import cluster_status, status_text
    doc = cluster_status(config)     # NATS failing: one `error:` line naming it, exit 1
    out.result(doc, status_text(doc))
    return 0


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    cluster = subparsers.add_parser("cluster", parents=[common], help="the cluster's state")
    sub = cluster.add_subparsers(dest="cluster_command", metavar="ACTION", required=True)
    add_command(sub, common, "status", _cmd_status,
                "nodes (alive, address), which node serves each session, stream and replicas")
