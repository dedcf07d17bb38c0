"""Key-expiry notices through a real SMTP server (aiosmtpd on 127.0.0.1)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from dcgateway.auth import NoticeLog, open_key_manager
from dcgateway.config import Administrator
from dcgateway.notify import ExpiryNotifier, SmtpMailer

from .conftest import free_port

pytestmark = pytest.mark.asyncio

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
ADMINS = (Administrator("tina", "tina@tradeco.example"), Administrator("tom", "tom@tradeco.example"))


def manager(tmp_path):
    km = open_key_manager(tmp_path / "keys.db", tmp_path / "master.key", tmp_path / "audit.jsonl")
    km.store.ensure_master_key()
    return km


def notifier(tmp_path, km, port, clock_value):
    return ExpiryNotifier(lambda: list(km.store.load().values()), NoticeLog(tmp_path / "notices.json"),
                          lambda sid: ("TRADECO", ADMINS) if sid == "ABC" else None,
                          SmtpMailer("127.0.0.1", port, "dcgateway@localhost", timeout=5),
                          clock=lambda: clock_value[0])


async def test_each_threshold_mailed_once_to_every_administrator(tmp_path, smtp):
    ctl, inbox = smtp
    km = manager(tmp_path)
    rec = km.create("ABC", who="test", now=NOW - timedelta(days=360))   # expires in ~5-6 days
    days_left = (rec.expires - NOW).days
    assert 1 < days_left <= 7
    clock = [NOW.timestamp()]
    n = notifier(tmp_path, km, ctl.port, clock)
    assert await n.check_once() == (1, 0)
    assert sorted(r[0][0] for r in inbox.messages) == ["tina@tradeco.example", "tom@tradeco.example"]
    to, msg = inbox.messages[0]
    assert rec.access_key_id in msg["Subject"] and "7 days" in msg["Subject"]
    body = msg.get_payload()
    assert rec.secret_key not in body and rec.secret_key not in msg["Subject"]
    assert "dcgateway keys create --session-id ABC" in body

    # again, and after a restart (a new notifier and log object): nothing more for 7 days
    assert await n.check_once() == (0, 0)
    assert await notifier(tmp_path, km, ctl.port, clock).check_once() == (0, 0)
    assert len(inbox.messages) == 2

    # the 1-day threshold comes later, once
    clock[0] = (rec.expires - timedelta(hours=20)).timestamp()
    assert await n.check_once() == (1, 0)
    assert len(inbox.messages) == 4 and "1 day" in inbox.messages[-1][1]["Subject"]


async def test_smtp_down_is_retried_and_never_raises(tmp_path, smtp):
    ctl, inbox = smtp
    km = manager(tmp_path)
    km.create("ABC", who="test", now=NOW - timedelta(days=340))         # ~25 days left: 28-day notice
    clock = [NOW.timestamp()]
    dead = notifier(tmp_path, km, free_port(), clock)                    # nothing listens there
    assert await dead.check_once() == (0, 1)
    assert dead.failures_total == 2 and inbox.messages == []
    n = notifier(tmp_path, km, ctl.port, clock)
    assert await n.check_once() == (1, 0)
    assert len(inbox.messages) == 2 and "28 days" in inbox.messages[0][1]["Subject"]


async def test_deleted_and_far_keys_get_no_notice(tmp_path, smtp):
    ctl, inbox = smtp
    km = manager(tmp_path)
    far = km.create("ABC", who="test", now=NOW)
    assert (far.expires - NOW).days > 300
    clock = [NOW.timestamp()]
    assert await notifier(tmp_path, km, ctl.port, clock).check_once() == (0, 0)
    other = manager(tmp_path / "other")
    soon = other.create("ABC", who="test", now=NOW - timedelta(days=360))
    other.delete(soon.access_key_id, who="test", now=NOW)
    assert await notifier(tmp_path / "other", other, ctl.port, clock).check_once() == (0, 0)
    assert inbox.messages == []
