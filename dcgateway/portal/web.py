"""Request plumbing shared by the JSON API and the pages: who is asking (the session cookie),
whether they may change something (the session's CSRF token), rate limits, rendering, and
running the blocking state-store calls in worker threads.

One :class:`Web` is built per app by :func:`dcgateway.portal.app.create_app` (no module-level
state). Checks follow OWASP ASVS 5.0: "Session management" (the cookie, timeouts, sessions
ended on the server when their user is reset or locked), "Browser security" (the
synchronizer token on every state-changing request) and "API and web service" (rate limits).
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.types import Scope

from ..config import GatewayConfig
from ..state import StateStore
from .accounts import Accounts
from .ratelimit import Limits, RateLimiter
from .service import Actor, Operations, PortalError
from .websession import COOKIE_PLAIN, COOKIE_TLS, SessionStore, WebSession
from .wizard import values_text

log = logging.getLogger("dcgateway.portal")
T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    public_url: str
    tls: bool
    idle_timeout_s: float
    absolute_timeout_s: float
    limits: Limits


_ENTITY_PATH = re.compile(r"(?:/api/v1)?/entities/([^/]+)")


class Web:
    def __init__(self, config: GatewayConfig, state: StateStore, accounts: Accounts,
                 settings: Settings, clock: Callable[[], float]) -> None:
        self.config = config
        self.state = state
        self.accounts = accounts
        self.ops = Operations(state)
        self.settings = settings
        self.clock = clock
        self.sessions = SessionStore(settings.idle_timeout_s, settings.absolute_timeout_s,
                                     clock=clock)
        lim = settings.limits
        self.login_limiter = RateLimiter(lim.login_rate, lim.login_burst, clock=clock)
        self.api_limiter = RateLimiter(lim.api_rate, lim.api_burst, clock=clock)
        self.anon_limiter = RateLimiter(lim.anonymous_rate, lim.anonymous_burst, clock=clock)
        self.cookie = COOKIE_TLS if settings.tls else COOKIE_PLAIN
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("dcgateway.portal", "templates"),
            autoescape=jinja2.select_autoescape(default=True), undefined=jinja2.StrictUndefined)
        self.templates.filters["values"] = values_text   # a filter's values, as typed in

    # -- threads ----------------------------------------------------------------------------

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A blocking call (files, flock, argon2) in a worker thread."""
        return await run_in_threadpool(functools.partial(fn, *args, **kwargs))

    # -- who is asking ------------------------------------------------------------------------

    @staticmethod
    def address(request: Request) -> str | None:
        return request.client.host if request.client else None

    def limit(self, limiter: RateLimiter, key: str) -> None:
        wait = limiter.take(key)
        if wait > 0:
            raise PortalError(429, "too many requests; retry later",
                              headers={"Retry-After": str(max(1, int(wait + 0.999)))})

    def limit_login(self, request: Request) -> None:
        self.limit(self.login_limiter, f"login:{self.address(request)}")

    def current(self, request: Request) -> WebSession | None:
        """The request's live session, or None (ended when its user was reset or locked)."""
        sid = request.cookies.get(self.cookie)
        session = self.sessions.get(sid)
        if session is None:
            return None
        if not self.accounts.session_valid(session.principal.name, session.generation,
                                           self.clock()):
            self.sessions.end(sid)
            return None
        return session

    def guard(self, request: Request, *, csrf: str | None | Literal[False] = False,
              ) -> tuple[WebSession, Actor]:
        """The logged-in caller, or 401; rate-limited per user (429). ``csrf``: False for a
        safe request, else the token sent with it (header or form field), checked against the
        session's (403 when missing or another session's)."""
        session = self.current(request)
        if session is None:
            self.limit(self.anon_limiter, f"anon:{self.address(request)}")
            raise PortalError(401, "not logged in")
        actor = Actor(session.principal, self.address(request))
        self.limit(self.api_limiter, f"user:{actor.name}")
        if csrf is not False and not session.csrf_ok(csrf if isinstance(csrf, str) else None):
            self.ops.audit(actor, "denied", entity=self.entity_in(request.url.path),
                           outcome="denied", request="csrf", method=request.method,
                           path=request.url.path[:200])
            raise PortalError(403, "missing or wrong CSRF token")
        return session, actor

    def entity_in(self, path: str) -> str | None:
        """The registered entity a page or API path names (``/entities/NAME/...``), if it
        exists: a refused request is audited in that entity's trail."""
        match = _ENTITY_PATH.match(path)
        if match is None or self.ops.config.entity(match.group(1)) is None:
            return None
        return match.group(1)

    async def refused_request(self, scope: Scope, reason: str) -> None:
        """A request the security layer refused before any route (another origin): audited
        with who sent it when it came with a live session, in the trail of the entity it
        named (the write and its fsync in a worker thread, as every audit entry). One
        address's flood is written only as fast as its anonymous rate allows."""
        request = Request(scope)
        address = self.address(request)
        if self.anon_limiter.take(f"refused:{address}") > 0:
            return
        session = self.sessions.get(request.cookies.get(self.cookie), touch=False)
        await self.run(self.state.audit.record, "portal", "denied",
                       who=session.principal.name if session else None,
                       entity=self.entity_in(request.url.path), outcome="denied",
                       address=address, request="forged", reason=reason,
                       method=request.method, path=request.url.path[:200])

    def api_guard(self, request: Request) -> tuple[WebSession, Actor]:
        unsafe = request.method in ("POST", "PUT", "PATCH", "DELETE")
        return self.guard(request, csrf=request.headers.get("x-csrf-token") if unsafe
                          else False)

    async def step_up(self, actor: Actor, key_id: str, code: Any, action: str) -> str:
        """A fresh TOTP code before a sensitive action (ASVS "Re-authentication"); the pair
        must be one the caller may see (404 otherwise) before the code is even looked at.
        Returns the pair's entity."""
        _, entity = await self.run(self.ops.key, actor, key_id, action)
        outcome = await self.run(self.accounts.step_up, actor.name, code, self.clock())
        if outcome != "ok":
            locked = outcome == "locked"
            await self.run(self.ops.audit, actor, "step_up_failed", entity=entity,
                           outcome="refused", request=action, access_key_id=key_id,
                           locked_now=locked or None)
            if locked:                    # the 5th failure: the user's sessions are over
                raise PortalError(423, "locked: too many failed codes; ask an operator")
            raise PortalError(403, "a fresh authenticator code is required (each code works "
                              "once)")
        return entity

    # -- bodies and answers -------------------------------------------------------------------

    @staticmethod
    async def json_body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            raise PortalError(400, "the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise PortalError(400, "expected a JSON object")
        return data

    def set_cookie(self, response: Response, sid: str) -> None:
        response.set_cookie(self.cookie, sid, path="/", httponly=True, samesite="strict",
                            secure=self.settings.tls)

    def clear_cookie(self, response: Response) -> None:
        response.delete_cookie(self.cookie, path="/", httponly=True, samesite="strict",
                               secure=self.settings.tls)

    def render(self, request: Request, name: str, status: int = 200,
               session: WebSession | None = None, **context: Any) -> HTMLResponse:
        flash: list[str] = []
        if session is not None:
            flash, session.flash = session.flash, []
        page = self.templates.get_template(name).render(
            request=request, me=session.principal if session else None,
            csrf_token=session.csrf_token if session else "", flash=flash, **context)
        return HTMLResponse(page, status_code=status)


def form_token(form: Mapping[str, Any]) -> str | None:
    """The CSRF token a form carries (hidden field ``csrf_token``), or None."""
    value = form.get("csrf_token")
    return value if isinstance(value, str) and value else None


def form_value(form: Mapping[str, Any], key: str) -> str:
    value = form.get(key)
    return value.strip() if isinstance(value, str) else ""
