"""The users store and the account rules, without a server: the file (0600, TOTP secrets
sealed), enrolment (one-time, expiring), login with two factors (same answer for every
failure, a code accepted once), the lockout (5 failures in 15 minutes, 3 hours, also for
unknown names) and resets. ``now`` is passed, so no test waits for a clock."""

from __future__ import annotations

import json
import stat

import pyotp
import pytest
from argon2 import PasswordHasher

from dcgateway.config import load_config
from dcgateway.errors import UsageError
from dcgateway.portal.accounts import (
    LOCK_DURATION_S,
    Accounts,
    EnrolmentRefused,
    password_problem,
    totp_step,
)
from dcgateway.state import open_state
from dcgateway.state.users import UserStoreError

from .conftest import PASSWORD, portal_config

T0 = 1_800_000_000.0          # a fixed instant (2027-01-15), on a 30-second step boundary


@pytest.fixture
def accounts(tmp_path):
    cfg = load_config(portal_config(tmp_path / "gw"))
    # cheaper argon2 parameters: these tests are about the rules, not the hash's cost
    return Accounts(cfg, open_state(cfg).users, hasher=PasswordHasher(time_cost=1,
                                                                       memory_cost=8192))


def enrol(accounts: Accounts, name: str, now: float = T0) -> pyotp.TOTP:
    token, _ = accounts.invite(name, now)
    user, uri = accounts.begin_enrolment(token, PASSWORD, now)
    assert user == name and uri.startswith("otpauth://totp/")
    totp = pyotp.parse_uri(uri)
    assert accounts.confirm_enrolment(token, totp.at(now), now) == name
    return totp


def test_users_file_is_private_and_holds_no_secret_in_clear(accounts, tmp_path):
    totp = enrol(accounts, "tina")
    path = tmp_path / "gw" / "var" / "portal-users.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert totp.secret not in text and PASSWORD not in text
    rec = json.loads(text)["users"]["tina"]
    assert rec["password_hash"].startswith("$argon2id$")
    shown = repr(accounts.users.get("tina"))
    assert "password_hash" not in shown and "totp_sealed" not in shown
    # a sealed secret is bound to its user: copied to another record it does not open
    with pytest.raises(UserStoreError):
        accounts.users.unseal("carl", rec["totp_sealed"])


def test_directory_roles_and_entities(accounts):
    people = accounts.people
    assert people["tina"].entities == ("TRADECO",) and people["tina"].role == "administrator"
    assert people["olga"].role == "operator"
    assert set(people["olga"].entities) == {"TRADECO", "CLEARCO"}
    with pytest.raises(UsageError, match="not an administrator or operator"):
        accounts.invite("mallory", T0)


def test_invitation_is_one_time_and_expires(accounts):
    token, expires = accounts.invite("carl", T0, ttl_s=3600)
    assert expires == T0 + 3600
    with pytest.raises(EnrolmentRefused) as late:
        accounts.begin_enrolment(token, PASSWORD, T0 + 3600)
    assert late.value.reason is None                       # the generic answer
    with pytest.raises(EnrolmentRefused) as weak:
        accounts.begin_enrolment(token, "carl-password-1", T0)
    assert weak.value.reason == "a password must not contain the user name"
    _, uri = accounts.begin_enrolment(token, PASSWORD, T0)
    with pytest.raises(EnrolmentRefused):                  # the password step works once
        accounts.begin_enrolment(token, PASSWORD, T0)
    totp = pyotp.parse_uri(uri)
    accounts.confirm_enrolment(token, totp.at(T0), T0)
    with pytest.raises(EnrolmentRefused):                  # and the link is used up
        accounts.confirm_enrolment(token, totp.at(T0 + 30), T0 + 30)
    with pytest.raises(UsageError, match="already enrolled"):
        accounts.invite("carl", T0)
    with pytest.raises(EnrolmentRefused):
        accounts.begin_enrolment("not-a-token-at-all-xxxxxxxx", PASSWORD, T0)


def test_five_wrong_confirmation_codes_use_the_link_up(accounts):
    token, _ = accounts.invite("carl", T0)
    _, uri = accounts.begin_enrolment(token, PASSWORD, T0)
    for _ in range(5):
        with pytest.raises(EnrolmentRefused):
            accounts.confirm_enrolment(token, "000000", T0)
    with pytest.raises(EnrolmentRefused):
        accounts.confirm_enrolment(token, pyotp.parse_uri(uri).at(T0), T0)


def test_password_policy():
    assert password_problem("tina", "short") is not None
    assert password_problem("tina", "x" * 129) is not None
    assert password_problem("tina", "aaaaaaaaaaaaaaaa") is not None
    assert password_problem("tina", "password1234") is not None
    assert password_problem("tina", "my TINA passphrase") is not None
    assert password_problem("tina", PASSWORD) is None


