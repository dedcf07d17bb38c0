"""gateway.yaml -> :class:`~.model.GatewayConfig`, with every problem reported at once.

:func:`load_config` reads gateway.yaml (gateway settings, registered entities, operators,
sessions, the portal) and the groups file it names (:mod:`.groups`), and reports the problems of
both together, in file order, each naming file, line and path. Rules enforced here (the venue's
Logon rules):

* unknown keys are errors (with the allowed keys listed): a typo must not pass silently;
* relative paths resolve against the folder of the file that names them;
* an ``ilink2`` SenderCompID is 7 characters: Session ID (3) + Firm ID (3) + P/B/U/N, and its
  keys are issued per Session ID (key scope = first 3 characters); a ``fix`` session's key scope is
  the whole CompID; ``key_scope: N`` overrides with the first N characters; sessions sharing a
  key scope belong to one entity.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode

from ..errors import ConfigError
from ..fix.dictionary import SHIPPED, load_dictionary
from .cluster import parse_cluster
from .groups import read_groups
from .model import (
    BEGIN_STRINGS,
    DEFAULT_BEGIN_STRING,
    DEFAULT_DICTIONARY,
    DURABILITY_MODES,
    PROFILES,
    ROLES,
    Administrator,
    Entity,
    GatewayConfig,
    GatewaySettings,
    GroupDef,
    HostPort,
    KeystoreSettings,
    LocalTime,
    PortalSettings,
    SessionDef,
    SmtpSettings,
    TlsSettings,
    WeekStart,
)
from .yamlread import (
    BAD,
    NAME_EXPECTED,
    NAME_RE,
    REQUIRED,
    Bad,
    Context,
    MapNode,
    Parser,
    Spec,
    expects,
    file_path,
    is_null,
    join_path,
    list_of,
    name_in,
    node_line,
    number,
    one_of,
    parse_bool,
    parse_hhmm,
    parse_name,
    parse_tz,
    read_file,
    record,
    sequence_items,
    text_of,
)

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
ILINK_KEY_SCOPE = 3
_COMP_ID_RE = re.compile(r"[!-<>-~]{1,64}")           # printable ASCII, no space, no '='
_ILINK_COMP_ID_RE = re.compile(r"[A-Z0-9]{6}[PBUN]")
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+")
_HOST_RE = re.compile(r"[^\s/]{1,255}")
_COMP_ID_EXPECTED = "1-64 printable ASCII characters, no spaces, no '='"


# ---------------------------------------------------------------------------------------------
# gateway: settings
# ---------------------------------------------------------------------------------------------

_comp_id = text_of(_COMP_ID_RE, _COMP_ID_EXPECTED)
_port = number(0, 65535, integer=True)
_host = text_of(_HOST_RE, "a host name or address")
_email = text_of(_EMAIL_RE, "an email address")
_host_port = record({"host": (_host, REQUIRED), "port": (_port, REQUIRED)}, HostPort,
                    "a mapping {host: ..., port: ...}")
_local_time = record({"time": (parse_hhmm, REQUIRED), "tz": (parse_tz, REQUIRED)}, LocalTime,
                     'a mapping {time: "HH:MM", tz: ZONE}')
_weekday_name = one_of(WEEKDAYS, fold=True)


@expects("one of " + ", ".join(WEEKDAYS))
def _weekday(ctx: Context, node: Node, path: str) -> int | Bad:
    day = _weekday_name(ctx, node, path)
    return BAD if day is BAD else WEEKDAYS.index(day)
_week_start = record({"day": (_weekday, REQUIRED), "time": (parse_hhmm, REQUIRED),
                      "tz": (parse_tz, REQUIRED)}, WeekStart,
                     'a mapping {day: WEEKDAY, time: "HH:MM", tz: ZONE}')
_smtp = record({"host": (_host, REQUIRED), "port": (_port, REQUIRED),
                "sender": (_email, REQUIRED)},
               SmtpSettings, "a mapping {host: ..., port: ..., sender: ...}")


def _tls(base: Path, load_files: bool = True) -> Parser:
    """A listener's TLS settings; the certificate, its key and the CA file are loaded here, as
    the listener will load them, so that a file that is not what it should be is reported with
    its key and line by ``check-config`` and at start, not as an OpenSSL message at bind time."""
    expected = "a mapping {cert_file: ..., key_file: ..., [ca_file, require_client_cert]}"
    fields = record({"cert_file": (file_path(base, True), REQUIRED),
                     "key_file": (file_path(base, True), REQUIRED),
                     "ca_file": (file_path(base, True), None),
                     "require_client_cert": (parse_bool, False)}, TlsSettings, expected)

    @expects(expected)
    def parse(ctx: Context, node: Node, path: str) -> TlsSettings | Bad:
        tls: TlsSettings | Bad = fields(ctx, node, path)
        if isinstance(tls, Bad):
            return tls
        if not load_files:
            return tls
        lines = MapNode.of(ctx, node, path, expected)
        problem = _tls_problem(tls)
        if problem is not None:
            key, what, wanted = problem
            ctx.problem(lines.key_lines.get(key, lines.line) if lines is not None
                        else node_line(node), join_path(path, key), what, wanted)
            return BAD
        return tls
    return parse


def _read_head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(1 << 20)


def _tls_problem(tls: TlsSettings) -> tuple[str, str, str] | None:
    """What keeps a listener from loading these files, as (key, what, expected); None: fine.
    An encrypted private key is refused here, never prompted for on the terminal."""
    files: dict[str, bytes] = {}
    for key_name, file in (("cert_file", tls.cert_file), ("key_file", tls.key_file)):
        try:
            files[key_name] = _read_head(file)
        except OSError as exc:
            return (key_name, f"cannot read {file} ({exc.strerror or exc})",
                    "a file the gateway's user can read")
    cert, key = files["cert_file"], files["key_file"]
    if b"-----BEGIN CERTIFICATE-----" not in cert:
        return ("cert_file", f"{tls.cert_file} holds no PEM certificate",
                "a PEM certificate (chain)")
    if b"PRIVATE KEY-----" not in key:
        return ("key_file", f"{tls.key_file} holds no PEM private key",
                "the certificate's PEM private key")
    if b"ENCRYPTED" in key:
        return ("key_file", f"{tls.key_file} is encrypted with a passphrase",
                "an unencrypted PEM private key (readable by the gateway's user only)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file), password=lambda: b"")
    except (ssl.SSLError, OSError, ValueError) as exc:
        return ("key_file", f"OpenSSL cannot use {tls.key_file} with {tls.cert_file} "
                f"({_ssl_reason(exc)})", "the private key that belongs to cert_file")
    if tls.ca_file is not None:
        try:
            context.load_verify_locations(str(tls.ca_file))
        except (ssl.SSLError, OSError, ValueError) as exc:
            return ("ca_file", f"cannot load {tls.ca_file} ({_ssl_reason(exc)})",
                    "PEM CA certificates")
    return None


def _ssl_reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
    return str(reason)


def _folder_path(base: Path) -> Parser:
    """A folder's path (``data_dir``): created at start when missing; an existing file that is
    not a folder is refused here rather than at start, with the key and the line."""
    expected = "a folder path (relative to this file's folder)"
    as_path = file_path(base)

    @expects(expected)
    def parse(ctx: Context, node: Node, path: str) -> Path | Bad:
        resolved: Path | Bad = as_path(ctx, node, path)
        if resolved is not BAD and resolved.exists() and not resolved.is_dir():
            ctx.problem(node_line(node), path, f"{resolved} exists and is not a folder",
                        expected)
            return BAD
        return resolved
    return parse


@dataclass(frozen=True)
class _KeystorePaths:
    """``gateway.keystore`` as given: a path left out defaults under ``data_dir``."""
    path: Path | None = None
    master_key_file: Path | None = None


def _gateway_spec(base: Path, tls_files: bool = True) -> Spec:
    """gateway: key -> (parser, default); paths resolve against ``base``."""
    return {
        "comp_id": (_comp_id, REQUIRED),
        "listen": (_host_port, REQUIRED),
        "metrics": (_host_port, REQUIRED),
        "data_dir": (_folder_path(base), REQUIRED),
        "market_close": (_local_time, REQUIRED),
        "week_start": (_week_start, REQUIRED),
        "keystore": (record({"path": (file_path(base), None),
                             "master_key_file": (file_path(base), None)}, _KeystorePaths,
                            "a mapping {[path: ..., master_key_file: ...]}"), None),
        "logon_timeout_s": (number(0.001, 3600, integer=False), 60.0),
        "sending_time_tolerance_s": (number(0.001, 86400, integer=False), 30.0),
        "smtp": (_smtp, None),
        "max_message_size": (number(256, 16 * 1024 * 1024, integer=True), 65536),
        "heartbeat_min_s": (number(1, 3600, integer=True), 5),
        "heartbeat_max_s": (number(1, 3600, integer=True), 60),
        "write_buffer_high": (number(1024, 1 << 30, integer=True), 1_048_576),
        "write_buffer_low": (number(0, 1 << 30, integer=True), 262_144),
        "max_connections": (number(1, 1_000_000, integer=True), 1024),
        "max_pending_logons": (number(1, 1_000_000, integer=True), 1000),
        "max_pending_logons_per_address": (number(0, 1_000_000, integer=True), 0),
        "pre_logon_idle_s": (number(0, 3600, integer=False), 5.0),
        "journal_commit_delay_s": (number(0, 1, integer=False), 0.0),
        "journal_durability": (one_of(DURABILITY_MODES), "fsync"),
        "journal_fsync_interval_s": (number(0.001, 10, integer=False), 0.05),
        "max_inbound_msgs_per_s": (number(0, 10_000_000, integer=True), 0),
        "target_max_pending": (number(100, 10_000_000, integer=True), 10_000),
        "tls": (_tls(base, tls_files), None),
        "metrics_tls": (_tls(base, tls_files), None),
        "metrics_token_file": (file_path(base, True), None),
        "environment": (text_of(NAME_RE, NAME_EXPECTED), None),
    }


#: Cross-field rules: (field, other field, holds(value, other), what is wrong, expected).
_Rule = tuple[str, str, Callable[[Any, Any], bool], str, str]
_GATEWAY_RULES: tuple[_Rule, ...] = (
    ("heartbeat_min_s", "heartbeat_max_s", lambda a, b: a <= b, "is above heartbeat_max_s",
     "heartbeat_min_s <= heartbeat_max_s"),
    ("write_buffer_low", "write_buffer_high", lambda a, b: a < b,
     "is not below write_buffer_high", "write_buffer_low < write_buffer_high"),
    ("metrics", "listen", lambda a, b: a != b or a.port == 0, "is the listen address",
     "a different port for metrics"),
)


def _parse_gateway(ctx: Context, node: Node, base: Path, tls_files: bool = True
                   ) -> GatewaySettings | None:
    m = MapNode.of(ctx, node, "gateway", "a mapping of gateway settings")
    if m is None:
        return None
    spec = _gateway_spec(base, tls_files)
    m.allow(spec)
    values = {key: m.get(key, parse, default) for key, (parse, default) in spec.items()}
    ok = all(v is not BAD for v in values.values())
    for key, other, holds, what, expected in _GATEWAY_RULES:
        a, b = values[key], values[other]
        if a is not BAD and b is not BAD and not holds(a, b):
            ctx.problem(m.key_lines.get(key, m.line), join_path("gateway", key),
                        f"{a} {what} {b}", expected)
            ok = False
    if not ok:
        return None
    given = values["keystore"] or _KeystorePaths()       # each path defaults on its own
    values["keystore"] = KeystoreSettings(given.path or values["data_dir"] / "keys.db",
                                          given.master_key_file
                                          or values["data_dir"] / "master.key")
    return GatewaySettings(**values)


# ---------------------------------------------------------------------------------------------
# entities
# ---------------------------------------------------------------------------------------------

_administrator = record({"name": (parse_name, REQUIRED), "email": (_email, REQUIRED)},
                        Administrator, "a mapping {name: ..., email: ...}")
_ENTITIES_EXPECTED = "a list of {name: ..., administrators: [{name: ..., email: ...}]}"
_ENTITY_SPEC: Spec = {"name": (parse_name, REQUIRED), "administrators": (
    list_of(_administrator, "a non-empty list of {name: ..., email: ...}"), REQUIRED)}


def _parse_entities(ctx: Context, node: Node) -> tuple[tuple[Entity, ...], set[str] | None]:
    """The valid entities, and every entity name given (valid or not, so that sessions naming
    an entity with a problem of its own do not add errors); names None: the list is unreadable."""
    items = sequence_items(ctx, node, "entities", _ENTITIES_EXPECTED)
    if items is BAD:
        return (), None
    entities: list[Entity] = []
    names: dict[str, int] = {}
    for item, path in items:
        m = MapNode.of(ctx, item, path, "a mapping {name: ..., administrators: [...]}")
        values = m.fields(_ENTITY_SPEC) if m is not None else None
        if m is not None and isinstance(m.nodes.get("name"), ScalarNode):
            name = m.nodes["name"].value
            if name in names:
                ctx.problem(node_line(m.nodes["name"]), join_path(path, "name"),
                            f"entity {name!r} already defined on line {names[name]}",
                            "each entity once")
                continue
            names[name] = node_line(m.nodes["name"])
        if values is None or m is None:
            continue
        admins = [a.name for a in values["administrators"]]
        dup = sorted({a for a in admins if admins.count(a) > 1})
        if dup:
            ctx.problem(m.key_lines["administrators"], join_path(path, "administrators"),
                        f"administrator {dup[0]!r} listed twice", "each administrator once")
            continue
        entities.append(Entity(**values))
    return tuple(entities), set(names)


# ---------------------------------------------------------------------------------------------
# sessions
# ---------------------------------------------------------------------------------------------

_SESSIONS_EXPECTED = "a list of {comp_id, role, entity, profile, begin_string}"


#: Validation switches a session may set (fix.validate.ValidationOptions).
VALIDATION_KEYS = ("allow_user_defined_fields", "check_unknown_fields", "check_fields_have_values",
                   "check_field_order", "check_body_field_order", "check_group_field_order",
                   "check_enums", "check_types")
_validation = record({k: (parse_bool, None) for k in VALIDATION_KEYS},
                     lambda **kw: tuple((k, v) for k, v in kw.items() if v is not None),
                     "a mapping of " + ", ".join(VALIDATION_KEYS) + " to true or false")


def _session_spec(entity_names: set[str] | None, base: Path) -> Spec:
    return {
        "comp_id": (_comp_id, REQUIRED),
        "role": (one_of(ROLES), REQUIRED),
        "entity": (name_in(entity_names, "entity"), REQUIRED),
        "profile": (one_of(PROFILES), REQUIRED),
        "begin_string": (one_of(BEGIN_STRINGS), None),
        "key_scope": (number(1, 64, integer=True), None),
        "data_dictionary": (_dictionary(base), None),
        "reset_on_logon": (parse_bool, False),
        "validation": (_validation, ()),
    }


def _dictionary(base: Path) -> Parser:
    """``FIX.4.2``/``FIX.4.4`` (the shipped dictionaries) or a path to a QuickFIX-format XML
    file; the file is loaded here, so a bad one is a configuration error naming it."""
    path = file_path(base, True)

    @expects("FIX.4.2, FIX.4.4, ILINK2 or the path of a QuickFIX-format data dictionary (XML)")
    def parse(ctx: Context, node: Node, where: str) -> str | Bad:
        if isinstance(node, ScalarNode) and str(node.value) in SHIPPED:
            return str(node.value)
        p = path(ctx, node, where)
        if p is BAD:
            return Bad.BAD
        try:
            load_dictionary(p)
        except ConfigError as exc:
            for problem in exc.problems:
                ctx.problem(node_line(node), where, problem, "a QuickFIX-format data dictionary")
            return BAD
        return str(p)
    return parse


def _check_session(ctx: Context, m: MapNode, v: dict[str, Any]) -> SessionDef | None:
    """One session's rules between its fields (docs/venue.md "Logon rules")."""
    comp_id, profile = v["comp_id"], v["profile"]
    ok = True
    line = m.key_lines.get
    if profile == "ilink2" and not _ILINK_COMP_ID_RE.fullmatch(comp_id):
        ctx.problem(line("comp_id", m.line), join_path(m.path, "comp_id"),
                    f"{comp_id!r} is not an iLink SenderCompID ({len(comp_id)} characters)",
                    "7 characters for profile ilink2: Session ID (3) + Firm ID (3) + "
                    "fault-tolerance letter P, B, U or N, e.g. ABC123N")
        ok = False
    begin = v["begin_string"] or DEFAULT_BEGIN_STRING[profile]
    if profile == "ilink2" and begin != "FIX.4.2":
        ctx.problem(line("begin_string", m.line), join_path(m.path, "begin_string"),
                    f"{begin!r} with profile ilink2", "FIX.4.2 (iLink 2 is FIX 4.2)")
        ok = False
    scope = v["key_scope"] or (ILINK_KEY_SCOPE if profile == "ilink2" else len(comp_id))
    if v["key_scope"] is not None and scope > len(comp_id):
        ctx.problem(line("key_scope", m.line), join_path(m.path, "key_scope"),
                    f"{scope} is longer than comp_id {comp_id!r}",
                    f"a number of leading characters from 1 to {len(comp_id)}")
        ok = False
    if not ok:
        return None
    dictionary = v["data_dictionary"] or DEFAULT_DICTIONARY.get(profile, begin)
    dd_begin = load_dictionary(dictionary).begin_string.decode()
    if dd_begin != begin:
        ctx.problem(line("data_dictionary", m.line), join_path(m.path, "data_dictionary"),
                    f"{dictionary!r} is a {dd_begin} dictionary",
                    f"a {begin} dictionary (the session's begin_string)")
        return None
    return SessionDef(comp_id=comp_id, role=v["role"], entity=v["entity"], profile=profile,
                      begin_string=begin, key_scope=comp_id[:scope], data_dictionary=dictionary,
                      reset_on_logon=v["reset_on_logon"], validation=v["validation"])


