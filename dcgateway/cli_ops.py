"""``dcgateway keys ...``, ``dcgateway sessions ...`` and ``dcgateway replay`` (operator contract: CLI.md).

Keys follow the venue's lifecycle (ILINK.md "Key pairs"; the rules are in ``auth.lifecycle``):
every command is one call on :class:`~dcgateway.auth.KeyManager`, audited with the ``--as`` name.
A key created or deleted here takes effect at the gateway's next Logon, without a restart (the
authenticator re-reads the store when the file changes).

``sessions list`` reads what the gateway leaves on disk (sequence numbers from the session
stores, read without writing; port closures; ``status.json`` for who is connected, trusted only
while the pid in it is alive); ``sessions unlock`` lifts a port closure.
"""

from __future__ import annotations

import argparse
from typing import Any

from .cli import Output, add_command, format_table, load, require_admin
from .config import GatewayConfig
from .errors import UsageError


def _manager(config: GatewayConfig) -> Any:
    from .state import open_state
    return open_state(config).keys


def _entity_of_scope(config: GatewayConfig, session_id: str) -> str | None:
    return next((s.entity for s in config.sessions if s.key_scope == session_id), None)


def _check_actor(config: GatewayConfig, actor: str | None, session_id: str) -> str:
    entity = _entity_of_scope(config, session_id)
    if entity is not None:
        require_admin(config, actor, entity)
    return actor or "unknown"


def _cmd_create(args: argparse.Namespace, out: Output) -> int:
    config = load(args)
    who = _check_actor(config, args.actor, args.session_id)
    km = _manager(config)
    km.store.ensure_master_key()              # first key ever: create the master key (0600)
    rec = km.create(args.session_id, delete=args.delete, who=who)
    data = rec.to_json()
    out.result(data, "\n".join([
        f"session id:    {data['session_id']}",
        f"access key id: {data['access_key_id']}",
        f"secret key:    {data['secret_key']}",
        f"created:       {data['created']}",
        f"expires:       {data['expires']}",
        "Keep the secret key safe: give it only to the session's administrators "
        "(it can be downloaded again with `dcgateway keys download`)."]))
    return 0


def _cmd_list(args: argparse.Namespace, out: Output) -> int:
    config = load(args)
    km = _manager(config)
    infos = km.list(args.session_id)
    if args.actor is not None:
        infos = [i for i in infos if _entity_of_scope(config, i.session_id) is None or
                 config.entity(_entity_of_scope(config, i.session_id)).administers(args.actor)]
    rows = [("SESSION_ID", "ACCESS_KEY_ID", "CREATED", "EXPIRES", "STATUS")]
    for i in infos:
        j = i.to_json()
        rows.append((j["session_id"], j["access_key_id"], j["created"], j["expires"], j["status"]))
    text = format_table(rows) if infos else "no key pairs"
    out.result({"keys": [i.to_json() for i in infos]}, text)
    return 0


def _cmd_download(args: argparse.Namespace, out: Output) -> int:
    config = load(args)
    km = _manager(config)
    info = km.get(args.access_key_id)
    who = _check_actor(config, args.actor, info.session_id)
    text = km.download(args.access_key_id, who=who, out=args.out)
    if args.out is not None:
        out.result({"ok": True, "file": str(args.out)}, f"wrote {args.out} (mode 0600)")
    elif args.json:
        out.result({"csv": text}, text)
    else:
        print(text, end="")
    return 0


def _cmd_delete(args: argparse.Namespace, out: Output) -> int:
    config = load(args)
    km = _manager(config)
    info = km.get(args.access_key_id)
    who = _check_actor(config, args.actor, info.session_id)
    info = km.delete(args.access_key_id, who=who)
    out.result(info.to_json(), f"deleted {args.access_key_id} (Session ID {info.session_id}); "
                               "Logons signed with it are refused from now on")
    return 0


