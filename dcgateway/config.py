"""gateway.yaml and groups.yaml -> frozen dataclasses, with every problem reported at once.

Why the YAML is read as a node tree and not with ``yaml.safe_load``: a trading configuration must
say *where* it is wrong (``config/gateway.yaml:14: sessions[2].role: 'sorce' is not allowed;
expected one of source, target``), and a node keeps its start mark, so each path knows its line.
Reading nodes also sidesteps YAML 1.1's implicit typing where it would hurt: a string field takes
the scalar's text as written, so an account ``NO``, a symbol ``ON`` or an account ``00123`` stay
the strings the operator typed instead of turning into ``False`` or ``123``, and an unquoted
``16:00`` is not read as the base-60 number 960.

Rules enforced here (see /work/shared/ILINK.md and DESIGN.md):

* unknown keys are errors (with the allowed keys listed): a typo must not pass silently;
* relative paths resolve against the folder of the file that names them;
* an ``ilink2`` SenderCompID is 7 characters: Session ID (3) + Firm ID (3) + P/B/U/N, and its
  keys are issued per Session ID (key scope = first 3 characters); a ``fix`` session's key scope is
  the whole CompID; ``key_scope: N`` overrides with the first N characters;
* a drop copy target of the ``ilink2`` (CGW-style) kind takes at most 1000 source sender comps,
  one of the ``fix`` (MSGW-style) kind at most 5000, counted over every group that reaches it.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import ConfigError

__all__ = [
    "CATEGORIES", "FILTER_KEYS", "FRONT_ENDS", "PROFILES", "ROLES", "BEGIN_STRINGS",
    "SIDE_NAMES", "MAX_SOURCES_PER_TARGET", "HostPort", "LocalTime", "WeekStart",
    "KeystoreSettings", "SmtpSettings", "TlsSettings", "GatewaySettings", "Administrator",
    "Entity", "SessionDef", "IncludeExclude", "Filters", "GroupDef", "GatewayConfig",
    "load_config", "load_groups", "groups_from_data", "group_to_data", "dump_groups",
    "write_groups_atomic",
]

ROLES = ("source", "target")
PROFILES = ("ilink2", "fix")
BEGIN_STRINGS = ("FIX.4.2", "FIX.4.4")
DEFAULT_BEGIN_STRING = {"ilink2": "FIX.4.2", "fix": "FIX.4.4"}
FRONT_ENDS = ("ilink2", "fix")
CATEGORIES = ("execution", "acknowledgment", "order", "mass_action", "reject")
FILTER_KEYS = ("categories", "account", "symbol", "security_exchange", "side", "sender_sub_id")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
#: Side (54) names accepted in filters -> FIX codes (FIX 4.4 Vol. 6 "Side").
SIDE_NAMES = {"buy": "1", "sell": "2", "buy_minus": "3", "sell_plus": "4", "sell_short": "5",
              "sell_short_exempt": "6", "undisclosed": "7", "cross": "8", "cross_short": "9"}
SIDE_CODES = tuple("123456789ABCDEFG")
#: ILINK.md: a CGW-style target takes up to 1000 source sender comps, an MSGW-style up to 5000.
MAX_SOURCES_PER_TARGET = {"ilink2": 1000, "fix": 5000}
ILINK_KEY_SCOPE = 3


# ---------------------------------------------------------------------------------------------
# The dataclasses
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class LocalTime:
    """A wall-clock time in a zone (``market_close``)."""
    time: datetime.time
    tz: ZoneInfo

    def on(self, day: datetime.date) -> datetime.datetime:
        """This time on ``day``, as an aware datetime in the zone."""
        return datetime.datetime.combine(day, self.time, tzinfo=self.tz)


@dataclass(frozen=True, slots=True)
class WeekStart:
    """When the week (and every sequence) starts: ``day`` 0=monday..6=sunday."""
    day: int
    time: datetime.time
    tz: ZoneInfo


@dataclass(frozen=True, slots=True)
class KeystoreSettings:
    path: Path
    master_key_file: Path


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int
    sender: str


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """TLS on the FIX listener (optional; files must exist when the config is loaded)."""
    cert_file: Path
    key_file: Path
    ca_file: Path | None = None
    require_client_cert: bool = False


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    comp_id: str
    listen: HostPort
    metrics: HostPort
    data_dir: Path
    market_close: LocalTime
    week_start: WeekStart
    keystore: KeystoreSettings
    logon_timeout_s: float = 60.0
    sending_time_tolerance_s: float = 30.0
    smtp: SmtpSettings | None = None
    max_message_size: int = 65536
    heartbeat_min_s: int = 5
    heartbeat_max_s: int = 60
    write_buffer_high: int = 1_048_576
    write_buffer_low: int = 262_144
    max_connections: int = 1024
    tls: TlsSettings | None = None
    #: "Environment" column of downloaded key files; None = the key manager's default.
    environment: str | None = None


@dataclass(frozen=True, slots=True)
class Administrator:
    name: str
    email: str


@dataclass(frozen=True, slots=True)
class Entity:
    name: str
    administrators: tuple[Administrator, ...]

    def administers(self, name: str) -> bool:
        return any(a.name == name for a in self.administrators)


@dataclass(frozen=True, slots=True)
class SessionDef:
    comp_id: str
    role: str            # "source" | "target"
    entity: str
    profile: str         # "ilink2" | "fix"
    begin_string: str    # "FIX.4.2" | "FIX.4.4"
    key_scope: str       # the Session ID its keys are issued for (ILINK.md "Logon rules")


@dataclass(frozen=True, slots=True)
class IncludeExclude:
    """``include`` None = no include condition; a value must be in ``include`` (when given) and
    not in ``exclude``."""
    include: frozenset[str] | None
    exclude: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Filters:
    categories: frozenset[str]
    account: IncludeExclude | None = None
    symbol: IncludeExclude | None = None
    security_exchange: IncludeExclude | None = None
    side: IncludeExclude | None = None            # FIX 54 codes: '1' buy, '2' sell, ...
    sender_sub_id: IncludeExclude | None = None


@dataclass(frozen=True, slots=True)
class GroupDef:
    entity: str
    name: str
    front_end: str       # "ilink2" | "fix"
    filters: Filters
    sources: tuple[str, ...]
    targets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    path: Path
    gateway: GatewaySettings
    entities: tuple[Entity, ...]
    sessions: tuple[SessionDef, ...]
    groups: tuple[GroupDef, ...]
    groups_file: Path
    _sessions: Mapping[str, SessionDef] = field(init=False, repr=False, compare=False)
    _entities: Mapping[str, Entity] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_sessions",
                           MappingProxyType({s.comp_id: s for s in self.sessions}))
        object.__setattr__(self, "_entities",
                           MappingProxyType({e.name: e for e in self.entities}))

    def session(self, comp_id: str) -> SessionDef | None:
        return self._sessions.get(comp_id)

    def entity(self, name: str) -> Entity | None:
        return self._entities.get(name)

    def with_groups(self, groups: Iterable[GroupDef]) -> GatewayConfig:
        """The same configuration with other groups (after a SIGHUP reload)."""
        return dataclasses.replace(self, groups=tuple(groups))


# ---------------------------------------------------------------------------------------------
# Node-tree reading: every problem gets file, line and path
# ---------------------------------------------------------------------------------------------

_BAD: Any = object()        # a value already reported as a problem
_REQUIRED: Any = object()   # field default meaning "must be given"
_NULL_TAG = "tag:yaml.org,2002:null"
_COMP_ID_RE = re.compile(r"[!-<>-~]{1,64}")           # printable ASCII, no space, no '='
_ILINK_COMP_ID_RE = re.compile(r"[A-Z0-9]{6}[PBUN]")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+")
_HOST_RE = re.compile(r"[^\s/]{1,255}")
_VALUE_RE = re.compile(r"[^\x00-\x1f\x7f]{1,128}")
_HHMM_RE = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
_COMP_ID_EXPECTED = "1-64 printable ASCII characters, no spaces, no '='"
_NAME_EXPECTED = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"


class _Loader(yaml.SafeLoader):
    """Used only to compose the node tree; start marks give the line numbers."""


class _Ctx:
    """Problems of one file, formatted the one way operators see them."""

    def __init__(self, display: str | None, loader: _Loader | None) -> None:
        self.display = display
        self.loader = loader or _Loader("")
        self._found: list[tuple[int, str]] = []

    def problem(self, line: int, path: str, what: str, expected: str) -> None:
        where = f"{self.display}:{line}: " if self.display is not None else ""
        self._found.append((line, f"{where}{path}: {what}; expected {expected}"))

    @property
    def problems(self) -> list[str]:
        """In file order (a stable sort keeps same-line problems in the order found)."""
        return [text for _, text in sorted(self._found, key=lambda found: found[0])]


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _is_null(node: Node | None) -> bool:
    return node is None or (isinstance(node, ScalarNode) and node.tag == _NULL_TAG)


def _describe(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if _is_null(node):
        return "no value"
    text = node.value if len(node.value) <= 40 else node.value[:37] + "..."
    return repr(text)


def _choices(items: Iterable[str], limit: int = 12) -> str:
    items = list(items)
    if not items:
        return "(none configured)"
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _parser(expected: str) -> Callable[[Callable], Callable]:
    """Tags a parse function with what it expects (used when its key is missing)."""
    def deco(fn: Callable) -> Callable:
        fn.expected = expected
        return fn
    return deco


class _Map:
    """A mapping node with plain-text keys, each given once."""

    def __init__(self, ctx: _Ctx, node: MappingNode, path: str) -> None:
        self.ctx, self.path, self.line = ctx, path, _line(node)
        self.nodes: dict[str, Node] = {}
        self.key_lines: dict[str, int] = {}
        try:
            ctx.loader.flatten_mapping(node)   # YAML merge keys (<<: *anchor)
        except yaml.YAMLError as exc:
            ctx.problem(self.line, path or "(top)", f"bad merge key: {exc.problem}",
                        "<< followed by a mapping or a list of mappings")
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or _is_null(key_node):
                ctx.problem(_line(key_node), path or "(top)", f"{_describe(key_node)} as a key",
                            "plain text keys")
            elif key_node.value in self.nodes:
                ctx.problem(_line(key_node), _join(path, key_node.value),
                            f"duplicate key (first on line {self.key_lines[key_node.value]})",
                            "each key once")
            else:
                self.nodes[key_node.value] = value_node
                self.key_lines[key_node.value] = _line(key_node)

    @classmethod
    def of(cls, ctx: _Ctx, node: Node, path: str, expected: str) -> _Map | None:
        if not isinstance(node, MappingNode):
            ctx.problem(_line(node), path or "(top)", f"{_describe(node)} given", expected)
            return None
        return cls(ctx, node, path)

    def allow(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        for key, line in self.key_lines.items():
            if key not in keys:
                close = difflib.get_close_matches(key, keys, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                self.ctx.problem(line, _join(self.path, key), f"unknown key '{key}'{hint}",
                                 "one of " + ", ".join(keys))

    def get(self, key: str, parse: Callable, default: Any = _REQUIRED) -> Any:
        node = self.nodes.get(key)
        path = _join(self.path, key)
        if _is_null(node):
            if default is _REQUIRED:
                line = self.line if node is None else _line(node)
                self.ctx.problem(line, path, "missing" if node is None else "no value",
                                 parse.expected)
                return _BAD
            return default
        return parse(self.ctx, node, path)

    def fields(self, spec: Mapping[str, tuple[Callable, Any]]) -> dict[str, Any] | None:
        """Every field of ``spec`` (key -> (parser, default)); None when any is bad."""
        self.allow(spec)
        values = {key: self.get(key, parse, default) for key, (parse, default) in spec.items()}
        return None if any(v is _BAD for v in values.values()) else values


def _scalar(ctx: _Ctx, node: Node, path: str, expected: str) -> str:
    if not isinstance(node, ScalarNode) or _is_null(node):
        ctx.problem(_line(node), path, f"{_describe(node)} given", expected)
        return _BAD
    return node.value


def _text(pattern: re.Pattern[str], expected: str) -> Callable:
    @_parser(expected)
    def parse(ctx: _Ctx, node: Node, path: str) -> str:
        text = _scalar(ctx, node, path, expected)
        if text is not _BAD and not pattern.fullmatch(text):
            ctx.problem(_line(node), path, f"{text!r} is not valid", expected)
            return _BAD
        return text
    return parse


def _choice(choices: Sequence[str], fold: bool = False, unknown: str = "{!r} is not allowed"
            ) -> Callable:
    expected = "one of " + _choices(choices)

    @_parser(expected)
    def parse(ctx: _Ctx, node: Node, path: str) -> str:
        text = _scalar(ctx, node, path, expected)
        if text is _BAD:
            return _BAD
        if (text.lower() if fold else text) not in choices:
            ctx.problem(_line(node), path, unknown.format(text), expected)
            return _BAD
        return text.lower() if fold else text
    return parse


def _number(lo: float, hi: float, *, integer: bool) -> Callable:
    kind = "a whole number" if integer else "a number"
    expected = f"{kind} from {lo:g} to {hi:g}"

    @_parser(expected)
    def parse(ctx: _Ctx, node: Node, path: str) -> float | int:
        text = _scalar(ctx, node, path, expected)
        if text is _BAD:
            return _BAD
        try:
            value = int(text.replace("_", ""), 10) if integer else float(text.replace("_", ""))
        except ValueError:
            ctx.problem(_line(node), path, f"{text!r} is not {kind}", expected)
            return _BAD
        if not math.isfinite(value) or not lo <= value <= hi:
            ctx.problem(_line(node), path, f"{text!r} is out of range", expected)
            return _BAD
        return value
    return parse


@_parser("true or false")
def _bool(ctx: _Ctx, node: Node, path: str) -> bool:
    if isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:bool":
        return bool(ctx.loader.construct_yaml_bool(node))
    ctx.problem(_line(node), path, f"{_describe(node)} given", "true or false")
    return _BAD


@_parser('a quoted 24-hour time "HH:MM"')
def _hhmm(ctx: _Ctx, node: Node, path: str) -> datetime.time:
    text = _scalar(ctx, node, path, _hhmm.expected)
    match = _HHMM_RE.fullmatch(text) if text is not _BAD else None
    if match is None:
        if text is not _BAD:
            ctx.problem(_line(node), path, f"{text!r} is not a time", _hhmm.expected)
        return _BAD
    return datetime.time(int(match[1]), int(match[2]))


@_parser("an IANA time zone name such as America/Chicago")
def _tz(ctx: _Ctx, node: Node, path: str) -> ZoneInfo:
    text = _scalar(ctx, node, path, _tz.expected)
    if text is _BAD:
        return _BAD
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        close = difflib.get_close_matches(text, sorted(available_timezones()), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        ctx.problem(_line(node), path, f"{text!r} is not a known time zone{hint}", _tz.expected)
        return _BAD


def _path(base: Path, must_exist: bool = False) -> Callable:
    expected = "a file path (relative to this file's folder)"

    @_parser(expected)
    def parse(ctx: _Ctx, node: Node, path: str) -> Path:
        text = _scalar(ctx, node, path, expected)
        if text is _BAD:
            return _BAD
        resolved = Path(os.path.abspath(base / os.path.expanduser(text)))
        if must_exist and not resolved.is_file():
            ctx.problem(_line(node), path, f"{text!r} does not exist ({resolved})",
                        "an existing file")
            return _BAD
        return resolved
    return parse


def _record(spec: Mapping[str, tuple[Callable, Any]], build: Callable, expected: str) -> Callable:
    """A parser for a mapping with fixed keys, built into ``build(**fields)``."""
    @_parser(expected)
    def parse(ctx: _Ctx, node: Node, path: str) -> Any:
        m = _Map.of(ctx, node, path, expected)
        values = m.fields(spec) if m is not None else None
        return _BAD if values is None else build(**values)
    return parse


def _items(ctx: _Ctx, node: Node, path: str, expected: str) -> list[tuple[Node, str]] | Any:
    if not isinstance(node, SequenceNode):
        what = (f"{_describe(node)} is a single value" if isinstance(node, ScalarNode)
                else f"{_describe(node)} given")
        ctx.problem(_line(node), path, what, expected)
        return _BAD
    return [(item, _join(path, i)) for i, item in enumerate(node.value)]


def _list(item: Callable, expected: str, non_empty: bool = True) -> Callable:
    @_parser(expected)
    def parse(ctx: _Ctx, node: Node, path: str) -> tuple:
        items = _items(ctx, node, path, expected)
        if items is _BAD:
            return _BAD
        if non_empty and not items:
            ctx.problem(_line(node), path, "empty list", expected)
            return _BAD
        values = [item(ctx, n, p) for n, p in items]
        return _BAD if any(v is _BAD for v in values) else tuple(values)
    return parse


# ---------------------------------------------------------------------------------------------
# gateway.yaml
# ---------------------------------------------------------------------------------------------

_comp_id = _text(_COMP_ID_RE, _COMP_ID_EXPECTED)
_name = _text(_NAME_RE, _NAME_EXPECTED)
_port = _number(0, 65535, integer=True)
_host_port = _record({"host": (_text(_HOST_RE, "a host name or address"), _REQUIRED),
                      "port": (_port, _REQUIRED)}, HostPort, "a mapping {host: ..., port: ...}")
_local_time = _record({"time": (_hhmm, _REQUIRED), "tz": (_tz, _REQUIRED)}, LocalTime,
                      'a mapping {time: "HH:MM", tz: ZONE}')


def _weekday(ctx: _Ctx, node: Node, path: str) -> int:
    day = _choice(WEEKDAYS, fold=True)(ctx, node, path)
    return _BAD if day is _BAD else WEEKDAYS.index(day)


_weekday.expected = "one of " + ", ".join(WEEKDAYS)
_week_start = _record({"day": (_weekday, _REQUIRED), "time": (_hhmm, _REQUIRED),
                       "tz": (_tz, _REQUIRED)}, WeekStart,
                      'a mapping {day: WEEKDAY, time: "HH:MM", tz: ZONE}')
_smtp = _record({"host": (_text(_HOST_RE, "a host name or address"), _REQUIRED),
                 "port": (_port, _REQUIRED),
                 "sender": (_text(_EMAIL_RE, "an email address"), _REQUIRED)},
                SmtpSettings, "a mapping {host: ..., port: ..., sender: ...}")


def _gateway_spec(base: Path) -> dict[str, tuple[Callable, Any]]:
    return {
        "comp_id": (_comp_id, _REQUIRED),
        "listen": (_host_port, _REQUIRED),
        "metrics": (_host_port, _REQUIRED),
        "data_dir": (_path(base), _REQUIRED),
        "market_close": (_local_time, _REQUIRED),
        "week_start": (_week_start, _REQUIRED),
        "keystore": (_record({"path": (_path(base), _REQUIRED),
                              "master_key_file": (_path(base), _REQUIRED)}, KeystoreSettings,
                             "a mapping {path: ..., master_key_file: ...}"), None),
        "logon_timeout_s": (_number(0.001, 3600, integer=False), 60.0),
        "sending_time_tolerance_s": (_number(0.001, 86400, integer=False), 30.0),
        "smtp": (_smtp, None),
        "max_message_size": (_number(256, 16 * 1024 * 1024, integer=True), 65536),
        "heartbeat_min_s": (_number(1, 3600, integer=True), 5),
        "heartbeat_max_s": (_number(1, 3600, integer=True), 60),
        "write_buffer_high": (_number(1024, 1 << 30, integer=True), 1_048_576),
        "write_buffer_low": (_number(0, 1 << 30, integer=True), 262_144),
        "max_connections": (_number(1, 1_000_000, integer=True), 1024),
        "tls": (_record({"cert_file": (_path(base, True), _REQUIRED),
                         "key_file": (_path(base, True), _REQUIRED),
                         "ca_file": (_path(base, True), None),
                         "require_client_cert": (_bool, False)}, TlsSettings,
                        "a mapping {cert_file: ..., key_file: ..., [ca_file, "
                        "require_client_cert]}"), None),
        "environment": (_text(_NAME_RE, _NAME_EXPECTED), None),
    }


#: Cross-field rules: (field, other field, holds(value, other), what is wrong, expected).
_GATEWAY_RULES = (
    ("heartbeat_min_s", "heartbeat_max_s", lambda a, b: a <= b, "is above heartbeat_max_s",
     "heartbeat_min_s <= heartbeat_max_s"),
    ("write_buffer_low", "write_buffer_high", lambda a, b: a < b,
     "is not below write_buffer_high", "write_buffer_low < write_buffer_high"),
    ("metrics", "listen", lambda a, b: a != b or a.port == 0, "is the listen address",
     "a different port for metrics"),
)


def _parse_gateway(ctx: _Ctx, node: Node, base: Path) -> GatewaySettings | None:
    m = _Map.of(ctx, node, "gateway", "a mapping of gateway settings")
    if m is None:
        return None
    spec = _gateway_spec(base)
    m.allow(spec)
    values = {key: m.get(key, parse, default) for key, (parse, default) in spec.items()}
    ok = all(v is not _BAD for v in values.values())
    for key, other, holds, what, expected in _GATEWAY_RULES:
        a, b = values[key], values[other]
        if a is not _BAD and b is not _BAD and not holds(a, b):
            ctx.problem(m.key_lines.get(key, m.line), _join("gateway", key),
                        f"{a} {what} {b}", expected)
            ok = False
    if not ok:
        return None
    if values["keystore"] is None:
        values["keystore"] = KeystoreSettings(values["data_dir"] / "keys.db",
                                              values["data_dir"] / "master.key")
    return GatewaySettings(**values)


_administrator = _record({"name": (_name, _REQUIRED),
                          "email": (_text(_EMAIL_RE, "an email address"), _REQUIRED)},
                         Administrator, "a mapping {name: ..., email: ...}")


_ENTITIES_EXPECTED = "a list of {name: ..., administrators: [{name: ..., email: ...}]}"
_SESSIONS_EXPECTED = "a list of {comp_id, role, entity, profile, begin_string}"
_ENTITY_SPEC = {"name": (_name, _REQUIRED), "administrators": (
    _list(_administrator, "a non-empty list of {name: ..., email: ...}"), _REQUIRED)}


def _parse_entities(ctx: _Ctx, node: Node) -> tuple[tuple[Entity, ...], set[str] | None]:
    """The valid entities, and every entity name given (valid or not, so that sessions naming
    an entity with a problem of its own do not add errors); names None: the list is unreadable."""
    items = _items(ctx, node, "entities", _ENTITIES_EXPECTED)
    if items is _BAD:
        return (), None
    entities: list[Entity] = []
    names: dict[str, int] = {}
    for item, path in items:
        m = _Map.of(ctx, item, path, "a mapping {name: ..., administrators: [...]}")
        values = m.fields(_ENTITY_SPEC) if m is not None else None
        if m is not None and isinstance(m.nodes.get("name"), ScalarNode):
            name = m.nodes["name"].value
            if name in names:
                ctx.problem(_line(m.nodes["name"]), _join(path, "name"), f"entity {name!r} "
                            f"already defined on line {names[name]}", "each entity once")
                continue
            names[name] = _line(m.nodes["name"])
        if values is None:
            continue
        admins = [a.name for a in values["administrators"]]
        dup = sorted({a for a in admins if admins.count(a) > 1})
        if dup:
            ctx.problem(m.key_lines["administrators"], _join(path, "administrators"),
                        f"administrator {dup[0]!r} listed twice", "each administrator once")
            continue
        entities.append(Entity(**values))
    return tuple(entities), set(names)


def _session_spec(entity_names: set[str] | None) -> dict[str, tuple[Callable, Any]]:
    entity = (_choice(sorted(entity_names), unknown="unknown entity {!r}")
              if entity_names is not None else _name)
    return {
        "comp_id": (_comp_id, _REQUIRED),
        "role": (_choice(ROLES), _REQUIRED),
        "entity": (entity, _REQUIRED),
        "profile": (_choice(PROFILES), _REQUIRED),
        "begin_string": (_choice(BEGIN_STRINGS), None),
        "key_scope": (_number(1, 64, integer=True), None),
    }


def _check_session(ctx: _Ctx, m: _Map, v: dict[str, Any]) -> SessionDef | None:
    comp_id, profile = v["comp_id"], v["profile"]
    ok = True
    line = m.key_lines.get
    if profile == "ilink2" and not _ILINK_COMP_ID_RE.fullmatch(comp_id):
        ctx.problem(line("comp_id", m.line), _join(m.path, "comp_id"),
                    f"{comp_id!r} is not an iLink SenderCompID ({len(comp_id)} characters)",
                    "7 characters for profile ilink2: Session ID (3) + Firm ID (3) + "
                    "fault-tolerance letter P, B, U or N, e.g. ABC123N")
        ok = False
    begin = v["begin_string"] or DEFAULT_BEGIN_STRING[profile]
    if profile == "ilink2" and begin != "FIX.4.2":
        ctx.problem(line("begin_string", m.line), _join(m.path, "begin_string"),
                    f"{begin!r} with profile ilink2", "FIX.4.2 (iLink 2 is FIX 4.2)")
        ok = False
    scope = v["key_scope"] or (ILINK_KEY_SCOPE if profile == "ilink2" else len(comp_id))
    if v["key_scope"] is not None and scope > len(comp_id):
        ctx.problem(line("key_scope", m.line), _join(m.path, "key_scope"),
                    f"{scope} is longer than comp_id {comp_id!r}",
                    f"a number of leading characters from 1 to {len(comp_id)}")
        ok = False
    if not ok:
        return None
    return SessionDef(comp_id=comp_id, role=v["role"], entity=v["entity"], profile=profile,
                      begin_string=begin, key_scope=comp_id[:scope])


def _parse_sessions(ctx: _Ctx, node: Node, entity_names: set[str] | None,
                    gateway_comp_id: str | None
                    ) -> tuple[tuple[SessionDef, ...], set[str] | None]:
    """The valid sessions, and every comp_id given (valid or not: no cascading errors in
    groups); comp_ids None: the list is unreadable."""
    items = _items(ctx, node, "sessions", _SESSIONS_EXPECTED)
    if items is _BAD:
        return (), None
    spec = _session_spec(entity_names)
    sessions: list[SessionDef] = []
    seen: dict[str, str] = {}          # comp_id -> path of first definition
    scopes: dict[str, tuple[str, str]] = {}    # key scope -> (entity, path)
    for item, path in items:
        m = _Map.of(ctx, item, path, "a mapping {comp_id, role, entity, profile, ...}")
        if m is None:
            continue
        values = m.fields(spec)
        comp_node = m.nodes.get("comp_id")
        comp_id = comp_node.value if isinstance(comp_node, ScalarNode) else None
        if comp_id is not None and comp_id in seen:
            ctx.problem(_line(comp_node), _join(path, "comp_id"), f"{comp_id!r} is already "
                        f"used by {seen[comp_id]}", "each comp_id once")
            continue
        if comp_id is not None:
            seen[comp_id] = path
        if comp_id is not None and comp_id == gateway_comp_id:
            ctx.problem(_line(comp_node), _join(path, "comp_id"), f"{comp_id!r} is the "
                        "gateway's own comp_id", "a comp_id other than gateway.comp_id")
            continue
        session = _check_session(ctx, m, values) if values is not None else None
        if session is None:
            continue
        other = scopes.setdefault(session.key_scope, (session.entity, path))
        if other[0] != session.entity:
            ctx.problem(m.key_lines.get("comp_id", m.line), _join(path, "comp_id"),
                        f"key scope {session.key_scope!r} is shared with {other[1]} of entity "
                        f"{other[0]}", "sessions sharing a key scope (Session ID) to belong "
                        "to one entity")
            continue
        sessions.append(session)
    return tuple(sessions), set(seen)


# ---------------------------------------------------------------------------------------------
# groups.yaml
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Refs:
    """What groups may refer to. ``known``/``entity_names`` None: that section of gateway.yaml
    was unreadable, so references to it are not checked (its problem is already reported)."""
    sessions: Mapping[str, SessionDef]
    known: frozenset[str] | None
    entity_names: frozenset[str] | None


_filter_value = _text(_VALUE_RE, "a value of 1-128 characters, no control characters")


def _side_value(ctx: _Ctx, node: Node, path: str) -> str:
    text = _scalar(ctx, node, path, _side_value.expected)
    if text is _BAD:
        return _BAD
    code = SIDE_NAMES.get(text.lower(), text)
    if code not in SIDE_CODES:
        ctx.problem(_line(node), path, f"{text!r} is not a Side (54) value", _side_value.expected)
        return _BAD
    return code


_side_value.expected = ("a FIX Side (54) code 1-9, A-G, or one of " + ", ".join(SIDE_NAMES))


def _include_exclude(item: Callable) -> Callable:
    expected = "{include: [...]} and/or {exclude: [...]}, or a list (= include)"
    values = _list(item, "a non-empty list of values")

    @_parser(expected)
    def parse(ctx: _Ctx, node: Node, path: str) -> IncludeExclude:
        if isinstance(node, SequenceNode):
            got = values(ctx, node, path)
            return _BAD if got is _BAD else IncludeExclude(frozenset(got))
        m = _Map.of(ctx, node, path, expected)
        v = m.fields({"include": (values, None), "exclude": (values, ())}) if m else None
        if v is None:
            return _BAD
        if v["include"] is None and not v["exclude"]:
            ctx.problem(m.line, path, "no condition given", expected)
            return _BAD
        include = None if v["include"] is None else frozenset(v["include"])
        return IncludeExclude(include, frozenset(v["exclude"]))
    return parse


_filters = _record(
    {"categories": (_list(_choice(CATEGORIES), "a non-empty list of categories: "
                          + ", ".join(CATEGORIES)), _REQUIRED),
     "account": (_include_exclude(_filter_value), None),
     "symbol": (_include_exclude(_filter_value), None),
     "security_exchange": (_include_exclude(_filter_value), None),
     "side": (_include_exclude(_side_value), None),
     "sender_sub_id": (_include_exclude(_filter_value), None)},
    lambda categories, **rest: Filters(frozenset(categories), **rest),
    "a mapping with categories: [...] and optional " + ", ".join(FILTER_KEYS[1:]))


def _session_refs(refs: _Refs, role: str, entity: str | None) -> Callable:
    eligible = [s.comp_id for s in refs.sessions.values()
                if s.role == role and (entity is None or s.entity == entity)]
    whose = f" of entity {entity}" if entity is not None else ""
    expected = f"a non-empty list of {role} sessions{whose}: {_choices(eligible)}"

    def item(ctx: _Ctx, node: Node, path: str) -> str:
        comp_id = _scalar(ctx, node, path, f"the comp_id of a {role} session")
        if comp_id is _BAD or refs.known is None:
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
        ctx.problem(_line(node), path, what, f"a {role} session{whose}: {_choices(eligible)}")
        return _BAD

    @_parser(expected)
    def parse(ctx: _Ctx, node: Node, path: str) -> tuple[str, ...]:
        got = _list(item, expected)(ctx, node, path)
        if got is _BAD:
            return _BAD
        for i, comp_id in enumerate(got):
            if comp_id in got[:i]:
                ctx.problem(_line(node.value[i]), _join(path, i), f"{comp_id!r} listed twice",
                            "each session once")
                return _BAD
        return got
    return parse


_GROUP_KEYS = ("entity", "name", "front_end", "filters", "sources", "targets")


def _parse_group(ctx: _Ctx, node: Node, path: str, refs: _Refs) -> tuple[GroupDef, _Map] | None:
    m = _Map.of(ctx, node, path, "a mapping {entity, name, front_end, filters, sources, targets}")
    if m is None:
        return None
    m.allow(_GROUP_KEYS)
    entity_parser = (_choice(sorted(refs.entity_names), unknown="unknown entity {!r}")
                     if refs.entity_names is not None else _name)
    v = {"entity": m.get("entity", entity_parser), "name": m.get("name", _name),
         "front_end": m.get("front_end", _choice(FRONT_ENDS)),
         "filters": m.get("filters", _filters),
         "sources": m.get("sources", _session_refs(refs, "source", None))}
    entity = None if v["entity"] is _BAD else v["entity"]
    v["targets"] = m.get("targets", _session_refs(refs, "target", entity))
    if any(x is _BAD for x in v.values()):
        return None
    return GroupDef(**v), m


def _check_groups(ctx: _Ctx, parsed: list[tuple[GroupDef, _Map]], refs: _Refs) -> bool:
    """Rules across groups: names unique per entity; source sender comps per target capped."""
    ok = True
    names: dict[tuple[str, str], str] = {}
    reach: dict[str, set[str]] = {}
    for group, m in parsed:
        first = names.setdefault((group.entity, group.name), m.path)
        if first != m.path:
            ctx.problem(m.key_lines["name"], _join(m.path, "name"), f"duplicate group name "
                        f"{group.name!r} in entity {group.entity} (also {first})",
                        "group names unique within an entity")
            ok = False
        for target in group.targets:
            sources = reach.setdefault(target, set())
            before = len(sources)
            sources.update(group.sources)
            session = refs.sessions.get(target)
            limit = MAX_SOURCES_PER_TARGET[session.profile] if session else None
            if limit is not None and len(sources) > limit >= before:
                across = "" if len(group.sources) == len(sources) else " (over all its groups)"
                ctx.problem(m.key_lines["sources"], _join(m.path, "sources"),
                            f"{len(sources)} source sender comps reach {session.profile} target "
                            f"{target}{across}", f"at most {limit} for an {session.profile} "
                            "target")
                ok = False
    return ok


def _parse_groups_root(ctx: _Ctx, root: Node | None, refs: _Refs) -> tuple[GroupDef, ...]:
    if _is_null(root):
        return ()
    m = _Map.of(ctx, root, "", "a mapping with the key groups")
    if m is None:
        return ()
    m.allow(("groups",))
    node = m.nodes.get("groups")
    if _is_null(node):
        return ()
    items = _items(ctx, node, "groups", "a list of groups")
    if items is _BAD:
        return ()
    parsed = [g for g in (_parse_group(ctx, n, p, refs) for n, p in items) if g is not None]
    _check_groups(ctx, parsed, refs)
    return tuple(group for group, _ in parsed)


# ---------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------

def _yaml_problem(display: str | None, exc: yaml.YAMLError, text: str) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        line, column = mark.line + 1, mark.column + 1
    else:                                          # ReaderError: a bad character
        position = getattr(exc, "position", 0)
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
    what = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc)
    if isinstance(exc, yaml.reader.ReaderError):
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        what += f" (character U+{code:04X})"
    context = getattr(exc, "context", None)
    if context and getattr(exc, "context_mark", None) is not None:
        what += f" ({context} on line {exc.context_mark.line + 1})"
    where = f"{display}:{line}: " if display is not None else f"line {line}: "
    return f"{where}invalid YAML at column {column}: {what}; expected well-formed YAML"


def _compose(text: str, display: str | None) -> tuple[Node | None, _Loader]:
    try:
        loader = _Loader(text)      # the reader already rejects non-printable characters
        try:
            return loader.get_single_node(), loader
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_problem(display, exc, text)) from None


def _read(path: Path, display: str) -> tuple[Node | None, _Loader]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{display}: file not found; expected a readable YAML file") from None
    except OSError as exc:
        raise ConfigError(f"{display}: cannot read ({exc.strerror}); expected a readable YAML "
                          "file") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{display}:{line}: not UTF-8 text (byte {exc.start}); expected a "
                          "UTF-8 YAML file") from None
    return _compose(text, display)


def _groups_refs(sessions: Iterable[SessionDef], entities: Iterable[Entity | str]) -> _Refs:
    by_id = {s.comp_id: s for s in sessions}
    names = frozenset(e if isinstance(e, str) else e.name for e in entities)
    return _Refs(MappingProxyType(by_id), frozenset(by_id), names)


def load_groups(path: str | os.PathLike[str], sessions: Iterable[SessionDef],
                entities: Iterable[Entity | str]) -> tuple[GroupDef, ...]:
    """Read and validate a groups file alone (the gateway's SIGHUP reload). Raises ConfigError."""
    display = os.fspath(path)
    root, loader = _read(Path(path), display)
    ctx = _Ctx(display, loader)
    groups = _parse_groups_root(ctx, root, _groups_refs(sessions, entities))
    if ctx.problems:
        raise ConfigError(ctx.problems)
    return groups


def groups_from_data(data: Sequence[Mapping[str, Any]], sessions: Iterable[SessionDef],
                     entities: Iterable[Entity | str]) -> tuple[GroupDef, ...]:
    """Validate groups given as plain data (the shape of groups.yaml's ``groups`` list), e.g. a
    group assembled by the CLI. Problems name paths (``groups[2].targets[0]``) without a file."""
    text = yaml.safe_dump({"groups": [dict(g) for g in data]}, sort_keys=False)
    root, loader = _compose(text, None)
    ctx = _Ctx(None, loader)
    groups = _parse_groups_root(ctx, root, _groups_refs(sessions, entities))
    if ctx.problems:
        raise ConfigError(ctx.problems)
    return groups


_TOP_KEYS = ("gateway", "entities", "sessions", "groups_file")


def _section(ctx: _Ctx, m: _Map, key: str, expected: str) -> Node | None:
    """A required top-level section's node, or None (reported) when it is absent or empty."""
    node = m.nodes.get(key)
    if _is_null(node):
        ctx.problem(m.line if node is None else _line(node), key,
                    "missing" if node is None else "no value", expected)
        return None
    return node


def _load_groups_of(file: Path, display: str, sessions: tuple[SessionDef, ...],
                    known: set[str] | None, entity_names: set[str] | None
                    ) -> tuple[tuple[GroupDef, ...], list[str]]:
    refs = _Refs(MappingProxyType({s.comp_id: s for s in sessions}),
                 None if known is None else frozenset(known),
                 None if entity_names is None else frozenset(entity_names))
    try:
        root, loader = _read(file, display)
    except ConfigError as exc:
        return (), exc.problems
    ctx = _Ctx(display, loader)
    groups = _parse_groups_root(ctx, root, refs)
    return groups, ctx.problems


def _raw_comp_id(node: Node | None) -> str | None:
    """gateway.comp_id as written, even when other gateway settings have problems."""
    if isinstance(node, MappingNode):
        for key, value in node.value:
            if isinstance(key, ScalarNode) and key.value == "comp_id" and isinstance(
                    value, ScalarNode):
                return value.value
    return None


def load_config(path: str | os.PathLike[str]) -> GatewayConfig:
    """Read gateway.yaml and the groups file it names. Raises ConfigError with every problem."""
    display = os.fspath(path)
    file = Path(os.path.abspath(path))
    root, loader = _read(file, display)
    ctx = _Ctx(display, loader)
    if _is_null(root):
        raise ConfigError(f"{display}:1: (top): the file is empty; expected a mapping with "
                          "keys " + ", ".join(_TOP_KEYS))
    m = _Map.of(ctx, root, "", "a mapping with keys " + ", ".join(_TOP_KEYS))
    if m is None:
        raise ConfigError(ctx.problems)
    m.allow(_TOP_KEYS)
    base = file.parent
    node = _section(ctx, m, "gateway", "a mapping of gateway settings")
    gateway = _parse_gateway(ctx, node, base) if node is not None else None
    node = _section(ctx, m, "entities", _ENTITIES_EXPECTED)
    entities, entity_names = _parse_entities(ctx, node) if node is not None else ((), None)
    node = _section(ctx, m, "sessions", _SESSIONS_EXPECTED)
    sessions, known = (
        _parse_sessions(ctx, node, entity_names, _raw_comp_id(m.nodes.get("gateway")))
        if node is not None else ((), None))
    groups_file = m.get("groups_file", _path(base), base / "groups.yaml")
    groups: tuple[GroupDef, ...] = ()
    problems = ctx.problems
    if groups_file is not _BAD:
        raw = m.nodes.get("groups_file")
        name = "groups.yaml" if _is_null(raw) else raw.value
        groups_display = os.path.normpath(os.path.join(os.path.dirname(display), name))
        groups, more = _load_groups_of(groups_file, groups_display, sessions, known,
                                       entity_names)
        problems = problems + more
    if problems:
        raise ConfigError(problems)
    return GatewayConfig(path=file, gateway=gateway, entities=entities, sessions=sessions,
                         groups=groups, groups_file=groups_file)


# ---------------------------------------------------------------------------------------------
# Writing groups
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
    text = dump_groups(groups).encode("utf-8")
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
