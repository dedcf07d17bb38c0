"""``dcgateway portal`` and ``dcgateway users invite|list|unlock|reset`` (the operator's side
of the self-service portal, run on the gateway host).

``users invite`` prints a one-time enrolment link (and e-mails it to the user when
``gateway.smtp`` is set); the link's token is never logged or audited, only that an invitation
was made. ``users reset`` revokes password, second factor and every web session of the user.
With ``--as NAME`` an administrator acts only on the users of the entities they administer (and
sees only those in ``users list``); an operator acts on anyone.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

from ..config import GatewayConfig
from ..errors import UsageError
from .common import Output, add_command, format_table, load

log = logging.getLogger("dcgateway.portal")


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _accounts(config: GatewayConfig) -> tuple[Any, Any]:
    from ..portal.accounts import Accounts
    from ..state import open_state
    state = open_state(config)
    assert state.users is not None
    return Accounts(config, state.users), state


def _audit(state: Any, accounts: Any, action: str, name: str, actor: str | None,
           **fields: Any) -> None:
    import getpass
    try:
        os_user: str | None = getpass.getuser()
    except (OSError, KeyError):
        os_user = None
    person = accounts.people[name]
    for entity in person.entities if person.role != "operator" else (None,):
        state.audit.record("portal", action, who=actor or os_user, entity=entity, user=name,
                           os_user=os_user, **fields)


def _limited_to(accounts: Any, actor: str | None) -> Any | None:
    """The administrator whose ``--as`` limits a users command (CLI.md: refused for entities
    NAME does not administer), or None when nothing is limited: no ``--as`` (whoever has the
    files acts as the exchange) or an operator (acts for every entity). A name that is neither
    an administrator nor an operator is refused."""
    from ..portal.accounts import ROLE_OPERATOR
    if actor is None:
        return None
    me = accounts.people.get(actor)
    if me is None:
        raise UsageError(f"{actor} is not an administrator or operator")
    return None if me.role == ROLE_OPERATOR else me


def _may_manage(accounts: Any, actor: str | None, name: str) -> None:
    """An administrator manages only users all of whose entities they administer, and never
    an operator (:func:`_limited_to`)."""
    from ..portal.accounts import ROLE_OPERATOR
    me = _limited_to(accounts, actor)
    if me is None:
        return
    them = accounts.principal(name)
    if them.role == ROLE_OPERATOR:
        raise UsageError(f"{actor} may not manage {name}: an exchange operator")
    outside = [e for e in them.entities if not me.may_act_for(e)]
    if outside:
        raise UsageError(f"{actor} does not administer {', '.join(outside)}")


def _visible(accounts: Any, actor: str | None, rows: list[dict[str, Any]]
             ) -> list[dict[str, Any]]:
    """``users list``: an administrator sees the users of the entities they administer, no
    operator (:func:`_limited_to`)."""
    from ..portal.accounts import ROLE_OPERATOR
    me = _limited_to(accounts, actor)
    if me is None:
        return rows
    return [r for r in rows if r["role"] != ROLE_OPERATOR
            and any(me.may_act_for(e) for e in r["entities"])]


def _cmd_portal(args: argparse.Namespace, out: Output) -> int:
    import uvloop

    from ..portal.server import serve_forever
    config = load(args, serving=True)
    logging.basicConfig(level=getattr(logging, args.log_level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import asyncio
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve_forever(config))


def _mail_invite(config: GatewayConfig, email: str, name: str, url: str,
                 expires: str) -> bool | None:
    """E-mail the link when ``gateway.smtp`` is set; None when it is not, False on failure."""
    smtp = config.gateway.smtp
    if smtp is None:
        return None
    import smtplib

    from ..notify import SmtpMailer
    body = (f"Dear {name},\n\nYou are invited to the dcgateway drop copy portal. Open this "
            f"link to choose your password and register your authenticator app:\n\n    {url}\n\n"
            f"The link works once and expires on {expires}. If you did not expect it, tell "
            "your exchange operator.\n")
    try:
        SmtpMailer(smtp.host, smtp.port, smtp.sender).send(
            email, "[dcgateway] your portal enrolment link", body)
        return True
    except (OSError, smtplib.SMTPException) as exc:
        print(f"warning: could not e-mail the link to {email}: {type(exc).__name__}",
              file=sys.stderr)
        return False


def _cmd_invite(args: argparse.Namespace, out: Output) -> int:
    from ..portal.accounts import enrol_url
    config = load(args, groups=False)
    if config.portal is None:
        raise UsageError(f"{config.path} has no portal: section; expected portal: "
                         "{listen: {host, port}, public_url: URL}")
    accounts, state = _accounts(config)
    person = accounts.principal(args.name)
    _may_manage(accounts, args.actor, args.name)
    if args.valid_hours <= 0 or args.valid_hours > 24 * 14:
        raise UsageError("--valid-hours: expected 1 to 336")
    token, expires = accounts.invite(args.name, time.time(), args.valid_hours * 3600.0)
    url, when = enrol_url(config.portal.public_url, token), _iso(expires)
    assert when is not None
    emailed = _mail_invite(config, person.email, person.name, url, when)
    _audit(state, accounts, "invite", args.name, args.actor, emailed=emailed)
    text = f"enrolment link for {args.name} (works once, expires {when}):\n{url}"
    if emailed:
        text += f"\n(also e-mailed to {person.email})"
    out.result({"user": args.name, "enrol_url": url, "expires": when, "emailed": emailed},
               text)
    return 0


def _cmd_list(args: argparse.Namespace, out: Output) -> int:
    config = load(args, groups=False)
    accounts, _ = _accounts(config)
    rows = _visible(accounts, args.actor, accounts.rows(time.time()))
    for r in rows:
        r["last_login"] = _iso(r["last_login"])
    table = [("USER", "ROLE", "ENTITIES", "ENROLLED", "LOCKED", "LAST_LOGIN")]
    table += [(r["user"], r["role"], ",".join(r["entities"]),
               "yes" if r["enrolled"] else ("invited" if r["invited"] else "no"),
               "LOCKED" if r["locked"] else "-", r["last_login"] or "-") for r in rows]
    out.result({"users": rows}, format_table(table) if rows else "no users configured")
    return 0


def _cmd_unlock(args: argparse.Namespace, out: Output) -> int:
    config = load(args, groups=False)
    accounts, state = _accounts(config)
    _may_manage(accounts, args.actor, args.name)
    was = accounts.unlock(args.name)
    _audit(state, accounts, "unlock", args.name, args.actor, was_locked=was)
    out.result({"user": args.name, "was_locked": was},
               f"{args.name}: login lockout lifted" if was else f"{args.name} was not locked")
    return 0


def _cmd_reset(args: argparse.Namespace, out: Output) -> int:
    config = load(args, groups=False)
    accounts, state = _accounts(config)
    _may_manage(accounts, args.actor, args.name)
    accounts.reset(args.name)
    _audit(state, accounts, "reset", args.name, args.actor)
    out.result({"user": args.name, "reset": True},
               f"{args.name}: password, second factor and sessions revoked; "
               f"`dcgateway users invite {args.name}` for a new enrolment link")
    return 0


def register_portal(subparsers: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(subparsers, common, "portal", _cmd_portal,
                    "serve the self-service portal and its JSON API in the foreground")
    p.add_argument("--log-level", default="INFO",
                   choices=("DEBUG", "INFO", "WARNING", "ERROR"))


def register_users(subparsers: Any, common: argparse.ArgumentParser) -> None:
    users = subparsers.add_parser("users", parents=[common],
                                  help="portal users: invitations, lockouts, resets")
    sub = users.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    p = add_command(sub, common, "invite", _cmd_invite,
                    "a one-time enrolment link for an administrator or operator")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--valid-hours", type=float, default=72.0,
                   help="how long the link works (default 72)")
    add_command(sub, common, "list", _cmd_list,
                "users, role, entities, enrolled, locked, last login (never a secret)")
    p = add_command(sub, common, "unlock", _cmd_unlock, "lift a login lockout")
    p.add_argument("name", metavar="NAME")
    p = add_command(sub, common, "reset", _cmd_reset,
                    "revoke password, second factor and sessions (a new invite is needed)")
    p.add_argument("name", metavar="NAME")