def _claim_comp_id(ctx: Context, m: MapNode, seen: dict[str, str],
                   gateway_comp_id: str | None) -> bool:
    """Records the comp_id as written in ``seen`` (comp_id -> path of its first definition);
    False (reported) when an earlier session or the gateway itself already uses it."""
    node = m.nodes.get("comp_id")
    if not isinstance(node, ScalarNode):
        return True
    comp_id = node.value
    if comp_id in seen:
        ctx.problem(node_line(node), join_path(m.path, "comp_id"), f"{comp_id!r} is already "
                    f"used by {seen[comp_id]}", "each comp_id once")
        return False
    seen[comp_id] = m.path
    if comp_id == gateway_comp_id:
        ctx.problem(node_line(node), join_path(m.path, "comp_id"), f"{comp_id!r} is the "
                    "gateway's own comp_id", "a comp_id other than gateway.comp_id")
        return False
    return True


def _claim_key_scope(ctx: Context, m: MapNode, session: SessionDef,
                     scopes: dict[str, tuple[str, str]]) -> bool:
    """Records the session's key scope in ``scopes`` (scope -> (entity, path)); False (reported)
    when another entity's session has it: a key pair is issued per Session ID."""
    other = scopes.setdefault(session.key_scope, (session.entity, m.path))
    if other[0] == session.entity:
        return True
    ctx.problem(m.key_lines.get("comp_id", m.line), join_path(m.path, "comp_id"),
                f"key scope {session.key_scope!r} is shared with {other[1]} of entity "
                f"{other[0]}", "sessions sharing a key scope (Session ID) to belong to one "
                "entity")
    return False


