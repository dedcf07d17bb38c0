"""Key pair lifecycle, as the venue runs it (docs/venue.md, "Key pairs (lifecycle)").

* A pair = Access Key ID (20 characters) + Secret Key (32 random bytes, base64url, 43 chars).
  Active as soon as it is created; it expires 12 months later at market close.
* At most two live pairs per Session ID. Creating the second makes the older one expire four
  weeks (28 days) later at market close, or sooner if it already would.
* A third pair is refused unless the request names one of the two live pairs to delete at once;
  the one that remains beside the new pair then expires 28 days later at market close (or sooner).
* Deletion takes effect at once. Credentials can be downloaded any number of times (CSV key file).

"At market close" means: take the creation instant's calendar date *in the market's zone*, move
it 12 months (or 28 days) forward, and take that date's close time in that zone, converted to UTC.
Doing the arithmetic on the local date and converting last is what makes it right across DST
(16:00 America/Chicago is 22:00 UTC in winter and 21:00 UTC in summer).

The rule functions are pure (``now`` is an argument); :class:`KeyManager` is the API the CLI
calls, one method per ``dcgateway keys`` command, and defaults ``now`` to the clock.
"""

from __future__ import annotations

import calendar
import csv
import io
import os
import re
import secrets
import string
from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..errors import KeyLifecycleError
from ..fsutil import atomic_write
from .audit import AuditLog
from .keystore import KeyInfo, KeyRecord, KeyStore, iso_utc
from .signing import ACCESS_KEY_ID_LEN, b64url_nopad

MAX_LIVE_PAIRS = 2
LIFETIME_MONTHS = 12
ROTATION_DAYS = 28
DEFAULT_ENVIRONMENT = "DCGW"
#: Columns of the downloadable key file, exactly (the README's command line).
CSV_COLUMNS = ("Session ID", "Access ID", "Secret Key", "Creation Date", "Expiration Date",
               "Environment")
ACCESS_KEY_ALPHABET = string.ascii_letters + string.digits
_SESSION_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


# ----------------------------------------------------------------------------------------------
# Market close arithmetic (pure)
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MarketClose:
    """The configured market close: a local wall-clock time in a zone (``gateway.market_close``)."""

    time: time
    zone: ZoneInfo

    @classmethod
    def parse(cls, hhmm: str = "16:00", tz: str = "America/Chicago") -> MarketClose:
        """From the config values ``{time: "16:00", tz: America/Chicago}``; ``ValueError`` with a
        message naming the bad value otherwise."""
        try:
            t = time.fromisoformat(hhmm)
        except (ValueError, TypeError):
            raise ValueError(f"market_close.time {hhmm!r} is not HH:MM") from None
        try:
            zone = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ValueError(f"market_close.tz {tz!r} is not a known IANA time zone") from None
        return cls(t, zone)

    def local_date(self, instant: datetime) -> date:
        """The market's calendar date at ``instant`` (aware)."""
        return instant.astimezone(self.zone).date()

    def close_on(self, day: date) -> datetime:
        """Market close on ``day`` (market-local date), as an aware UTC datetime. A close time
        that falls in a DST gap or fold resolves by zoneinfo's rules (fold=0)."""
        return datetime.combine(day, self.time, tzinfo=self.zone).astimezone(timezone.utc)


def add_months(day: date, months: int) -> date:
    """``day`` moved ``months`` calendar months; the 29th-31st clamp to the month's last day
    (29 Feb 2028 + 12 months = 28 Feb 2029)."""
    m = day.month - 1 + months
    year, month = day.year + m // 12, m % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def new_key_expiry(created: datetime, close: MarketClose) -> datetime:
    """Expiry of a pair created at ``created``: 12 months later at market close."""
    return close.close_on(add_months(close.local_date(created), LIFETIME_MONTHS))


def rotation_expiry(created: datetime, close: MarketClose) -> datetime:
    """Latest expiry of the older pair when a new one is created at ``created``: 28 days later at
    market close."""
    return close.close_on(close.local_date(created) + timedelta(days=ROTATION_DAYS))


