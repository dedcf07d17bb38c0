"""Logon authentication, iLink 2 secure-logon style (docs/venue.md, "Secure logon" and "Logon rules").

:class:`LogonAuthenticator` is called with each Logon (35=A) and the gateway clock, and answers an
:class:`AuthDecision`. It never raises. A refused Logon gets a Logout whose 58 Text is always
``"authentication failed"`` (the client is never told which check failed); the precise
``reason`` goes to the log and to a metric label (one of :data:`REASONS`, a fixed set, so metric
cardinality is bounded). The exception is port closure: the 5th invalid Logon of a session within
60 s locks it, and that attempt and every one while locked is answered with
:data:`~.lockout.PORT_CLOSURE_TEXT`. The lock persists (:class:`~.lockout.PortClosures`) until an
operator unlocks it.

Checks, in order (each with its own reason):

====================  ==========================================================================
unknown_session       49 absent or not a configured session (not counted: no session to lock)
port_closed           the session is locked
not_logon             35 is not A
orig_sending_time     the Logon carries 122 OrigSendingTime (docs/venue.md: answered with a Logout)
missing_credentials   one of 354, 355, 1400, 1401, 1402 absent
length_mismatch       354 != len(355) or 1401 != len(1402) (including a data field the codec
                      could not read by its length)
malformed_logon       another field of the Logon cannot be parsed
bad_method            1400 is not ``CME-1-SHA-256``
keystore_unavailable  the key store cannot be read (not counted towards port closure: the fault
                      is ours, not the client's)
unknown_key           no key pair with that Access Key ID
deleted_key           the pair was deleted
expired_key           the pair's expiry is at or before ``now``
wrong_session_id      the pair was issued for another Session ID (key scope)
incomplete_logon      a canonical tag the session's profile requires is absent or empty
bad_sending_time      52 is not a UTCTimestamp
stale_sending_time    52 is further than the tolerance from ``now`` (replay protection)
bad_signature         the HMAC does not match (constant-time comparison)
replayed_logon        this exact signature was already accepted (within the tolerance window)
====================  ==========================================================================

Each signed Logon is accepted once. The signature covers SendingTime, so a Logon can only be
replayed while its 52 is within the tolerance; the authenticator remembers every signature it
accepted for twice the tolerance and refuses a second use like any other authentication failure.
That closes the replays the canonical string alone cannot: ResetSeqNumFlag (141) is not signed,
so a captured Logon with 141=Y replayed after its owner logged out would otherwise reset the
session's sequences.

Key pairs are read through a provider's ``snapshot()`` (:class:`~.keystore.KeyStore`), which
re-reads the store only when its file changed: keys created or deleted by the CLI in another
process take effect at the next Logon, for the cost of a ``stat``.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from ..fix import tags as T
from ..fix.codec import FieldError, RawMessage
from ..fix.session_types import AuthDecision as AuthDecision  # the session's, re-exported
from ..fix.timefmt import parse_utc_timestamp
from ..ratelog import RateLimitedLog
from .canonical import CANONICAL_TAGS, canonical_values, key_scope, required_tags
from .keystore import KeyRecord
from .lockout import PORT_CLOSURE_TEXT, PortClosures, state_path
from .signing import METHOD, decode_secret, signature_bytes

log = logging.getLogger("dcgateway.auth")

AUTH_FAILED_TEXT = "authentication failed"

REASONS: tuple[str, ...] = (
    "unknown_session", "port_closed", "not_logon", "orig_sending_time", "missing_credentials",
    "length_mismatch", "malformed_logon", "bad_method", "keystore_unavailable", "unknown_key",
    "deleted_key", "expired_key", "wrong_session_id", "incomplete_logon", "bad_sending_time",
    "stale_sending_time", "bad_signature", "replayed_logon", "internal_error",
)
#: Refusals that are not the client's fault, or have no session: they never lock a session.
_NOT_COUNTED = frozenset({"unknown_session", "port_closed", "keystore_unavailable",
                          "internal_error"})

_METHOD = METHOD.encode()
_CREDENTIAL_TAGS = (T.ENCODED_TEXT_LEN, T.ENCODED_TEXT, T.ENCRYPTED_PASSWORD_METHOD,
                    T.ENCRYPTED_PASSWORD_LEN, T.ENCRYPTED_PASSWORD)
_LENGTH_TAGS = frozenset(_CREDENTIAL_TAGS) - {T.ENCRYPTED_PASSWORD_METHOD}
_SENDING_TIME_INDEX = CANONICAL_TAGS.index(T.SENDING_TIME)


class SessionAuth(NamedTuple):
    """What the authenticator needs to know of a configured session."""

    key_scope: str                      # the Session ID its keys are issued for
    required_tags: frozenset[int]       # canonical tags its profile requires


def session_auth(comp_id: str, profile: str) -> SessionAuth:
    """The :class:`SessionAuth` of a configured session from its ``profile``."""
    return SessionAuth(key_scope(comp_id, profile), required_tags(profile))


class KeyProvider(Protocol):
    def snapshot(self) -> Mapping[str, KeyRecord]: ...


class Closures(Protocol):
    """Where port closures are kept: :class:`~.lockout.PortClosures`, or the state store's
    closures (``dcgateway.state.ClosureStore``), which the gateway passes."""

    def is_locked(self, comp_id: str) -> bool: ...

    def locked(self) -> dict[str, dict[str, Any]]: ...

    def lock(self, comp_id: str, *, now: float, reason: str) -> None: ...

    def count_invalid(self, comp_id: str, now: float, window_s: float) -> int: ...

    def clear_invalid(self, comp_id: str, now: float) -> None: ...

    def unlock(self, comp_id: str) -> bool: ...


def _normalize(sessions: Mapping[str, SessionAuth | tuple[str, Iterable[int]]]
               ) -> dict[str, SessionAuth]:
    return {comp_id: SessionAuth(scope, frozenset(tags))
            for comp_id, (scope, tags) in sessions.items()}


class _Rejection(Exception):
    """Internal control flow of :meth:`LogonAuthenticator._check` (never escapes)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail


