"""Copies valid for every target (FIX Vol. 1 "Message format": a message must be valid in the
session's BeginString and data dictionary). A ``fix``-front-end copy keeps its source's MsgType
and body; when the target session uses another dictionary than the source (a FIX 4.2 source
copied to a FIX 4.4 target), the body is translated where the standard defines the mapping
(ExecutionReport: ExecTransType (20) folded into ExecType (150), and back), fields the target's
dictionary does not define for the MsgType are left out (counted), and the result must validate
against the target's dictionary. A message that cannot be made valid is not sent as an invalid
copy: its seq is gap-filled and the fault logged and counted. ``ilink2`` copies carry the
original message whole inside 35=n and need no translation.

Sans I/O; each message is translated once per (source, target dictionary) pair, cached on its
:class:`~dcgateway.fix.dropcopy.CopySource`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from ..fix.codec import FieldError, parse_fields
from ..fix.dictionary import DataDictionary
from ..fix.dropcopy import CopySource
from ..fix.translate import Translator, Untranslatable
from ..fix.validate import Validator
from ..ratelog import RateLimitedLog

log = logging.getLogger("dcgateway.fanout")


class CopyAdapter:
    """``adapter(src)``: ``src`` itself, a translated variant, or None (cannot be made valid).
    ``sources`` maps a source's SenderCompID (bytes) to its dictionary."""

    def __init__(self, target: str, target_dictionary: DataDictionary,
                 sources: Mapping[bytes, DataDictionary]) -> None:
        self.target = target
        validator = Validator(target_dictionary)
        self._translators = {comp: Translator(dd, target_dictionary, validator)
                             for comp, dd in sources.items() if dd is not target_dictionary}
        self.untranslatable = 0          # copies that could not be made valid (gap-filled)
        self.fields_dropped = 0          # fields left out of translated copies
        self._log = RateLimitedLog(log, interval=30.0)

    @property
    def needed(self) -> bool:
        return bool(self._translators)

    def __call__(self, src: CopySource) -> CopySource | None:
        tr = self._translators.get(src.sender_comp_id or b"")
        if tr is None:
            return src
        variants = src.variants
        if variants is None:
            variants = src.variants = {}
        elif self in variants:
            return variants[self]
        variants[self] = out = self._translate(tr, src)
        return out

    def _translate(self, tr: Translator, src: CopySource) -> CopySource | None:
        msg = src.msg
        try:
            fields = parse_fields(msg.raw, msg.body_start, msg.body_end)
        except FieldError as exc:
            result: list[tuple[int, bytes]] | Untranslatable = Untranslatable(exc.text, exc.tag)
        else:
            result = tr.translate(msg.msg_type, fields, drop_undefined=True)
        if isinstance(result, Untranslatable):
            self.untranslatable += 1
            self._log.log(("untranslatable", msg.msg_type), logging.ERROR,
                          "target %s: a copy of %s MsgSeqNum %s (35=%s) cannot be made valid "
                          "for it: %s; its seq is gap-filled", self.target,
                          (src.sender_comp_id or b"?").decode("ascii", "replace"), msg.seq_num,
                          msg.msg_type.decode("ascii", "replace"), result.reason)
            return None
        if tr.dropped:
            self.fields_dropped += len(tr.dropped)
            self._log.log(("dropped", msg.msg_type, tr.dropped), logging.WARNING,
                          "target %s: fields %s of 35=%s are not defined in its data "
                          "dictionary; left out of its copies", self.target, list(tr.dropped),
                          msg.msg_type.decode("ascii", "replace"))
        return src.with_body(b"".join(b"%d=%s\x01" % (t, v) for t, v in result))