def new_access_key_id() -> str:
    return "".join(secrets.choice(ACCESS_KEY_ALPHABET) for _ in range(ACCESS_KEY_ID_LEN))


def new_secret_key() -> str:
    return b64url_nopad(secrets.token_bytes(32))


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(timezone.utc).replace(microsecond=0)
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    return now.astimezone(timezone.utc).replace(microsecond=0)


def plan_create(records: dict[str, KeyRecord], session_id: str, now: datetime,
                close: MarketClose, delete: str | None = None,
                access_key_id: str | None = None,
                secret_key: str | None = None) -> tuple[KeyRecord, list[KeyRecord]]:
    """Apply the creation rules to ``records`` (pure: returns, does not mutate). Returns the new
    record and the changed existing records (the deleted one and/or the one whose expiry was
    shortened). Raises :class:`KeyLifecycleError` when the venue rules refuse."""
    live = sorted((r for r in records.values() if r.session_id == session_id and r.is_live(now)),
                  key=lambda r: r.created)
    changed: list[KeyRecord] = []
    if delete is not None:
        target = records.get(delete)
        if target is None or target.session_id != session_id:
            raise KeyLifecycleError(f"--delete {delete}: no such key pair for Session ID "
                                    f"{session_id}")
        if not target.is_live(now):
            raise KeyLifecycleError(f"--delete {delete}: that key pair is already "
                                    f"{target.status(now)}; name one of the live pairs")
        changed.append(replace(target, deleted=now, secret_key=""))
        live.remove(target)
    if len(live) >= MAX_LIVE_PAIRS:
        names = ", ".join(r.access_key_id for r in live)
        raise KeyLifecycleError(
            f"Session ID {session_id} already has {len(live)} live key pairs ({names}); a third "
            f"needs --delete ACCESS_KEY_ID naming one of them (the venue's guidance: the oldest)")
    cap = rotation_expiry(now, close)
    for older in live:
        if older.expires > cap:
            changed.append(replace(older, expires=cap))
    key_id = access_key_id or new_access_key_id()
    while key_id in records:                                  # 62^20: will not loop in practice
        key_id = new_access_key_id()
    new = KeyRecord(key_id, session_id, secret_key or new_secret_key(), now,
                    new_key_expiry(now, close))
    return new, changed