class LogonAuthenticator:
    """``authenticator(logon, now) -> AuthDecision``; ``now`` is the gateway clock (epoch seconds).

    ``sessions`` maps each configured SenderCompID to its :class:`SessionAuth` (or a
    ``(key_scope, required_tags)`` tuple). ``state_dir`` is the data dir where port closures are
    persisted (:data:`~.lockout.STATE_FILE_NAME`); or pass ``closures`` directly.
    """

    def __init__(self, keys: KeyProvider,
                 sessions: Mapping[str, SessionAuth | tuple[str, Iterable[int]]], *,
                 state_dir: str | os.PathLike[str] | None = None,
                 closures: Closures | None = None,
                 sending_time_tolerance_s: float = 30.0,
                 max_invalid_logons: int = 5, invalid_logon_window_s: float = 60.0) -> None:
        if closures is None:
            if state_dir is None:
                raise ValueError("LogonAuthenticator needs state_dir (or closures) to persist "
                                 "port closures")
            closures = PortClosures(state_path(Path(state_dir)))
        self._keys = keys
        self._sessions = _normalize(sessions)
        self._closures = closures
        self.sending_time_tolerance_s = float(sending_time_tolerance_s)
        self.max_invalid_logons = max_invalid_logons
        self.invalid_logon_window_s = float(invalid_logon_window_s)
        self._log = RateLimitedLog(log)         # refusals: one line per session and reason
        #: signatures accepted, with when they may be forgotten (see "accepted once" above)
        self._accepted: dict[bytes, float] = {}

    def __repr__(self) -> str:
        return (f"LogonAuthenticator(sessions={len(self._sessions)}, "
                f"closures={self._closures!r})")

    # -- operator API ------------------------------------------------------------------------

    def set_sessions(self, sessions: Mapping[str, SessionAuth | tuple[str, Iterable[int]]]) -> None:
        """Swap in a new session table (configuration reload)."""
        self._sessions = _normalize(sessions)

    def unlock(self, comp_id: str) -> bool:
        """Lift the port closure of ``comp_id``; True if it was locked."""
        return self._closures.unlock(comp_id)

    def locked_sessions(self) -> list[str]:
        return sorted(self._closures.locked())

    def is_locked(self, comp_id: str) -> bool:
        return self._closures.is_locked(comp_id)

    # -- the check ---------------------------------------------------------------------------

    def __call__(self, logon: RawMessage, now: float) -> AuthDecision:
        comp_id = "?"
        try:
            comp_id = (logon.header.get(T.SENDER_COMP_ID) or b"").decode("ascii", "replace")
            session = self._sessions.get(comp_id)
            if session is None:
                self._log.log("unknown_session", logging.WARNING,
                              "logon refused: comp_id=%r reason=unknown_session", comp_id[:32])
                return AuthDecision(False, "unknown_session", AUTH_FAILED_TEXT)
            if self._closures.is_locked(comp_id):
                self._log.log((comp_id, "port_closed"), logging.WARNING,
                              "logon refused: comp_id=%s reason=port_closed (locked until an "
                              "operator unlocks it)", comp_id)
                return AuthDecision(False, "port_closed", PORT_CLOSURE_TEXT)
            try:
                key_id, sig = self._check(logon, session, now)
                self._accept_once(sig, key_id, now)
            except _Rejection as r:
                return self._reject(comp_id, r, now)
            self._closures.clear_invalid(comp_id, now)
            log.info("logon authenticated: comp_id=%s access_key_id=%s", comp_id, key_id)
            return AuthDecision(True)
        except Exception:                                   # never raise into the session
            log.exception("logon refused: comp_id=%r reason=internal_error", comp_id[:32])
            return AuthDecision(False, "internal_error", AUTH_FAILED_TEXT)

    def _reject(self, comp_id: str, r: _Rejection, now: float) -> AuthDecision:
        detail = f" ({r.detail})" if r.detail else ""
        if r.reason in _NOT_COUNTED:
            level = logging.ERROR if r.reason == "keystore_unavailable" else logging.WARNING
            self._log.log((comp_id, r.reason), level, "logon refused: comp_id=%s reason=%s%s",
                          comp_id, r.reason, detail)
            return AuthDecision(False, r.reason, AUTH_FAILED_TEXT)
        count = self._closures.count_invalid(comp_id, now, self.invalid_logon_window_s)
        if count >= self.max_invalid_logons:
            self._closures.lock(comp_id, now=now, reason=r.reason)
            self._closures.clear_invalid(comp_id, now)
            log.warning("logon refused: comp_id=%s reason=%s%s; port closed after %d invalid "
                        "logons within %g s (until an operator unlocks it)", comp_id, r.reason,
                        detail, self.max_invalid_logons, self.invalid_logon_window_s)
            return AuthDecision(False, r.reason, PORT_CLOSURE_TEXT)
        self._log.log((comp_id, r.reason), logging.WARNING,
                      "logon refused: comp_id=%s reason=%s%s (invalid logon %d of %d allowed "
                      "within %g s)", comp_id, r.reason, detail, count,
                      self.max_invalid_logons - 1, self.invalid_logon_window_s)
        return AuthDecision(False, r.reason, AUTH_FAILED_TEXT)

    def _accept_once(self, sig: bytes, key_id: str, now: float) -> None:
        """Remember ``sig`` for twice the SendingTime tolerance (a Logon signed at 52 = t can
        pass the time check until t + tolerance, and ``now`` may run behind t by as much);
        a second use is a replay."""
        accepted = self._accepted
        if accepted.get(sig, 0.0) > now:
            raise _Rejection("replayed_logon", f"access_key_id={key_id}, signature already used")
        if len(accepted) > 64:
            for old in [s for s, until in accepted.items() if until <= now]:
                del accepted[old]
        accepted[sig] = now + 2 * self.sending_time_tolerance_s

    def _read_fields(self, logon: RawMessage) -> tuple[list[bytes | None], list[bytes]]:
        try:
            if logon.get(T.ORIG_SENDING_TIME) is not None:
                raise _Rejection("orig_sending_time")
            creds = [logon.get(t) for t in _CREDENTIAL_TAGS]
            return creds, canonical_values(logon)
        except FieldError as e:
            if e.tag in _LENGTH_TAGS:
                raise _Rejection("length_mismatch", f"tag {e.tag}") from None
            raise _Rejection("malformed_logon", f"tag {e.tag}: {e.text}") from None

    def _lookup(self, key_b: bytes, session: SessionAuth, now: float) -> KeyRecord:
        try:
            keys = self._keys.snapshot()
        except Exception as e:                               # KeyStoreError, OSError, ...
            raise _Rejection("keystore_unavailable",
                             f"key store unreadable: {type(e).__name__}: {e}") from None
        record = keys.get(key_b.decode("ascii", "replace"))
        if record is None:
            # the value may be anything the client sent (even a secret by mistake): not logged
            raise _Rejection("unknown_key", f"access key id of {len(key_b)} chars")
        who = f"access_key_id={record.access_key_id}"
        if record.deleted is not None:
            raise _Rejection("deleted_key", who)
        if now >= record.expires.timestamp():
            raise _Rejection("expired_key", f"{who} expired {record.expires.isoformat()}")
        if record.session_id != session.key_scope:
            raise _Rejection("wrong_session_id", f"{who} is issued for Session ID "
                                                 f"{record.session_id}, not {session.key_scope}")
        return record

    def _check(self, logon: RawMessage, session: SessionAuth, now: float) -> tuple[str, bytes]:
        """Raise :class:`_Rejection` or return the access key id that authenticated and the
        signature."""
        if logon.msg_type != T.MsgType.LOGON:
            raise _Rejection("not_logon")
        creds, canonical = self._read_fields(logon)
        key_len, key_b, method, sig_len, sig = creds
        if key_len is None or key_b is None or method is None or sig_len is None or sig is None:
            missing = [t for t, v in zip(_CREDENTIAL_TAGS, creds) if v is None]
            raise _Rejection("missing_credentials", f"missing tags {missing}")
        if not (key_len.isdigit() and int(key_len) == len(key_b)
                and sig_len.isdigit() and int(sig_len) == len(sig)):
            raise _Rejection("length_mismatch")
        if method != _METHOD:
            raise _Rejection("bad_method", f"1400={method[:20].decode('ascii', 'replace')!r}")
        record = self._lookup(key_b, session, now)
        who = f"access_key_id={record.access_key_id}"
        missing = [t for t, v in zip(CANONICAL_TAGS, canonical)
                   if not v and t in session.required_tags]
        if missing:
            raise _Rejection("incomplete_logon", f"{who}, missing tags {missing}")
        sending_time = parse_utc_timestamp(canonical[_SENDING_TIME_INDEX])
        if sending_time is None:
            raise _Rejection("bad_sending_time", who)
        if abs(now - sending_time) > self.sending_time_tolerance_s:
            raise _Rejection("stale_sending_time", f"{who}, 52 is {now - sending_time:+.3f} s "
                                                   f"from the gateway clock")
        try:
            secret = decode_secret(record.secret_key)
        except ValueError:
            raise _Rejection("keystore_unavailable", f"{who}: stored secret is invalid") from None
        expected = signature_bytes(secret, b"\n".join(canonical)).encode("ascii")
        if not hmac.compare_digest(expected, sig):
            raise _Rejection("bad_signature", who)
        return record.access_key_id, bytes(sig)
