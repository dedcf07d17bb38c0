"""The ``dcgateway`` command line (operator contract: /work/shared/contract/CLI.md).

Exit codes: 0 success; 2 a usage or validation error (argparse errors, :class:`UsageError`,
:class:`ConfigError`, :class:`KeyLifecycleError`: anything whose ``exit_code`` is 2); 1 any other
failure. A :class:`DcGatewayError` or a configuration problem is printed as ``error: ...`` lines on
stderr, never as a traceback; with ``--json`` the outcome is also one JSON document on stdout
(``{"ok": false, "errors": [...]}`` on failure).

Every subcommand takes the global options ``--config PATH``, ``--json`` and ``--as NAME``, before
or after its name. Subcommands are added by *registrars* listed in :data:`COMMANDS`; a registrar
is ``register(subparsers, common)`` and calls :func:`add_command` (see ``_register_groups`` for a
command with sub-subcommands). Registrar modules should import heavy dependencies inside their
handlers, so that ``dcgateway --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import yaml

from . import __version__
from .config import (CATEGORIES, FILTER_KEYS, FRONT_ENDS, GatewayConfig, GroupDef,
                     group_to_data, load_config)
from .errors import ConfigError, DcGatewayError, UsageError
from .state import find_group, open_state

DEFAULT_CONFIG = "config/gateway.yaml"

Handler = Callable[[argparse.Namespace, "Output"], int]
Registrar = Callable[[Any, argparse.ArgumentParser], None]


# ---------------------------------------------------------------------------------------------
# Parser plumbing: argparse errors become return values, not SystemExit
# ---------------------------------------------------------------------------------------------

class _ArgumentError(Exception):
    def __init__(self, usage: str, message: str) -> None:
        super().__init__(message)
        self.usage, self.message = usage, message


class _ParserExit(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors (exit 2) and --help/--version (exit 0) return from
    :func:`main` instead of calling sys.exit, so ``main([...])`` always returns an int."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _ArgumentError(self.format_usage(), message)

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        if message:
            sys.stderr.write(message)
        raise _ParserExit(status)


def _add_global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """--config/--json/--as. On subcommands the defaults are SUPPRESS, so that an option given
    before the subcommand is not overwritten by the subcommand's default."""
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value
    parser.add_argument("--config", metavar="PATH", default=default(DEFAULT_CONFIG),
                        help=f"gateway.yaml to use (default {DEFAULT_CONFIG})")
    parser.add_argument("--json", action="store_true", default=default(False),
                        help="machine-readable output: one JSON document on stdout")
    parser.add_argument("--as", dest="actor", metavar="NAME", default=default(None),
                        help="the administrator acting (audited; must administer the entity)")


def add_command(subparsers: Any, common: argparse.ArgumentParser, name: str, handler: Handler,
                help: str) -> argparse.ArgumentParser:
    """Add one leaf subcommand that runs ``handler(args, out) -> exit code``."""
    parser = subparsers.add_parser(name, parents=[common], help=help, description=help)
    parser.set_defaults(handler=handler)
    return parser


class Output:
    """Where results and errors go: text, or one JSON document on stdout with ``--json``."""

    def __init__(self, as_json: bool) -> None:
        self.json = as_json

    def result(self, data: Any, text: str) -> None:
        if self.json:
            print(json.dumps(data, indent=2, sort_keys=False))
        elif text:
            print(text)

    def fail(self, problems: Sequence[str], code: int) -> int:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        if self.json:
            print(json.dumps({"ok": False, "errors": list(problems)}, indent=2))
        return code


# ---------------------------------------------------------------------------------------------
# Helpers for every command (other modules' registrars use these too)
# ---------------------------------------------------------------------------------------------

