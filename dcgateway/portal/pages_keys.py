"""Key pair, sessions and audit pages.

The key page lists an entity's pairs without secrets and explains the venue's lifecycle where
it bites: a new pair makes the older one expire four weeks later at market close; a third live
pair needs one of the two deleted at once. Generate shows the new secret once (with a download
of the key file made in the browser from that page, so nothing keeps it); Download and Delete
need a fresh authenticator code (OWASP ASVS 5.0 "Re-authentication").
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..auth import CSV_COLUMNS
from .service import PortalError
from .web import Web, form_token, form_value

STEP_UP_FAILED = "Download and Delete need a current code from your authenticator app (each " \
                 "code works once)."


def key_file(rec: dict[str, str], environment: str) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    w.writerow((rec["session_id"], rec["access_key_id"], rec["secret_key"], rec["created"],
                rec["expires"], environment))
    return out.getvalue()


def when(ts: Any) -> str:
    if isinstance(ts, (int, float)):
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(ts or "")


class KeyPages:
    def __init__(self, web: Web) -> None:
        self.web = web

    def routes(self) -> list[Route]:
        return [
            Route("/entities/{entity}/keys", self.keys, methods=["GET"]),
            Route("/entities/{entity}/keys", self.generate, methods=["POST"]),
            Route("/keys/{key_id}/download", self.download, methods=["POST"]),
            Route("/keys/{key_id}/delete", self.delete, methods=["POST"]),
            Route("/entities/{entity}/sessions", self.sessions, methods=["GET"]),
            Route("/entities/{entity}/audit", self.audit, methods=["GET"]),
        ]

    async def _keys_page(self, request: Request, session: Any, actor: Any, entity: str,
                         status: int = 200, error: str | None = None) -> Response:
        web = self.web
        infos = await web.run(web.ops.keys, actor, entity)
        rows = [i.to_json() for i in infos]
        live: dict[str, list[str]] = {}
        for r in rows:
            if r["status"] == "active":
                live.setdefault(r["session_id"], []).append(r["access_key_id"])
        return web.render(request, "keys.html", status=status, session=session, entity=entity,
                          keys=rows, live=live, session_ids=web.ops.session_ids(entity),
                          error=error)

    async def keys(self, request: Request) -> Response:
        session, actor = self.web.guard(request)
        return await self._keys_page(request, session, actor, request.path_params["entity"])

    async def generate(self, request: Request) -> Response:
        web = self.web
        form = await request.form()
        session, actor = web.guard(request, csrf=form_token(form))
        entity = request.path_params["entity"]
        try:
            rec = await web.run(web.ops.create_key, actor, entity,
                                form_value(form, "session_id"),
                                form_value(form, "delete_access_key_id") or None)
        except PortalError as exc:
            if exc.status != 409:
                raise
            return await self._keys_page(request, session, actor, entity, status=409,
                                         error=exc.error)
        text = key_file(rec, web.state.keys.environment)
        return web.render(request, "key_created.html", status=201, session=session,
                          entity=entity, key=rec,
                          data_url="data:text/csv;charset=utf-8," + quote(text, safe=""))

    async def _step_up(self, request: Request, action: str
                       ) -> tuple[Any, str, str] | Response:
        """(actor, key id, entity) after a good code; after a wrong one, the way back to the
        key page with the reason (another entity's pair still answers 404)."""
        web = self.web
        form = await request.form()
        session, actor = web.guard(request, csrf=form_token(form))
        key_id = request.path_params["key_id"]
        try:
            entity = await web.step_up(actor, key_id, form_value(form, "code"), action)
        except PortalError as exc:
            back = form_value(form, "entity")
            if exc.status != 403 or back not in session.principal.entities:
                raise
            session.flash.append(STEP_UP_FAILED)
            return RedirectResponse(f"/entities/{back}/keys", status_code=303)
        return actor, key_id, entity

    async def download(self, request: Request) -> Response:
        checked = await self._step_up(request, "key_download")
        if isinstance(checked, Response):
            return checked
        actor, key_id, _ = checked
        text = await self.web.run(self.web.ops.download_key, actor, key_id)
        return Response(text, media_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="{key_id}.csv"'})

    async def delete(self, request: Request) -> Response:
        checked = await self._step_up(request, "key_delete")
        if isinstance(checked, Response):
            return checked
        actor, key_id, entity = checked
        await self.web.run(self.web.ops.delete_key, actor, key_id)
        session = self.web.current(request)
        if session is not None:
            session.flash.append(f"Deleted key pair {key_id}: Logons signed with it are "
                                 "refused from now on.")
        return RedirectResponse(f"/entities/{entity}/keys", status_code=303)

    async def sessions(self, request: Request) -> Response:
        web = self.web
        session, actor = web.guard(request)
        entity = request.path_params["entity"]
        data = await web.run(web.ops.sessions, actor, entity)
        return web.render(request, "sessions.html", session=session, **data)

    async def audit(self, request: Request) -> Response:
        web = self.web
        session, actor = web.guard(request)
        entity = request.path_params["entity"]
        records = await web.run(web.ops.audit_trail, actor, entity, 500)
        shown = ("ts", "kind", "who", "action", "outcome", "address", "entity")
        rows = [{"ts": r.get("ts", ""), "kind": r.get("kind", ""), "who": r.get("who", ""),
                 "action": r.get("action", ""), "outcome": r.get("outcome", "ok"),
                 "address": r.get("address") or r.get("os_user") or "",
                 "details": ", ".join(f"{k}={v}" for k, v in r.items()
                                      if k not in shown and v not in (None, ""))}
                for r in records]
        return web.render(request, "audit.html", session=session, entity=entity, rows=rows)
