"""``dcgateway keys create | list | download | delete``: the venue's key-pair lifecycle (the
rules are in ``auth.lifecycle``); every command is one call on the state store's key manager,
audited with the ``--as`` name. A key created or deleted here takes effect at the gateway's next
Logon, without a restart."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..config import GatewayConfig
from ..errors import UsageError
from ..state import entity_of_session_id, open_state
from .common import Output, acting_for, add_command, format_table, load, require_admin


def _manager(config: GatewayConfig) -> Any:
    return open_state(config).keys


def _entity_of_scope(config: GatewayConfig, session_id: str) -> str | None:
    return entity_of_session_id(config, session_id)


def _visible(config: GatewayConfig, mine: list[str], session_id: str) -> bool:
    """Whether the entities ``mine`` include the one of Session ID ``session_id`` (True when
    no configured session uses that key scope)."""
    name = _entity_of_scope(config, session_id)
    return name is None or name in mine


def _check_actor(config: GatewayConfig, actor: str | None, session_id: str) -> str:
    entity = _entity_of_scope(config, session_id)
    if entity is not None:
        require_admin(config, actor, entity)
    return actor or "unknown"


def _cmd_create(args: argparse.Namespace, out: Output) -> int:
    config = load(args, groups=False)
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
    config = load(args, groups=False)
    km = _manager(config)
    mine = acting_for(config, args.actor)
    infos = km.list(args.session_id)
    known = getattr(km, "session_ids", None)     # the state store's key manager's
    if args.session_id and not infos and known is not None and args.session_id not in known:
        # (keys of a Session ID no longer configured are still listed, and can be deleted);
        # with --as, only the Session IDs of NAME's entities are named
        shown = sorted(s for s in known if mine is None or _visible(config, mine, s))
        raise UsageError(f"Session ID {args.session_id!r} is not configured (configured: "
                         f"{', '.join(shown) or 'none'})")
    if mine is not None:
        infos = [i for i in infos if _visible(config, mine, i.session_id)]
    rows = [("SESSION_ID", "ACCESS_KEY_ID", "CREATED", "EXPIRES", "STATUS")]
    for i in infos:
        j = i.to_json()
        rows.append((j["session_id"], j["access_key_id"], j["created"], j["expires"], j["status"]))
    text = format_table(rows) if infos else "no key pairs"
    out.result({"keys": [i.to_json() for i in infos]}, text)
    return 0


def _cmd_download(args: argparse.Namespace, out: Output) -> int:
    config = load(args, groups=False)
    km = _manager(config)
    info = km.get(args.access_key_id)
    who = _check_actor(config, args.actor, info.session_id)
    if args.out is not None:
        _check_out(Path(args.out))
    text = km.download(args.access_key_id, who=who, out=args.out)
    if args.out is not None:
        out.result({"ok": True, "file": str(args.out)}, f"wrote {args.out} (mode 0600)")
    elif args.json:
        out.result({"csv": text}, text)
    else:
        print(text, end="")
    return 0


def _check_out(out: Path) -> None:
    """``--out FILE``: a regular file, new or replaced, in a folder that exists. A secret is
    not written to a place made up on the way, nor over a folder, nor in place of a device, a
    pipe, a socket or a symbolic link (the file is written beside and renamed over the path,
    which would replace such a thing rather than write to it: ``--out /dev/null`` run as root
    would have left the secret in a plain file where /dev/null was)."""
    if out.is_symlink():
        raise UsageError(f"--out {out}: is a symbolic link; give the path of the key file itself")
    if out.is_dir():
        raise UsageError(f"--out {out}: is a folder; expected the path of the key file to write")
    if out.exists() and not out.is_file():
        raise UsageError(f"--out {out}: is not a regular file (a device, pipe or socket); "
                         "expected the path of the key file to write")
    parent = out.parent
    if not parent.is_dir():
        raise UsageError(f"--out {out}: the folder {parent} does not exist")


def _cmd_delete(args: argparse.Namespace, out: Output) -> int:
    config = load(args, groups=False)
    km = _manager(config)
    info = km.get(args.access_key_id)
    who = _check_actor(config, args.actor, info.session_id)
    info = km.delete(args.access_key_id, who=who)
    out.result(info.to_json(), f"deleted {args.access_key_id} (Session ID {info.session_id}); "
                               "Logons signed with it are refused from now on")
    return 0


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
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


