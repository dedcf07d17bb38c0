"""``dcgateway groups create | list | show | delete``: drop copy groups through the state store
(a running gateway follows the change without a restart). ``create`` takes the six steps from
flags, or prompts for the missing ones on a terminal."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO, TypeVar

import yaml

from ..config import CATEGORIES, FILTER_KEYS, FRONT_ENDS, GatewayConfig, GroupDef, group_to_data
from ..errors import UsageError
from ..routing import RoutingTable
from ..state import (
    FileGroupStore,
    GroupsOutcome,
    StateStore,
    find_group,
    groups_outcome,
    groups_reloads,
    open_state,
)
from .common import (
    Output,
    acting_for,
    add_command,
    administered,
    format_table,
    load,
    require_admin,
)

#: How long a command that changed the groups waits for the running gateway to follow them
#: (it looks at the file once a second).
CONFIRM_TIMEOUT_S = 5.0


def _find_group(groups: Sequence[GroupDef], name: str, entity: str | None) -> GroupDef:
    try:
        return find_group(groups, name, entity)
    except UsageError as exc:
        raise UsageError(f"{exc}; see `dcgateway groups list`") from None


def _current(config: GatewayConfig) -> tuple[GroupDef, ...]:
    """The groups as the state store has them (the file, or the cluster's bucket)."""
    if config.cluster is None:
        return config.groups
    state = open_state(config)
    try:
        return state.groups.current()
    finally:
        state.close()


def _short(items: Sequence[str], limit: int = 3) -> str:
    shown = ",".join(items[:limit])
    return shown + (f" (+{len(items) - limit})" if len(items) > limit else "")


def _cmd_groups_list(args: argparse.Namespace, out: Output) -> int:
    config = load(args)
    groups = [g for g in _current(config) if args.entity is None or g.entity == args.entity]
    mine = acting_for(config, args.actor)
    if mine is not None:
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
    group = _find_group(_current(config), args.name, args.entity)
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
    followed = _follow_running_gateway(config, state)
    state.groups.delete(group.entity, group.name, actor=args.actor)
    _report(out, followed, {"ok": True, "deleted": group_to_data(group)},
            f"deleted group {group.entity}/{group.name} from {_where(config)}")
    return 0


def _where(config: GatewayConfig) -> str:
    """Where a change of the groups goes: the groups file, or in a cluster its store, which
    every node follows by itself within a second (the file only seeds an empty cluster)."""
    if config.cluster is not None:
        return (f"the cluster {config.cluster.name}'s groups (every node follows them; "
                f"{config.groups_file} is not changed)")
    return str(config.groups_file)


def _follow_running_gateway(config: GatewayConfig, state: StateStore) -> list[GroupsOutcome]:
    """When a gateway runs on these files: make the change wait, under the groups file's lock,
    until the gateway follows it (or has refused it: the file is then put back and the command
    fails, exit 1, with the gateway's reason). Returns where the outcome will be (empty when no
    gateway runs, or in cluster mode, where every node follows the cluster's store itself)."""
    found: list[GroupsOutcome] = []
    store = state.groups
    if config.cluster is not None or not isinstance(store, FileGroupStore):
        return found
    reloads = groups_reloads(config.gateway.data_dir)
    if reloads is None:
        return found
    sessions = {s.comp_id: s for s in config.sessions}

    def confirm(groups: tuple[GroupDef, ...]) -> str | None:
        version = RoutingTable.build(groups, sessions).version
        outcome = groups_outcome(config.gateway.data_dir, version, reloads,
                                 timeout=CONFIRM_TIMEOUT_S)
        found.append(outcome)
        if outcome.state != "refused":
            return None
        return (f"the running gateway (pid {outcome.pid}) refused the change and goes on "
                f"routing by version {outcome.version}: {outcome.reason}")
    store.confirm = confirm
    return found


def _report(out: Output, followed: list[GroupsOutcome], data: dict[str, Any],
            text: str) -> None:
    """Print what changed and whether the running gateway follows it."""
    if followed:
        outcome = followed[-1]
        data = {**data, "gateway": {"state": outcome.state, "pid": outcome.pid,
                                    "version": outcome.version}}
        if outcome.state == "applied":
            text += (f"; the running gateway (pid {outcome.pid}) follows it "
                     f"(version {outcome.version})")
        elif outcome.state == "unconfirmed":
            print(f"warning: the running gateway (pid {outcome.pid}) has not confirmed the "
                  f"change within {CONFIRM_TIMEOUT_S:g}s (it routes by version "
                  f"{outcome.version}); see its log", file=sys.stderr)
    out.result(data, text)


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


_T = TypeVar("_T")


class _Prompter:
    """Asks for the missing steps of ``groups create`` on a terminal. Prompts go to stderr, so
    that stdout stays one JSON document with --json."""

    ATTEMPTS = 5

    def __init__(self, stdin: TextIO, stderr: TextIO) -> None:
        self.stdin, self.stderr = stdin, stderr

    def ask(self, prompt: str, check: Callable[[str], _T], default: str | None = None) -> _T:
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
    if missing and not _isatty(sys.stdin):
        raise UsageError("missing " + ", ".join(missing) + " (stdin is not a terminal, so "
                         "there is nothing to prompt)")
    if args.entity is not None:
        require_admin(config, args.actor, args.entity)
    entities = (administered(config, args.actor) if args.actor is not None
                else [e.name for e in config.entities])
    if not entities:
        raise UsageError(f"{args.actor} does not administer any entity" if args.actor
                         else "no entities in the configuration")
    ask = _Prompter(sys.stdin, sys.stderr)      # used only for what is missing (a terminal)
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
    state = open_state(config)
    followed = _follow_running_gateway(config, state)
    created = state.groups.create(data, actor=args.actor)
    _report(out, followed, {"ok": True, "created": group_to_data(created)},
            f"created group {created.entity}/{created.name} in {_where(config)}")
    return 0


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
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
    p.add_argument("--filter", action="extend", nargs="+", metavar="KEY=VALUE",
                   help="4. filter: categories=execution,order | account=A1,A2 (include) | "
                        "symbol!=GEZ6 (exclude); keys: " + ", ".join(FILTER_KEYS))
    p.add_argument("--source", action="extend", nargs="+", metavar="SID",
                   help="5. source sender comps")
    p.add_argument("--target", action="extend", nargs="+", metavar="SID",
                   help="6. target sessions (of the group's entity)")


