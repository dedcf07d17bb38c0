"""Copies across FIX versions: a source message's body made valid for a target whose BeginString
(and so data dictionary) differs (docs/architecture.md: "A copy must be valid in the target session's
BeginString and data dictionary").

Only the body is translated; the header is rebuilt per target anyway. What FIX defines between
4.2 and 4.4 for what a drop copy carries is the ExecutionReport (35=8) change of FIX 4.3/4.4
(FIX 4.4 Vol. 4 "Execution Reports", ExecType and the removal of ExecTransType):

=================================  ===========================================================
FIX 4.2                            FIX 4.4
=================================  ===========================================================
ExecTransType(20)=0 New            (20 removed); ExecType(150)=1 or 2 becomes F (Trade)
20=1 Cancel                        150=H (Trade Cancel)
20=2 Correct                       150=G (Trade Correct)
20=3 Status                        150=I (Order Status)
=================================  ===========================================================

and back: 150=F becomes 150=2 (Fill) when the order is filled, else 1 (Partial fill), with 20=0;
H gives 20=1 and G 20=2 with 150 as for F; I gives 20=3 with 150 = OrdStatus(39) (FIX 4.2 used
the same codes for both). A Fill is told from a Partial fill by OrdStatus(39) (2 Filled, 1
Partially filled); any other status by LeavesQty(151) = 0 with CumQty(14) >= OrderQty(38).

Any other message, and whatever the mapping leaves, is copied only when every field is defined
for that MsgType in the target dictionary with a value the target accepts: the result is checked
by the target's :class:`~.validate.Validator` before it is returned, so a translated copy always
validates (or is refused with the reason and tag).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from . import tags as T
from .dictionary import DataDictionary, Section
from .validate import ANY_VALUE, TYPE_PATTERNS, USER_DEFINED_MIN, Validator

Fields = Sequence[tuple[int, bytes]]
ER = T.MsgType.EXECUTION_REPORT
V42, V44 = b"FIX.4.2", b"FIX.4.4"


@dataclass(frozen=True, slots=True)
class Untranslatable:
    """Why a copy cannot be made valid for the target (``tag`` names the offending field)."""

    reason: str
    tag: int | None = None


Mapper = Callable[[Fields], "list[tuple[int, bytes]] | Untranslatable"]


# ----------------------------------------------------------------------------------------------
# ExecutionReport mappings
# ----------------------------------------------------------------------------------------------

_TRANS_TO_EXEC_TYPE = {b"1": b"H", b"2": b"G", b"3": b"I"}
_EXEC_TYPE_TO_TRANS = {b"F": b"0", b"H": b"1", b"G": b"2", b"I": b"3"}


def _first(fields: Fields, tag: int) -> bytes | None:
    for t, v in fields:
        if t == tag:
            return v
    return None


def _qty(v: bytes | None) -> float | None:
    try:
        return None if v is None else float(v)
    except ValueError:
        return None


def fill_exec_type(fields: Fields) -> bytes:
    """FIX 4.2 ExecType for a FIX 4.4 trade: 2 (Fill) or 1 (Partial fill); see module doc."""
    status = _first(fields, T.ORD_STATUS)
    if status in (b"1", b"2"):
        return b"2" if status == b"2" else b"1"
    leaves, cum, qty = (_qty(_first(fields, t)) for t in (T.LEAVES_QTY, T.CUM_QTY, T.ORDER_QTY))
    if leaves == 0 and (qty is None or (cum is not None and cum >= qty)):
        return b"2"
    return b"1"


def _status_44(fields: Fields) -> bytes | None:
    """FIX 4.2's OrdStatus 5 (Replaced) is gone from FIX 4.4, where a replaced order reports its
    own state: new, partially filled or filled by its CumQty (14) and LeavesQty (151)."""
    status = _first(fields, T.ORD_STATUS)
    if status != b"5":
        return status
    cum, leaves = _qty(_first(fields, 14)), _qty(_first(fields, 151))
    if not cum:
        return b"0"
    return b"2" if leaves == 0 else b"1"


def er_42_to_44(fields: Fields) -> list[tuple[int, bytes]] | Untranslatable:
    """FIX 4.2 ExecutionReport body -> FIX 4.4: ExecTransType folded into ExecType, OrdStatus 5
    (Replaced) as the order's own state."""
    trans = _first(fields, T.EXEC_TRANS_TYPE)
    exec_type = _first(fields, T.EXEC_TYPE)
    if trans in (None, b"0"):
        new_type = b"F" if exec_type in (b"1", b"2") else exec_type
    else:
        mapped = _TRANS_TO_EXEC_TYPE.get(trans)
        if mapped is None:
            return Untranslatable(f"ExecTransType(20)={trans.decode('latin-1')!r} has no FIX 4.4 "
                                  "equivalent", T.EXEC_TRANS_TYPE)
        new_type = mapped
    status = _status_44(fields)
    return [(t, new_type if t == T.EXEC_TYPE and new_type is not None
             else status if t == T.ORD_STATUS and status is not None else v)
            for t, v in fields if t != T.EXEC_TRANS_TYPE]


