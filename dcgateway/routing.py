"""Drop copy routing: message categories, compiled filters and the immutable routing table.

Pure (no I/O, no clock, no logging). docs/architecture.md "Data flow": after a source message is journaled,
the fan-out asks the routing table which targets get a copy; the table is rebuilt off the hot
path when groups change and swapped in whole (one reference assignment), so in-flight messages
finish with the old one. Everything that depends only on the configuration is therefore worked
out once in :meth:`RoutingTable.build`:

* per (source SenderCompID, MsgType) the candidate groups, with the category filter already
  applied where the category follows from MsgType alone (every type except ExecutionReport);
* per candidate, the field predicate compiled to a tuple of ``(tag, include, exclude)`` checks,
  or None when the group has no field condition;
* when no candidate has a field condition and no target is reached twice, the answer itself (a
  tuple of :class:`Route`), so the common "copy everything of these types" group costs two dict
  lookups per message.

Per message only an ExecutionReport needs a field read (ExecType 150) to tell a trade from an
acknowledgment (docs/venue.md "Drop copy": fills, partial fills, trade cancels and corrections are
executions; acknowledgments of creation, cancel, modify, eliminations are not).

Rules of the house followed: 2 (tables, not if-chains: categories by MsgType and by ExecType are
dicts), 8 (per-message work is dict lookups and ``RawMessage.get``, one ``bytes.find``), 9.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple

from .config import Filters, GroupDef, IncludeExclude, SessionDef
from .errors import ConfigError
from .fix import tags as T
from .fix.codec import RawMessage
from .fix.dictionary import DictionaryCache
from .vocab import CATEGORIES, Category, FrontEnd

__all__ = [
    "EXECUTION", "ACKNOWLEDGMENT", "ORDER", "MASS_ACTION", "REJECT", "CATEGORIES",
    "CATEGORY_BY_MSG_TYPE", "EXEC_TYPE_TRADES", "category", "execution_report_category",
    "compile_fields", "compile_filter", "group_key", "Route", "RoutingTable",
]

# The categories by their plain values (hot-path dict values and metric labels).
EXECUTION: str = Category.EXECUTION.value
ACKNOWLEDGMENT: str = Category.ACKNOWLEDGMENT.value
ORDER: str = Category.ORDER.value
MASS_ACTION: str = Category.MASS_ACTION.value
REJECT: str = Category.REJECT.value

#: MsgType -> category for every type whose category does not depend on the message's fields.
#: A type absent here (and from ``_BY_FIELDS``) is not copied.
#:
#: * order entry (FIX 4.2/4.4 Vol. 4 "Single/General Order Handling", "Cross Orders",
#:   "Multileg Orders", FIX 4.4 "Order Mass Handling"): every request that creates, changes or
#:   cancels orders. NewOrderCross and its cancel/replace (s, t, u), OrderMassCancelRequest (q)
#:   and OrderMassActionRequest (CA) are included: they enter or remove orders just as D/F/G do,
#:   and a clearing firm watching order entry expects them. Inquiries that change nothing
#:   (OrderStatusRequest H, OrderMassStatusRequest AF) are not order entry and are not copied.
#: * OrderCancelReject (9) answers an F/G: an acknowledgment (docs/architecture.md vocabulary).
#: * mass action: OrderMassActionReport (BZ, docs/venue.md) and its FIX 4.4 predecessor
#:   OrderMassCancelReport (r).
#: * reject: session-level Reject (3) and BusinessMessageReject (j) (docs/venue.md: "The venue also
#:   offers filters for ... session-level rejects"). A 35=3 reaches routing only if the session
#:   layer hands it up as an application message.
CATEGORY_BY_MSG_TYPE: Mapping[bytes, str] = {
    T.MsgType.NEW_ORDER_SINGLE: ORDER,                  # D
    T.MsgType.ORDER_CANCEL_REQUEST: ORDER,              # F
    T.MsgType.ORDER_CANCEL_REPLACE_REQUEST: ORDER,      # G
    T.MsgType.NEW_ORDER_MULTILEG: ORDER,                # AB
    T.MsgType.MULTILEG_CANCEL_REPLACE: ORDER,           # AC
    T.MsgType.NEW_ORDER_CROSS: ORDER,                   # s
    b"t": ORDER,                                        # CrossOrderCancelReplaceRequest
    b"u": ORDER,                                        # CrossOrderCancelRequest
    b"q": ORDER,                                        # OrderMassCancelRequest
    T.MsgType.ORDER_MASS_ACTION_REQUEST: ORDER,         # CA
    T.MsgType.ORDER_CANCEL_REJECT: ACKNOWLEDGMENT,      # 9
    T.MsgType.ORDER_MASS_ACTION_REPORT: MASS_ACTION,    # BZ
    b"r": MASS_ACTION,                                  # OrderMassCancelReport
    T.MsgType.REJECT: REJECT,                           # 3
    T.MsgType.BUSINESS_MESSAGE_REJECT: REJECT,          # j
}

#: ExecType (150) values that make an ExecutionReport a trade. F = Trade (FIX 4.3+);
#: 1 Partial fill and 2 Fill are FIX 4.2's trade values (gone from 4.4, accepted from any
#: version: a FIX 4.2 source on an iLink 2 profile sends them); G = Trade Correct, H = Trade
#: Cancel (a bust). FIX 4.2 busts/corrections (ExecTransType 20 = 1/2) keep 150 = 1/2, so they
#: are covered too. Every other ExecType (0 new, 3 done for day, 4 canceled, 5 replaced,
#: 6 pending cancel, 7 stopped, 8 rejected, 9 suspended, A pending new, B calculated, C expired,
#: D restated, E pending replace, I order status, ...) is an acknowledgment.
EXEC_TYPE_TRADES: frozenset[bytes] = frozenset({b"F", b"1", b"2", b"G", b"H"})
_EXEC_TYPE_CATEGORY: Mapping[bytes, str] = {v: EXECUTION for v in EXEC_TYPE_TRADES}
#: FIX 4.2 ExecTransType (20) = 3, Status: the report restates an order (its 150 = 1/2 says it
#: has traded, not that it traded now); an acknowledgment, never a fill to book again (FIX 4.4
#: says the same with ExecType I, Order Status, which a 4.2 status report translates to).
_STATUS = b"3"
#: The body tags :func:`category` reads from every ExecutionReport. A source's validator captures
#: them as it matches a compiled layout (:class:`~dcgateway.fix.validate.Validator`), so reading
#: them costs a dict look-up instead of a search of the message.
CLASSIFIER_TAGS: frozenset[int] = frozenset({T.EXEC_TYPE, T.EXEC_TRANS_TYPE})


def execution_report_category(msg: RawMessage) -> str:
    """ExecutionReport (35=8): ``execution`` for a trade, else ``acknowledgment`` (a FIX 4.2
    status report, ExecTransType 3, is an acknowledgment whatever its ExecType).

    A report without ExecType (FIX 4.2+ requires it, but a sloppy source may omit it) is judged
    the FIX 4.0/4.1 way: a non-zero LastQty/LastShares (32) means shares traded. Erring towards
    ``execution`` there is deliberate: a clearing firm missing a fill is worse than one seeing a
    report it did not ask for."""
    exec_type = msg.get(T.EXEC_TYPE)
    if exec_type is not None:
        category = _EXEC_TYPE_CATEGORY.get(exec_type, ACKNOWLEDGMENT)
        if category is EXECUTION and msg.get(T.EXEC_TRANS_TYPE) == _STATUS:
            return ACKNOWLEDGMENT     # FIX 4.2 ExecTransType 3 (Status): a restatement
        return category
    try:
        traded = float(msg.get(T.LAST_QTY) or 0) > 0
    except ValueError:
        traded = False
    return EXECUTION if traded else ACKNOWLEDGMENT


#: MsgType -> classifier, for the types whose category needs a field of the message.
_BY_FIELDS: Mapping[bytes, Callable[[RawMessage], str]] = {
    T.MsgType.EXECUTION_REPORT: execution_report_category,
}


def category(msg: RawMessage) -> str | None:
    """The drop copy category of an application message, or None when it is not copied
    (unknown or administrative MsgType)."""
    mt = msg.msg_type
    cat = CATEGORY_BY_MSG_TYPE.get(mt)
    if cat is not None:
        return cat
    classify = _BY_FIELDS.get(mt)
    return None if classify is None else classify(msg)


def _categories_of_type(mt: bytes) -> frozenset[str]:
    """Every category a message of type ``mt`` can fall in (build-time helper)."""
    if mt in _BY_FIELDS:
        return frozenset({EXECUTION, ACKNOWLEDGMENT})
    return frozenset({CATEGORY_BY_MSG_TYPE[mt]})


_ALL_TYPES: tuple[bytes, ...] = tuple(CATEGORY_BY_MSG_TYPE) + tuple(_BY_FIELDS)

# ---------------------------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------------------------

#: Filters attribute -> FIX tag it tests (docs/venue.md "Drop copy", ours: account, symbol, security
#: exchange, side and SenderSubID). SenderSubID (50) is a header field; RawMessage.get reads
#: the header first, then the body.
FILTER_TAGS: Mapping[str, int] = {
    "sender_sub_id": T.SENDER_SUB_ID,       # header: a dict lookup, so tested first
    "account": T.ACCOUNT,
    "symbol": T.SYMBOL,
    "security_exchange": T.SECURITY_EXCHANGE,
    "side": T.SIDE,
}

#: One compiled condition: (tag, allowed values or None, refused values).
Check = tuple[int, frozenset[bytes] | None, frozenset[bytes]]
FieldPredicate = Callable[[RawMessage], bool]


def _values(values: Iterable[str]) -> frozenset[bytes]:
    return frozenset(v.encode("utf-8") for v in values)


def _check(tag: int, cond: IncludeExclude) -> Check:
    """Include given: the value must be present and allowed; exclude: absent or not refused.
    Both: the exclude list is taken out of the include list once, here."""
    exclude = _values(cond.exclude)
    if cond.include is not None:
        return (tag, _values(cond.include) - exclude, frozenset())
    return (tag, None, exclude)


def compile_checks(filters: Filters) -> tuple[Check, ...]:
    """The field conditions of ``filters`` as a tuple of checks (header tag first)."""
    return tuple(_check(tag, cond) for name, tag in FILTER_TAGS.items()
                 if (cond := getattr(filters, name)) is not None)


#: MsgTypes with one entry per side (NoSides, 552): a cross order's account (1) and side (54)
#: appear once per side. NewOrderCross, CrossOrderCancelReplaceRequest, CrossOrderCancelRequest.
MULTI_SIDE_MSG_TYPES: frozenset[bytes] = frozenset({b"s", b"t", b"u"})


def _matches_any_side(msg: RawMessage, checks: tuple[Check, ...]) -> bool:
    """A message with several values of a filtered tag (a cross order's sides) meets a
    condition when one of its values does: a firm clearing either side's account gets it,
    whichever side comes first."""
    values: dict[int, list[bytes]] = {}
    for tag, value in msg.fields():
        values.setdefault(tag, []).append(value)
    for tag, include, exclude in checks:
        found = values.get(tag, [])
        if include is not None:
            if not any(v in include for v in found):
                return False
        elif found and all(v in exclude for v in found):
            return False
    return True


def compile_fields(filters: Filters) -> FieldPredicate | None:
    """A predicate over the field conditions only (account, symbol, security exchange, side,
    SenderSubID), or None when ``filters`` has none: the caller then skips the call."""
    checks = compile_checks(filters)
    if not checks:
        return None

    def matches(msg: RawMessage) -> bool:
        if msg.msg_type in MULTI_SIDE_MSG_TYPES:
            return _matches_any_side(msg, checks)
        get = msg.get
        for tag, include, exclude in checks:
            value = get(tag)
            if include is not None:
                if value not in include:        # None (absent) is never in a set of bytes
                    return False
            elif value in exclude:
                return False
        return True

    matches.checks = checks     # type: ignore[attr-defined]  # for describe() and tests
    return matches


def compile_filter(filters: Filters) -> Callable[[RawMessage, str], bool]:
    """``(msg, its category) -> copied?``: the category is in ``filters.categories`` and every
    field condition holds. Compiled once per configuration. The routing table itself applies
    categories at build time and calls only :func:`compile_fields`' predicate per message."""
    categories = frozenset(filters.categories)
    fields = compile_fields(filters)
    if fields is None:
        return lambda msg, cat: cat in categories
    return lambda msg, cat: cat in categories and fields(msg)


def describe_filters(filters: Filters) -> str:
    """``categories=execution account in {ACCT01,ACCT02} symbol not in {GEZ6}``."""
    parts = ["categories=" + ",".join(c for c in CATEGORIES if c in filters.categories)]
    for name in FILTER_TAGS:
        cond: IncludeExclude | None = getattr(filters, name)
        if cond is None:
            continue
        if cond.include is not None:
            parts.append(f"{name} in {{{','.join(sorted(cond.include))}}}")
        if cond.exclude:
            parts.append(f"{name} not in {{{','.join(sorted(cond.exclude))}}}")
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------
# The routing table
# ---------------------------------------------------------------------------------------------

class Route(NamedTuple):
    """One copy to make: to ``target``, in the ``front_end`` format, on behalf of ``group``
    (``ENTITY/name``: group names are unique per entity only)."""
    target: str
    front_end: str
    group: str


def group_key(group: GroupDef) -> str:
    return f"{group.entity}/{group.name}"


class _Candidates:
    """The groups that may copy one (source, MsgType[, category]) to their targets.

    ``fixed`` is the answer when no candidate has a field predicate and no target repeats.
    Otherwise ``checks`` is walked in config order; on the ``slow`` path a target already
    reached is skipped (docs/architecture.md: a target gets one copy however many of its groups match) and
    a predicate shared by several groups (equal filters are compiled to one function) is
    evaluated once per message."""

    __slots__ = ("fixed", "checks", "slow", "category")

    def __init__(self, items: Sequence[tuple[Route, FieldPredicate | None]],
                 category: str) -> None:
        self.category = category
        targets = [route.target for route, _ in items]
        preds = [pred for _, pred in items if pred is not None]
        self.slow = (len(set(targets)) != len(targets)
                     or len(set(map(id, preds))) != len(preds))
        self.checks = tuple(items)
        self.fixed: tuple[Route, ...] | None = None
        if not preds:
            seen: set[str] = set()
            fixed: list[Route] = []
            for r, _ in items:          # first route to each target, in config order
                if r.target not in seen:
                    seen.add(r.target)
                    fixed.append(r)
            self.fixed = tuple(fixed)

    def classify_select(self, msg: RawMessage) -> tuple[str, tuple[Route, ...]]:
        return self.category, self.select(msg)

    def select(self, msg: RawMessage) -> tuple[Route, ...]:
        if self.fixed is not None:
            return self.fixed
        if not self.slow:
            return tuple([route for route, pred in self.checks if pred is None or pred(msg)])
        out: list[Route] = []
        seen: set[str] = set()
        memo: dict[FieldPredicate, bool] = {}
        for route, pred in self.checks:
            if route.target in seen:
                continue
            if pred is not None:
                ok = memo.get(pred)
                if ok is None:
                    ok = memo[pred] = pred(msg)
                if not ok:
                    continue
            seen.add(route.target)
            out.append(route)
        return tuple(out)


class _ByCategory:
    """Candidates of a MsgType whose category needs a field (ExecutionReport): classify the
    message once, then pick the candidates of that category."""

    __slots__ = ("classify", "by_category")

    def __init__(self, classify: Callable[[RawMessage], str],
                 by_category: Mapping[str, _Candidates]) -> None:
        self.classify = classify
        self.by_category = dict(by_category)

    def select(self, msg: RawMessage) -> tuple[Route, ...]:
        return self.classify_select(msg)[1]

    def classify_select(self, msg: RawMessage) -> tuple[str, tuple[Route, ...]]:
        cat = self.classify(msg)
        cands = self.by_category.get(cat)
        return cat, (() if cands is None else cands.select(msg))


_Entry = _Candidates | _ByCategory


def _check_front_ends(groups: Sequence[GroupDef]) -> None:
    """A target receives one format: every group that reaches it must agree on front_end
    (otherwise whether a copy is ilink2 or fix would depend on which group matched first)."""
    first: dict[str, GroupDef] = {}
    problems: list[str] = []
    for g in groups:
        for target in g.targets:
            seen = first.setdefault(target, g)
            if seen.front_end != g.front_end:
                problems.append(
                    f"target {target}: group {group_key(g)} has front_end {g.front_end!r} but "
                    f"group {group_key(seen)} has {seen.front_end!r}; expected one front end "
                    "system per target session")
    if problems:
        raise ConfigError(problems)


def _check_sessions(groups: Sequence[GroupDef], sessions: Mapping[str, SessionDef]) -> None:
    """Every source and target a group names is a configured session of that role."""
    problems = []
    for g in groups:
        for role, names in (("source", g.sources), ("target", g.targets)):
            for name in names:
                s = sessions.get(name)
                if s is None or s.role != role:
                    what = "unknown session" if s is None else f"a {s.role} session"
                    problems.append(f"group {group_key(g)}: {role} {name!r} is {what}; expected "
                                    f"a configured {role} session")
    if problems:
        raise ConfigError(problems)


def _carried_types(sessions: Mapping[str, SessionDef]) -> Callable[[str], frozenset[bytes]]:
    """target -> the MsgTypes its data dictionary defines (loaded once per dictionary)."""
    dictionaries = DictionaryCache()
    cache: dict[str, frozenset[bytes]] = {}

    def carries(target: str) -> frozenset[bytes]:
        types = cache.get(target)
        if types is None:
            sdef = sessions.get(target)
            name = (sdef.data_dictionary or sdef.begin_string) if sdef is not None else ""
            types = frozenset(dictionaries.get(name).messages) if name else frozenset(_ALL_TYPES)
            cache[target] = types
        return types
    return carries


def _version(groups: Sequence[GroupDef], sessions: Mapping[str, SessionDef]) -> str:
    """A digest of what the table routes: equal configurations give equal versions across
    processes and reloads (logs and metrics can tell a reload that changed nothing)."""
    h = hashlib.sha256()
    for g in groups:
        h.update(repr((group_key(g), g.front_end, describe_filters(g.filters), g.sources,
                       g.targets, [sessions[t].begin_string for t in g.targets])).encode())
    return h.hexdigest()[:12]


class RoutingTable:
    """Immutable map (source SenderCompID, MsgType) -> routes; built by :meth:`build`.

    Never mutated after build: the gateway swaps the whole table on reload (docs/architecture.md), so a
    reader holding the old reference sees a consistent old table."""

    __slots__ = ("_table", "_targets_of", "_front_end", "_groups", "_sessions", "version")

    # Set once in __init__ (through object.__setattr__: __setattr__ refuses every assignment).
    _table: dict[str, dict[bytes, _Entry]]
    _targets_of: dict[str, frozenset[str]]
    _front_end: dict[str, str]
    _groups: tuple[GroupDef, ...]
    _sessions: dict[str, SessionDef]
    version: str

    def __init__(self, table: dict[str, dict[bytes, _Entry]], targets_of: dict[str, frozenset[str]],
                 front_end: dict[str, str], groups: tuple[GroupDef, ...],
                 sessions: Mapping[str, SessionDef], version: str) -> None:
        for name, value in (("_table", table), ("_targets_of", targets_of),
                            ("_front_end", front_end), ("_groups", groups),
                            ("_sessions", dict(sessions)), ("version", version)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("RoutingTable is immutable; build a new one")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("RoutingTable is immutable; build a new one")

    @classmethod
    def build(cls, config_groups: Sequence[GroupDef],
              sessions: Mapping[str, SessionDef]) -> RoutingTable:
        """Precompute everything per (source, MsgType). Raises ConfigError when a target's
        groups disagree on front_end or a group names a session that is not configured.

        A ``fix`` copy keeps its MsgType, so a target is routed only the types its own data
        dictionary defines (an iLink OrderMassActionReport, 35=BZ, is not a FIX 4.4 message:
        a FIX 4.4 target's ``fix`` group does not copy it; its ``ilink2`` envelope would)."""
        groups = tuple(config_groups)
        _check_sessions(groups, sessions)
        _check_front_ends(groups)
        carries = _carried_types(sessions)
        interned: dict[tuple[Check, ...], FieldPredicate | None] = {}
        preds = []
        for g in groups:                # equal filters share one predicate (evaluated once)
            checks = compile_checks(g.filters)
            if checks not in interned:
                interned[checks] = compile_fields(g.filters)
            preds.append(interned[checks])
        # (source, mt, category) -> [(route, predicate)] in config order
        raw: dict[tuple[str, bytes, str], list[tuple[Route, FieldPredicate | None]]] = {}
        for g, pred in zip(groups, preds):
            key = group_key(g)
            for mt in _ALL_TYPES:
                for cat in _categories_of_type(mt) & g.filters.categories:
                    for source in g.sources:
                        items = raw.setdefault((source, mt, cat), [])
                        items.extend((Route(t, g.front_end, key), pred) for t in g.targets
                                     if g.front_end != FrontEnd.FIX or mt in carries(t))
        table: dict[str, dict[bytes, _Entry]] = {}
        for (source, mt, cat), items in raw.items():
            by_type = table.setdefault(source, {})
            classify = _BY_FIELDS.get(mt)
            if classify is None:
                by_type[mt] = _Candidates(items, cat)
            else:
                entry = by_type.get(mt)
                if not isinstance(entry, _ByCategory):  # None: a MsgType has one classifier
                    entry = by_type[mt] = _ByCategory(classify, {})
                entry.by_category[cat] = _Candidates(items, cat)
        targets_of: dict[str, set[str]] = {}
        front_end: dict[str, str] = {}
        for g in groups:
            for source in g.sources:
                targets_of.setdefault(source, set()).update(g.targets)
            for t in g.targets:
                front_end.setdefault(t, g.front_end)
        return cls(table, {s: frozenset(t) for s, t in targets_of.items()}, front_end, groups,
                   sessions, _version(groups, sessions))

    def route(self, source: str, msg: RawMessage) -> tuple[Route, ...]:
        """The copies to make of ``msg`` from ``source``: one Route per target, named by the
        first matching group in config order. ``()`` when nothing copies it."""
        return self.classify_route(source, msg)[1]

    def classify_route(self, source: str, msg: RawMessage) -> tuple[str | None, tuple[Route, ...]]:
        """``(category(msg), route(source, msg))``, classifying the message once (the fan-out
        counts messages by category and routes them)."""
        by_type = self._table.get(source)
        entry = None if by_type is None else by_type.get(msg.msg_type)
        if entry is None:
            return category(msg), ()
        return entry.classify_select(msg)

    def targets_of(self, source: str) -> frozenset[str]:
        """Every target some message of ``source`` may reach (any type, before field filters)."""
        return self._targets_of.get(source, frozenset())

    def sources(self) -> frozenset[str]:
        """Sources named by at least one group."""
        return frozenset(self._targets_of)

    def targets(self) -> frozenset[str]:
        return frozenset(self._front_end)

    def front_end_of(self, target: str) -> str | None:
        """The copy format of ``target`` (one per target, checked at build); None when no
        group reaches it. The resend path uses it when rebuilding copies from the journal."""
        return self._front_end.get(target)

    @property
    def groups(self) -> tuple[GroupDef, ...]:
        return self._groups

    def describe(self) -> str:
        """Human summary for ``dcgateway groups show`` and the reload log line."""
        lines = [f"routing table {self.version}: {len(self._groups)} group(s), "
                 f"{len(self._targets_of)} source(s), {len(self._front_end)} target(s)"]
        for g in self._groups:
            targets = ", ".join(f"{t} ({self._sessions[t].begin_string})" for t in g.targets)
            lines.append(f"  group {group_key(g)} front_end={g.front_end} "
                         f"{describe_filters(g.filters)}")
            lines.append(f"    sources: {', '.join(g.sources)}")
            lines.append(f"    targets: {targets}")
        for source in sorted(self._table):
            types = sorted(mt.decode() for mt in self._table[source])
            lines.append(f"  source {source}: MsgTypes {','.join(types)} -> "
                         f"{', '.join(sorted(self._targets_of[source]))}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"RoutingTable(version={self.version!r}, groups={len(self._groups)}, "
                f"sources={len(self._targets_of)})")
