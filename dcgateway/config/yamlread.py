"""YAML read as a node tree, so that every configuration problem names file, line and path.

Why the YAML is read as a node tree and not with ``yaml.safe_load``: a trading configuration must
say *where* it is wrong (``config/gateway.yaml:14: sessions[2].role: 'sorce' is not allowed;
expected one of source, target``), and a node keeps its start mark, so each path knows its line.
Reading nodes also sidesteps YAML 1.1's implicit typing where it would hurt: a string field takes
the scalar's text as written, so an account ``NO``, a symbol ``ON`` or an account ``00123`` stay
the strings the operator typed instead of turning into ``False`` or ``123``, and an unquoted
``16:00`` is not read as the base-60 number 960.

This module knows nothing of gateways or groups. It provides, for :mod:`dcgateway.config` and
:mod:`dcgateway.config_groups` (package-internal; the public API is :mod:`dcgateway.config`):

* :class:`Context`: the problems of one file, formatted ``FILE:LINE: PATH: WHAT; expected ...``
  and reported all at once, in file order;
* :class:`MapNode`: a mapping node with plain-text keys, unknown keys reported with a suggestion;
* parsers ``parse(ctx, node, path) -> value | BAD``, each tagged with what it expects (used when
  its key is missing): :func:`text_of`, :func:`one_of`, :func:`number`, :func:`file_path`,
  :func:`record`, :func:`list_of`, :func:`parse_bool`, :func:`parse_hhmm`, :func:`parse_tz`;
* :func:`read_file` and :func:`compose`: text to node tree, malformed YAML reported with its line.
"""

from __future__ import annotations

import datetime
import difflib
import enum
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..errors import ConfigError


class Bad(enum.Enum):
    """The type of :data:`BAD`. One member, so that ``if x is BAD: return`` narrows a parser's
    ``T | Bad`` result to ``T`` for the type checker."""
    BAD = "BAD"


#: A parser's result when the value was bad (the problem is already reported).
BAD: Final = Bad.BAD
#: A field default meaning "must be given".
REQUIRED: Any = object()

_NULL_TAG = "tag:yaml.org,2002:null"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_HHMM_RE = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
#: Entity, administrator and group names.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NAME_EXPECTED = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"


class NodeLoader(yaml.SafeLoader):
    """Used only to compose the node tree; start marks give the line numbers."""


class Context:
    """Problems of one file, formatted the one way operators see them. ``display`` None: data
    that came from no file (the CLI's groups), so problems start with the path."""

    def __init__(self, display: str | None, loader: NodeLoader | None) -> None:
        self.display = display
        self.loader = loader or NodeLoader("")
        self._found: list[tuple[int, str]] = []

    def problem(self, line: int, path: str, what: str, expected: str) -> None:
        where = f"{self.display}:{line}: " if self.display is not None else ""
        self._found.append((line, f"{where}{path}: {what}; expected {expected}"))

    @property
    def problems(self) -> list[str]:
        """In file order (a stable sort keeps same-line problems in the order found)."""
        return [text for _, text in sorted(self._found, key=lambda found: found[0])]


#: A parse function: (ctx, node, path) -> value, or BAD once the problem is reported. It carries
#: what it expects as ``.expected`` (see :func:`expects` and :func:`expected_of`).
Parser = Callable[[Context, Node, str], Any]
#: A mapping's fields: key -> (parser, default or REQUIRED).
Spec = Mapping[str, tuple[Parser, Any]]
_ParserT = TypeVar("_ParserT", bound=Parser)


def node_line(node: Node) -> int:
    return node.start_mark.line + 1


