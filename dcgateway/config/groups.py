"""Drop copy groups: groups.yaml -> frozen :class:`GroupDef`, and back (the CLI rewrites the file).

A group is the six creation steps of the README's command line: registered entity, group name, front end system,
filters, source sender comps and target sessions. Each group is checked on its own (every key,
every reference to a session of gateway.yaml), then the groups together against the rules in
:data:`_GROUP_RULES`:

* group names are unique within an entity;
* a drop copy target of the ``ilink2`` (CGW-style) kind takes at most 1000 source sender comps,
  one of the ``fix`` (MSGW-style) kind at most 5000, counted over every group that reaches it
  (docs/venue.md);
* every group delivering to a target uses the same front end: a target receives each message
  once, in one format (docs/architecture.md "Copy conventions": BeginString per the group's front end).

The public names are exported by :mod:`dcgateway.config`; import them from there.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..errors import ConfigError
from ..fix.dictionary import DictionaryCache
from ..fix.translate import check_translation
from ..fsutil import atomic_write
from ..vocab import CATEGORY_MSG_TYPES
from .model import (
    CATEGORIES,
    FILTER_KEYS,
    FRONT_ENDS,
    Entity,
    Filters,
    GroupDef,
    IncludeExclude,
    SessionDef,
)
from .yamlread import (
    BAD,
    REQUIRED,
    Bad,
    Context,
    MapNode,
    Parser,
    choices_text,
    compose,
    expects,
    is_null,
    join_path,
    list_of,
    name_in,
    node_line,
    one_of,
    parse_name,
    read_file,
    record,
    scalar,
    sequence_items,
    text_of,
)

#: Side (54) names accepted in filters -> FIX codes (FIX 4.4 Vol. 6 "Side").
SIDE_NAMES = {"buy": "1", "sell": "2", "buy_minus": "3", "sell_plus": "4", "sell_short": "5",
              "sell_short_exempt": "6", "undisclosed": "7", "cross": "8", "cross_short": "9"}
SIDE_CODES = tuple("123456789ABCDEFG")
#: docs/venue.md: a CGW-style target takes up to 1000 source sender comps, an MSGW-style up to 5000.
MAX_SOURCES_PER_TARGET = {"ilink2": 1000, "fix": 5000}
_VALUE_RE = re.compile(r"[^\x00-\x1f\x7f]{1,128}")


@dataclass(frozen=True)
class _Refs:
    """What groups may refer to. ``known``/``entity_names`` None: that section of gateway.yaml
    was unreadable, so references to it are not checked (its problem is already reported)."""
    sessions: Mapping[str, SessionDef]
    known: frozenset[str] | None
    entity_names: frozenset[str] | None


# ---------------------------------------------------------------------------------------------
# One group
# ---------------------------------------------------------------------------------------------

_filter_value = text_of(_VALUE_RE, "a value of 1-128 characters, no control characters")


_SIDE_EXPECTED = "a FIX Side (54) code 1-9, A-G, or one of " + ", ".join(SIDE_NAMES)


@expects(_SIDE_EXPECTED)
def _side_value(ctx: Context, node: Node, path: str) -> str | Bad:
    text = scalar(ctx, node, path, _SIDE_EXPECTED)
    if text is BAD:
        return BAD
    code = SIDE_NAMES.get(text.lower(), text)
    if code not in SIDE_CODES:
        ctx.problem(node_line(node), path, f"{text!r} is not a Side (54) value",
                    _SIDE_EXPECTED)
        return BAD
    return code


def _include_exclude(item: Parser) -> Parser:
    expected = "{include: [...]} and/or {exclude: [...]}, or a list (= include)"
    values = list_of(item, "a non-empty list of values")

    @expects(expected)
    def parse(ctx: Context, node: Node, path: str) -> IncludeExclude | Bad:
        if isinstance(node, SequenceNode):
            got = values(ctx, node, path)
            return BAD if got is BAD else IncludeExclude(frozenset(got))
        m = MapNode.of(ctx, node, path, expected)
        if m is None:
            return BAD
        v = m.fields({"include": (values, None), "exclude": (values, ())})
        if v is None:
            return BAD
        if v["include"] is None and not v["exclude"]:
            ctx.problem(m.line, path, "no condition given", expected)
            return BAD
        include = None if v["include"] is None else frozenset(v["include"])
        return IncludeExclude(include, frozenset(v["exclude"]))
    return parse


#: Filter key -> what its values are (categories aside, every filter is include/exclude).
_FILTER_VALUES: dict[str, Parser] = {"account": _filter_value, "symbol": _filter_value,
                                     "security_exchange": _filter_value, "side": _side_value,
                                     "sender_sub_id": _filter_value}
_filters = record(
    {"categories": (list_of(one_of(CATEGORIES), "a non-empty list of categories: "
                            + ", ".join(CATEGORIES)), REQUIRED),
     **{key: (_include_exclude(_FILTER_VALUES[key]), None) for key in FILTER_KEYS[1:]}},
    lambda categories, **rest: Filters(frozenset(categories), **rest),
    "a mapping with categories: [...] and optional " + ", ".join(FILTER_KEYS[1:]))


def _session_ref(refs: _Refs, role: str, entity: str | None, eligible: list[str]) -> Parser:
    """One comp_id: a configured session of ``role`` (and of ``entity`` when given)."""
    whose = f" of entity {entity}" if entity is not None else ""

    def item(ctx: Context, node: Node, path: str) -> str | Bad:
        comp_id = scalar(ctx, node, path, f"the comp_id of a {role} session")
        if comp_id is BAD or refs.known is None:
            return comp_id
        session = refs.sessions.get(comp_id)
        if comp_id not in refs.known:
            what = f"unknown session {comp_id!r}"
        elif session is None:          # defined but invalid: reported in gateway.yaml
            return comp_id
        elif session.role != role:
            what = f"{comp_id!r} is a {session.role} session"
        elif entity is not None and session.entity != entity:
            what = f"{comp_id!r} belongs to entity {session.entity}"
        else:
            return comp_id
        ctx.problem(node_line(node), path, what,
                    f"a {role} session{whose}: {choices_text(eligible)}")
        return BAD
    return item


def _session_refs(refs: _Refs, role: str, entity: str | None) -> Parser:
    """A non-empty list of distinct comp_ids, each a session of ``role`` (and ``entity``)."""
    eligible = [s.comp_id for s in refs.sessions.values()
                if s.role == role and (entity is None or s.entity == entity)]
    whose = f" of entity {entity}" if entity is not None else ""
    expected = f"a non-empty list of {role} sessions{whose}: {choices_text(eligible)}"
    items = list_of(_session_ref(refs, role, entity, eligible), expected)

    @expects(expected)
    def parse(ctx: Context, node: Node, path: str) -> tuple[str, ...] | Bad:
        got: tuple[str, ...] | Bad = items(ctx, node, path)
        if got is BAD:
            return BAD
        for i, comp_id in enumerate(got):
            if comp_id in got[:i]:
                ctx.problem(node_line(node.value[i]), join_path(path, i),
                            f"{comp_id!r} listed twice", "each session once")
                return BAD
        return got
    return parse


_GROUP_KEYS = ("entity", "name", "front_end", "filters", "sources", "targets")


def _parse_group(ctx: Context, node: Node, path: str, refs: _Refs
                 ) -> tuple[GroupDef, MapNode] | None:
    m = MapNode.of(ctx, node, path, "a mapping {entity, name, front_end, filters, sources, "
                   "targets}")
    if m is None:
        return None
    m.allow(_GROUP_KEYS)
    v = {"entity": m.get("entity", name_in(refs.entity_names, "entity")),
         "name": m.get("name", parse_name),
         "front_end": m.get("front_end", one_of(FRONT_ENDS)),
         "filters": m.get("filters", _filters),
         "sources": m.get("sources", _session_refs(refs, "source", None))}
    entity = None if v["entity"] is BAD else v["entity"]
    v["targets"] = m.get("targets", _session_refs(refs, "target", entity))
    if any(x is BAD for x in v.values()):
        return None
    return GroupDef(**v), m


# ---------------------------------------------------------------------------------------------
# The groups together
# ---------------------------------------------------------------------------------------------

#: A rule across groups, seeing each valid group in file order; False: a problem was reported.
GroupCheck = Callable[[GroupDef, MapNode], bool]


def _unique_names(ctx: Context, refs: _Refs) -> GroupCheck:
    """Group names are unique within an entity (the README's command line: ``groups show NAME``)."""
    first_path: dict[tuple[str, str], str] = {}

    def check(group: GroupDef, m: MapNode) -> bool:
        first = first_path.setdefault((group.entity, group.name), m.path)
        if first == m.path:
            return True
        ctx.problem(m.key_lines["name"], join_path(m.path, "name"), f"duplicate group name "
                    f"{group.name!r} in entity {group.entity} (also {first})",
                    "group names unique within an entity")
        return False
    return check


def _sources_per_target(ctx: Context, refs: _Refs) -> GroupCheck:
    """At most MAX_SOURCES_PER_TARGET[profile] source sender comps reach a target, counted over
    every group; reported once, on the group that crosses the limit."""
    reach: dict[str, set[str]] = {}

    def check(group: GroupDef, m: MapNode) -> bool:
        ok = True
        for target in group.targets:
            sources = reach.setdefault(target, set())
            before = len(sources)
            sources.update(group.sources)
            session = refs.sessions.get(target)
            if session is None:     # defined but invalid: reported in gateway.yaml
                continue
            limit = MAX_SOURCES_PER_TARGET[session.profile]
            if len(sources) > limit >= before:
                across = "" if len(group.sources) == len(sources) else " (over all its groups)"
                ctx.problem(m.key_lines["sources"], join_path(m.path, "sources"),
                            f"{len(sources)} source sender comps reach {session.profile} "
                            f"target {target}{across}",
                            f"at most {limit} for an {session.profile} target")
                ok = False
        return ok
    return check


def _one_front_end_per_target(ctx: Context, refs: _Refs) -> GroupCheck:
    """Every group delivering to a target uses the front end of the first one that does: a
    target receives each message once, in one format (one BeginString, one envelope)."""
    first_group: dict[str, GroupDef] = {}       # target -> first group delivering to it

    def check(group: GroupDef, m: MapNode) -> bool:
        ok = True
        for target in group.targets:
            first = first_group.setdefault(target, group)
            if first.front_end != group.front_end:
                ctx.problem(m.key_lines["front_end"], join_path(m.path, "front_end"),
                            f"{group.front_end!r} differs from {first.front_end!r} used by "
                            f"group {first.name} for target {target}",
                            "one front end per target")
                ok = False
        return ok
    return check


def _copies_can_be_valid(ctx: Context, refs: _Refs) -> GroupCheck:
    """A ``fix`` group's copies must be valid in each target's data dictionary (FIX Vol. 1
    "Message format"). Where the source and the target use different dictionaries the copies
    are translated (ExecutionReport between FIX 4.2 and 4.4, fields the target does not define
    left out); a group none of whose message types can be made valid for a target is refused,
    naming the group, the source, the target and why. A single type that cannot (an iLink
    OrderMassActionRequest to a FIX 4.4 target) is gap-filled at run time, logged and counted."""
    dictionaries = DictionaryCache()
    verdicts: dict[tuple[str, str, frozenset[str]], list[str]] = {}

    def problems(source: SessionDef, target: SessionDef, cats: frozenset[str]) -> list[str]:
        key = (source.data_dictionary, target.data_dictionary, cats)
        if key not in verdicts:
            src = dictionaries.get(source.data_dictionary or source.begin_string)
            dst = dictionaries.get(target.data_dictionary or target.begin_string)
            types = [mt for c in cats for mt in CATEGORY_MSG_TYPES.get(c, ())
                     if mt in src.messages]
            impossible: list[str] = []
            usable = src is dst
            for mt in types:
                found = check_translation(src, dst, [mt])
                usable = usable or found.possible
                if not found.possible:
                    impossible.extend(found.problems)
            verdicts[key] = [] if usable or not types else impossible
        return verdicts[key]

    def check(group: GroupDef, m: MapNode) -> bool:
        if group.front_end != "fix":
            return True
        for s in group.sources:
            for t in group.targets:
                source, target = refs.sessions.get(s), refs.sessions.get(t)
                if source is None or target is None:
                    continue
                found = problems(source, target, group.filters.categories)
                if found:
                    ctx.problem(m.line, join_path(m.path, "targets"),
                                f"no copy of group {group.name} from {s} can be valid for "
                                f"{t} ({target.data_dictionary or target.begin_string}): "
                                + "; ".join(found[:3]),
                                "categories whose messages the target's dictionary defines, "
                                "or the ilink2 front end")
                    return False
        return True
    return check


#: The rules across groups, each run on every group in turn (so that problems found on one line
#: keep the order: name, sources, front end, copies).
_GROUP_RULES: tuple[Callable[[Context, _Refs], GroupCheck], ...] = (
    _unique_names, _sources_per_target, _one_front_end_per_target, _copies_can_be_valid)


def _check_groups(ctx: Context, parsed: list[tuple[GroupDef, MapNode]], refs: _Refs) -> bool:
    checks = [rule(ctx, refs) for rule in _GROUP_RULES]
    ok = True
    for group, m in parsed:
        for check in checks:
            ok = check(group, m) and ok
    return ok


def _parse_groups_root(ctx: Context, root: Node | None, refs: _Refs) -> tuple[GroupDef, ...]:
    if root is None or is_null(root):
        return ()
    m = MapNode.of(ctx, root, "", "a mapping with the key groups")
    if m is None:
        return ()
    m.allow(("groups",))
    node = m.nodes.get("groups")
    if node is None or is_null(node):
        return ()
    items = sequence_items(ctx, node, "groups", "a list of groups")
    if items is BAD:
        return ()
    parsed = [g for g in (_parse_group(ctx, n, p, refs) for n, p in items) if g is not None]
    _check_groups(ctx, parsed, refs)
    return tuple(group for group, _ in parsed)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

def read_groups(file: Path, display: str, sessions: Iterable[SessionDef],
                known: Iterable[str] | None, entity_names: Iterable[str] | None
                ) -> tuple[tuple[GroupDef, ...], list[str]]:
    """The groups file named by gateway.yaml, with its problems returned (not raised) so that
    load_config reports them with gateway.yaml's. ``known``/``entity_names``: every comp_id and
    entity name gateway.yaml gave (valid or not), None where its section was unreadable."""
    refs = _Refs(MappingProxyType({s.comp_id: s for s in sessions}),
                 None if known is None else frozenset(known),
                 None if entity_names is None else frozenset(entity_names))
    try:
        root, loader = read_file(file, display)
    except ConfigError as exc:
        return (), exc.problems
    ctx = Context(display, loader)
    groups = _parse_groups_root(ctx, root, refs)
    return groups, ctx.problems


def _groups_refs(sessions: Iterable[SessionDef], entities: Iterable[Entity | str]) -> _Refs:
    by_id = {s.comp_id: s for s in sessions}
    names = frozenset(e if isinstance(e, str) else e.name for e in entities)
    return _Refs(MappingProxyType(by_id), frozenset(by_id), names)


def load_groups(path: str | os.PathLike[str], sessions: Iterable[SessionDef],
                entities: Iterable[Entity | str]) -> tuple[GroupDef, ...]:
    """Read and validate a groups file alone (the gateway's SIGHUP reload). Raises ConfigError."""
    display = os.fspath(path)
    root, loader = read_file(Path(path), display)
    ctx = Context(display, loader)
    groups = _parse_groups_root(ctx, root, _groups_refs(sessions, entities))
    if ctx.problems:
        raise ConfigError(ctx.problems)
    return groups


def declares_no_groups(path: str | os.PathLike[str]) -> bool:
    """Whether the groups file says in so many words that there are no groups (``groups: []``),
    as opposed to holding nothing (an empty file, comments only, ``groups:`` without a list):
    what an editor's file looks like between its truncation and its writing. Raises ConfigError
    when it cannot be read."""
    root, _ = read_file(Path(path), os.fspath(path))
    if not isinstance(root, MappingNode):
        return False
    for key, value in root.value:
        if isinstance(key, ScalarNode) and key.value == "groups":
            return isinstance(value, SequenceNode) and not value.value
    return False


def groups_from_data(data: Sequence[Mapping[str, Any]], sessions: Iterable[SessionDef],
                     entities: Iterable[Entity | str]) -> tuple[GroupDef, ...]:
    """Validate groups given as plain data (the shape of groups.yaml's ``groups`` list), e.g. a
    group assembled by the CLI. Problems name paths (``groups[2].targets[0]``) without a file."""
    text = yaml.safe_dump({"groups": [dict(g) for g in data]}, sort_keys=False)
    root, loader = compose(text, None)
    ctx = Context(None, loader)
    groups = _parse_groups_root(ctx, root, _groups_refs(sessions, entities))
    if ctx.problems:
        raise ConfigError(ctx.problems)
    return groups


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

def group_to_data(group: GroupDef) -> dict[str, Any]:
    """A group as plain data in groups.yaml's shape (sorted, so the output is stable)."""
    filters: dict[str, Any] = {
        "categories": [c for c in CATEGORIES if c in group.filters.categories]}
    for key in FILTER_KEYS[1:]:
        cond: IncludeExclude | None = getattr(group.filters, key)
        if cond is None:
            continue
        entry: dict[str, list[str]] = {}
        if cond.include is not None:
            entry["include"] = sorted(cond.include)
        if cond.exclude:
            entry["exclude"] = sorted(cond.exclude)
        filters[key] = entry
    return {"entity": group.entity, "name": group.name, "front_end": group.front_end,
            "filters": filters, "sources": list(group.sources), "targets": list(group.targets)}


_GROUPS_HEADER = """\
# Drop copy groups (see gateway.yaml's groups_file). Written by `dcgateway groups ...`:
# edits through the CLI rewrite this file whole, so comments added by hand are not kept.
"""


def dump_groups(groups: Iterable[GroupDef]) -> str:
    """groups.yaml text that :func:`load_groups` reads back to the same groups."""
    body = yaml.safe_dump({"groups": [group_to_data(g) for g in groups]}, sort_keys=False,
                          default_flow_style=None, allow_unicode=True, width=100)
    return _GROUPS_HEADER + body


def write_groups_atomic(path: str | os.PathLike[str], groups: Iterable[GroupDef]) -> None:
    """Replace the groups file atomically: a reader (the gateway on SIGHUP) sees the old file or
    the new one, never half of one, and a crash leaves one of the two on disk. Temp file in the
    same folder, fsync, os.replace, fsync the folder."""
    path = Path(path)
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644
    atomic_write(path, dump_groups(groups).encode("utf-8"), mode)