def er_44_to_42(fields: Fields) -> list[tuple[int, bytes]] | Untranslatable:
    """FIX 4.4 ExecutionReport body -> FIX 4.2: ExecTransType(20) put back before ExecRefID (19)
    or ExecType (150), where FIX 4.2 lists it."""
    exec_type = _first(fields, T.EXEC_TYPE)
    if exec_type is None:
        return Untranslatable("ExecType(150) missing", T.EXEC_TYPE)
    trans = _EXEC_TYPE_TO_TRANS.get(exec_type, b"0")
    if exec_type == b"I":
        status = _first(fields, T.ORD_STATUS)
        if status is None:
            return Untranslatable("ExecType(150)=I needs OrdStatus(39) in FIX 4.2", T.ORD_STATUS)
        new_type = status
    elif exec_type in _EXEC_TYPE_TO_TRANS:
        new_type = fill_exec_type(fields)
    else:
        new_type = exec_type
    out: list[tuple[int, bytes]] = []
    anchor = 19 if _first(fields, 19) is not None else T.EXEC_TYPE
    for t, v in fields:
        if t == T.EXEC_TRANS_TYPE:
            continue
        if t == anchor:
            out.append((T.EXEC_TRANS_TYPE, trans))
        out.append((t, new_type if t == T.EXEC_TYPE else v))
    return out


#: (source BeginString, target BeginString, MsgType) -> body mapping (docs/architecture.md rule 2).
MAPPERS: dict[tuple[bytes, bytes, bytes], Mapper] = {
    (V42, V44, ER): er_42_to_44,
    (V44, V42, ER): er_44_to_42,
}
#: Tags a mapping rewrites: their source values are not compared with the target's enumerations.
_MAPPED_TAGS: dict[tuple[bytes, bytes, bytes], frozenset[int]] = {
    (V42, V44, ER): frozenset({T.EXEC_TRANS_TYPE, T.EXEC_TYPE, T.ORD_STATUS}),
    (V44, V42, ER): frozenset({T.EXEC_TRANS_TYPE, T.EXEC_TYPE}),
}


# ----------------------------------------------------------------------------------------------
# Translating one message
# ----------------------------------------------------------------------------------------------

class Translator:
    """Translation from one dictionary to another, built once per (source, target) pair: holds
    the target's validator (compiled value checks) that every translated body must pass."""

    __slots__ = ("check", "source", "target", "dropped")

    def __init__(self, source: DataDictionary, target: DataDictionary,
                 target_validator: Validator | None = None) -> None:
        self.source = source
        self.target = target
        self.check = target_validator if target_validator is not None else Validator(target)
        self.dropped: tuple[int, ...] = ()

    def translate(self, msg_type: bytes, fields: Fields, *, drop_undefined: bool = False
                  ) -> list[tuple[int, bytes]] | Untranslatable:
        """The body for the target, or why there is none. ``drop_undefined``: fields the target
        dictionary does not define for this MsgType (a FIX 4.2 ExecBroker (76) in a FIX 4.4
        copy) are left out instead of making the copy untranslatable; :attr:`dropped` says
        which."""
        key = (self.source.begin_string, self.target.begin_string, msg_type)
        mapper = MAPPERS.get(key)
        out = mapper(fields) if mapper is not None else list(fields)
        self.dropped = ()
        if isinstance(out, Untranslatable):
            return out
        mdef = self.target.messages.get(msg_type)
        if drop_undefined and mdef is not None:
            allowed = mdef.body.tags
            kept = [(t, v) for t, v in out if t in allowed or t >= 5000]
            if len(kept) != len(out):
                self.dropped = tuple(sorted({t for t, _ in out if t not in allowed and t < 5000}))
                out = kept
        found = self.check.check_body(msg_type, out)
        if found is None:
            return out
        begin = self.target.begin_string.decode()
        return Untranslatable(f"{begin}: {found.text}", found.tag)


