"""The portal as one ASGI app, built by :func:`create_app` from the configuration and the
state store (no module-level state: two apps in one process share nothing).

Layers, outside in: Starlette's error handler (anything unexpected becomes a 500 with a
generic answer, never a traceback), :class:`~.security.SecurityMiddleware` (headers, Origin
check, body limit, access log), the routes (:mod:`.api` under ``/api/v1``, the pages, the
static files). A :class:`~.service.PortalError` raised anywhere becomes JSON for the API and a
page for a browser (a 401 page sends the browser to the login page).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..config import GatewayConfig
from ..errors import DcGatewayError
from ..state import StateStore
from .accounts import Accounts
from .api import Api
from .pages import Pages
from .pages_groups import GroupPages
from .pages_keys import KeyPages
from .ratelimit import Limits
from .security import SecurityMiddleware, origin_of
from .service import PortalError
from .web import Settings, Web

log = logging.getLogger("dcgateway.portal")
STATIC = Path(__file__).parent / "static"


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _error_handlers(web: Web) -> dict[Any, Any]:
    def page_error(request: Request, status: int, error: str) -> Response:
        if status == 401:
            return RedirectResponse("/login", status_code=303)
        return web.render(request, "error.html", status=status, session=web.current(request),
                          error=error, status_code=status)

    async def portal_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PortalError)
        if _wants_json(request):
            body: dict[str, Any] = {"error": exc.error}
            if exc.errors is not None:
                body["errors"] = exc.errors
            return JSONResponse(body, status_code=exc.status, headers=exc.headers)
        response = page_error(request, exc.status, exc.error)
        response.headers.update(exc.headers)
        return response

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        reason = {404: "not found", 405: "method not allowed"}.get(status, "bad request")
        if _wants_json(request):
            return JSONResponse({"error": reason}, status_code=status)
        return page_error(request, status, reason)

    async def dcgateway_error(request: Request, exc: Exception) -> Response:
        # e.g. the key store or users file unreadable: the message names a file, no secret
        log.warning("request %s %s failed: %s", request.method, request.url.path, exc)
        return await portal_error(request, PortalError(503, "the state store is unavailable"))

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected failure in %s %s", request.method, request.url.path)
        if _wants_json(request):
            return JSONResponse({"error": "internal failure"}, status_code=500)
        return Response("internal failure", status_code=500, media_type="text/plain")

    from starlette.exceptions import HTTPException
    return {PortalError: portal_error, HTTPException: http_error,
            DcGatewayError: dcgateway_error, Exception: unexpected}


def create_app(config: GatewayConfig, state: StateStore, *, public_url: str | None = None,
               tls: bool | None = None, limits: Limits | None = None,
               clock: Callable[[], float] = time.time, accounts: Accounts | None = None
               ) -> Starlette:
    """The portal app. ``public_url`` defaults to ``portal.public_url`` (the server passes the
    bound one when the configured port is 0); ``tls`` to whether ``portal.tls`` is set."""
    portal = config.portal
    if state.users is None:
        raise DcGatewayError("this state store keeps no portal users")
    url = public_url or (portal.public_url if portal else "http://127.0.0.1")
    settings = Settings(public_url=url.rstrip("/"),
                        tls=(portal is not None and portal.tls is not None) if tls is None
                        else tls,
                        idle_timeout_s=portal.idle_timeout_s if portal else 900.0,
                        absolute_timeout_s=portal.absolute_timeout_s if portal else 43200.0,
                        limits=limits or Limits())
    web = Web(config, state, accounts or Accounts(config, state.users), settings, clock)
    routes = (Api(web).routes() + Pages(web).routes() + GroupPages(web).routes()
              + KeyPages(web).routes()
              + [Route("/healthz", _healthz, methods=["GET"]),
                 Mount("/static", app=StaticFiles(directory=STATIC), name="static")])
    app = Starlette(routes=routes, exception_handlers=_error_handlers(web), middleware=[
        Middleware(SecurityMiddleware, public_origin=origin_of(settings.public_url),
                   tls=settings.tls, on_refused=web.refused_request)])
    app.state.web = web
    return app


async def _healthz(request: Request) -> Response:
    return JSONResponse({"ok": True})