def join_path(path: str, key: str | int) -> str:
    """``groups`` + 2 -> ``groups[2]``; ``groups[2]`` + ``name`` -> ``groups[2].name``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def is_null(node: Node | None) -> bool:
    return node is None or (isinstance(node, ScalarNode) and node.tag == _NULL_TAG)


def describe(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if is_null(node):
        return "no value"
    text = node.value if len(node.value) <= 40 else node.value[:37] + "..."
    return repr(text)


def choices_text(items: Iterable[str], limit: int = 12) -> str:
    """``a, b, c``, cut after ``limit`` items so that one message stays one readable line."""
    items = list(items)
    if not items:
        return "(none configured)"
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def expects(expected: str) -> Callable[[_ParserT], _ParserT]:
    """Tags a parse function with what it expects (used when its key is missing)."""
    def deco(fn: _ParserT) -> _ParserT:
        setattr(fn, "expected", expected)   # a function attribute, read by expected_of
        return fn
    return deco


def expected_of(parse: Parser) -> str:
    """What ``parse`` expects, as tagged by :func:`expects` (the type checker does not model
    attributes set on functions, hence getattr)."""
    expected: str = getattr(parse, "expected")
    return expected


class MapNode:
    """A mapping node with plain-text keys, each given once."""

    def __init__(self, ctx: Context, node: MappingNode, path: str) -> None:
        self.ctx, self.path, self.line = ctx, path, node_line(node)
        self.nodes: dict[str, Node] = {}
        self.key_lines: dict[str, int] = {}
        try:
            ctx.loader.flatten_mapping(node)   # YAML merge keys (<<: *anchor)
        except yaml.MarkedYAMLError as exc:     # flatten_mapping raises ConstructorError
            ctx.problem(self.line, path or "(top)", f"bad merge key: {exc.problem}",
                        "<< followed by a mapping or a list of mappings")
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or is_null(key_node):
                ctx.problem(node_line(key_node), path or "(top)",
                            f"{describe(key_node)} as a key", "plain text keys")
            elif key_node.value in self.nodes:
                ctx.problem(node_line(key_node), join_path(path, key_node.value),
                            f"duplicate key (first on line {self.key_lines[key_node.value]})",
                            "each key once")
            else:
                self.nodes[key_node.value] = value_node
                self.key_lines[key_node.value] = node_line(key_node)

    @classmethod
    def of(cls, ctx: Context, node: Node, path: str, expected: str) -> MapNode | None:
        """The mapping at ``node``, or None (reported) when it is not a mapping."""
        if not isinstance(node, MappingNode):
            ctx.problem(node_line(node), path or "(top)", f"{describe(node)} given", expected)
            return None
        return cls(ctx, node, path)

    def allow(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        for key, line in self.key_lines.items():
            if key not in keys:
                close = difflib.get_close_matches(key, keys, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                self.ctx.problem(line, join_path(self.path, key), f"unknown key '{key}'{hint}",
                                 "one of " + ", ".join(keys))

    def get(self, key: str, parse: Parser, default: Any = REQUIRED) -> Any:
        node = self.nodes.get(key)
        path = join_path(self.path, key)
        if node is None or is_null(node):
            if default is REQUIRED:
                line = self.line if node is None else node_line(node)
                self.ctx.problem(line, path, "missing" if node is None else "no value",
                                 expected_of(parse))
                return BAD
            return default
        return parse(self.ctx, node, path)

    def fields(self, spec: Spec) -> dict[str, Any] | None:
        """Every field of ``spec`` (key -> (parser, default)); None when any is bad."""
        self.allow(spec)
        values = {key: self.get(key, parse, default) for key, (parse, default) in spec.items()}
        return None if any(v is BAD for v in values.values()) else values


# ---------------------------------------------------------------------------------------------
# Value parsers
# ---------------------------------------------------------------------------------------------

def scalar(ctx: Context, node: Node, path: str, expected: str) -> str | Bad:
    """The scalar's text as written (no YAML 1.1 typing), or BAD."""
    if not isinstance(node, ScalarNode) or is_null(node):
        ctx.problem(node_line(node), path, f"{describe(node)} given", expected)
        return BAD
    text: str = node.value                  # a scalar node's value is its text
    return text


def text_of(pattern: re.Pattern[str], expected: str) -> Parser:
    """Text that ``pattern`` matches in full."""
    @expects(expected)
    def parse(ctx: Context, node: Node, path: str) -> str | Bad:
        text = scalar(ctx, node, path, expected)
        if text is not BAD and not pattern.fullmatch(text):
            ctx.problem(node_line(node), path, f"{text!r} is not valid", expected)
            return BAD
        return text
    return parse


def one_of(choices: Sequence[str], fold: bool = False, unknown: str = "{!r} is not allowed"
           ) -> Parser:
    """One of ``choices`` (``fold``: any case, returned lower-cased)."""
    expected = "one of " + choices_text(choices)

    @expects(expected)
    def parse(ctx: Context, node: Node, path: str) -> str | Bad:
        text = scalar(ctx, node, path, expected)
        if text is BAD:
            return BAD
        if (text.lower() if fold else text) not in choices:
            ctx.problem(node_line(node), path, unknown.format(text), expected)
            return BAD
        return text.lower() if fold else text
    return parse


def number(lo: float, hi: float, *, integer: bool) -> Parser:
    """A finite number from ``lo`` to ``hi`` (``_`` digit separators allowed)."""
    kind = "a whole number" if integer else "a number"
    expected = (f"{kind} from {int(lo)} to {int(hi)}" if integer
                else f"{kind} from {lo:g} to {hi:g}")

    @expects(expected)
    def parse(ctx: Context, node: Node, path: str) -> float | int | Bad:
        text = scalar(ctx, node, path, expected)
        if text is BAD:
            return BAD
        try:
            value = int(text.replace("_", ""), 10) if integer else float(text.replace("_", ""))
        except ValueError:
            ctx.problem(node_line(node), path, f"{text!r} is not {kind}", expected)
            return BAD
        if not math.isfinite(value) or not lo <= value <= hi:
            ctx.problem(node_line(node), path, f"{text!r} is out of range", expected)
            return BAD
        return value
    return parse


@expects("true or false")
def parse_bool(ctx: Context, node: Node, path: str) -> bool | Bad:
    if isinstance(node, ScalarNode) and node.tag == _BOOL_TAG:
        return bool(ctx.loader.construct_yaml_bool(node))
    ctx.problem(node_line(node), path, f"{describe(node)} given", "true or false")
    return BAD


