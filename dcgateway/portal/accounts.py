"""Users of the portal: who they are, enrolment, login with two factors, lockout.

Who may log in is configuration: the administrators listed under ``entities[].administrators``
(each acts for the entities that list them) and the exchange's ``operators`` (every entity).
What they set is kept in the state store's users (:mod:`dcgateway.state.users`).

The rules, with the OWASP ASVS (5.0) chapter each one answers:

* *Authentication, general*: login needs something known (a password, hashed with argon2id)
  and something held (a TOTP authenticator, RFC 6238: 6 digits, 30-second steps, HMAC-SHA1 as
  every authenticator app supports). Every failure gets the same answer, whichever factor was
  wrong or whether the user exists; the password of an unknown user is checked against a dummy
  hash so the time taken does not tell either.
* *One-time passwords*: a code is accepted once: its time step must be later than the last one
  accepted for the user (RFC 6238 section 5.2 "validation and time-step size"); one step of
  clock drift is allowed either way.
* *Brute force*: the 5th failure within 15 minutes locks the user for 3 hours, or until an
  operator runs ``users unlock``; unknown names are counted the same way (in memory), so a
  lockout does not reveal whether a name exists.
* *Credential recovery / enrolment*: an invitation is a one-time token (256 random bits,
  stored as its SHA-256) that expires; enrolment sets the password and registers the
  authenticator, confirmed with a current code; ``users reset`` revokes password, second factor
  and every web session (the user's *generation* moves).
* *Password security*: at least 12 characters, up to 128, no composition rules, not a
  commonly used password, not the user's name.

Every method is synchronous and may block (argon2 costs ~50 ms and 64 MiB; the store takes
``flock``): the web layer runs them in worker threads, at most :data:`MAX_PARALLEL_HASHES`
hashes at a time so that a burst of logins cannot exhaust memory. ``now`` is an argument
everywhere (tests and the CLI pass the clock).
"""

from __future__ import annotations

import hmac
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ..config import GatewayConfig
from ..errors import UsageError
from ..state.users import UserRecord, UserStore, token_digest

ROLE_OPERATOR = "operator"
ROLE_ADMINISTRATOR = "administrator"
LOCK_AFTER_FAILURES = 5
FAILURE_WINDOW_S = 15 * 60.0
LOCK_DURATION_S = 3 * 3600.0
INVITE_TTL_S = 72 * 3600.0
ENROL_CODE_ATTEMPTS = 5
TOTP_STEP_S = 30
TOTP_DIGITS = 6
TOTP_DRIFT_STEPS = 1
PASSWORD_MIN, PASSWORD_MAX = 12, 128
MAX_PARALLEL_HASHES = 2
_GHOSTS_MAX = 10_000
_CODE_RE = re.compile(r"[0-9]{6}")
_COMMON_PASSWORDS = frozenset(["123456789012", "password1234", "passwordpassword", "qwertyuiopas", "1q2w3e4r5t6y", "qwerty123456", "iloveyou1234", "administrator", "letmeinletmein", "welcome12345", "changeme1234", "aaaaaaaaaaaa", "abcdefghijkl", "abc123abc123", "password123!", "trustno1trustno1", "dcgatewaydcgateway"])


@dataclass(frozen=True)
class Principal:
    """A configured user: name, e-mail, role and the entities they act for."""

    name: str
    email: str
    role: str
    entities: tuple[str, ...]

    def may_act_for(self, entity: str) -> bool:
        return self.role == ROLE_OPERATOR or entity in self.entities


def directory(config: GatewayConfig) -> dict[str, Principal]:
    """Every user the configuration names (operators act for every entity)."""
    users: dict[str, Principal] = {}
    for entity in config.entities:
        for admin in entity.administrators:
            known = users.get(admin.name)
            users[admin.name] = Principal(
                admin.name, known.email if known else admin.email, ROLE_ADMINISTRATOR,
                (known.entities if known else ()) + (entity.name,))
    everything = tuple(e.name for e in config.entities)
    for op in config.operators:
        users[op.name] = Principal(op.name, op.email, ROLE_OPERATOR, everything)
    return users


class EnrolmentRefused(Exception):
    """Bad, used or expired invitation, or a wrong confirmation code: one generic answer.
    ``reason`` is set only for a password the policy refuses (the token was valid)."""

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(reason or "enrolment refused")
        self.reason = reason


@dataclass(frozen=True)
class LoginResult:
    outcome: str                       # "ok" | "failed" | "locked"
    principal: Principal | None = None
    generation: int = 0
    locked_now: bool = False           # this failure locked the user


