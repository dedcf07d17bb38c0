"""Key pair lifecycle (ILINK.md, "Key pairs (lifecycle)"): expiry at market close across DST,
rotation rules, delete, download, list, audit."""

from __future__ import annotations

import csv
import io
import json
import re
import stat
from datetime import date, datetime, timedelta, timezone

import pytest

from dcgateway.auth.lifecycle import (
    CSV_COLUMNS,
    MarketClose,
    add_months,
    new_key_expiry,
    open_key_manager,
    rotation_expiry,
)
from dcgateway.errors import KeyLifecycleError

UTC = timezone.utc
CLOSE = MarketClose.parse("16:00", "America/Chicago")


def utc(*a) -> datetime:
    return datetime(*a, tzinfo=UTC)


# ---- market-close arithmetic -------------------------------------------------------------------

def test_twelve_months_winter_to_winter():
    # created 2026-03-01 (CST) -> 2027-03-01 16:00 CST = 22:00 UTC
    assert new_key_expiry(utc(2026, 3, 1, 15), CLOSE) == utc(2027, 3, 1, 22)


def test_twelve_months_summer_to_summer():
    # created 2026-07-01 (CDT) -> 2027-07-01 16:00 CDT = 21:00 UTC
    assert new_key_expiry(utc(2026, 7, 1, 15), CLOSE) == utc(2027, 7, 1, 21)


def test_twelve_months_uses_the_market_local_date():
    # 2026-03-02 03:00 UTC is still 2026-03-01 21:00 in Chicago
    assert new_key_expiry(utc(2026, 3, 2, 3), CLOSE) == utc(2027, 3, 1, 22)


def test_twelve_months_from_a_leap_day():
    assert add_months(date(2028, 2, 29), 12) == date(2029, 2, 28)
    assert new_key_expiry(utc(2028, 2, 29, 15), CLOSE) == utc(2029, 2, 28, 22)


def test_28_days_landing_after_spring_forward():
    # 2026-02-20 is CST; +28 days = 2026-03-20, after DST starts (2026-03-08): 16:00 CDT = 21:00 UTC
    assert rotation_expiry(utc(2026, 2, 20, 15), CLOSE) == utc(2026, 3, 20, 21)


def test_28_days_landing_after_fall_back():
    # 2026-10-20 is CDT; +28 days = 2026-11-17, after DST ends (2026-11-01): 16:00 CST = 22:00 UTC
    assert rotation_expiry(utc(2026, 10, 20, 15), CLOSE) == utc(2026, 11, 17, 22)


def test_market_close_parse_errors_name_the_value():
    with pytest.raises(ValueError, match="25:00"):
        MarketClose.parse("25:00", "America/Chicago")
    with pytest.raises(ValueError, match="Mars/Olympus"):
        MarketClose.parse("16:00", "Mars/Olympus")


# ---- create ------------------------------------------------------------------------------------

def test_create_shape(manager):
    rec = manager.create("ABC", now=utc(2026, 3, 1, 15, 0, 7, 123456))
    assert re.fullmatch(r"[A-Za-z0-9]{20}", rec.access_key_id)
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", rec.secret_key)
    doc = rec.to_json()
    assert list(doc) == ["session_id", "access_key_id", "secret_key", "created", "expires"]
    assert doc["created"] == "2026-03-01T15:00:07Z"
    assert doc["expires"] == "2027-03-01T22:00:00Z"
    assert json.loads(json.dumps(doc)) == doc


def test_ids_and_secrets_are_unique(manager):
    now = utc(2026, 3, 1, 15)
    recs = [manager.create(f"S{i:02d}", now=now) for i in range(20)]
    assert len({r.access_key_id for r in recs}) == 20
    assert len({r.secret_key for r in recs}) == 20


def test_second_pair_shortens_the_first(manager):
    k1 = manager.create("ABC", now=utc(2026, 1, 5, 15))
    assert k1.expires == utc(2027, 1, 5, 22)
    k2 = manager.create("ABC", now=utc(2026, 2, 20, 15))
    infos = {i.access_key_id: i for i in manager.list("ABC", now=utc(2026, 2, 20, 16))}
    assert infos[k1.access_key_id].expires == utc(2026, 3, 20, 21)      # 28 d, after DST switch
    assert infos[k2.access_key_id].expires == utc(2027, 2, 20, 22)
    assert {i.status for i in infos.values()} == {"active"}


def test_second_pair_keeps_an_earlier_expiry(manager, store):
    k1 = manager.create("ABC", now=utc(2025, 3, 10, 15))                # expires 2026-03-10
    manager.create("ABC", now=utc(2026, 3, 1, 15))                      # +28 d would be 03-29
    assert store.load()[k1.access_key_id].expires == utc(2026, 3, 10, 21)


