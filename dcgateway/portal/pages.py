"""The pages a browser sees before and around the work: login, enrolment, logout, home.

Forms post back to the portal (``form-action 'self'``); every form of a logged-in user carries
the session's CSRF token in a hidden field. The enrolment page shows the new TOTP secret as an
``otpauth://`` URI and a QR code (drawn as inline SVG by segno, so no image request carries
the secret) and is never cached.
"""

from __future__ import annotations

from urllib.parse import quote

import segno
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from .accounts import EnrolmentRefused
from .api import ENROL_REFUSED, LOGIN_FAILED, LoginFlow
from .service import PortalError
from .web import Web, form_value


def qr_svg(uri: str) -> Markup:
    """The otpauth URI as an inline SVG QR code (error correction M, as apps expect)."""
    svg = segno.make(uri, error="m", micro=False).svg_inline(scale=4, border=2)
    return Markup(svg)


class Pages:
    def __init__(self, web: Web) -> None:
        self.web = web
        self.flow = LoginFlow(web)

    def routes(self) -> list[Route]:
        return [
            Route("/", self.root, methods=["GET"]),
            Route("/login", self.login_page, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/home", self.home, methods=["GET"]),
            Route("/enrol/{token}", self.enrol_page, methods=["GET"]),
            Route("/enrol/{token}", self.enrol, methods=["POST"]),
            Route("/enrol/{token}/confirm", self.enrol_confirm, methods=["POST"]),
        ]

    async def root(self, request: Request) -> Response:
        return RedirectResponse("/home" if self.web.current(request) else "/login",
                                status_code=303)

    async def login_page(self, request: Request) -> Response:
        if self.web.current(request) is not None:
            return RedirectResponse("/home", status_code=303)
        return self.web.render(request, "login.html", error=None, user="")

    async def login(self, request: Request) -> Response:
        form = await request.form()
        user = form_value(form, "user")
        try:
            sid, _ = await self.flow.login(request, user, form_value(form, "password"),
                                           form_value(form, "code"))
        except PortalError as exc:
            if exc.status not in (401, 423):
                raise
            message = LOGIN_FAILED if exc.status == 401 else exc.error
            return self.web.render(request, "login.html", status=exc.status, error=message,
                                   user=user)
        response = RedirectResponse("/home", status_code=303)
        self.web.set_cookie(response, sid)
        return response

    async def logout(self, request: Request) -> Response:
        await self.flow.logout(request)
        response = RedirectResponse("/login", status_code=303)
        self.web.clear_cookie(response)
        return response

    async def home(self, request: Request) -> Response:
        session, _ = self.web.guard(request)
        return self.web.render(request, "home.html", session=session,
                               entities=session.principal.entities)

    # -- enrolment ----------------------------------------------------------------------------

    async def enrol_page(self, request: Request) -> Response:
        web = self.web
        web.limit_login(request)
        token = request.path_params["token"]
        now = web.clock()
        if await web.run(web.accounts.invitation_valid, token, now):
            return web.render(request, "enrol.html", error=None)
        pending = await web.run(web.accounts.pending_uri, token, now)
        if pending is not None:
            return self._totp_page(request, *pending, error=None)
        return web.render(request, "message.html", status=400, title="Enrolment",
                          message=ENROL_REFUSED)

    def _totp_page(self, request: Request, user: str, uri: str, error: str | None,
                   status: int = 200) -> Response:
        token = quote(request.path_params["token"], safe="")
        return self.web.render(request, "enrol_totp.html", status=status, user=user, uri=uri,
                               qr=qr_svg(uri), error=error,
                               confirm_url=f"/enrol/{token}/confirm")

    async def enrol(self, request: Request) -> Response:
        web = self.web
        web.limit_login(request)
        token = request.path_params["token"]
        form = await request.form()
        password = form.get("password")
        if password != form.get("password_again") and await web.run(
                web.accounts.invitation_valid, token, web.clock()):
            return web.render(request, "enrol.html", status=422,
                              error="the two passwords differ")
        try:
            user, uri = await web.run(web.accounts.begin_enrolment, token, password,
                                      web.clock())
        except EnrolmentRefused as exc:
            if exc.reason:
                return web.render(request, "enrol.html", status=422, error=exc.reason)
            return web.render(request, "message.html", status=400, title="Enrolment",
                              message=ENROL_REFUSED)
        return self._totp_page(request, user, uri, error=None)

    async def enrol_confirm(self, request: Request) -> Response:
        web = self.web
        web.limit_login(request)
        token = request.path_params["token"]
        form = await request.form()
        now = web.clock()
        pending = await web.run(web.accounts.pending_uri, token, now)
        try:
            user = await web.run(web.accounts.confirm_enrolment, token,
                                 form_value(form, "code"), now)
        except EnrolmentRefused:
            still = await web.run(web.accounts.pending_uri, token, now)
            if still is not None and pending is not None:
                return self._totp_page(request, *still, status=422,
                                       error="that code is not the current one; try again")
            return web.render(request, "message.html", status=400, title="Enrolment",
                              message=ENROL_REFUSED)
        person = web.accounts.people[user]
        for entity in person.entities if person.role != "operator" else (None,):
            await web.run(web.state.audit.record, "portal", "enrol", who=user, entity=entity,
                          address=web.address(request))
        return web.render(request, "message.html", title="Enrolment complete",
                          message=f"{user}: your password and authenticator are registered. "
                                  "Log in with them now.", link="/login", link_text="Log in")