def _parse_sessions(ctx: Context, node: Node, entity_names: set[str] | None, base: Path,
                    gateway_comp_id: str | None
                    ) -> tuple[tuple[SessionDef, ...], set[str] | None]:
    """The valid sessions, and every comp_id given (valid or not: no cascading errors in
    groups); comp_ids None: the list is unreadable."""
    items = sequence_items(ctx, node, "sessions", _SESSIONS_EXPECTED)
    if items is BAD:
        return (), None
    spec = _session_spec(entity_names, base)
    sessions: list[SessionDef] = []
    seen: dict[str, str] = {}
    scopes: dict[str, tuple[str, str]] = {}
    for item, path in items:
        m = MapNode.of(ctx, item, path, "a mapping {comp_id, role, entity, profile, ...}")
        if m is None:
            continue
        values = m.fields(spec)
        if not _claim_comp_id(ctx, m, seen, gateway_comp_id) or values is None:
            continue
        session = _check_session(ctx, m, values)
        if session is not None and _claim_key_scope(ctx, m, session, scopes):
            sessions.append(session)
    return tuple(sessions), set(seen)


# ---------------------------------------------------------------------------------------------
# load_config
# ---------------------------------------------------------------------------------------------

_TOP_KEYS = ("gateway", "entities", "sessions", "groups_file", "operators", "portal", "cluster")
_URL_RE = re.compile(r"https?://[^\s/]+(?::\d+)?/?")