def register_keys(subparsers: Any, common: argparse.ArgumentParser) -> None:
    keys = subparsers.add_parser("keys", parents=[common], help="manage key pairs (secure logon)")
    sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    p = add_command(sub, common, "create", _cmd_create,
                    "issue a key pair: active at once, expires 12 months later at market close")
    p.add_argument("--session-id", required=True, metavar="SID",
                   help="Session ID the key is for (ilink2: first 3 chars of the SenderCompID)")
    p.add_argument("--delete", metavar="ACCESS_KEY_ID",
                   help="with two live pairs already: the one to delete at once")
    p = add_command(sub, common, "list", _cmd_list, "key pairs with status (never secrets)")
    p.add_argument("--session-id", metavar="SID")
    p = add_command(sub, common, "download", _cmd_download,
                    "the key file (CSV: Session ID, Access ID, Secret Key, Creation Date, "
                    "Expiration Date, Environment)")
    p.add_argument("access_key_id", metavar="ACCESS_KEY_ID")
    p.add_argument("--out", metavar="FILE", help="write the CSV there (mode 0600)")
    p = add_command(sub, common, "delete", _cmd_delete, "delete a key pair at once")
    p.add_argument("access_key_id", metavar="ACCESS_KEY_ID")


# ---------------------------------------------------------------------------------------------
# sessions list / unlock
# ---------------------------------------------------------------------------------------------

def _cmd_sessions_list(args: argparse.Namespace, out: Output) -> int:
    from .state import open_state, read_status, session_rows
    config = load(args)
    status = read_status(config.gateway.data_dir)
    rows = session_rows(config, open_state(config).closures, status)
    for r in rows:
        r["locked"] = r["port_closed"]
    table = [("COMP_ID", "ROLE", "ENTITY", "CONNECTED", "NEXT_IN", "NEXT_OUT", "LOCKED")]
    table += [(r["comp_id"], r["role"], r["entity"], "yes" if r["connected"] else "no",
               str(r["next_in"]), str(r["next_out"]), "LOCKED" if r["locked"] else "-")
              for r in rows]
    text = format_table(table)
    if not status:
        text += "\n(gateway not running: CONNECTED is unknown, sequences are as last stored)"
    out.result({"gateway_running": bool(status), "sessions": rows}, text)
    return 0


def _cmd_sessions_unlock(args: argparse.Namespace, out: Output) -> int:
    from .state import open_state
    config = load(args)
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


def register_sessions(subparsers: Any, common: argparse.ArgumentParser) -> None:
    sessions = subparsers.add_parser("sessions", parents=[common], help="sessions and port closures")
    sub = sessions.add_subparsers(dest="sessions_command", metavar="ACTION", required=True)
    add_command(sub, common, "list", _cmd_sessions_list,
                "sessions, role, connected, sequence numbers, locked")
    p = add_command(sub, common, "unlock", _cmd_sessions_unlock, "lift a port closure")
    p.add_argument("comp_id", metavar="COMP_ID")


# ---------------------------------------------------------------------------------------------
# replay
# ---------------------------------------------------------------------------------------------

def _cmd_replay(args: argparse.Namespace, out: Output) -> int:
    from datetime import datetime, timezone

    from .replay import last_seq, read_sent
    config = load(args)
    sdef = config.session(args.target)
    if sdef is None or sdef.role != "target":
        raise UsageError(f"{args.target!r} is not a target session in {config.path}")
    require_admin(config, args.actor, sdef.entity)
    if args.from_seq < 1 or (args.to_seq is not None and args.to_seq < args.from_seq):
        raise UsageError("expected 1 <= --from-seq <= --to-seq")
    jdir = config.gateway.data_dir / "journal"
    to_seq = args.to_seq if args.to_seq is not None else last_seq(jdir, args.target)
    rows = []
    lines = []
    for e in read_sent(jdir, args.target, args.from_seq, to_seq):
        when = datetime.fromtimestamp(e.received, timezone.utc).isoformat(timespec="microseconds")
        text = e.raw.decode("latin-1").replace("\x01", "|")
        rows.append({"target_seq": e.target_seq, "received": when, "source": e.source,
                     "source_seq": e.source_seq, "message": text})
        lines.append(f"{e.target_seq}\t{when}\t{e.source}:{e.source_seq}\t{text}")
    out.result({"target": args.target, "copies": rows},
               "\n".join(lines) if lines else f"nothing in the journal for {args.target} "
                                               f"in {args.from_seq}..{to_seq}")
    return 0


def register_replay(subparsers: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(subparsers, common, "replay", _cmd_replay,
                    "print what a target was sent (its sequence number, when, source, the "
                    "original message), from the journal")
    p.add_argument("--target", required=True, metavar="COMP_ID")
    p.add_argument("--from-seq", type=int, required=True, metavar="N")
    p.add_argument("--to-seq", type=int, metavar="M")
