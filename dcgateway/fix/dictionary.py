"""FIX data dictionaries: QuickFIX's XML format read into a frozen model (no I/O beyond reading
the file it is given).

Why a data dictionary: FIX Vol. 2 "Session Level Reject" and the FIX Session Layer Test Cases
(case 14, "Receive application or administrative message with ...") expect an engine to reject a
message whose tags are undefined, not defined for its MsgType, missing when required, malformed
or out of range. Those facts live in the specification's message and field definitions (FIX 4.2
and 4.4 Vol. 1 "Data types", the per-message tables of Vol. 2-7); QuickFIX publishes them as XML
and venues (CME among them) publish their own dictionaries in the same format, so that format is
what the gateway reads.

The XML: ``<fix major= minor=>`` holds ``<header>``, ``<trailer>``, ``<messages>`` (each
``<message name= msgtype= msgcat=>``), ``<components>`` and ``<fields>`` (``<field number= name=
type=>`` with optional ``<value enum=>`` children). A message, group or component lists
``<field name= required=>``, ``<group name= required=>`` (named after its NumInGroup field; the
first member is the delimiter, FIX Vol. 1 "Repeating Groups") and ``<component name= required=>``.
Components are flattened into the messages that use them; a field inside a component is required
only when both it and the component reference are (QuickFIX's reading of "required component").

Everything here is immutable once built, so one dictionary can back any number of sessions.
"""

from __future__ import annotations

import functools
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType

from ..errors import ConfigError

#: BeginString -> file shipped in ``dcgateway/fix/spec`` (see the README there).
#: The shipped dictionaries by name: plain FIX 4.2 and 4.4, and FIX 4.2 with the venue's iLink 2
#: extensions (secure-logon tags, order mass actions, the venue's order fields).
SHIPPED: Mapping[str, str] = MappingProxyType({"FIX.4.2": "FIX42.xml", "FIX.4.4": "FIX44.xml",
                                               "ILINK2": "ILINK2.xml"})


class DictionaryError(ConfigError):
    """A data dictionary that cannot be used: names the file and what is wrong in it."""


@dataclass(frozen=True, slots=True)
class FieldDef:
    """One ``<fields>`` entry: tag, name, FIX data type (upper case, as written in the XML) and
    the enumerated values (wire bytes; empty when any value of the type is allowed)."""

    tag: int
    name: str
    type: str
    values: frozenset[bytes]


@dataclass(frozen=True, slots=True)
class Section:
    """An ordered run of fields: the standard header, the trailer, a message body or one entry
    of a repeating group.

    ``members`` are the tags of this level in dictionary order (a nested group appears as its
    NumInGroup tag); ``required`` the members that must be present; ``groups`` the repeating
    groups of this level by NumInGroup tag; ``tags`` every tag allowed at any depth. Derived:
    ``index`` (member tag -> position) and ``required_in_order``."""

    members: tuple[int, ...]
    required: frozenset[int]
    groups: Mapping[int, GroupDef]
    tags: frozenset[int]
    index: Mapping[int, int] = field(init=False, repr=False, compare=False)
    required_in_order: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index",
                           MappingProxyType({t: i for i, t in enumerate(self.members)}))
        object.__setattr__(self, "required_in_order",
                           tuple(t for t in self.members if t in self.required))


@dataclass(frozen=True, slots=True)
class GroupDef:
    """A repeating group (FIX Vol. 1 "Repeating Groups"): NumInGroup tag, the delimiter (the
    first field of every entry) and the layout of one entry."""

    count_tag: int
    delimiter: int
    entry: Section


@dataclass(frozen=True, slots=True)
class MessageDef:
    """One ``<message>``: MsgType (35), name, category (``admin`` or ``app``) and body."""

    msg_type: bytes
    name: str
    category: str
    body: Section


@dataclass(frozen=True, slots=True)
class DataDictionary:
    """A loaded dictionary. ``begin_string`` is the BeginString (8) it describes, ``source`` the
    file or shipped name it came from (for messages)."""

    begin_string: bytes
    source: str
    fields: Mapping[int, FieldDef]
    header: Section
    trailer: Section
    messages: Mapping[bytes, MessageDef]

    def field_by_name(self, name: str) -> FieldDef | None:
        for f in self.fields.values():
            if f.name == name:
                return f
        return None

    def __repr__(self) -> str:
        return (f"DataDictionary({self.begin_string.decode()!r}, source={self.source!r}, "
                f"{len(self.messages)} messages, {len(self.fields)} fields)")


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------