def test_third_pair_refused_without_delete(manager):
    k1 = manager.create("ABC", now=utc(2026, 1, 5, 15))
    k2 = manager.create("ABC", now=utc(2026, 1, 6, 15))
    with pytest.raises(KeyLifecycleError) as e:
        manager.create("ABC", now=utc(2026, 1, 7, 15))
    assert k1.access_key_id in str(e.value) and "--delete" in str(e.value)
    assert len(manager.list("ABC")) == 2
    assert k2.secret_key not in str(e.value)


def test_third_pair_with_delete_of_oldest(manager, store):
    k1 = manager.create("ABC", now=utc(2026, 1, 5, 15))
    k2 = manager.create("ABC", now=utc(2026, 1, 6, 15))
    t3 = utc(2026, 1, 10, 15)
    k3 = manager.create("ABC", delete=k1.access_key_id, now=t3)
    records = store.load()
    assert records[k1.access_key_id].deleted == t3
    assert records[k1.access_key_id].secret_key == ""                  # secret erased
    # the remaining pair (k2, 12 months out) is capped at the new creation + 28 d at close
    assert records[k2.access_key_id].expires == utc(2026, 2, 7, 22)
    assert records[k3.access_key_id].expires == utc(2027, 1, 10, 22)
    statuses = {i.access_key_id: i.status for i in manager.list(now=t3)}
    assert statuses == {k1.access_key_id: "deleted", k2.access_key_id: "active",
                        k3.access_key_id: "active"}


def test_remaining_pair_gets_creation_plus_28_days(manager, store, paths):
    # the remaining pair keeps an earlier expiry it already had (min rule)...
    k1 = manager.create("ABC", now=utc(2026, 1, 5, 15))
    manager.delete(k1.access_key_id, now=utc(2026, 1, 6, 15))
    k2 = manager.create("ABC", now=utc(2026, 1, 7, 15))
    k3 = manager.create("ABC", now=utc(2026, 2, 1, 15))
    k4 = manager.create("ABC", delete=k3.access_key_id, now=utc(2026, 2, 20, 15))
    records = store.load()
    assert records[k2.access_key_id].expires == utc(2026, 3, 1, 22)     # capped by k3 (02-01+28)
    assert records[k4.access_key_id].expires == utc(2027, 2, 20, 22)
    # ...and one still 12 months out becomes the new creation + 28 d at close, DST included
    k5 = manager.create("ABD", now=utc(2026, 2, 1, 15))
    k6 = manager.create("ABD", now=utc(2026, 2, 2, 15))
    k7 = manager.create("ABD", delete=k5.access_key_id, now=utc(2026, 2, 10, 15))
    records = store.load()
    assert records[k6.access_key_id].expires == utc(2026, 3, 10, 21)    # 02-10 + 28 d (CDT)
    k8 = manager.create("ABD", delete=k6.access_key_id, now=utc(2026, 2, 20, 15))
    records = store.load()
    assert records[k7.access_key_id].expires == utc(2026, 3, 20, 21)    # 02-20 + 28 d (CDT)
    assert records[k8.access_key_id].expires == utc(2027, 2, 20, 22)


def test_delete_must_name_a_live_pair_of_the_session(manager):
    k1 = manager.create("ABC", now=utc(2026, 1, 5, 15))
    other = manager.create("ABD", now=utc(2026, 1, 5, 15))
    with pytest.raises(KeyLifecycleError, match="no such key pair"):
        manager.create("ABC", delete=other.access_key_id, now=utc(2026, 1, 6, 15))
    with pytest.raises(KeyLifecycleError, match="no such key pair"):
        manager.create("ABC", delete="X" * 20, now=utc(2026, 1, 6, 15))
    manager.delete(k1.access_key_id, now=utc(2026, 1, 6, 15))
    with pytest.raises(KeyLifecycleError, match="already deleted"):
        manager.create("ABC", delete=k1.access_key_id, now=utc(2026, 1, 7, 15))


def test_expired_pairs_do_not_count_as_live(manager):
    manager.create("ABC", now=utc(2026, 1, 5, 15))
    manager.create("ABC", now=utc(2026, 1, 6, 15))                      # first expires 02-03
    manager.create("ABC", now=utc(2026, 2, 10, 15))                     # first has expired
    statuses = sorted(i.status for i in manager.list("ABC", now=utc(2026, 2, 10, 15)))
    assert statuses == ["active", "active", "expired"]


def test_unknown_and_bad_session_ids(manager, store, paths):
    with pytest.raises(KeyLifecycleError):
        manager.create("A,B", now=utc(2026, 1, 5, 15))
    m = open_key_manager(paths.store, paths.master, paths.audit, session_ids=["ABC", "CLRFIX44"])
    m.create("CLRFIX44", now=utc(2026, 1, 5, 15))
    with pytest.raises(KeyLifecycleError, match="not configured"):
        m.create("ZZZ", now=utc(2026, 1, 5, 15))


