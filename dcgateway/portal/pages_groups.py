"""Drop copy group pages: list, view, delete, and the six-step wizard that creates or edits
one (:mod:`.wizard` holds its logic). Every step is its own page; its choices come from what
the entity may use (:meth:`~.service.Operations.choices`); Submit saves through the same
service call as the JSON API, and a refusal sends the user to the first step with a problem,
where the problem is shown.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..config import CATEGORIES, FILTER_KEYS
from .service import PortalError, group_entry
from .web import Web, form_token
from .wizard import (
    FIELD_LABELS,
    LAST_STEP,
    STEPS,
    apply_step,
    draft_of,
    entry_of,
    errors_by_step,
    field_problems,
    new_draft,
)


class GroupPages:
    def __init__(self, web: Web) -> None:
        self.web = web

    def routes(self) -> list[Route]:
        return [
            Route("/entities/{entity}/groups", self.listing, methods=["GET"]),
            Route("/entities/{entity}/groups/{name}", self.view, methods=["GET"]),
            Route("/entities/{entity}/groups/{name}/edit", self.edit, methods=["GET"]),
            Route("/entities/{entity}/groups/{name}/delete", self.delete, methods=["POST"]),
            Route("/groups/new", self.new, methods=["GET"]),
            Route("/wizard/{step:int}", self.step_page, methods=["GET"]),
            Route("/wizard/{step:int}", self.step_post, methods=["POST"]),
        ]

    async def listing(self, request: Request) -> Response:
        web = self.web
        session, actor = web.guard(request)
        entity = request.path_params["entity"]
        groups = await web.run(web.ops.groups, actor, entity)
        return web.render(request, "groups.html", session=session, entity=entity,
                          groups=[group_entry(g) for g in groups])

    async def view(self, request: Request) -> Response:
        web = self.web
        session, actor = web.guard(request)
        entity, name = request.path_params["entity"], request.path_params["name"]
        group = await web.run(web.ops.group, actor, entity, name)
        return web.render(request, "group.html", session=session, entity=entity,
                          group=group_entry(group), field_labels=FIELD_LABELS)

    async def delete(self, request: Request) -> Response:
        web = self.web
        form = await request.form()
        session, actor = web.guard(request, csrf=form_token(form))
        entity, name = request.path_params["entity"], request.path_params["name"]
        await web.run(web.ops.delete_group, actor, entity, name)
        session.flash.append(f"Deleted group {name}.")
        return RedirectResponse(f"/entities/{entity}/groups", status_code=303)

    async def new(self, request: Request) -> Response:
        session, _ = self.web.guard(request)
        entities = session.principal.entities
        wanted = request.query_params.get("entity")
        session.wizard = new_draft(wanted if wanted in entities else
                                   (entities[0] if len(entities) == 1 else None))
        return RedirectResponse("/wizard/1", status_code=303)

    async def edit(self, request: Request) -> Response:
        web = self.web
        session, actor = web.guard(request)
        group = await web.run(web.ops.group, actor, request.path_params["entity"],
                              request.path_params["name"])
        session.wizard = draft_of(group)
        return RedirectResponse("/wizard/1", status_code=303)

    # -- the steps ----------------------------------------------------------------------------

    async def _choices(self, session: Any, actor: Any) -> dict[str, Any] | None:
        draft = session.wizard
        if draft.get("entity") not in session.principal.entities:
            return None
        return await self.web.run(self.web.ops.choices, actor, draft["entity"],
                                  draft.get("original"))

    async def step_page(self, request: Request) -> Response:
        web = self.web
        session, actor = web.guard(request)
        step = request.path_params["step"]
        if not 1 <= step <= LAST_STEP:
            raise PortalError(404, "no such step")
        if not session.wizard:
            session.wizard = new_draft()
        draft = session.wizard
        choices = await self._choices(session, actor)
        if step > 1 and choices is None:
            return RedirectResponse("/wizard/1", status_code=303)
        return web.render(request, "wizard.html", session=session, step=step, steps=STEPS,
                          draft=draft, choices=choices, entry=entry_of(draft),
                          errors=draft["errors"].get(str(step), []),
                          categories=CATEGORIES, filter_keys=FILTER_KEYS[1:],
                          field_labels=FIELD_LABELS)

    async def step_post(self, request: Request) -> Response:
        web = self.web
        form = await request.form()
        session, actor = web.guard(request, csrf=form_token(form))
        step = request.path_params["step"]
        if not 1 <= step <= LAST_STEP or not session.wizard:
            return RedirectResponse("/groups/new", status_code=303)
        draft = session.wizard
        if step < LAST_STEP:
            problems = apply_step(draft, step, form, session.principal.entities,
                                  await self._choices(session, actor))
            draft["errors"][str(step)] = problems
            if form.get("nav") == "back":
                return RedirectResponse(f"/wizard/{max(1, step - 1)}", status_code=303)
            return RedirectResponse(f"/wizard/{step if problems else step + 1}",
                                    status_code=303)
        if form.get("nav") == "back":
            return RedirectResponse(f"/wizard/{LAST_STEP - 1}", status_code=303)
        return await self._submit(session, actor, draft)

    async def _submit(self, session: Any, actor: Any, draft: dict[str, Any]) -> Response:
        web = self.web
        entity = draft["entity"]
        unreadable = field_problems(draft)
        if unreadable:
            draft["errors"] = {"4": unreadable}
            return RedirectResponse("/wizard/4", status_code=303)
        try:
            if draft["mode"] == "edit":
                group = await web.run(web.ops.replace_group, actor, entity, draft["original"],
                                      entry_of(draft))
            else:
                group = await web.run(web.ops.create_group, actor, entity, entry_of(draft))
        except PortalError as exc:
            if exc.status != 422 or exc.errors is None:
                raise
            by_step = errors_by_step(exc.errors)
            draft["errors"] = {str(k): v for k, v in by_step.items()}
            return RedirectResponse(f"/wizard/{min(by_step)}", status_code=303)
        session.wizard = {}
        verb = "Saved" if draft["mode"] == "edit" else "Created"
        session.flash.append(f"{verb} group {group.name}: the gateway applies it within a "
                             "second, without a restart.")
        return RedirectResponse(f"/entities/{entity}/groups/{group.name}", status_code=303)