def test_totp_step_accepts_one_step_of_drift_and_each_code_once():
    totp = pyotp.TOTP(pyotp.random_base32())
    now = T0 + 10
    step = int(now // 30)
    assert totp_step(totp.secret, totp.at(now), now, 0) == step
    assert totp_step(totp.secret, totp.at(now - 30), now, 0) == step - 1
    assert totp_step(totp.secret, totp.at(now + 30), now, 0) == step + 1
    assert totp_step(totp.secret, totp.at(now - 60), now, 0) is None
    assert totp_step(totp.secret, totp.at(now), now, step) is None        # already used
    assert totp_step(totp.secret, "12345", now, 0) is None
    assert totp_step(totp.secret, "abcdef", now, 0) is None


def test_login_needs_both_factors_and_a_code_works_once(accounts):
    totp = enrol(accounts, "tina")
    now = T0 + 30                              # the enrolment used step T0
    assert accounts.login("tina", "wrong password!!", totp.at(now), now).outcome == "failed"
    assert accounts.login("tina", PASSWORD, "000000", now).outcome == "failed"
    ok = accounts.login("tina", PASSWORD, totp.at(now), now, address="127.0.0.1")
    assert ok.outcome == "ok" and ok.principal.name == "tina"
    assert accounts.users.get("tina").failures == ()        # a success clears the count
    assert accounts.users.get("tina").last_login_address == "127.0.0.1"
    assert accounts.login("tina", PASSWORD, totp.at(now), now).outcome == "failed"   # replay
    assert accounts.users.get("tina").failures == (now,)
    assert accounts.step_up("tina", totp.at(now), now) == "failed"       # used for the login
    assert accounts.step_up("tina", totp.at(now + 30), now) == "ok"


def test_wrong_step_up_codes_lock_like_failed_logins(accounts):
    """The 5th failure within the window, whether logins or step-up codes, locks the user and
    says so (``locked``), so that the lockout is answered and audited as one."""
    totp = enrol(accounts, "tina")
    now = T0 + 30
    assert accounts.login("tina", "wrong password!!", "000000", now).outcome == "failed"
    for i in range(3):
        assert accounts.step_up("tina", "000000", now + i) == "failed"
    generation = accounts.users.get("tina").generation
    assert accounts.step_up("tina", "000000", now + 3) == "locked"
    assert accounts.users.get("tina").generation == generation + 1     # its sessions are over
    assert accounts.step_up("tina", totp.at(now + 30), now + 4) == "failed"
    assert accounts.login("tina", PASSWORD, totp.at(now + 30), now + 5).outcome == "locked"


def test_fifth_failure_locks_for_three_hours_until_unlock(accounts):
    totp = enrol(accounts, "tina")
    now = T0 + 30
    for i in range(4):
        assert accounts.login("tina", "wrong password!!", "000000", now + i).outcome == "failed"
    fifth = accounts.login("tina", "wrong password!!", "000000", now + 4)
    assert fifth.outcome == "failed" and fifth.locked_now
    assert accounts.login("tina", PASSWORD, totp.at(now), now + 5).outcome == "locked"
    later = now + LOCK_DURATION_S + 30
    assert accounts.login("tina", PASSWORD, totp.at(later), later).outcome == "ok"
    # failures older than 15 minutes do not count
    for i in range(4):
        accounts.login("tina", "wrong password!!", "000000", later + i)
    assert accounts.login("tina", "wrong", "0", later + 901).outcome == "failed"
    assert accounts.users.get("tina").locked_until is None
    for i in range(4):
        accounts.login("tina", "wrong password!!", "000000", later + 902 + i)
    assert accounts.login("tina", PASSWORD, totp.at(later + 960), later + 960).outcome \
        == "locked"
    assert accounts.unlock("tina") is True
    assert accounts.login("tina", PASSWORD, totp.at(later + 960), later + 960).outcome == "ok"


def test_unknown_names_lock_like_real_ones(accounts):
    for i in range(5):
        assert accounts.login("nobody", "x", "000000", T0 + i).outcome == "failed"
    assert accounts.login("nobody", "x", "000000", T0 + 6).outcome == "locked"
    assert accounts.login("nobody", "x", "000000", T0 + LOCK_DURATION_S + 7).outcome == "failed"


def test_reset_revokes_everything_and_sessions(accounts):
    totp = enrol(accounts, "carl")
    gen = accounts.users.get("carl").generation
    assert accounts.session_valid("carl", gen, T0)
    accounts.reset("carl")
    rec = accounts.users.get("carl")
    assert not rec.is_enrolled and rec.password_hash is None and rec.totp_sealed is None
    assert not accounts.session_valid("carl", gen, T0)
    assert accounts.login("carl", PASSWORD, totp.at(T0 + 30), T0 + 30).outcome == "failed"
    token, _ = accounts.invite("carl", T0)                 # a new invitation is possible
    assert accounts.invitation_valid(token, T0)


def test_rows_never_hold_secrets(accounts):
    enrol(accounts, "tina")
    rows = {r["user"]: r for r in accounts.rows(T0)}
    assert rows["tina"]["enrolled"] and not rows["carl"]["enrolled"]
    assert set(rows["tina"]) == {"user", "email", "role", "entities", "enrolled", "invited",
                                 "locked", "last_login"}