def format_table(rows: Sequence[Sequence[str]]) -> str:
    """Rows of text cells as left-aligned columns (the first row is the heading)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                     for row in rows)


def load(args: argparse.Namespace) -> GatewayConfig:
    """The configuration named by --config (raises ConfigError: exit 2 with every problem)."""
    return load_config(args.config)


def require_admin(config: GatewayConfig, actor: str | None, entity: str) -> None:
    """Refuse (UsageError, exit 2) when --as NAME was given and NAME does not administer
    ``entity``. Without --as nothing is checked: the operator has the files."""
    if actor is None:
        return
    ent = config.entity(entity)
    if ent is None or not ent.administers(actor):
        raise UsageError(f"{actor} does not administer {entity}")


def administered(config: GatewayConfig, actor: str) -> list[str]:
    return [e.name for e in config.entities if e.administers(actor)]


# ---------------------------------------------------------------------------------------------
# check-config, run
# ---------------------------------------------------------------------------------------------

def _cmd_check_config(args: argparse.Namespace, out: Output) -> int:
    config = load(args)
    n, m = len(config.sessions), len(config.groups)
    out.result({"ok": True, "sessions": n, "groups": m}, f"ok: {n} sessions, {m} groups")
    return 0


def _cmd_run(args: argparse.Namespace, out: Output) -> int:
    config = load(args)
    logging.basicConfig(level=getattr(logging, args.log_level),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        gateway = importlib.import_module("dcgateway.gateway")
    except ModuleNotFoundError as exc:
        if exc.name != "dcgateway.gateway":
            raise
        return out.fail(["the gateway (dcgateway.gateway) is not installed"], 1)
    return int(gateway.run(config))


def _register_check_config(subparsers: Any, common: argparse.ArgumentParser) -> None:
    add_command(subparsers, common, "check-config", _cmd_check_config,
                "validate gateway.yaml and the groups file; print every error with its path")


def _register_run(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = add_command(subparsers, common, "run", _cmd_run,
                         "run the gateway in the foreground (SIGTERM/SIGINT: graceful stop; "
                         "SIGHUP: reload groups)")
    parser.add_argument("--log-level", default="INFO",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"))


# ---------------------------------------------------------------------------------------------
# groups list / show / delete / create
# ---------------------------------------------------------------------------------------------

def _find_group(groups: Sequence[GroupDef], name: str, entity: str | None) -> GroupDef:
    try:
        return find_group(groups, name, entity)
    except UsageError as exc:
        raise UsageError(f"{exc}; see `dcgateway groups list`") from None


def _short(items: Sequence[str], limit: int = 3) -> str:
    shown = ",".join(items[:limit])
    return shown + (f" (+{len(items) - limit})" if len(items) > limit else "")


def _cmd_groups_list(args: argparse.Namespace, out: Output) -> int:
    config = load(args)
    groups = [g for g in config.groups if args.entity is None or g.entity == args.entity]
    if args.actor is not None:
        mine = administered(config, args.actor)
        if not mine:
            raise UsageError(f"{args.actor} does not administer any entity")
        groups = [g for g in groups if g.entity in mine]
    rows = [("ENTITY", "NAME", "FRONT_END", "CATEGORIES", "SOURCES", "TARGETS")]
    rows += [(g.entity, g.name, g.front_end,
              ",".join(c for c in CATEGORIES if c in g.filters.categories),
              _short(g.sources), _short(g.targets)) for g in groups]
    text = format_table(rows) if groups else "no groups"
    out.result({"groups": [group_to_data(g) for g in groups]}, text)
    return 0


def _cmd_groups_show(args: argparse.Namespace, out: Output) -> int:
    config = load(args)
    group = _find_group(config.groups, args.name, args.entity)
    require_admin(config, args.actor, group.entity)
    data = group_to_data(group)
    out.result(data, yaml.safe_dump(data, sort_keys=False, default_flow_style=None,
                                    width=100).rstrip())
    return 0


def _cmd_groups_delete(args: argparse.Namespace, out: Output) -> int:
    config = load(args)
    state = open_state(config)
    group = _find_group(state.groups.current(), args.name, args.entity)
    require_admin(config, args.actor, group.entity)
    state.groups.delete(group.entity, group.name, actor=args.actor)
    out.result({"ok": True, "deleted": group_to_data(group)},
               f"deleted group {group.entity}/{group.name} from {config.groups_file}")
    return 0


def parse_filter_flags(items: Sequence[str]) -> dict[str, Any]:
    """``--filter`` values -> groups.yaml ``filters`` data. ``KEY=V1,V2`` includes, ``KEY!=V``
    excludes; repeated keys add up. Values are validated with the whole group afterwards."""
    filters: dict[str, Any] = {}
    for item in items:
        match = re.fullmatch(r"\s*([A-Za-z_]+)\s*(!=|=)(.*)", item)
        if match is None:
            raise UsageError(f"--filter {item!r}: expected KEY=VALUE[,VALUE...] or KEY!=VALUE")
        key, op, raw = match[1], match[2], match[3]
        if key not in FILTER_KEYS:
            raise UsageError(f"--filter {item!r}: unknown filter key {key!r}; expected one of "
                             + ", ".join(FILTER_KEYS))
        values = [v.strip() for v in raw.split(",") if v.strip()]
        if not values:
            raise UsageError(f"--filter {item!r}: no value; expected {key}{op}VALUE[,VALUE...]")
        if key == "categories":
            if op == "!=":
                raise UsageError(f"--filter {item!r}: categories are listed with '=' only; "
                                 "expected categories=" + ",".join(CATEGORIES[:2]))
            target = filters.setdefault("categories", [])
        else:
            target = filters.setdefault(key, {}).setdefault(
                "exclude" if op == "!=" else "include", [])
        target.extend(v for v in values if v not in target)
    return filters


def _split(values: Sequence[str] | None) -> list[str]:
    """--source A B --source C,D -> [A, B, C, D] (order kept, duplicates kept for validation)."""
    return [v for value in values or () for v in re.split(r"[\s,]+", value) if v]


class _Prompter:
    """Asks for the missing steps of ``groups create`` on a terminal. Prompts go to stderr, so
    that stdout stays one JSON document with --json."""

    ATTEMPTS = 5

    def __init__(self, stdin: TextIO, stderr: TextIO) -> None:
        self.stdin, self.stderr = stdin, stderr

    def ask(self, prompt: str, check: Callable[[str], Any], default: str | None = None) -> Any:
        shown = f"{prompt} [{default}]: " if default else f"{prompt}: "
        for _ in range(self.ATTEMPTS):
            self.stderr.write(shown)
            self.stderr.flush()
            line = self.stdin.readline()
            if not line:
                raise UsageError(f"no answer for {prompt!r} (end of input)")
            answer = line.strip() or (default or "")
            try:
                return check(answer)
            except ValueError as exc:
                self.stderr.write(f"  {exc}\n")
        raise UsageError(f"no valid answer for {prompt!r} after {self.ATTEMPTS} tries")

    def one_of(self, prompt: str, choices: Sequence[str]) -> str:
        if not choices:
            raise UsageError(f"{prompt}: there is nothing to choose from in the configuration")
        def check(answer: str) -> str:
            if answer not in choices:
                raise ValueError(f"{answer!r} is not one of: {', '.join(choices)}")
            return answer
        default = choices[0] if len(choices) == 1 else None
        return self.ask(f"{prompt} ({', '.join(choices)})", check, default)

    def some_of(self, prompt: str, choices: Sequence[str]) -> list[str]:
        if not choices:
            raise UsageError(f"{prompt}: there is nothing to choose from in the configuration")
        def check(answer: str) -> list[str]:
            picked = _split([answer])
            wrong = [p for p in picked if p not in choices]
            if not picked or wrong:
                raise ValueError(f"expected one or more of: {', '.join(choices)}")
            return picked
        shown = ", ".join(choices) if len(choices) <= 20 else f"{len(choices)} choices"
        return self.ask(f"{prompt} ({shown}; comma-separated)", check)

    def extra_filters(self) -> list[str]:
        self.stderr.write("  more filters, one per line: KEY=V1,V2 or KEY!=V (keys: "
                          + ", ".join(FILTER_KEYS[1:]) + "); empty line to finish\n")
        def check(answer: str) -> str:
            try:
                parse_filter_flags([answer] if answer else [])
            except UsageError as exc:
                raise ValueError(str(exc)) from None
            return answer
        items: list[str] = []
        while line := self.ask("  filter", check):
            items.append(line)
        return items


def _isatty(stream: Any) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (ValueError, OSError):
        return False


def _create_data(args: argparse.Namespace, config: GatewayConfig) -> dict[str, Any]:
    """The new group as groups.yaml data, from flags and, on a terminal, from prompts."""
    filters = parse_filter_flags(args.filter or [])
    sources, targets = _split(args.source), _split(args.target)
    missing = [flag for flag, value in (
        ("--entity", args.entity), ("--name", args.name), ("--front-end", args.front_end),
        ("--filter categories=...", filters.get("categories")), ("--source", sources),
        ("--target", targets)) if not value]
    ask = _Prompter(sys.stdin, sys.stderr) if missing and _isatty(sys.stdin) else None
    if missing and ask is None:
        raise UsageError("missing " + ", ".join(missing) + " (stdin is not a terminal, so "
                         "there is nothing to prompt)")
    if args.entity is not None:
        require_admin(config, args.actor, args.entity)
    entities = (administered(config, args.actor) if args.actor is not None
                else [e.name for e in config.entities])
    if not entities:
        raise UsageError(f"{args.actor} does not administer any entity" if args.actor
                         else "no entities in the configuration")
    entity = args.entity or ask.one_of("1/6 registered entity", entities)
    require_admin(config, args.actor, entity)

    def check_name(answer: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", answer):
            raise ValueError("expected 1-64 letters, digits, '.', '_' or '-'")
        if any(g.entity == entity and g.name == answer for g in config.groups):
            raise ValueError(f"{entity} already has a group named {answer!r}")
        return answer
    name = args.name or ask.ask("2/6 group name", check_name)
    front_end = args.front_end or ask.one_of("3/6 front end system", FRONT_ENDS)
    if "categories" not in filters:
        filters = parse_filter_flags(
            ["categories=" + ",".join(ask.some_of("4/6 filters: categories", CATEGORIES))]
            + (args.filter or []) + ([] if args.filter else ask.extra_filters()))
    sources = sources or ask.some_of(
        "5/6 source sender comps", [s.comp_id for s in config.sessions if s.role == "source"])
    targets = targets or ask.some_of("6/6 target sessions", [
        s.comp_id for s in config.sessions if s.role == "target" and s.entity == entity])
    return {"entity": entity, "name": name, "front_end": front_end, "filters": filters,
            "sources": sources, "targets": targets}


def _cmd_groups_create(args: argparse.Namespace, out: Output) -> int:
    config = load(args)
    data = _create_data(args, config)
    created = open_state(config).groups.create(data, actor=args.actor)
    out.result({"ok": True, "created": group_to_data(created)},
               f"created group {created.entity}/{created.name} in {config.groups_file}")
    return 0


def _register_groups(subparsers: Any, common: argparse.ArgumentParser) -> None:
    groups = subparsers.add_parser("groups", parents=[common], help="manage drop copy groups")
    sub = groups.add_subparsers(dest="groups_command", metavar="COMMAND", required=True)
    p = add_command(sub, common, "list", _cmd_groups_list, "list drop copy groups")
    p.add_argument("--entity", help="only this entity's groups")
    for name, handler, text in (("show", _cmd_groups_show, "show one group"),
                                ("delete", _cmd_groups_delete, "delete one group")):
        p = add_command(sub, common, name, handler, text)
        p.add_argument("name", metavar="NAME")
        p.add_argument("--entity", help="the group's entity (when the name is used by several)")
    p = add_command(sub, common, "create", _cmd_groups_create,
                    "create a group: the six steps, from flags or prompts on a terminal")
    p.add_argument("--entity", help="1. registered entity")
    p.add_argument("--name", help="2. group name (unique per entity)")
    p.add_argument("--front-end", choices=FRONT_ENDS, help="3. front end system")
    p.add_argument("--filter", action="append", metavar="KEY=VALUE",
                   help="4. filter: categories=execution,order | account=A1,A2 (include) | "
                        "symbol!=GEZ6 (exclude); keys: " + ", ".join(FILTER_KEYS))
    p.add_argument("--source", action="extend", nargs="+", metavar="SID",
                   help="5. source sender comps")
    p.add_argument("--target", action="extend", nargs="+", metavar="SID",
                   help="6. target sessions (of the group's entity)")


# ---------------------------------------------------------------------------------------------
# The command table and main()
# ---------------------------------------------------------------------------------------------

#: name -> registrar(subparsers, common). To add a command, write ``register(subparsers,
#: common)`` in your module (calling :func:`add_command`; handlers get ``(args, out)`` and
#: return the exit code, use :func:`load`, :func:`require_admin`, :func:`audit`,
#: ``out.result``; raise DcGatewayError subclasses for errors) and add it here; import the module
#: inside the registrar (it imports this one). ``keys``, ``sessions`` and ``replay`` live in cli_ops.py.
def _register_keys(subparsers: Any, common: argparse.ArgumentParser) -> None:
    from .cli_ops import register_keys     # cli_ops imports this module's helpers
    register_keys(subparsers, common)


def _register_sessions(subparsers: Any, common: argparse.ArgumentParser) -> None:
    from .cli_ops import register_sessions
    register_sessions(subparsers, common)


def _register_replay(subparsers: Any, common: argparse.ArgumentParser) -> None:
    from .cli_ops import register_replay
    register_replay(subparsers, common)


def _cmd_demo(args: argparse.Namespace, out: Output) -> int:
    from .demo import demo
    return demo(load(args), rate=args.rate, duration=args.duration)


def _register_demo(subparsers: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(subparsers, common, "demo", _cmd_demo,
                    "the gateway with the demo config plus the simulators, live totals; Ctrl-C stops")
    p.add_argument("--rate", type=float, default=500.0,
                   help="messages per second per source simulator (default 500)")
    p.add_argument("--duration", type=float, metavar="SECONDS",
                   help="stop by itself after this long (default: until Ctrl-C)")


def _register_portal(subparsers: Any, common: argparse.ArgumentParser) -> None:
    from .portal.cli import register_portal
    register_portal(subparsers, common)


def _register_users(subparsers: Any, common: argparse.ArgumentParser) -> None:
    from .portal.cli import register_users
    register_users(subparsers, common)


COMMANDS: dict[str, Registrar] = {
    "run": _register_run,
    "check-config": _register_check_config,
    "groups": _register_groups,
    "keys": _register_keys,
    "sessions": _register_sessions,
    "replay": _register_replay,
    "demo": _register_demo,
    "portal": _register_portal,
    "users": _register_users,
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dcgateway", description="Real-time FIX drop copy fan-out gateway.")
    parser.add_argument("--version", action="version", version=f"dcgateway {__version__}")
    _add_global_options(parser, suppress=False)
    common = _Parser(add_help=False)
    _add_global_options(common, suppress=True)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMANDS.values():
        register(subparsers, common)
    return parser


def _os_error_text(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dcgateway`` and ``python -m dcgateway``; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _ParserExit as exc:
        return exc.status
    except _ArgumentError as exc:
        sys.stderr.write(exc.usage)
        sys.stderr.write(f"error: {exc.message}\n")
        return 2
    out = Output(args.json)
    try:
        return args.handler(args, out)
    except ConfigError as exc:
        return out.fail(exc.problems, exc.exit_code)
    except DcGatewayError as exc:
        return out.fail(str(exc).splitlines() or [type(exc).__name__], exc.exit_code)
    except OSError as exc:
        return out.fail([_os_error_text(exc)], 1)
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return out.fail(["interrupted"], 1)