def key_file_csv(record: KeyRecord, environment: str = DEFAULT_ENVIRONMENT) -> str:
    """The downloadable key file: a header row with :data:`CSV_COLUMNS` and one data row."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    w.writerow((record.session_id, record.access_key_id, record.secret_key,
                iso_utc(record.created), iso_utc(record.expires), environment))
    return out.getvalue()


# ----------------------------------------------------------------------------------------------
# The API the CLI calls
# ----------------------------------------------------------------------------------------------

class KeyManager:
    """``dcgateway keys create/list/download/delete``, one method each. Every change is made under
    the store's exclusive lock and recorded in the audit log (who, when, what, ids; never a
    secret) after it is durable.

    ``session_ids``, when given, is the set of Session IDs (key scopes) the configuration knows;
    creating a key for any other is refused."""

    def __init__(self, store: KeyStore, market_close: MarketClose, audit: AuditLog, *,
                 environment: str = DEFAULT_ENVIRONMENT,
                 session_ids: Collection[str] | None = None) -> None:
        self.store = store
        self.market_close = market_close
        self.audit = audit
        self.environment = environment
        self.session_ids = frozenset(session_ids) if session_ids is not None else None

    def __repr__(self) -> str:
        return f"KeyManager(store={self.store!r}, environment={self.environment!r})"

    def _check_session_id(self, session_id: str) -> None:
        if not _SESSION_ID_RE.fullmatch(session_id or ""):
            raise KeyLifecycleError(f"Session ID {session_id!r} is not 1-64 characters of "
                                    f"A-Z a-z 0-9 . _ -")
        if self.session_ids is not None and session_id not in self.session_ids:
            known = ", ".join(sorted(self.session_ids)) or "none"
            raise KeyLifecycleError(f"Session ID {session_id!r} is not configured "
                                    f"(configured: {known})")

    def create(self, session_id: str, *, delete: str | None = None, who: str = "unknown",
               now: datetime | None = None) -> KeyRecord:
        """Issue a key pair for ``session_id`` (``keys create --session-id SID [--delete ID]``).
        The result's ``to_json()`` is the ``--json`` output."""
        self._check_session_id(session_id)
        now = _utc(now)
        with self.store.transaction() as records:
            new, changed = plan_create(records, session_id, now, self.market_close, delete)
            for r in changed:
                records[r.access_key_id] = r
            records[new.access_key_id] = new
        for r in changed:
            if r.deleted is not None:
                self.audit.record("delete", who=who, access_key_id=r.access_key_id,
                                  session_id=session_id, now=now, via="create --delete")
            else:
                self.audit.record("shorten_expiry", who=who, access_key_id=r.access_key_id,
                                  session_id=session_id, now=now, expires=iso_utc(r.expires),
                                  because_of=new.access_key_id)
        self.audit.record("create", who=who, access_key_id=new.access_key_id,
                          session_id=session_id, now=now, expires=iso_utc(new.expires))
        return new

    def list(self, session_id: str | None = None, *, now: datetime | None = None) -> list[KeyInfo]:
        """Every key pair (or those of ``session_id``), oldest first, with its status at ``now``.
        Never secrets."""
        now = _utc(now)
        return [r.info(now) for r in self.store.load().values()
                if session_id is None or r.session_id == session_id]

    def get(self, access_key_id: str, *, now: datetime | None = None) -> KeyInfo:
        record = self.store.load().get(access_key_id)
        if record is None:
            raise KeyLifecycleError(f"no key pair with access key id {access_key_id!r}")
        return record.info(_utc(now))

    def download(self, access_key_id: str, *, who: str = "unknown",
                 out: str | os.PathLike[str] | None = None, environment: str | None = None,
                 now: datetime | None = None) -> str:
        """The key file (CSV) of a pair that is not deleted; repeatable. With ``out`` it is also
        written there atomically, mode 0600. Every download is audited."""
        now = _utc(now)
        record = self.store.load().get(access_key_id)
        if record is None:
            raise KeyLifecycleError(f"no key pair with access key id {access_key_id!r}")
        if record.deleted is not None:
            raise KeyLifecycleError(f"key pair {access_key_id} was deleted on "
                                    f"{iso_utc(record.deleted)}; its secret is gone")
        text = key_file_csv(record, environment or self.environment)
        if out is not None:
            atomic_write(Path(out), text.encode("ascii"), 0o600)
        self.audit.record("download", who=who, access_key_id=access_key_id,
                          session_id=record.session_id, now=now,
                          **({"out": str(out)} if out is not None else {}))
        return text

    def delete(self, access_key_id: str, *, who: str = "unknown",
               now: datetime | None = None) -> KeyInfo:
        """Delete a pair at once (``keys delete ID``): it stops authenticating at the next Logon;
        its record stays (status ``deleted``) with the secret erased."""
        now = _utc(now)
        with self.store.transaction() as records:
            record = records.get(access_key_id)
            if record is None:
                raise KeyLifecycleError(f"no key pair with access key id {access_key_id!r}")
            if record.deleted is not None:
                raise KeyLifecycleError(f"key pair {access_key_id} is already deleted "
                                        f"({iso_utc(record.deleted)})")
            record = records[access_key_id] = replace(record, deleted=now, secret_key="")
        self.audit.record("delete", who=who, access_key_id=access_key_id,
                          session_id=record.session_id, now=now)
        return record.info(now)


def open_key_manager(keystore_path: str | os.PathLike[str],
                     master_key_file: str | os.PathLike[str],
                     audit_path: str | os.PathLike[str], *,
                     market_close: str = "16:00", market_close_tz: str = "America/Chicago",
                     environment: str = DEFAULT_ENVIRONMENT,
                     session_ids: Iterable[str] | None = None) -> KeyManager:
    """One call from configuration values to a :class:`KeyManager`."""
    return KeyManager(KeyStore(keystore_path, master_key_file),
                      MarketClose.parse(market_close, market_close_tz), AuditLog(audit_path),
                      environment=environment,
                      session_ids=None if session_ids is None else frozenset(session_ids))
