"""LogonAuthenticator: every check, its precise reason, the uniform Logout text, port closure,
live key store reloads, and that no secret reaches a log line."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from dcgateway.auth import (
    AUTH_FAILED_TEXT,
    PORT_CLOSURE_TEXT,
    REASONS,
    AuthDecision,
    LogonAuthenticator,
    locked_sessions,
    session_auth,
)
from dcgateway.auth.keystore import KeyStore
from dcgateway.auth.signing import signed_logon
from dcgateway.fix.codec import Decoder
from dcgateway.fix.timefmt import utc_timestamp

NOW_DT = datetime(2026, 3, 2, 15, 0, 0, tzinfo=timezone.utc)
NOW = NOW_DT.timestamp()
REPO = Path(__file__).resolve().parents[2]
SESSIONS = {
    "ABC123N": session_auth("ABC123N", "ilink2"),
    "ABD123N": session_auth("ABD123N", "ilink2"),
    "CLRFIX44": session_auth("CLRFIX44", "fix"),
}


@pytest.fixture
def auth(store, paths):
    return LogonAuthenticator(store, SESSIONS, state_dir=paths.data_dir,
                              sending_time_tolerance_s=30)


@pytest.fixture
def abc(manager):
    return manager.create("ABC", now=NOW_DT - timedelta(days=1))


def refused(decision: AuthDecision, reason: str) -> bool:
    return decision == AuthDecision(False, reason, AUTH_FAILED_TEXT)


def test_valid_logon(auth, abc, logon):
    assert auth(logon(abc.access_key_id, abc.secret_key), NOW) == AuthDecision(True, "", "")


def test_valid_logon_fix_profile_with_optional_tags_absent(auth, manager, logon):
    k = manager.create("CLRFIX44", now=NOW_DT)
    msg = logon(k.access_key_id, k.secret_key, comp_id="CLRFIX44",
                drop=(50, 57, 142, 369, 1603, 1604, 1605))
    assert auth(msg, NOW).ok


def test_decision_is_a_plain_namedtuple(auth, abc, logon):
    d = auth(logon(abc.access_key_id, abc.secret_key), NOW)
    ok, reason, text = d
    assert d._fields == ("ok", "reason", "text") and ok is True


def test_tampered_signature(auth, abc, logon):
    good = logon(abc.access_key_id, abc.secret_key).get(1402).decode()
    flipped = ("B" if good[0] == "A" else "A") + good[1:]
    msg = logon(abc.access_key_id, abc.secret_key, cred={1402: flipped})
    assert refused(auth(msg, NOW), "bad_signature")
    assert refused(auth(logon(abc.access_key_id, abc.secret_key, cred={1402: "A" * 43}), NOW),
                   "bad_signature")


def test_tampered_field_after_signing(auth, abc, logon):
    msg = logon(abc.access_key_id, abc.secret_key, sign_over={50: "OP2"})
    assert refused(auth(msg, NOW), "bad_signature")


def test_signed_with_another_secret(auth, abc, manager, logon):
    other = manager.create("ABD", now=NOW_DT)
    assert refused(auth(logon(abc.access_key_id, other.secret_key), NOW), "bad_signature")


def test_key_of_another_session_id(auth, manager, logon):
    abd = manager.create("ABD", now=NOW_DT)
    msg = logon(abd.access_key_id, abd.secret_key, comp_id="ABC123N")
    assert refused(auth(msg, NOW), "wrong_session_id")
    assert auth(logon(abd.access_key_id, abd.secret_key, comp_id="ABD123N"), NOW).ok


def test_expired_key(auth, abc, logon):
    later = abc.expires.timestamp()
    assert refused(auth(logon(abc.access_key_id, abc.secret_key, now=later), later),
                   "expired_key")
    just_before = later - 1
    assert auth(logon(abc.access_key_id, abc.secret_key, now=just_before), just_before).ok


def test_deleted_key(auth, abc, manager, logon):
    assert auth(logon(abc.access_key_id, abc.secret_key), NOW).ok
    manager.delete(abc.access_key_id, now=NOW_DT)
    assert refused(auth(logon(abc.access_key_id, abc.secret_key), NOW + 1), "deleted_key")


def test_unknown_key(auth, abc, logon):
    assert refused(auth(logon("Q" * 20, abc.secret_key), NOW), "unknown_key")


def test_bad_method(auth, abc, logon):
    assert refused(auth(logon(abc.access_key_id, abc.secret_key, cred={1400: "CME-1-SHA-1"}),
                        NOW), "bad_method")


@pytest.mark.parametrize("cred", [{354: "19"}, {354: "21"}, {1401: "42"}, {1401: "44"},
                                  {354: "x"}])
def test_length_mismatch(auth, abc, logon, cred):
    assert refused(auth(logon(abc.access_key_id, abc.secret_key, cred=cred), NOW),
                   "length_mismatch")


@pytest.mark.parametrize("tag", [354, 355, 1400, 1401, 1402])
def test_missing_credentials(auth, abc, logon, tag):
    cred = {tag: None}
    if tag == 355:
        cred[354] = None                       # a length without its data is a length problem
    if tag == 1402:
        cred[1401] = None
    assert refused(auth(logon(abc.access_key_id, abc.secret_key, cred=cred), NOW),
                   "missing_credentials")


def test_stale_sending_time(auth, abc, logon):
    msg = logon(abc.access_key_id, abc.secret_key, now=NOW - 31)
    assert refused(auth(msg, NOW), "stale_sending_time")
    msg = logon(abc.access_key_id, abc.secret_key, now=NOW + 31)
    assert refused(auth(msg, NOW), "stale_sending_time")
    assert auth(logon(abc.access_key_id, abc.secret_key, now=NOW - 29), NOW).ok


def test_bad_sending_time(auth, abc, logon):
    msg = logon(abc.access_key_id, abc.secret_key, sign_over={52: "2026-03-02 15:00:00"})
    assert refused(auth(msg, NOW), "bad_sending_time")


def test_orig_sending_time_on_logon(auth, abc, logon):
    msg = logon(abc.access_key_id, abc.secret_key,
                extra_header=[(122, utc_timestamp(NOW).decode())])
    assert refused(auth(msg, NOW), "orig_sending_time")


def test_incomplete_logon_for_ilink2(auth, abc, logon):
    msg = logon(abc.access_key_id, abc.secret_key, drop=(1603,))
    assert refused(auth(msg, NOW), "incomplete_logon")


def test_not_a_logon_and_unknown_session(auth, abc, logon):
    raw = signed_logon("FIX.4.2", [(49, "ABC123N"), (56, "DCGW"), (34, 1),
                                   (52, utc_timestamp(NOW).decode())],
                       [(108, 30)], abc.access_key_id, abc.secret_key).replace(b"35=A", b"35=0")
    # fix the checksum after the edit
    body_end = raw.rfind(b"10=")
    raw = raw[:body_end] + b"10=%03d\x01" % (sum(raw[:body_end]) % 256)
    (msg,) = Decoder().feed(raw)
    assert refused(auth(msg, NOW), "not_logon")
    assert refused(auth(logon(abc.access_key_id, abc.secret_key, comp_id="ZZZ999N"), NOW),
                   "unknown_session")


def test_all_reasons_are_declared(auth):
    assert len(set(REASONS)) == len(REASONS)


# ---- port closure ------------------------------------------------------------------------------

def _bad(logon, abc, t):
    return logon(abc.access_key_id, abc.secret_key, now=t, cred={1402: "B" * 43})


def test_fifth_invalid_logon_within_60s_closes_the_port(auth, abc, logon, store, paths):
    for i in range(4):
        assert refused(auth(_bad(logon, abc, NOW + i * 10), NOW + i * 10), "bad_signature")
    fifth = auth(_bad(logon, abc, NOW + 50), NOW + 50)
    assert fifth == AuthDecision(False, "bad_signature", PORT_CLOSURE_TEXT)
    good = logon(abc.access_key_id, abc.secret_key, now=NOW + 51)
    assert auth(good, NOW + 51) == AuthDecision(False, "port_closed", PORT_CLOSURE_TEXT)
    assert auth.locked_sessions() == ["ABC123N"]
    assert auth.is_locked("ABC123N") and not auth.is_locked("ABD123N")
    # persists across a restart (a new authenticator on the same data dir)
    again = LogonAuthenticator(KeyStore(paths.store, paths.master), SESSIONS,
                               state_dir=paths.data_dir)
    assert again(good, NOW + 52) == AuthDecision(False, "port_closed", PORT_CLOSURE_TEXT)
    assert locked_sessions(paths.data_dir) == ["ABC123N"]
    # until unlocked
    assert again.unlock("ABC123N") is True
    assert again.unlock("ABC123N") is False
    assert again(good, NOW + 53).ok
    assert auth(good, NOW + 54).ok               # the first instance sees the unlock too


def test_a_count_the_store_keeps_across_processes_decides_the_closure(store, paths, abc, logon):
    """In a cluster the closures store counts the invalid Logons of every node: a count of 5
    there closes the port at this node's first try; closing and accepting clear it."""
    from dcgateway.auth.lockout import PortClosures, state_path

    class Shared(PortClosures):
        counted: list[str] = []
        cleared: list[str] = []

        def count_invalid(self, comp_id: str, now: float, window_s: float) -> int:
            self.counted.append(comp_id)
            return 5 if comp_id == "ABC123N" else 1

        def clear_invalid(self, comp_id: str, now: float) -> None:
            self.cleared.append(comp_id)
    shared = Shared(state_path(paths.data_dir))
    auth = LogonAuthenticator(store, SESSIONS, closures=shared)
    first = auth(_bad(logon, abc, NOW), NOW)
    assert first == AuthDecision(False, "bad_signature", PORT_CLOSURE_TEXT)
    assert auth.is_locked("ABC123N") and shared.counted == ["ABC123N"]
    assert shared.cleared == ["ABC123N"]                   # closed: the count starts again
    assert shared.unlock("ABC123N")
    assert auth(logon(abc.access_key_id, abc.secret_key, now=NOW + 1), NOW + 1).ok
    assert shared.cleared == ["ABC123N", "ABC123N"]        # accepted: cleared everywhere


