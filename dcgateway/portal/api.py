"""The JSON API under ``/api/v1``: enrolment, login, logout, and for a logged-in user the
groups, key pairs, sessions and audit trail of the entities they act for.

Answers are JSON; every refusal is ``{"error": "..."}`` with its status (and, for a refused
group, 422 with ``{"errors": [{"path", "message"}]}``). Before authentication nothing is
revealed: every failed login answers the same 401 body, every bad, used or expired enrolment
link the same 400 body (OWASP ASVS 5.0 "Authentication": generic error messages).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .accounts import EnrolmentRefused
from .service import PortalError, group_entry
from .web import Web, form_token

LOGIN_FAILED = "login failed"
ENROL_REFUSED = "enrolment refused: the link is invalid, used or expired, or the code is wrong"


class LoginFlow:
    """Login and logout, shared by the API and the login page."""

    def __init__(self, web: Web) -> None:
        self.web = web

    async def login(self, request: Request, user: Any, password: Any, code: Any
                    ) -> tuple[str, Any]:
        """("ok", (sid, session)) | raises PortalError 401 (failed) / 423 (locked)."""
        web = self.web
        web.limit_login(request)
        address = web.address(request)
        result = await web.run(web.accounts.login, user, password, code, web.clock(), address)
        person = web.accounts.people.get(user) if isinstance(user, str) else None
        who = person.name if person else "unknown"
        entities: tuple[Any, ...] = person.entities if person and person.role != "operator" \
            else (None,)
        if result.outcome != "ok":
            action = "login_locked" if result.outcome == "locked" else "login_failed"
            for entity in entities:
                await web.run(web.state.audit.record, "portal", action, who=who, entity=entity,
                              outcome="refused", address=address,
                              locked_now=result.locked_now or None)
            if result.outcome == "locked":
                raise PortalError(423, "locked: too many failed logins; ask an operator")
            raise PortalError(401, LOGIN_FAILED)
        assert result.principal is not None
        web.sessions.end(request.cookies.get(web.cookie))
        sid, session = web.sessions.create(result.principal, result.generation, address)
        for entity in entities:
            await web.run(web.state.audit.record, "portal", "login", who=who, entity=entity,
                          outcome="ok", address=address)
        return sid, session

    async def logout(self, request: Request) -> None:
        web = self.web
        session, actor = web.api_guard(request) if request.url.path.startswith("/api/") \
            else web.guard(request, csrf=form_token(await request.form()))
        web.sessions.end(request.cookies.get(web.cookie))
        entities = session.principal.entities if session.principal.role != "operator" \
            else (None,)
        for entity in entities:
            await web.run(web.ops.audit, actor, "logout", entity=entity)


class Api:
    def __init__(self, web: Web) -> None:
        self.web = web
        self.flow = LoginFlow(web)

    def routes(self) -> list[Route]:
        p = "/api/v1"
        return [
            Route(f"{p}/enrol", self.enrol, methods=["POST"]),
            Route(f"{p}/enrol/confirm", self.enrol_confirm, methods=["POST"]),
            Route(f"{p}/login", self.login, methods=["POST"]),
            Route(f"{p}/logout", self.logout, methods=["POST"]),
            Route(f"{p}/me", self.me, methods=["GET"]),
            Route(f"{p}/entities/{{entity}}/sessions", self.sessions, methods=["GET"]),
            Route(f"{p}/entities/{{entity}}/groups", self.groups, methods=["GET", "POST"]),
            Route(f"{p}/entities/{{entity}}/groups/{{name}}", self.group,
                  methods=["GET", "PUT", "DELETE"]),
            Route(f"{p}/entities/{{entity}}/keys", self.keys, methods=["GET", "POST"]),
            Route(f"{p}/keys/{{key_id}}/download", self.key_download, methods=["POST"]),
            Route(f"{p}/keys/{{key_id}}", self.key_delete, methods=["DELETE"]),
            Route(f"{p}/entities/{{entity}}/audit", self.audit, methods=["GET"]),
        ]

    # -- enrolment, login ---------------------------------------------------------------------

    async def enrol(self, request: Request) -> Response:
        web = self.web
        web.limit_login(request)
        body = await web.json_body(request)
        try:
            user, uri = await web.run(web.accounts.begin_enrolment, body.get("token"),
                                      body.get("password"), web.clock())
        except EnrolmentRefused as exc:
            if exc.reason:
                raise PortalError(422, exc.reason) from None
            raise PortalError(400, ENROL_REFUSED) from None
        return JSONResponse({"user": user, "totp_uri": uri})

    async def enrol_confirm(self, request: Request) -> Response:
        web = self.web
        web.limit_login(request)
        body = await web.json_body(request)
        try:
            user = await web.run(web.accounts.confirm_enrolment, body.get("token"),
                                 body.get("code"), web.clock())
        except EnrolmentRefused:
            raise PortalError(400, ENROL_REFUSED) from None
        await web.run(self._audit_enrolled, user, web.address(request))
        return JSONResponse({"user": user, "enrolled": True})

    def _audit_enrolled(self, user: str, address: str | None) -> None:
        person = self.web.accounts.people[user]
        for entity in person.entities if person.role != "operator" else (None,):
            self.web.state.audit.record("portal", "enrol", who=user, entity=entity,
                                        address=address)

    async def login(self, request: Request) -> Response:
        body = await self.web.json_body(request)
        sid, session = await self.flow.login(request, body.get("user"), body.get("password"),
                                             body.get("code"))
        p = session.principal
        response = JSONResponse({"user": p.name, "role": p.role, "entities": list(p.entities),
                                 "csrf_token": session.csrf_token})
        self.web.set_cookie(response, sid)
        return response

    async def logout(self, request: Request) -> Response:
        await self.flow.logout(request)
        response = JSONResponse({"ok": True})
        self.web.clear_cookie(response)
        return response

    async def me(self, request: Request) -> Response:
        session, _ = self.web.api_guard(request)
        p = session.principal
        return JSONResponse({"user": p.name, "role": p.role, "entities": list(p.entities)})

    # -- entities -----------------------------------------------------------------------------

    async def sessions(self, request: Request) -> Response:
        _, actor = self.web.api_guard(request)
        return JSONResponse(await self.web.run(self.web.ops.sessions, actor,
                                               request.path_params["entity"]))

    async def groups(self, request: Request) -> Response:
        web = self.web
        _, actor = web.api_guard(request)
        entity = request.path_params["entity"]
        if request.method == "POST":
            body = await web.json_body(request)
            created = await web.run(web.ops.create_group, actor, entity, body)
            return JSONResponse(group_entry(created), status_code=201)
        groups = await web.run(web.ops.groups, actor, entity)
        return JSONResponse({"entity": entity, "groups": [group_entry(g) for g in groups]})

    async def group(self, request: Request) -> Response:
        web = self.web
        _, actor = web.api_guard(request)
        entity, name = request.path_params["entity"], request.path_params["name"]
        if request.method == "PUT":
            body = await web.json_body(request)
            new = await web.run(web.ops.replace_group, actor, entity, name, body)
            return JSONResponse(group_entry(new))
        if request.method == "DELETE":
            gone = await web.run(web.ops.delete_group, actor, entity, name)
            return JSONResponse({"deleted": group_entry(gone)})
        return JSONResponse(group_entry(await web.run(web.ops.group, actor, entity, name)))

    async def keys(self, request: Request) -> Response:
        web = self.web
        _, actor = web.api_guard(request)
        entity = request.path_params["entity"]
        if request.method == "POST":
            body = await web.json_body(request)
            rec = await web.run(web.ops.create_key, actor, entity, body.get("session_id"),
                                body.get("delete_access_key_id"))
            return JSONResponse(rec, status_code=201)
        infos = await web.run(web.ops.keys, actor, entity)
        return JSONResponse({"entity": entity, "keys": [i.to_json() for i in infos]})

    async def _step_up(self, request: Request, action: str) -> Any:
        web = self.web
        _, actor = web.api_guard(request)
        key_id = request.path_params["key_id"]
        body = await web.json_body(request)
        await web.step_up(actor, key_id, body.get("code"), action)
        return actor, key_id

    async def key_download(self, request: Request) -> Response:
        actor, key_id = await self._step_up(request, "key_download")
        text = await self.web.run(self.web.ops.download_key, actor, key_id)
        return Response(text, media_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="{key_id}.csv"'})

    async def key_delete(self, request: Request) -> Response:
        actor, key_id = await self._step_up(request, "key_delete")
        info = await self.web.run(self.web.ops.delete_key, actor, key_id)
        return JSONResponse(info.to_json())

    async def audit(self, request: Request) -> Response:
        web = self.web
        _, actor = web.api_guard(request)
        entity = request.path_params["entity"]
        try:
            limit = min(5000, max(1, int(request.query_params.get("limit", "1000"))))
        except ValueError:
            raise PortalError(400, "limit: expected a number") from None
        records = await web.run(web.ops.audit_trail, actor, entity, limit)
        return JSONResponse({"entity": entity, "records": records})
