"""Key-expiry notices: thresholds 28, 7, 1 days; tightest first seen; each once; persisted."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from dcgateway.auth.keystore import KeyRecord
from dcgateway.auth.notices import Notice, NoticeLog, due_notices
from dcgateway.errors import StoreError

UTC = timezone.utc
EXP = datetime(2026, 6, 30, 21, tzinfo=UTC)


def key(kid="K" * 20, sid="ABC", expires=EXP, deleted=None):
    return KeyRecord(kid, sid, "s" * 43, expires - timedelta(days=365), expires, deleted)


def at(days_before: float) -> datetime:
    return EXP - timedelta(days=days_before)


def test_nothing_due_far_from_expiry():
    assert due_notices([key()], at(29), set()) == []


@pytest.mark.parametrize("days,threshold", [(28, 28), (27.5, 28), (7.01, 28), (7, 7), (2, 7),
                                            (1, 1), (0.01, 1)])
def test_tightest_threshold(days, threshold):
    assert due_notices([key()], at(days), set()) == [Notice("K" * 20, "ABC", threshold, EXP)]


def test_each_threshold_once_and_no_going_back():
    k = key()
    sent: set[tuple[str, int]] = set()
    timeline = [at(d) for d in (30, 28, 20, 10, 7, 6, 3, 1, 0.5, 0.1)]
    got = []
    for now in timeline:
        for n in due_notices([k], now, sent):
            got.append(n.threshold_days)
            sent.add((n.access_key_id, n.threshold_days))
    assert got == [28, 7, 1]


def test_first_seen_within_7_days_gets_only_the_7_day_notice():
    sent: set[tuple[str, int]] = set()
    first = due_notices([key()], at(5), sent)
    assert [n.threshold_days for n in first] == [7]
    sent |= {(n.access_key_id, n.threshold_days) for n in first}
    assert due_notices([key()], at(4), sent) == []
    assert [n.threshold_days for n in due_notices([key()], at(0.9), sent)] == [1]


def test_deleted_and_expired_keys_get_nothing():
    assert due_notices([key(deleted=at(3))], at(2), set()) == []
    assert due_notices([key()], EXP, set()) == []
    assert due_notices([key()], EXP + timedelta(days=1), set()) == []


def test_several_keys_ordered_by_expiry():
    a = key("A" * 20, "ABC", EXP)
    b = key("B" * 20, "ABD", EXP - timedelta(days=3))
    notices = due_notices([a, b], at(6), set())
    assert [(n.access_key_id, n.threshold_days) for n in notices] == [("B" * 20, 7),
                                                                     ("A" * 20, 7)]


def test_notice_log_persists(tmp_path):
    log = NoticeLog(tmp_path / "key-notices.json")
    assert log.sent() == set()
    k = key()
    due = log.due([k], at(20))
    assert [n.threshold_days for n in due] == [28]
    log.remember(due, at(20))
    again = NoticeLog(tmp_path / "key-notices.json")
    assert again.sent() == {("K" * 20, 28)}
    assert again.due([k], at(19)) == []
    log.remember(again.due([k], at(6)), at(6))
    assert NoticeLog(tmp_path / "key-notices.json").sent() == {("K" * 20, 28), ("K" * 20, 7)}
    doc = json.loads((tmp_path / "key-notices.json").read_text())
    assert doc["sent"][0]["sent_at"] == "2026-06-10T21:00:00Z"
    assert "s" * 43 not in (tmp_path / "key-notices.json").read_text()
    log.remember([], at(5), live_key_ids=set())
    assert log.sent() == set()


def test_notice_log_unreadable(tmp_path):
    p = tmp_path / "key-notices.json"
    p.write_text("{not json")
    with pytest.raises(StoreError, match="key-notices.json"):
        NoticeLog(p).sent()