_HHMM_EXPECTED = 'a quoted 24-hour time "HH:MM"'


@expects(_HHMM_EXPECTED)
def parse_hhmm(ctx: Context, node: Node, path: str) -> datetime.time | Bad:
    text = scalar(ctx, node, path, _HHMM_EXPECTED)
    match = _HHMM_RE.fullmatch(text) if text is not BAD else None
    if match is None:
        if text is not BAD:
            ctx.problem(node_line(node), path, f"{text!r} is not a time", _HHMM_EXPECTED)
        return BAD
    return datetime.time(int(match[1]), int(match[2]))


_TZ_EXPECTED = "an IANA time zone name such as America/Chicago"


@expects(_TZ_EXPECTED)
def parse_tz(ctx: Context, node: Node, path: str) -> ZoneInfo | Bad:
    text = scalar(ctx, node, path, _TZ_EXPECTED)
    if text is BAD:
        return BAD
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        close = difflib.get_close_matches(text, sorted(available_timezones()), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        ctx.problem(node_line(node), path, f"{text!r} is not a known time zone{hint}",
                    _TZ_EXPECTED)
        return BAD


parse_name = text_of(NAME_RE, NAME_EXPECTED)


def name_in(names: Iterable[str] | None, kind: str) -> Parser:
    """A reference to one of ``names`` (e.g. an entity); any well-formed name when ``names`` is
    None: the section defining them was unreadable and is reported already, so references to it
    are not checked (no cascading errors)."""
    if names is None:
        return parse_name
    return one_of(sorted(names), unknown=f"unknown {kind} {{!r}}")


def file_path(base: Path, must_exist: bool = False) -> Parser:
    """A path, relative ones resolved against ``base`` (the folder of the file naming it)."""
    expected = "a file path (relative to this file's folder)"

    @expects(expected)
    def parse(ctx: Context, node: Node, path: str) -> Path | Bad:
        text = scalar(ctx, node, path, expected)
        if text is BAD:
            return BAD
        resolved = Path(os.path.abspath(base / os.path.expanduser(text)))
        if must_exist and not resolved.is_file():
            ctx.problem(node_line(node), path, f"{text!r} does not exist ({resolved})",
                        "an existing file")
            return BAD
        return resolved
    return parse


def record(spec: Spec, build: Callable[..., Any], expected: str) -> Parser:
    """A parser for a mapping with fixed keys, built into ``build(**fields)``."""
    @expects(expected)
    def parse(ctx: Context, node: Node, path: str) -> Any:
        m = MapNode.of(ctx, node, path, expected)
        values = m.fields(spec) if m is not None else None
        return BAD if values is None else build(**values)
    return parse


def sequence_items(ctx: Context, node: Node, path: str, expected: str
                   ) -> list[tuple[Node, str]] | Bad:
    """A list node's items with their paths (``groups[0]``, ...), or BAD."""
    if not isinstance(node, SequenceNode):
        what = (f"{describe(node)} is a single value" if isinstance(node, ScalarNode)
                else f"{describe(node)} given")
        ctx.problem(node_line(node), path, what, expected)
        return BAD
    return [(item, join_path(path, i)) for i, item in enumerate(node.value)]


def list_of(item: Parser, expected: str, non_empty: bool = True) -> Parser:
    """A list of ``item`` values, as a tuple; BAD when any item is bad."""
    @expects(expected)
    def parse(ctx: Context, node: Node, path: str) -> tuple[Any, ...] | Bad:
        items = sequence_items(ctx, node, path, expected)
        if items is BAD:
            return BAD
        if non_empty and not items:
            ctx.problem(node_line(node), path, "empty list", expected)
            return BAD
        values = [item(ctx, n, p) for n, p in items]
        return BAD if any(v is BAD for v in values) else tuple(values)
    return parse


# ---------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------

def yaml_problem(display: str | None, exc: yaml.YAMLError, text: str) -> str:
    """A YAML syntax error as one problem line, with its line and column."""
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
    context_mark = getattr(exc, "context_mark", None)
    if context and context_mark is not None:
        what += f" ({context} on line {context_mark.line + 1})"
    where = f"{display}:{line}: " if display is not None else f"line {line}: "
    return f"{where}invalid YAML at column {column}: {what}; expected well-formed YAML"


def compose(text: str, display: str | None) -> tuple[Node | None, NodeLoader]:
    """The node tree of ``text`` (None: empty). Raises ConfigError on malformed YAML."""
    try:
        loader = NodeLoader(text)      # the reader already rejects non-printable characters
        try:
            return loader.get_single_node(), loader
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_problem(display, exc, text)) from None


def read_file(path: Path, display: str) -> tuple[Node | None, NodeLoader]:
    """The node tree of a UTF-8 YAML file. Raises ConfigError naming ``display``."""
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
    return compose(text, display)