def _portal_spec(base: Path, tls_files: bool = True) -> Spec:
    return {"listen": (_host_port, REQUIRED),
            "public_url": (text_of(_URL_RE, "an http(s)://host[:port] URL"), REQUIRED),
            "tls": (_tls(base, tls_files), None),
            "idle_timeout_s": (number(10, 86400, integer=False), 900.0),
            "absolute_timeout_s": (number(60, 7 * 86400, integer=False), 43200.0)}


def _parse_portal(ctx: Context, m: MapNode, base: Path, tls_files: bool = True
                  ) -> PortalSettings | None:
    node = m.nodes.get("portal")
    if node is None or is_null(node):
        return None
    p = MapNode.of(ctx, node, "portal", "a mapping {listen, public_url, [tls, idle_timeout_s, "
                   "absolute_timeout_s]}")
    values = p.fields(_portal_spec(base, tls_files)) if p is not None else None
    if values is None:
        return None
    values["public_url"] = values["public_url"].rstrip("/")
    return PortalSettings(**values)


def _parse_operators(ctx: Context, m: MapNode, entities: tuple[Entity, ...]
                     ) -> tuple[Administrator, ...]:
    node = m.nodes.get("operators")
    if node is None or is_null(node):
        return ()
    items = sequence_items(ctx, node, "operators", "a list of {name: ..., email: ...}")
    if items is BAD:
        return ()
    admins = {a.name for e in entities for a in e.administrators}
    out: list[Administrator] = []
    for item, path in items:
        op = _administrator(ctx, item, path)
        if op is BAD:
            continue
        if op.name in admins or any(o.name == op.name for o in out):
            ctx.problem(node_line(item), join_path(path, "name"), f"user {op.name!r} is "
                        "already an administrator or operator", "each user name once")
            continue
        out.append(op)
    return tuple(out)


