"""Key-expiry notices to registered administrators (docs/venue.md "Key pairs": administrators are
emailed before a key expires, at four weeks and again later).

The gateway checks at start and then daily; for every key within 28, 7 and 1 days of expiry it
mails each administrator of the owning entity once per threshold (``auth.notices`` decides what is
due and remembers what was sent, across restarts). SMTP runs in a worker thread with a timeout, so
a slow or dead mail server never blocks the event loop; a notice that could not be delivered to
every administrator is not remembered and is retried (with backoff) until it is.

The message names the access key id, the Session ID and the expiry, never the secret.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from email.message import EmailMessage
from typing import Protocol

from .auth.notices import ExpiringKey, Notice, NoticeLog
from .config import Administrator

log = logging.getLogger("dcgateway.notify")


class Mailer(Protocol):
    def send(self, to: str, subject: str, body: str) -> None:
        """Deliver one message (blocking; run in a worker thread). Raises OSError/SMTPException."""


class SmtpMailer:
    def __init__(self, host: str, port: int, sender: str, timeout: float = 10.0) -> None:
        self.host, self.port, self.sender, self.timeout = host, port, sender, timeout

    def send(self, to: str, subject: str, body: str) -> None:
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = to
        msg["Subject"] = subject
        msg.set_content(body)
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            smtp.send_message(msg)


class LogMailer:
    """No SMTP server configured (the demo): the notice goes to the log instead."""

    def send(self, to: str, subject: str, body: str) -> None:
        log.warning("key expiry notice for %s: %s", to, subject)


def compose(notice: Notice, admin: Administrator, entity: str) -> tuple[str, str]:
    when = notice.expires.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    subject = (f"[dcgateway] key pair {notice.access_key_id} (Session ID {notice.session_id}) "
               f"expires within {notice.threshold_days} day{'s' if notice.threshold_days > 1 else ''}")
    body = (f"Dear {admin.name},\n\n"
            f"The key pair {notice.access_key_id} of Session ID {notice.session_id} "
            f"({entity}) expires on {when}.\n"
            f"Logons signed with it will be refused from then on. Create its successor with\n\n"
            f"    dcgateway keys create --session-id {notice.session_id} --as {admin.name}\n\n"
            f"and install it on the client before the old pair expires.\n")
    return subject, body


class ExpiryNotifier:
    """``run()`` is the notifier task (owned by the gateway's TaskGroup)."""

    def __init__(self, keys: Callable[[], Iterable[ExpiringKey]], notices: NoticeLog,
                 owners: Callable[[str], tuple[str, Sequence[Administrator]] | None],
                 mailer: Mailer, *, clock: Callable[[], float],
                 check_interval: float = 86400.0, retry_interval: float = 300.0) -> None:
        self.keys = keys                  # () -> key records/infos (never raises: see run)
        self.notices = notices
        self.owners = owners              # session_id -> (entity, administrators)
        self.mailer = mailer
        self.clock = clock
        self.check_interval = check_interval
        self.retry_interval = retry_interval
        self.sent_total = 0
        self.failures_total = 0
        # (access key id, threshold, email) mailed in this process: after a partial failure the
        # retry mails only the administrators who did not get it yet.
        self._mailed: set[tuple[str, int, str]] = set()

    async def check_once(self) -> tuple[int, int]:
        """Send what is due; returns (notices completed, notices still pending)."""
        now = datetime.fromtimestamp(self.clock(), timezone.utc)
        records = list(self.keys())
        due = self.notices.due(records, now)
        done: list[Notice] = []
        for notice in due:
            if await self._deliver(notice):
                done.append(notice)
        if done:
            self.notices.remember(done, now, live_key_ids={r.access_key_id for r in records})
        return len(done), len(due) - len(done)

    async def _deliver(self, notice: Notice) -> bool:
        owner = self.owners(notice.session_id)
        if owner is None:
            log.warning("key %s: Session ID %s belongs to no configured entity; no notice sent",
                        notice.access_key_id, notice.session_id)
            return True
        entity, admins = owner
        ok = True
        for admin in admins:
            key = (notice.access_key_id, notice.threshold_days, admin.email)
            if key in self._mailed:
                continue
            subject, body = compose(notice, admin, entity)
            try:
                await asyncio.to_thread(self.mailer.send, admin.email, subject, body)
                self._mailed.add(key)
                self.sent_total += 1
                log.info("sent %d-day expiry notice of key %s to %s", notice.threshold_days,
                         notice.access_key_id, admin.email)
            except (OSError, smtplib.SMTPException) as exc:
                ok = False
                self.failures_total += 1
                log.warning("could not mail expiry notice of key %s to %s: %s (will retry)",
                            notice.access_key_id, admin.email, exc)
        return ok

    async def run(self) -> None:
        delay = self.retry_interval
        while True:
            try:
                _, pending = await self.check_once()
            except Exception:             # a bad key store must not kill the gateway
                log.exception("key expiry check failed; retrying in %.0fs", delay)
                pending = 1
            if pending:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.check_interval)
            else:
                delay = self.retry_interval
                await asyncio.sleep(self.check_interval)
