"""``dcgateway sessions list | unlock``: what the running gateway reports of its sessions
(connected, sequence numbers, port closures), and lifting a port closure."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import UsageError
from ..state import open_state, session_rows
from .common import (
    Output,
    acting_for,
    add_command,
    format_table,
    load,
    node_view,
    require_admin,
)


def _cmd_sessions_list(args: argparse.Namespace, out: Output) -> int:
    config = load(args, groups=False)
    mine = acting_for(config, args.actor)
    view, status, node = node_view(config, args.node)
    rows = [r for r in session_rows(view, open_state(config).closures, status)
            if mine is None or r["entity"] in mine]
    for r in rows:
        r["locked"] = r["port_closed"]
    table = [("COMP_ID", "ROLE", "ENTITY", "CONNECTED", "NEXT_IN", "NEXT_OUT", "LOCKED")]
    table += [(r["comp_id"], r["role"], r["entity"], "yes" if r["connected"] else "no",
               str(r["next_in"]), str(r["next_out"]), "LOCKED" if r["locked"] else "-")
              for r in rows]
    text = format_table(table)
    if node is not None and status:
        text += f"\n(node {node} serves them)"
    elif node is not None and args.node is not None:
        text += (f"\n(node {node} does not serve them now: CONNECTED is unknown, sequences "
                 f"are as it last stored them)")
    elif node is not None:
        text += (f"\n(no node of the cluster serves them: CONNECTED is unknown, sequences are "
                 f"as node {node} last stored them)")
    elif not status:
        text += "\n(gateway not running: CONNECTED is unknown, sequences are as last stored)"
    doc: dict[str, Any] = {"gateway_running": bool(status), "sessions": rows}
    if node is not None:
        doc["node"] = node
    out.result(doc, text)
    return 0


def _cmd_sessions_unlock(args: argparse.Namespace, out: Output) -> int:
    config = load(args, groups=False)
    sdef = config.session(args.comp_id)
    if sdef is None:
        raise UsageError(f"no session {args.comp_id!r} in {config.path}; see `dcgateway sessions list`")
    require_admin(config, args.actor, sdef.entity)
    state = open_state(config)
    was = state.closures.unlock(args.comp_id)
    state.audit.record("sessions", "unlock", who=args.actor or "unknown", entity=sdef.entity,
                       comp_id=args.comp_id, was_locked=was)
    out.result({"comp_id": args.comp_id, "was_locked": was},
               f"{args.comp_id}: port closure lifted" if was else f"{args.comp_id} was not locked")
    return 0


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    sessions = subparsers.add_parser("sessions", parents=[common], help="sessions and port closures")
    sub = sessions.add_subparsers(dest="sessions_command", metavar="ACTION", required=True)
    p = add_command(sub, common, "list", _cmd_sessions_list,
                    "sessions, role, connected, sequence numbers, locked")
    p.add_argument("--node", metavar="ID",
                   help="in a cluster: this node's view (default: the serving node's)")
    p = add_command(sub, common, "unlock", _cmd_sessions_unlock, "lift a port closure")
    p.add_argument("comp_id", metavar="COMP_ID")