def load_dictionary(name_or_path: str | os.PathLike[str]) -> DataDictionary:
    """``"FIX.4.2"`` / ``"FIX.4.4"`` / ``"ILINK2"``: the dictionaries shipped with the package (read through
    ``importlib.resources``, so an installed wheel works as well as a checkout). Anything else
    is a path to a venue's dictionary in QuickFIX's XML format. Raises :class:`DictionaryError`."""
    if isinstance(name_or_path, str) and name_or_path in SHIPPED:
        return load_shipped(name_or_path)
    path = os.fspath(name_or_path)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise DictionaryError(f"{path}: cannot read the data dictionary: {exc.strerror or exc}; "
                              f"expected a QuickFIX-format XML file or one of "
                              f"{', '.join(SHIPPED)}") from None
    return parse_dictionary(data, path)


@functools.lru_cache(maxsize=len(SHIPPED))
def load_shipped(begin_string: str) -> DataDictionary:
    """A shipped dictionary, parsed once per process (the files never change while it runs)."""
    fname = SHIPPED.get(begin_string)
    if fname is None:
        raise DictionaryError(f"{begin_string}: no shipped data dictionary; expected one of "
                              f"{', '.join(SHIPPED)} or a file path")
    data = resources.files(__package__).joinpath("spec", fname).read_bytes()
    return parse_dictionary(data, f"{begin_string} ({fname})")


class DictionaryCache:
    """Dictionaries by name or path, loaded once for the owner's lifetime. The gateway's
    composition root owns one (docs/architecture.md rule 4: no module-level singletons); a config reload
    makes a new one, so an edited venue file is read again."""

    __slots__ = ("_loaded",)

    def __init__(self) -> None:
        self._loaded: dict[str, DataDictionary] = {}

    def get(self, name_or_path: str | os.PathLike[str]) -> DataDictionary:
        key = os.fspath(name_or_path)
        if key not in SHIPPED:
            key = os.path.abspath(key)
        found = self._loaded.get(key)
        if found is None:
            found = self._loaded[key] = load_dictionary(name_or_path)
        return found


#: The venue's secure Logon (docs/venue.md): tags every session's Logon may carry, whatever its
#: dictionary, since every Logon is signed: 354/355 the Access Key ID, 1400-1402 the signature
#: method and signature, 1603-1605 the client's application system.
SECURE_LOGON_TAGS = (354, 355, 1400, 1401, 1402, 1603, 1604, 1605)


def with_secure_logon(dd: DataDictionary) -> DataDictionary:
    """``dd`` with the secure-logon tags its Logon (35=A) lacks added as optional fields (defined
    as in the shipped ILINK2 dictionary); ``dd`` itself when nothing is missing."""
    logon = dd.messages.get(b"A")
    if logon is None:
        return dd
    missing = tuple(t for t in SECURE_LOGON_TAGS if t not in logon.body.tags)
    if not missing:
        return dd
    venue = load_shipped("ILINK2")
    fields = dict(dd.fields)
    for t in missing:
        fields.setdefault(t, venue.fields[t])
    body = Section(logon.body.members + missing, logon.body.required, logon.body.groups,
                   logon.body.tags | frozenset(missing))
    messages = dict(dd.messages)
    messages[b"A"] = MessageDef(logon.msg_type, logon.name, logon.category, body)
    return DataDictionary(dd.begin_string, dd.source, MappingProxyType(fields), dd.header,
                          dd.trailer, MappingProxyType(messages))


