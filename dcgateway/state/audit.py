"""The audit trail: one append-only JSON-lines file per kind of record in ``data_dir``.

``keys-audit.jsonl`` (written by the key manager), ``groups-audit.jsonl`` (group changes),
``sessions-audit.jsonl`` (port closures lifted) and ``portal-audit.jsonl`` (logins, failed logins,
refused requests). Reading merges them, newest first, optionally for one registered entity
(records carry ``entity``; key records are attributed through their Session ID). Nothing here
ever holds a secret: :class:`~dcgateway.auth.AuditLog` refuses field names that mention one.
"""

from __future__ import annotations

import getpass
import heapq
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..auth.audit import AUDIT_FILE_NAME, AuditLog

KINDS = {"keys": AUDIT_FILE_NAME, "groups": "groups-audit.jsonl",
         "sessions": "sessions-audit.jsonl", "portal": "portal-audit.jsonl"}


def _os_user() -> str | None:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return None


class AuditTrail:
    """``record(kind, action, who=..., entity=..., outcome=..., address=..., **fields)``;
    ``entries(entity)`` newest first. ``entity_of_session_id`` attributes key records."""

    def __init__(self, data_dir: Path,
                 entity_of_session_id: Callable[[str], str | None] = lambda sid: None) -> None:
        self.data_dir = Path(data_dir)
        self._entity_of = entity_of_session_id
        self._logs = {kind: AuditLog(self.data_dir / name) for kind, name in KINDS.items()}

    def log(self, kind: str) -> AuditLog:
        return self._logs[kind]

    def record(self, kind: str, action: str, *, who: str | None, entity: str | None = None,
               outcome: str = "ok", address: str | None = None, **fields: Any
               ) -> dict[str, Any]:
        extra = {k: v for k, v in fields.items() if v is not None}
        if address is None and kind != "portal":
            extra.setdefault("os_user", _os_user())
        access_key_id = extra.pop("access_key_id", None)
        session_id = extra.pop("session_id", None)
        # The entry's fields in this order: entity, outcome, [address], then the rest.
        more: dict[str, Any] = {"entity": entity, "outcome": outcome}
        if address:
            more["address"] = address
        more.update(extra)
        return self._logs[kind].record(action, who=who, access_key_id=access_key_id,
                                       session_id=session_id, **more)

    def entries(self, entity: str | None = None) -> Iterator[dict[str, Any]]:
        def tagged(kind: str) -> list[tuple[str, int, dict[str, Any]]]:
            out = []
            for i, e in enumerate(self._logs[kind].entries()):
                if e.get("entity") is None and e.get("session_id"):
                    e["entity"] = self._entity_of(e["session_id"])
                e.setdefault("kind", kind)
                if entity is None or e.get("entity") == entity:
                    out.append((str(e.get("ts", "")), i, e))
            return out[::-1]
        streams = [tagged(kind) for kind in self._logs]
        for _, _, e in heapq.merge(*streams, key=lambda t: (t[0], t[1]), reverse=True):
            yield e
