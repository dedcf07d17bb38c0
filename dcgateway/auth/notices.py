"""Key-expiry notices: which are due, and which were already sent (docs/venue.md: registered
administrators are emailed before a key expires, at four weeks and again later).

Thresholds are 28, 7 and 1 days before expiry. A key gets the notice of the *tightest* threshold it
is within, once: a key first seen 5 days before expiry gets the 7-day notice and never the 28-day
one; each (key, threshold) is sent at most once. Deleted and already expired keys get none.

Sending (SMTP) is not done here: :func:`due_notices` is pure, and :class:`NoticeLog` remembers what
was sent in a JSON file (atomic writes, ``flock`` around read-modify-write)::

    {"version": 1, "sent": [{"access_key_id": "...", "threshold_days": 28,
                             "sent_at": "2026-03-01T15:00:00Z"}, ...]}

Call :meth:`NoticeLog.remember` only after a notice went out, so a crash in between re-sends
rather than loses it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from ..errors import StoreError
from ..fsutil import atomic_write, exclusive_lock
from .keystore import iso_utc

THRESHOLDS_DAYS: tuple[int, ...] = (28, 7, 1)
#: Default file name inside the gateway's data_dir.
NOTICES_FILE_NAME = "key-notices.json"


class Notice(NamedTuple):
    access_key_id: str
    session_id: str
    threshold_days: int
    expires: datetime


class ExpiringKey(Protocol):
    """What a notice needs of a key (a KeyRecord or a KeyInfo: frozen, so read-only here)."""

    @property
    def access_key_id(self) -> str: ...

    @property
    def session_id(self) -> str: ...

    @property
    def expires(self) -> datetime: ...

    @property
    def deleted(self) -> datetime | None: ...


SentSet = Collection[tuple[str, int]]


def due_notices(keys: Iterable[ExpiringKey], now: datetime, already_sent: SentSet,
                thresholds: Iterable[int] = THRESHOLDS_DAYS) -> list[Notice]:
    """The notices due at ``now`` for ``keys`` (records or infos of the key store), given the
    ``(access_key_id, threshold_days)`` pairs already sent. Ordered by expiry."""
    steps = sorted(thresholds)
    out: list[Notice] = []
    for k in keys:
        if k.deleted is not None or now >= k.expires:
            continue
        remaining = k.expires - now
        tightest = next((t for t in steps if remaining <= timedelta(days=t)), None)
        if tightest is None or (k.access_key_id, tightest) in already_sent:
            continue
        out.append(Notice(k.access_key_id, k.session_id, tightest, k.expires))
    out.sort(key=lambda n: (n.expires, n.access_key_id))
    return out


class NoticeLog:
    """The persistent record of notices sent."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"NoticeLog({str(self.path)!r})"

    def _read(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                doc = json.load(f)
            sent = doc["sent"]
            for e in sent:
                str(e["access_key_id"]), int(e["threshold_days"])
            return list(sent)
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise StoreError(f"notice record {self.path} is unreadable "
                             f"({type(e).__name__}); expected {{'sent': [...]}}") from None

    def sent(self) -> set[tuple[str, int]]:
        return {(str(e["access_key_id"]), int(e["threshold_days"])) for e in self._read()}

    def due(self, keys: Iterable[ExpiringKey], now: datetime) -> list[Notice]:
        return due_notices(keys, now, self.sent())

    def remember(self, notices: Iterable[Notice], now: datetime,
                 live_key_ids: Collection[str] | None = None) -> None:
        """Record ``notices`` as sent at ``now``. With ``live_key_ids``, entries of keys no
        longer in the store are dropped, so the file stays small."""
        with exclusive_lock(self.path):
            entries = self._read()
            have = {(e["access_key_id"], int(e["threshold_days"])) for e in entries}
            for n in notices:
                if (n.access_key_id, n.threshold_days) not in have:
                    entries.append({"access_key_id": n.access_key_id,
                                    "threshold_days": n.threshold_days, "sent_at": iso_utc(now)})
            if live_key_ids is not None:
                entries = [e for e in entries if e["access_key_id"] in live_key_ids]
            atomic_write(self.path, json.dumps({"version": 1, "sent": entries},
                                               indent=1).encode() + b"\n", 0o600)


__all__ = ["ExpiringKey", "Notice", "NoticeLog", "THRESHOLDS_DAYS", "NOTICES_FILE_NAME", "due_notices"]
