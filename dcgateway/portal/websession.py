"""Server-side web sessions (OWASP ASVS 5.0 "Session management").

* The session id is 256 bits from :mod:`secrets`, issued anew at every login (no fixation),
  sent only in a cookie (HttpOnly, SameSite=Strict, Secure and ``__Host-`` prefixed under TLS)
  and kept here only as its SHA-256 digest.
* A session ends after ``idle_timeout_s`` without a request, ``absolute_timeout_s`` after
  login, at logout (on the server: the id stops working at once), and whenever its user's
  *generation* moves (``users reset``, a lockout): checked on every request by the app.
* Each session has its own anti-CSRF token (the synchronizer token pattern), compared in
  constant time.
* Memory is bounded: at most ``max_sessions`` in all and ``max_per_user`` per user (the
  oldest goes first).

Sessions live in the portal process: a portal restart logs everyone out, which is the safe
direction. Everything here runs on the event loop thread (no locking needed).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .accounts import Principal

COOKIE_PLAIN = "dcgw_session"
COOKIE_TLS = "__Host-dcgw_session"


def _digest(sid: str) -> str:
    return hashlib.sha256(sid.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass
class WebSession:
    principal: Principal
    generation: int
    created: float
    last_seen: float
    address: str | None
    csrf_token: str = field(repr=False)
    #: the group wizard's draft (one per session) and one-shot messages for the next page
    wizard: dict[str, Any] = field(default_factory=dict, repr=False)
    flash: list[str] = field(default_factory=list)

    def csrf_ok(self, token: str | None) -> bool:
        return isinstance(token, str) and hmac.compare_digest(
            token.encode("utf-8", "surrogateescape"), self.csrf_token.encode())


class SessionStore:
    """Web sessions by id digest (see the module docstring)."""

    def __init__(self, idle_timeout_s: float, absolute_timeout_s: float, *,
                 clock: Callable[[], float], max_sessions: int = 10_000,
                 max_per_user: int = 10) -> None:
        self.idle_timeout_s = idle_timeout_s
        self.absolute_timeout_s = absolute_timeout_s
        self.clock = clock
        self.max_sessions = max_sessions
        self.max_per_user = max_per_user
        self._by_digest: OrderedDict[str, WebSession] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_digest)

    def create(self, principal: Principal, generation: int,
               address: str | None) -> tuple[str, WebSession]:
        """A new session (and its id, to be set in the cookie once and never kept)."""
        now = self.clock()
        self._expire(now)
        mine = [d for d, s in self._by_digest.items() if s.principal.name == principal.name]
        for digest in mine[:max(0, len(mine) - self.max_per_user + 1)]:
            del self._by_digest[digest]
        while len(self._by_digest) >= self.max_sessions:
            self._by_digest.popitem(last=False)
        sid = secrets.token_urlsafe(32)
        session = WebSession(principal, generation, now, now, address,
                             csrf_token=secrets.token_urlsafe(32))
        self._by_digest[_digest(sid)] = session
        return sid, session

    def get(self, sid: str | None, *, touch: bool = True) -> WebSession | None:
        """The live session of ``sid`` (its last use is now, unless ``touch`` is False: a
        refused request names its session without keeping it alive), or None."""
        if not sid or len(sid) > 128:
            return None
        digest = _digest(sid)
        session = self._by_digest.get(digest)
        if session is None:
            return None
        now = self.clock()
        if self._expired(session, now):
            del self._by_digest[digest]
            return None
        if touch:
            session.last_seen = now
        return session

    def end(self, sid: str | None) -> bool:
        return bool(sid) and self._by_digest.pop(_digest(str(sid)), None) is not None

    def end_user(self, name: str) -> int:
        gone = [d for d, s in self._by_digest.items() if s.principal.name == name]
        for digest in gone:
            del self._by_digest[digest]
        return len(gone)

    def _expired(self, session: WebSession, now: float) -> bool:
        return (now - session.last_seen >= self.idle_timeout_s
                or now - session.created >= self.absolute_timeout_s)

    def _expire(self, now: float) -> None:
        for digest in [d for d, s in self._by_digest.items() if self._expired(s, now)]:
            del self._by_digest[digest]
