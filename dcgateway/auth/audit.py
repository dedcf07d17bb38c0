"""Append-only audit log of key operations (who did what to which key pair, and when).

One JSON object per line, e.g.::

    {"ts":"2026-03-01T15:00:00Z","who":"tina","action":"create","access_key_id":"...",
     "session_id":"ABC","expires":"2027-03-01T22:00:00Z"}

``who`` is the CLI's ``--as`` name, or ``"unknown"``. Actions: ``create``, ``delete``,
``shorten_expiry`` (the older pair's expiry moved by a new creation), ``download``, ``unlock``.
Each line is written with a single ``write`` on an ``O_APPEND`` descriptor (so concurrent
writers never interleave within a line) and fsynced before the call returns. A secret never goes
in: fields whose name mentions a secret are refused outright.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..fsutil import private_dir

#: Default file name inside the gateway's data_dir.
AUDIT_FILE_NAME = "keys-audit.jsonl"

_FORBIDDEN = ("secret", "password", "signature")


class AuditLog:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r})"

    def record(self, action: str, *, who: str | None, access_key_id: str | None,
               session_id: str | None, now: datetime | None = None, **extra: Any
               ) -> dict[str, Any]:
        """Append one entry and fsync it. Returns the entry written."""
        for name in extra:
            if any(word in name.lower() for word in _FORBIDDEN):
                raise ValueError(f"audit field {name!r} is not allowed (secrets stay out of the "
                                 f"audit log)")
        when = now or datetime.now(timezone.utc)
        entry = {"ts": when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                 "who": who or "unknown", "action": action,
                 "access_key_id": access_key_id, "session_id": session_id, **extra}
        line = (json.dumps(entry, separators=(",", ":"), ensure_ascii=True) + "\n").encode()
        private_dir(self.path.parent)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        return entry

    def entries(self) -> Iterator[dict[str, Any]]:
        """Every entry, oldest first (a torn last line from a crash is skipped)."""
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            return
        with f:
            for raw in f:
                try:
                    yield json.loads(raw)
                except ValueError:
                    continue