def translate_body(fields: Fields, msg_type: bytes, source: DataDictionary,
                   target: DataDictionary) -> list[tuple[int, bytes]] | Untranslatable:
    """One message's body from ``source``'s dictionary to ``target``'s (pure; builds the
    :class:`Translator` each call: keep a Translator for repeated use)."""
    if source is target:
        return list(fields)
    return Translator(source, target).translate(msg_type, fields)


# ----------------------------------------------------------------------------------------------
# Can a group's copies always be made valid? (check-config)
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TranslationCheck:
    """``possible``: some valid source message of each MsgType has a valid copy (False refuses
    the group). ``always``: every valid source message does. ``problems`` says why not, one
    line per MsgType and field."""

    possible: bool
    always: bool
    problems: tuple[str, ...]


def check_translation(source: DataDictionary, target: DataDictionary,
                      msg_types: Iterable[bytes]) -> TranslationCheck:
    """Whether copies of ``msg_types`` from ``source`` can always be made valid in ``target``."""
    impossible: list[str] = []
    lossy: list[str] = []
    for mt in sorted(set(msg_types)):
        src = source.messages.get(mt)
        if src is None or source is target:
            continue                        # nothing of that type can arrive, or no translation
        dst = target.messages.get(mt)
        name = f"35={mt.decode('latin-1')}"
        if dst is None:
            impossible.append(f"{name}: not defined in the {target.begin_string.decode()} "
                              "dictionary")
            continue
        key = (source.begin_string, target.begin_string, mt)
        skip = _MAPPED_TAGS.get(key, frozenset())
        added = {T.EXEC_TRANS_TYPE} if key == (V44, V42, ER) else set()
        for tag in sorted(dst.body.required - src.body.required - added):
            bucket = lossy if tag in src.body.tags else impossible
            bucket.append(f"{name}: tag {tag} is required in {target.begin_string.decode()} "
                          "but optional or absent in the source")
        lossy.extend(f"{name}: {line}" for line in
                     _section_gaps(source, target, src.body, dst.body, skip))
    return TranslationCheck(not impossible, not impossible and not lossy,
                            tuple(impossible + lossy))


def _section_gaps(source: DataDictionary, target: DataDictionary, src: Section, dst: Section,
                  skip: frozenset[int]) -> list[str]:
    """Fields the source allows that the target would reject: undefined there, a narrower
    enumeration or data type, or a repeating group laid out differently."""
    out: list[str] = []
    for tag in src.members:
        if tag in skip or (tag >= USER_DEFINED_MIN and tag not in target.fields):
            continue
        if tag not in dst.index:
            out.append(f"tag {tag} is not defined for this MsgType in "
                       f"{target.begin_string.decode()}")
            continue
        sf, tf = source.fields.get(tag), target.fields.get(tag)
        if sf is not None and tf is not None:
            if tf.values and not sf.values <= tf.values:
                extra = b",".join(sorted(sf.values - tf.values)).decode("latin-1")
                out.append(f"tag {tag} values {extra} are not valid in "
                           f"{target.begin_string.decode()}")
            elif tag not in src.groups and not _type_fits(sf.type, tf.type):
                out.append(f"tag {tag} is {sf.type} in the source but {tf.type} in the target")
        sg, tg = src.groups.get(tag), dst.groups.get(tag)
        if sg is None:
            continue
        if tg is None or tg.delimiter != sg.delimiter:
            out.append(f"repeating group {tag} is laid out differently in the target")
            continue
        out.extend(f"group {tag}: tag {t} is required in each entry in the target only"
                   for t in tg.entry.required_in_order if t not in sg.entry.required)
        out.extend(_section_gaps(source, target, sg.entry, tg.entry, skip))
    return out


def _type_fits(source_type: str, target_type: str) -> bool:
    """Every value of ``source_type`` is one of ``target_type`` (same pattern, or a target that
    takes any string). Group counts are compared by layout, not here."""
    wanted = TYPE_PATTERNS.get(target_type, ANY_VALUE)
    return wanted == ANY_VALUE or wanted == TYPE_PATTERNS.get(source_type, ANY_VALUE)