def _section(ctx: Context, m: MapNode, key: str, expected: str) -> Node | None:
    """A required top-level section's node, or None (reported) when it is absent or empty."""
    node = m.nodes.get(key)
    if node is None or is_null(node):
        ctx.problem(m.line if node is None else node_line(node), key,
                    "missing" if node is None else "no value", expected)
        return None
    return node


def _raw_comp_id(node: Node | None) -> str | None:
    """gateway.comp_id as written, even when other gateway settings have problems."""
    if isinstance(node, MappingNode):
        for key, value in node.value:
            if isinstance(key, ScalarNode) and key.value == "comp_id" and isinstance(
                    value, ScalarNode):
                return str(value.value)
    return None


def load_config(path: str | os.PathLike[str], *, groups: bool = True,
                tls_files: bool = True) -> GatewayConfig:
    """Read gateway.yaml and the groups file it names. Raises ConfigError with every problem.
    ``groups=False``: the groups file is not read (the configuration's groups are empty), for
    what needs only the sessions and entities (key pairs, port closures, users), so that a
    broken groups file does not stand in the way of an operator during an incident.
    ``tls_files=False``: TLS certificate and key files are checked to exist, not loaded (they
    are often readable by the gateway's service account only; loading them is for what serves:
    ``check-config``, ``run``, ``demo``, ``portal``)."""
    display = os.fspath(path)
    file = Path(os.path.abspath(path))
    root, loader = read_file(file, display)
    ctx = Context(display, loader)
    if root is None or is_null(root):
        raise ConfigError(f"{display}:1: (top): the file is empty; expected a mapping with "
                          "keys " + ", ".join(_TOP_KEYS))
    m = MapNode.of(ctx, root, "", "a mapping with keys " + ", ".join(_TOP_KEYS))
    if m is None:
        raise ConfigError(ctx.problems)
    m.allow(_TOP_KEYS)
    base = file.parent
    node = _section(ctx, m, "gateway", "a mapping of gateway settings")
    gateway = _parse_gateway(ctx, node, base, tls_files) if node is not None else None
    node = _section(ctx, m, "entities", _ENTITIES_EXPECTED)
    entities, entity_names = _parse_entities(ctx, node) if node is not None else ((), None)
    node = _section(ctx, m, "sessions", _SESSIONS_EXPECTED)
    sessions, known = (
        _parse_sessions(ctx, node, entity_names, base, _raw_comp_id(m.nodes.get("gateway")))
        if node is not None else ((), None))
    operators = _parse_operators(ctx, m, entities)
    portal = _parse_portal(ctx, m, base, tls_files)
    cluster = parse_cluster(ctx, m, base)
    groups_file = m.get("groups_file", file_path(base), base / "groups.yaml")
    group_defs: tuple[GroupDef, ...] = ()
    problems = ctx.problems
    if groups_file is not BAD and groups:
        raw = m.nodes.get("groups_file")
        name = "groups.yaml" if raw is None or is_null(raw) else str(raw.value)
        groups_display = os.path.normpath(os.path.join(os.path.dirname(display), name))
        group_defs, more = read_groups(groups_file, groups_display, sessions, known,
                                       entity_names)
        problems = problems + more
    if problems or gateway is None:
        raise ConfigError(problems or [f"{display}: gateway: no valid settings"])
    return GatewayConfig(path=file, gateway=gateway, entities=entities, sessions=sessions,
                         groups=group_defs, groups_file=groups_file, operators=operators,
                         portal=portal, cluster=None if cluster is BAD else cluster,
                         groups_loaded=groups)