# ---- delete / list / download ------------------------------------------------------------------

def test_delete(manager):
    k1 = manager.create("ABC", now=utc(2026, 1, 5, 15))
    info = manager.delete(k1.access_key_id, who="tina", now=utc(2026, 1, 6, 15))
    assert info.status == "deleted" and info.deleted == utc(2026, 1, 6, 15)
    with pytest.raises(KeyLifecycleError):
        manager.delete(k1.access_key_id, now=utc(2026, 1, 7, 15))
    with pytest.raises(KeyLifecycleError):
        manager.delete("nope", now=utc(2026, 1, 7, 15))


def test_list_never_includes_secrets(manager):
    recs = [manager.create(s, now=utc(2026, 1, 5, 15)) for s in ("ABC", "ABD", "ABC")]
    infos = manager.list(now=utc(2026, 1, 5, 16))
    assert len(infos) == 3 and len(manager.list("ABD")) == 1
    dump = json.dumps([i.to_json() for i in infos]) + repr(infos)
    for r in recs:
        assert r.secret_key not in dump
    assert all(not hasattr(i, "secret_key") for i in infos)
    assert set(infos[0].to_json()) == {"access_key_id", "session_id", "created", "expires",
                                       "status", "deleted"}


def test_download_csv(manager, paths):
    rec = manager.create("ABC", now=utc(2026, 3, 1, 15))
    text = manager.download(rec.access_key_id, who="tina", environment="CERT")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == list(CSV_COLUMNS) == ["Session ID", "Access ID", "Secret Key",
                                            "Creation Date", "Expiration Date", "Environment"]
    assert rows[1] == ["ABC", rec.access_key_id, rec.secret_key, "2026-03-01T15:00:00Z",
                       "2027-03-01T22:00:00Z", "CERT"]
    assert len(rows) == 2
    assert manager.download(rec.access_key_id, environment="CERT") == text      # repeatable
    assert list(csv.reader(io.StringIO(manager.download(rec.access_key_id))))[1][5] == "DCGW"
    out = paths.root / "ABC.csv"
    assert manager.download(rec.access_key_id, out=out, environment="CERT") == text
    assert out.read_text() == text
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_download_of_deleted_or_unknown_refused(manager):
    rec = manager.create("ABC", now=utc(2026, 3, 1, 15))
    manager.delete(rec.access_key_id, now=utc(2026, 3, 2, 15))
    with pytest.raises(KeyLifecycleError, match="deleted"):
        manager.download(rec.access_key_id)
    with pytest.raises(KeyLifecycleError):
        manager.download("Z" * 20)


# ---- audit -------------------------------------------------------------------------------------

def test_audit_log_records_every_operation_without_secrets(manager, paths):
    k1 = manager.create("ABC", who="tina", now=utc(2026, 1, 5, 15))
    k2 = manager.create("ABC", who="tina", now=utc(2026, 1, 6, 15))
    manager.download(k2.access_key_id, who="carl", now=utc(2026, 1, 6, 16))
    k3 = manager.create("ABC", delete=k1.access_key_id, now=utc(2026, 1, 7, 15))
    manager.delete(k3.access_key_id, who="tina", now=utc(2026, 1, 8, 15))
    text = paths.audit.read_text()
    for r in (k1, k2, k3):
        assert r.secret_key not in text
    entries = [json.loads(line) for line in text.splitlines()]
    assert [(e["action"], e["who"], e["access_key_id"]) for e in entries] == [
        ("create", "tina", k1.access_key_id),
        ("shorten_expiry", "tina", k1.access_key_id),
        ("create", "tina", k2.access_key_id),
        ("download", "carl", k2.access_key_id),
        ("delete", "unknown", k1.access_key_id),
        ("shorten_expiry", "unknown", k2.access_key_id),
        ("create", "unknown", k3.access_key_id),
        ("delete", "tina", k3.access_key_id),
    ]
    assert all(e["session_id"] == "ABC" for e in entries)
    assert entries[0]["ts"] == "2026-01-05T15:00:00Z"
    assert stat.S_IMODE(paths.audit.stat().st_mode) == 0o600


def test_audit_refuses_secret_fields(manager):
    with pytest.raises(ValueError):
        manager.audit.record("create", who="x", access_key_id="a", session_id="b",
                             secret_key="zzz")


def test_default_now_is_the_clock(manager):
    before = datetime.now(UTC).replace(microsecond=0)
    rec = manager.create("ABC")
    assert before <= rec.created <= datetime.now(UTC)
    assert rec.expires - rec.created > timedelta(days=360)