def password_problem(name: str, password: str) -> str | None:
    """Why ``password`` is refused (ASVS "Password security"), or None."""
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        return f"a password needs {PASSWORD_MIN} to {PASSWORD_MAX} characters"
    if len(set(password)) < 4 or password.lower() in _COMMON_PASSWORDS:
        return "that password is too common or too simple"
    if name.lower() in password.lower():
        return "a password must not contain the user name"
    return None


def totp_step(secret: str, code: str, now: float, last_step: int) -> int | None:
    """The time step ``code`` belongs to, if it is valid at ``now`` (one step of drift either
    way) and later than ``last_step`` (a code is accepted once); else None."""
    if not _CODE_RE.fullmatch(code or ""):
        return None
    totp = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_STEP_S)
    current = int(now // TOTP_STEP_S)
    found = None
    for step in range(current - TOTP_DRIFT_STEPS, current + TOTP_DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.at(step * TOTP_STEP_S), code) and step > last_step:
            found = step
    return found


def totp_uri(secret: str, user: str, issuer: str) -> str:
    """The ``otpauth://totp/...`` URI an authenticator app reads (also as a QR code)."""
    return pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_STEP_S).provisioning_uri(
        name=user, issuer_name=issuer)


def _recent(failures: Iterable[float], now: float) -> tuple[float, ...]:
    return tuple(t for t in failures if now - t < FAILURE_WINDOW_S)