def test_unlock_from_another_process_reaches_running_authenticator(auth, abc, logon, paths):
    for i in range(5):
        auth(_bad(logon, abc, NOW + i), NOW + i)
    assert auth.is_locked("ABC123N")
    code = ("import sys; from dcgateway.auth import unlock_session, AuditLog; "
            "print(unlock_session(sys.argv[1], 'ABC123N', who='ops', audit=AuditLog(sys.argv[2])))")
    out = subprocess.run([sys.executable, "-c", code, str(paths.data_dir), str(paths.audit)],
                         env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "True"
    assert auth(logon(abc.access_key_id, abc.secret_key, now=NOW + 6), NOW + 6).ok
    last = json.loads(paths.audit.read_text().splitlines()[-1])
    assert last["action"] == "unlock" and last["who"] == "ops" and last["comp_id"] == "ABC123N"


def test_invalid_logons_spread_over_more_than_60s_do_not_close(auth, abc, logon):
    times = [NOW, NOW + 16, NOW + 32, NOW + 48, NOW + 64.5]
    for t in times:
        assert refused(auth(_bad(logon, abc, t), t), "bad_signature")
    assert auth.locked_sessions() == []
    assert auth(logon(abc.access_key_id, abc.secret_key, now=NOW + 65), NOW + 65).ok


def test_good_logon_resets_the_count(auth, abc, logon):
    for i in range(4):
        auth(_bad(logon, abc, NOW + i), NOW + i)
    assert auth(logon(abc.access_key_id, abc.secret_key, now=NOW + 5), NOW + 5).ok
    for i in range(4):
        assert refused(auth(_bad(logon, abc, NOW + 6 + i), NOW + 6 + i), "bad_signature")
    assert auth.locked_sessions() == []


def test_closure_is_per_session(auth, abc, manager, logon):
    abd = manager.create("ABD", now=NOW_DT)
    for i in range(5):
        auth(_bad(logon, abc, NOW + i), NOW + i)
    assert auth(logon(abd.access_key_id, abd.secret_key, comp_id="ABD123N", now=NOW + 6),
                NOW + 6).ok


def test_mixed_reasons_count_towards_closure(auth, abc, logon):
    bad = [logon("Q" * 20, abc.secret_key), logon(abc.access_key_id, abc.secret_key, now=NOW - 99),
           logon(abc.access_key_id, abc.secret_key, cred={1400: "X"}),
           logon(abc.access_key_id, abc.secret_key, drop=(1604,)),
           logon(abc.access_key_id, abc.secret_key, cred={1402: "C" * 43})]
    decisions = [auth(m, NOW + i) for i, m in enumerate(bad)]
    assert [d.text for d in decisions] == [AUTH_FAILED_TEXT] * 4 + [PORT_CLOSURE_TEXT]


# ---- live key store ----------------------------------------------------------------------------

def test_key_created_in_another_process_is_valid_at_next_logon(auth, paths, logon):
    assert auth.locked_sessions() == []
    assert refused(auth(logon("Q" * 20, "A" * 43), NOW), "unknown_key")       # store read (empty)
    code = ("import sys, json; from datetime import datetime, timezone; "
            "from dcgateway.auth import open_key_manager; "
            "m = open_key_manager(sys.argv[1], sys.argv[2], sys.argv[3]); "
            "now = datetime(2026, 3, 2, 14, tzinfo=timezone.utc); "
            "print(json.dumps(m.create('ABC', who='tina', now=now).to_json()))")
    out = subprocess.run([sys.executable, "-c", code, str(paths.store), str(paths.master),
                          str(paths.audit)], env=dict(os.environ, PYTHONPATH=str(REPO)),
                         capture_output=True, text=True, check=True).stdout
    doc = json.loads(out)
    assert set(doc) == {"session_id", "access_key_id", "secret_key", "created", "expires"}
    assert auth(logon(doc["access_key_id"], doc["secret_key"], now=NOW + 1), NOW + 1).ok
    code = ("import sys; from dcgateway.auth import open_key_manager; "
            "open_key_manager(sys.argv[1], sys.argv[2], sys.argv[3]).delete(sys.argv[4])")
    subprocess.run([sys.executable, "-c", code, str(paths.store), str(paths.master),
                    str(paths.audit), doc["access_key_id"]],
                   env=dict(os.environ, PYTHONPATH=str(REPO)), check=True)
    assert refused(auth(logon(doc["access_key_id"], doc["secret_key"], now=NOW + 2), NOW + 2),
                   "deleted_key")


def test_unreadable_key_store_refuses_without_raising(auth, abc, logon, paths, caplog):
    msg = logon(abc.access_key_id, abc.secret_key)
    assert auth(msg, NOW).ok
    blob = bytearray(paths.store.read_bytes())
    blob[-1] ^= 0xFF
    paths.store.write_bytes(bytes(blob))
    with caplog.at_level(logging.ERROR, logger="dcgateway.auth"):
        for i in range(6):                      # never counted towards port closure
            assert refused(auth(msg, NOW + i), "keystore_unavailable")
    assert "keystore_unavailable" in caplog.text and str(paths.store) in caplog.text
    assert auth.locked_sessions() == []


def test_wrong_master_key_refuses_without_raising(auth, abc, logon, paths, caplog):
    import base64
    paths.master.write_bytes(base64.urlsafe_b64encode(os.urandom(32)))
    with caplog.at_level(logging.ERROR, logger="dcgateway.auth"):
        assert refused(auth(logon(abc.access_key_id, abc.secret_key), NOW),
                       "keystore_unavailable")
    assert "master key" in caplog.text


def test_provider_exception_of_any_kind_is_contained(paths, logon, abc):
    class Broken:
        def snapshot(self):
            raise OSError("disk on fire")

    a = LogonAuthenticator(Broken(), SESSIONS, state_dir=paths.data_dir)
    assert refused(a(logon(abc.access_key_id, abc.secret_key), NOW), "keystore_unavailable")


def test_garbage_message_is_contained(auth):
    class Weird:
        header = {49: b"ABC123N"}
        msg_type = b"A"

        def get(self, tag, default=None):
            raise RuntimeError("boom")

    assert refused(auth(Weird(), NOW), "internal_error")


# ---- secrets stay out --------------------------------------------------------------------------

def test_secrets_never_logged(auth, abc, manager, logon, paths, caplog):
    other = manager.create("ABD", now=NOW_DT)
    with caplog.at_level(logging.DEBUG):
        auth(logon(abc.access_key_id, abc.secret_key), NOW)
        auth(logon(abc.access_key_id, other.secret_key), NOW)
        auth(logon(other.access_key_id, other.secret_key), NOW)            # wrong session
        auth(logon(abc.secret_key[:20], abc.secret_key), NOW)              # secret as key id
        auth(logon(abc.access_key_id, abc.secret_key, now=NOW - 100), NOW)
        for i in range(5):
            auth(_bad(logon, abc, NOW + i), NOW + i)
        manager.download(abc.access_key_id, who="tina")
        manager.delete(other.access_key_id, who="tina")
    text = caplog.text + "".join(repr(r.args) for r in caplog.records)
    for secret in (abc.secret_key, other.secret_key, abc.secret_key[:20]):
        assert secret not in text
    for rec in (abc, other):
        assert rec.secret_key not in paths.audit.read_text()
        assert rec.secret_key not in repr(rec)
    assert abc.secret_key not in repr(auth)
    assert "ABC123N" in caplog.text and "bad_signature" in caplog.text