def parse_dictionary(data: bytes, source: str) -> DataDictionary:
    """Parse QuickFIX XML ``data``; ``source`` names the file in every error."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        line, col = exc.position
        raise DictionaryError(f"{source}:{line}:{col}: not well-formed XML ({exc}); "
                              "expected a QuickFIX data dictionary") from None
    return _Builder(root, source).build()


# ----------------------------------------------------------------------------------------------
# Building the model
# ----------------------------------------------------------------------------------------------

def _describe(elem: ET.Element) -> str:
    attrs = " ".join(f"{k}='{elem.get(k)}'" for k in ("name", "msgtype", "number") if elem.get(k))
    return f"<{elem.tag}{' ' if attrs else ''}{attrs}>"


class _Builder:
    """One parse: fields first, then components on demand, then header, trailer and messages."""

    def __init__(self, root: ET.Element, source: str) -> None:
        self.root = root
        self.source = source
        self.fields: dict[int, FieldDef] = {}
        self.by_name: dict[str, int] = {}
        self.components: dict[str, ET.Element] = {}
        self._expanding: list[str] = []

    def fail(self, where: str, what: str, expected: str) -> DictionaryError:
        return DictionaryError(f"{self.source}: {where}: {what}; expected {expected}")

    def build(self) -> DataDictionary:
        root = self.root
        if root.tag != "fix":
            raise self.fail(f"<{root.tag}>", "root element is not <fix>",
                            "a QuickFIX data dictionary (<fix major= minor=>)")
        begin = self._begin_string()
        self._read_fields(self._section_elem("fields"))
        comps = root.find("components")
        for comp in (comps if comps is not None else ()):
            name = self._attr(comp, "name", "<components>")
            if name in self.components:
                raise self.fail(f"<components>/{_describe(comp)}", "component defined twice",
                                "unique component names")
            self.components[name] = comp
        header = self._section(self._section_elem("header"), "<header>", True)
        trailer = self._section(self._section_elem("trailer"), "<trailer>", True)
        messages = self._read_messages(self._section_elem("messages"))
        return DataDictionary(begin, self.source, MappingProxyType(self.fields), header, trailer,
                              MappingProxyType(messages))

    def _begin_string(self) -> bytes:
        kind = self.root.get("type", "FIX")
        major, minor = self.root.get("major", ""), self.root.get("minor", "")
        if not (major.isdigit() and minor.isdigit()):
            raise self.fail("<fix>", f"major={major!r} minor={minor!r}",
                            "numeric major and minor attributes (e.g. major='4' minor='4')")
        return f"{kind}.{major}.{minor}".encode()

    def _section_elem(self, name: str) -> ET.Element:
        found = self.root.find(name)
        if found is None:
            raise self.fail("<fix>", f"no <{name}> element",
                            "<header>, <trailer>, <messages> and <fields>")
        return found

    def _attr(self, elem: ET.Element, name: str, where: str) -> str:
        value = elem.get(name)
        if not value:
            raise self.fail(f"{where}/{_describe(elem)}", f"missing attribute {name!r}",
                            f"{name}='...' on every <{elem.tag}>")
        return value

    def _read_fields(self, fields_elem: ET.Element) -> None:
        for f in fields_elem:
            if f.tag != "field":
                continue
            where = f"<fields>/{_describe(f)}"
            number = self._attr(f, "number", "<fields>")
            name = self._attr(f, "name", "<fields>")
            if not number.isdigit() or int(number) <= 0:
                raise self.fail(where, f"bad number {number!r}", "a positive integer tag number")
            tag = int(number)
            if tag in self.fields or name in self.by_name:
                raise self.fail(where, "field defined twice", "unique field numbers and names")
            values = frozenset(v.get("enum", "").encode("latin-1") for v in f
                               if v.tag == "value" and v.get("enum"))
            ftype = self._attr(f, "type", "<fields>").upper()
            self.fields[tag] = FieldDef(tag, name, ftype, values)
            self.by_name[name] = tag

    def _read_messages(self, messages_elem: ET.Element) -> dict[bytes, MessageDef]:
        out: dict[bytes, MessageDef] = {}
        for m in messages_elem:
            if m.tag != "message":
                continue
            name = self._attr(m, "name", "<messages>")
            msg_type = self._attr(m, "msgtype", "<messages>").encode("latin-1")
            where = f"<messages>/{_describe(m)}"
            if msg_type in out:
                raise self.fail(where, "MsgType defined twice", "one <message> per msgtype")
            category = m.get("msgcat", "app")
            out[msg_type] = MessageDef(msg_type, name, category,
                                       self._section(m, where, True, allow_empty=True))
        return out

    def _section(self, elem: ET.Element, where: str, required: bool,
                 allow_empty: bool = False) -> Section:
        """Flatten ``elem``'s children (fields, groups, components) into a :class:`Section`."""
        order: dict[int, bool] = {}
        groups: dict[int, GroupDef] = {}
        for tag, req, group in self._items(elem, where, required):
            order[tag] = order.get(tag, False) or req
            if group is not None and tag not in groups:
                groups[tag] = group
        if not order and not allow_empty:
            raise self.fail(where, "no fields", "at least one <field>, <group> or <component>")
        tags = set(order)
        for g in groups.values():
            tags |= g.entry.tags
        return Section(tuple(order), frozenset(t for t, r in order.items() if r),
                       MappingProxyType(groups), frozenset(tags))

    def _items(self, elem: ET.Element, where: str, required: bool
               ) -> Iterable[tuple[int, bool, GroupDef | None]]:
        """(tag, required, group) for each child, components expanded in place."""
        for child in elem:
            if child.tag not in ("field", "group", "component"):
                continue
            name = self._attr(child, "name", where)
            here = f"{where}/{_describe(child)}"
            req = required and child.get("required", "N").upper() == "Y"
            if child.tag == "component":
                yield from self._component(name, here, req)
                continue
            tag = self.by_name.get(name)
            if tag is None:
                raise self.fail(here, f"unknown field {name!r}", "a field defined in <fields>")
            if child.tag == "field":
                yield tag, req, None
                continue
            entry = self._section(child, here, True)
            yield tag, req, GroupDef(tag, entry.members[0], entry)

    def _component(self, name: str, where: str, required: bool
                   ) -> Iterable[tuple[int, bool, GroupDef | None]]:
        comp = self.components.get(name)
        if comp is None:
            raise self.fail(where, f"unknown component {name!r}",
                            "a component defined in <components>")
        if name in self._expanding:
            raise self.fail(where, f"component {name!r} includes itself "
                            f"({' -> '.join([*self._expanding, name])})", "no cycles")
        self._expanding.append(name)
        try:
            yield from self._items(comp, where, required)
        finally:
            self._expanding.pop()