class Accounts:
    """The portal's and the ``users`` command's view of users (see the module docstring)."""

    def __init__(self, config: GatewayConfig, users: UserStore, *,
                 hasher: PasswordHasher | None = None, issuer: str | None = None) -> None:
        self.config = config
        self.users = users
        self.hasher = hasher or PasswordHasher()        # argon2id, RFC 9106 low-memory profile
        self.issuer = issuer or f"dcgateway {config.gateway.comp_id}"
        self.people = directory(config)
        self._hashing = threading.BoundedSemaphore(MAX_PARALLEL_HASHES)
        self._dummy_hash: str | None = None
        self._ghosts: OrderedDict[str, tuple[float, ...]] = OrderedDict()
        self._ghost_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Accounts(users={self.users!r})"

    # -- hashing -----------------------------------------------------------------------------

    def _hash(self, password: str) -> str:
        with self._hashing:
            return self.hasher.hash(password)

    def _verify(self, stored: str | None, password: str) -> bool:
        with self._hashing:
            if stored is None:
                if self._dummy_hash is None:
                    self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(16))
                stored = self._dummy_hash
                try:
                    self.hasher.verify(stored, password)
                except (VerificationError, InvalidHashError):
                    pass
                return False
            try:
                return self.hasher.verify(stored, password)
            except (VerificationError, InvalidHashError):
                return False

    # -- invitations and enrolment ------------------------------------------------------------

    def principal(self, name: str) -> Principal:
        p = self.people.get(name)
        if p is None:
            known = ", ".join(sorted(self.people)) or "none configured"
            raise UsageError(f"{name!r} is not an administrator or operator in "
                             f"{self.config.path} (users: {known})")
        return p

    def invite(self, name: str, now: float, ttl_s: float = INVITE_TTL_S) -> tuple[str, float]:
        """A new one-time enrolment token for ``name`` (replacing any earlier one) and its
        expiry. Refused for a user already enrolled: ``users reset`` first."""
        self.principal(name)
        token = secrets.token_urlsafe(32)
        expires = now + ttl_s

        def change(rec: UserRecord) -> UserRecord:
            if rec.is_enrolled:
                raise UsageError(f"{name} is already enrolled; `dcgateway users reset {name}` "
                                 "revokes their credentials first")
            return replace(rec, invite_digest=token_digest(token), invite_expires=expires,
                           pending_password_hash=None, pending_totp_sealed=None,
                           pending_attempts=0)
        self.users.update(name, change)
        return token, expires

    def _by_token(self, token: str, now: float) -> UserRecord | None:
        if not isinstance(token, str) or not 20 <= len(token) <= 128:
            return None
        digest = token_digest(token)
        found = None
        for rec in self.users.all().values():
            if rec.invite_digest is not None and hmac.compare_digest(rec.invite_digest, digest):
                found = rec
        if found is None or found.invite_expires is None or now >= found.invite_expires \
                or found.is_enrolled or found.name not in self.people:
            return None
        return found

    def invitation_valid(self, token: str, now: float) -> bool:
        rec = self._by_token(token, now)
        return rec is not None and rec.pending_password_hash is None

    def begin_enrolment(self, token: str, password: str, now: float) -> tuple[str, str]:
        """First enrolment step: set the password, mint the TOTP secret. Returns (user,
        otpauth URI). The token stays valid only for :meth:`confirm_enrolment`."""
        rec = self._by_token(token, now)
        if rec is None or rec.pending_password_hash is not None:
            raise EnrolmentRefused()
        if not isinstance(password, str):
            raise EnrolmentRefused("expected a password")
        problem = password_problem(rec.name, password)
        if problem:
            raise EnrolmentRefused(problem)
        hashed = self._hash(password)
        secret = pyotp.random_base32(32)
        sealed = self.users.seal(rec.name, secret)

        def change(cur: UserRecord) -> UserRecord:
            if cur.invite_digest != rec.invite_digest or cur.pending_password_hash is not None:
                raise EnrolmentRefused()
            return replace(cur, pending_password_hash=hashed, pending_totp_sealed=sealed,
                           pending_attempts=0)
        self.users.update(rec.name, change)
        return rec.name, totp_uri(secret, rec.name, self.issuer)

    def pending_uri(self, token: str, now: float) -> tuple[str, str] | None:
        """(user, otpauth URI) of an enrolment waiting for its confirmation code."""
        rec = self._by_token(token, now)
        if rec is None or rec.pending_totp_sealed is None:
            return None
        return rec.name, totp_uri(self.users.unseal(rec.name, rec.pending_totp_sealed),
                                  rec.name, self.issuer)

    def confirm_enrolment(self, token: str, code: str, now: float) -> str:
        """Second step: a current code from the new authenticator completes the enrolment and
        uses up the token. Five wrong codes use it up too."""
        rec = self._by_token(token, now)
        if rec is None or rec.pending_totp_sealed is None or rec.pending_password_hash is None:
            raise EnrolmentRefused()
        secret = self.users.unseal(rec.name, rec.pending_totp_sealed)
        step = totp_step(secret, code if isinstance(code, str) else "", now, 0)

        def change(cur: UserRecord) -> UserRecord:
            if cur.invite_digest != rec.invite_digest or cur.pending_totp_sealed is None:
                raise EnrolmentRefused()
            if step is None:
                spent = cur.pending_attempts + 1 >= ENROL_CODE_ATTEMPTS
                return replace(cur, **(_cleared_invite() if spent else
                                        {"pending_attempts": cur.pending_attempts + 1}))
            return replace(cur, password_hash=cur.pending_password_hash,
                           totp_sealed=cur.pending_totp_sealed, enrolled=now,
                           last_totp_step=step, failures=(), locked_until=None,
                           generation=cur.generation + 1, **_cleared_invite())
        self.users.update(rec.name, change)
        if step is None:
            raise EnrolmentRefused()
        return rec.name

    # -- login and step-up ------------------------------------------------------------------

    def login(self, name: str, password: str, code: str, now: float,
              address: str | None = None) -> LoginResult:
        """Password and a fresh TOTP code (see the module docstring for the rules)."""
        person = self.people.get(name) if isinstance(name, str) else None
        rec = self.users.get(name) if person is not None else None
        if (rec.locked(now) if rec is not None else self._ghost_locked(str(name), now)):
            return LoginResult("locked")
        enrolled = rec is not None and rec.is_enrolled
        ok = self._verify(rec.password_hash if enrolled and rec else None,
                          password if isinstance(password, str) else "")
        step = None
        if ok and rec is not None and rec.totp_sealed is not None:
            secret = self.users.unseal(name, rec.totp_sealed)
            step = totp_step(secret, code if isinstance(code, str) else "", now,
                             rec.last_totp_step)
        if person is None or rec is None:
            return self._ghost_failure(str(name), now)
        if step is None:
            return self._fail(name, now)

        def change(cur: UserRecord) -> UserRecord:
            if cur.last_totp_step >= step or cur.locked(now):
                raise _Replayed()
            hashed = cur.password_hash
            if hashed and self.hasher.check_needs_rehash(hashed):
                hashed = self._hash(password)
            return replace(cur, password_hash=hashed, last_totp_step=step, failures=(),
                           locked_until=None, last_login=now, last_login_address=address)
        try:
            new = self.users.update(name, change)
        except _Replayed:
            return self._fail(name, now)
        return LoginResult("ok", person, new.generation)

    def _fail(self, name: str, now: float) -> LoginResult:
        locked_now = False

        def change(cur: UserRecord) -> UserRecord:
            nonlocal locked_now
            failures = _recent(cur.failures, now) + (now,)
            if len(failures) >= LOCK_AFTER_FAILURES:
                locked_now = True
                return replace(cur, failures=(), locked_until=now + LOCK_DURATION_S,
                               generation=cur.generation + 1)
            return replace(cur, failures=failures)
        self.users.update(name, change)
        return LoginResult("failed", locked_now=locked_now)

    def _ghost_locked(self, name: str, now: float) -> bool:
        with self._ghost_lock:
            marks = self._ghosts.get(name, ())
            return bool(marks) and marks[0] < 0 and now < -marks[0]

    def _ghost_failure(self, name: str, now: float) -> LoginResult:
        """An unknown (or never enrolled) name fails and locks like a real one, in memory."""
        with self._ghost_lock:
            marks = _recent((t for t in self._ghosts.pop(name, ()) if t >= 0), now) + (now,)
            locked = len(marks) >= LOCK_AFTER_FAILURES
            self._ghosts[name] = (-(now + LOCK_DURATION_S),) if locked else marks
            while len(self._ghosts) > _GHOSTS_MAX:
                self._ghosts.popitem(last=False)
        return LoginResult("failed", locked_now=locked)

    def step_up(self, name: str, code: str, now: float) -> str:
        """A fresh TOTP code for a sensitive action (ASVS "Re-authentication"): accepted once,
        like a login code; a wrong one counts as a login failure. Returns ``ok``, ``failed``,
        or ``locked`` when this failure locked the user (their sessions are over)."""
        rec = self.users.get(name)
        if rec is None or not rec.is_enrolled or rec.totp_sealed is None or rec.locked(now):
            return "failed"
        secret = self.users.unseal(name, rec.totp_sealed)
        step = totp_step(secret, code if isinstance(code, str) else "", now, rec.last_totp_step)
        if step is None:
            return "locked" if self._fail(name, now).locked_now else "failed"

        def change(cur: UserRecord) -> UserRecord:
            if cur.last_totp_step >= step:
                raise _Replayed()
            return replace(cur, last_totp_step=step)
        try:
            self.users.update(name, change)
        except _Replayed:
            return "failed"
        return "ok"

    def session_valid(self, name: str, generation: int, now: float) -> bool:
        """A web session stays valid while its user is enrolled, not locked and not reset."""
        rec = self.users.get(name)
        return rec is not None and rec.is_enrolled and rec.generation == generation \
            and not rec.locked(now) and name in self.people

    # -- operators' commands ----------------------------------------------------------------

    def unlock(self, name: str) -> bool:
        """Lift a login lockout (``users unlock``); True when the user was locked."""
        self.principal(name)
        was: list[bool] = []

        def change(cur: UserRecord) -> UserRecord:
            was.append(cur.locked_until is not None or bool(cur.failures))
            return replace(cur, failures=(), locked_until=None)
        self.users.update(name, change)
        with self._ghost_lock:
            self._ghosts.pop(name, None)
        return was[0]

    def reset(self, name: str) -> None:
        """Revoke password, second factor, invitation and every web session (``users
        reset``): a new invitation is needed."""
        self.principal(name)
        self.users.update(name, lambda cur: UserRecord(
            name, generation=cur.generation + 1, last_totp_step=cur.last_totp_step))

    def rows(self, now: float) -> list[dict[str, Any]]:
        """``users list``: never a secret."""
        stored = self.users.all()
        out = []
        for name in sorted(self.people):
            p, rec = self.people[name], stored.get(name)
            out.append({"user": name, "email": p.email, "role": p.role,
                        "entities": list(p.entities),
                        "enrolled": bool(rec and rec.is_enrolled),
                        "invited": bool(rec and rec.invite_expires and now < rec.invite_expires
                                        and not rec.is_enrolled),
                        "locked": bool(rec and rec.locked(now)),
                        "last_login": rec.last_login if rec else None})
        return out


class _Replayed(Exception):
    """Inside an update: the code's time step was used meanwhile (or a lockout began)."""


def _cleared_invite() -> dict[str, Any]:
    return {"invite_digest": None, "invite_expires": None, "pending_password_hash": None,
            "pending_totp_sealed": None, "pending_attempts": 0}


def enrol_url(public_url: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/enrol/{quote(token, safe='')}"

