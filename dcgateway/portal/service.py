"""What a logged-in user may read and change, checked on the server for every call (OWASP
ASVS 5.0 "Authorization": entitlements enforced at a trusted service layer, deny by default),
on top of the state store (:mod:`dcgateway.state`), which the command line uses too: a group
saved here is picked up by a running gateway within a second, a key pair at the next Logon.

The JSON API and the HTML pages both call :class:`Operations`, so a page can never do what the
API refuses. An administrator acts only for the entities that list them, an operator for all.
A refusal is a :class:`PortalError` (403, or 404 where existence must not leak: another
entity's key pair answers exactly like one that does not exist) and is audited.

Every method may block (files, ``flock``): the web layer runs them in worker threads.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..auth.keystore import KeyInfo
from ..config import CATEGORIES, FILTER_KEYS, FRONT_ENDS, GroupDef, group_to_data
from ..errors import ConfigError, KeyLifecycleError, UsageError
from ..state import StateStore, read_status, session_rows
from .accounts import Principal

_PROBLEM_RE = re.compile(r"^(?:refused: )?groups(?:\[(\d+)\])?(?:\.(\S+?))?: (.*)$", re.DOTALL)
AUDIT_LIMIT = 1000


class PortalError(Exception):
    """An answer other than success: HTTP status, a reason for people, and for a refused group
    the list of ``{"path", "message"}`` problems."""

    def __init__(self, status: int, error: str, *,
                 errors: list[dict[str, str]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.errors = errors
        self.headers = headers or {}


@dataclass(frozen=True)
class Actor:
    """Who is asking and from where (for entitlement checks and the audit trail)."""

    principal: Principal
    address: str | None

    @property
    def name(self) -> str:
        return self.principal.name


#: A target that is another entity's, or no session at all: the same words to a firm's
#: administrator (the store's own message names the other entity).
_OTHER_TARGET_RE = re.compile(r"^(?:'([^']*)' belongs to entity [^;]*|unknown session '([^']*)')")


def problems_to_errors(problems: list[str], index: int,
                       names: Mapping[int, str]) -> list[dict[str, str]]:
    """The group store's problems (``refused: groups[3].targets[1]: ...; expected ...``) as
    ``{"path", "message"}`` relative to the entry at ``index``. A problem found on another
    group (a rule across groups) keeps its key and names that group in the message."""
    errors = []
    for problem in problems:
        m = _PROBLEM_RE.match(problem)
        if m is None:
            errors.append({"path": "", "message": problem.removeprefix("refused: ")})
            continue
        where, path, message = m.group(1), m.group(2) or "", m.group(3)
        if path.startswith("targets["):
            message = _OTHER_TARGET_RE.sub(
                lambda t: f"'{t.group(1) or t.group(2)}' is not a target session of this "
                          "entity", message)
        if where is not None and int(where) != index:
            message = f"group {names.get(int(where), where)}: {message}"
        errors.append({"path": path, "message": message})
    return errors


class Operations:
    def __init__(self, state: StateStore) -> None:
        self.state = state
        self.config = state.config
        self._lock = threading.Lock()
        self._groups: tuple[Hashable, tuple[GroupDef, ...]] | None = None

    def current_groups(self) -> tuple[GroupDef, ...]:
        """The groups, re-read only when the store's signature moved (one ``stat``): reading
        and validating the whole file on every request would take CPU from the gateway."""
        sig = self.state.groups.signature()
        with self._lock:
            cached = self._groups
        if cached is not None and sig is not None and cached[0] == sig:
            return cached[1]
        groups = self.state.groups.current()
        with self._lock:
            self._groups = (sig, groups)
        return groups

    def key_infos(self) -> list[KeyInfo]:
        """Every key pair's public view, from the store's cached snapshot (re-read only when
        the file changed), never a secret."""
        now = datetime.now(UTC).replace(microsecond=0)
        return [r.info(now) for r in self.state.keys.store.snapshot().values()]

    # -- entitlements -------------------------------------------------------------------------

    def audit(self, actor: Actor, action: str, *, entity: str | None, outcome: str = "ok",
              **fields: Any) -> None:
        self.state.audit.record("portal", action, who=actor.name, entity=entity,
                                outcome=outcome, address=actor.address, **fields)

    def entity(self, actor: Actor, entity: str, action: str) -> str:
        """``entity`` when ``actor`` may act for it; else 403 (an administrator gets the same
        answer for an entity that does not exist), audited."""
        exists = self.config.entity(entity) is not None
        if exists and actor.principal.may_act_for(entity):
            return entity
        self.audit(actor, "denied", entity=entity if exists else None, outcome="denied",
                   request=action)
        if not exists and actor.principal.role == "operator":
            raise PortalError(404, f"no registered entity {entity!r}")
        raise PortalError(403, "not entitled to this registered entity")

    # -- groups -----------------------------------------------------------------------------

    def groups(self, actor: Actor, entity: str) -> list[GroupDef]:
        self.entity(actor, entity, "groups_list")
        return [g for g in self.current_groups() if g.entity == entity]

    def group(self, actor: Actor, entity: str, name: str) -> GroupDef:
        for g in self.groups(actor, entity):
            if g.name == name:
                return g
        raise PortalError(404, f"no group named {name!r} in {entity}")

    def _entry(self, entity: str, data: Any) -> dict[str, Any]:
        if not isinstance(data, Mapping):
            raise PortalError(422, "expected one groups.yaml entry (a JSON object)", errors=[
                {"path": "", "message": "expected a JSON object"}])
        if "entity" in data and data["entity"] != entity:
            raise PortalError(422, "the group is refused", errors=[{
                "path": "entity", "message": f"{data['entity']!r} differs from the entity "
                f"of the URL; expected {entity} or no entity key"}])
        return {"entity": entity, **{k: v for k, v in data.items() if k != "entity"}}

    def create_group(self, actor: Actor, entity: str, data: Any) -> GroupDef:
        self.entity(actor, entity, "group_create")
        entry = self._entry(entity, data)
        current = self.current_groups()
        try:
            created = self.state.groups.create(entry, actor=actor.name)
        except ConfigError as exc:
            self._refused(actor, entity, "group_create", exc, len(current), current,
                          entry.get("name"))
        self.audit(actor, "group_create", entity=entity, group=created.name)
        return created

    def replace_group(self, actor: Actor, entity: str, name: str, data: Any) -> GroupDef:
        self.group(actor, entity, name)
        entry = self._entry(entity, data)
        current = self.current_groups()
        index = next((i for i, g in enumerate(current)
                      if g.entity == entity and g.name == name), len(current))
        try:
            new = self.state.groups.replace(entity, name, entry, actor=actor.name)
        except ConfigError as exc:
            self._refused(actor, entity, "group_replace", exc, index, current, name)
        except UsageError:
            raise PortalError(404, f"no group named {name!r} in {entity}") from None
        self.audit(actor, "group_replace", entity=entity, group=name, new_name=new.name)
        return new

    def delete_group(self, actor: Actor, entity: str, name: str) -> GroupDef:
        self.group(actor, entity, name)
        try:
            gone = self.state.groups.delete(entity, name, actor=actor.name)
        except UsageError:
            raise PortalError(404, f"no group named {name!r} in {entity}") from None
        self.audit(actor, "group_delete", entity=entity, group=name)
        return gone

    def _refused(self, actor: Actor, entity: str, action: str, exc: ConfigError, index: int,
                 current: tuple[GroupDef, ...], name: Any) -> None:
        names = {i: g.name for i, g in enumerate(current)}
        errors = problems_to_errors(exc.problems, index, names)
        self.audit(actor, action, entity=entity, outcome="refused",
                   group=str(name)[:64] if name is not None else None,
                   problems=len(errors))
        raise PortalError(422, "the group is refused", errors=errors)

    def choices(self, actor: Actor, entity: str,
                editing: str | None = None) -> dict[str, Any]:
        """What the wizard offers ``entity``: its targets (with the front ends each can take:
        every group reaching a target uses one front end), the sources, categories, filters."""
        self.entity(actor, entity, "group_choices")
        used: dict[str, str] = {}
        for g in self.current_groups():
            if g.entity == entity and g.name == editing:
                continue
            for t in g.targets:
                used.setdefault(t, g.front_end)
        targets = [{"comp_id": s.comp_id, "profile": s.profile,
                    "front_ends": [used[s.comp_id]] if s.comp_id in used else list(FRONT_ENDS)}
                   for s in self.config.sessions if s.role == "target" and s.entity == entity]
        sources = [{"comp_id": s.comp_id, "entity": s.entity}
                   for s in self.config.sessions if s.role == "source"]
        return {"entity": entity, "front_ends": list(FRONT_ENDS), "targets": targets,
                "sources": sources, "categories": list(CATEGORIES),
                "filter_keys": list(FILTER_KEYS[1:])}

    # -- sessions and audit -------------------------------------------------------------------

    def sessions(self, actor: Actor, entity: str) -> dict[str, Any]:
        self.entity(actor, entity, "sessions_list")
        status = read_status(self.config.gateway.data_dir)
        rows = [r for r in session_rows(self.config, self.state.closures, status)
                if r["entity"] == entity]
        return {"entity": entity, "gateway_running": bool(status), "sessions": rows}

    def audit_trail(self, actor: Actor, entity: str,
                    limit: int = AUDIT_LIMIT) -> list[dict[str, Any]]:
        self.entity(actor, entity, "audit_list")
        out = []
        for entry in self.state.audit.entries(entity):
            out.append(entry)
            if len(out) >= limit:
                break
        return out

    # -- key pairs --------------------------------------------------------------------------

    def session_ids(self, entity: str) -> list[str]:
        return sorted({s.key_scope for s in self.config.sessions if s.entity == entity})

    def keys(self, actor: Actor, entity: str) -> list[KeyInfo]:
        self.entity(actor, entity, "keys_list")
        mine = set(self.session_ids(entity))
        return [i for i in self.key_infos() if i.session_id in mine]

    def create_key(self, actor: Actor, entity: str, session_id: Any,
                   delete: Any = None) -> dict[str, str]:
        """Issue a pair (the venue's lifecycle: KeyManager); the result holds the secret."""
        self.entity(actor, entity, "key_create")
        if not isinstance(session_id, str) or not session_id:
            raise PortalError(400, "session_id: expected a Session ID (a string), one of "
                              + ", ".join(self.session_ids(entity)))
        if delete is not None and not isinstance(delete, str):
            raise PortalError(400, "delete_access_key_id: expected a string")
        if session_id not in self.session_ids(entity):
            self.audit(actor, "denied", entity=entity, outcome="denied", request="key_create",
                       session_id=str(session_id)[:64])
            raise PortalError(403, f"{entity} has no Session ID {str(session_id)[:64]!r}; "
                              f"expected one of {', '.join(self.session_ids(entity))}")
        keys = self.state.keys
        keys.store.ensure_master_key()
        try:
            rec = keys.create(session_id, delete=delete or None, who=actor.name)
        except KeyLifecycleError as exc:
            self.audit(actor, "key_create", entity=entity, outcome="refused",
                       session_id=session_id)
            raise PortalError(409, _portal_words(str(exc))) from None
        self.audit(actor, "key_create", entity=entity, session_id=session_id,
                   access_key_id=rec.access_key_id)
        return rec.to_json()

    def key(self, actor: Actor, access_key_id: str, action: str) -> tuple[KeyInfo, str]:
        """The pair and its entity, when ``actor`` may act for that entity. Another entity's
        pair answers 404, exactly like one that does not exist."""
        info = next((i for i in self.key_infos() if i.access_key_id == access_key_id), None)
        entity = None
        if info is not None:
            entity = next((s.entity for s in self.config.sessions
                           if s.key_scope == info.session_id), None)
        if info is None or entity is None or not actor.principal.may_act_for(entity):
            self.audit(actor, "denied", entity=entity, outcome="denied", request=action,
                       access_key_id=access_key_id[:32])
            raise PortalError(404, "no such key pair")
        return info, entity

    def download_key(self, actor: Actor, access_key_id: str) -> str:
        """The key file (CSV, the columns of ``keys download``); step-up checked by the caller."""
        info, entity = self.key(actor, access_key_id, "key_download")
        try:
            text = self.state.keys.download(access_key_id, who=actor.name)
        except KeyLifecycleError as exc:
            raise PortalError(410, str(exc)) from None
        self.audit(actor, "key_download", entity=entity, session_id=info.session_id,
                   access_key_id=access_key_id)
        return text

    def delete_key(self, actor: Actor, access_key_id: str) -> KeyInfo:
        info, entity = self.key(actor, access_key_id, "key_delete")
        try:
            gone = self.state.keys.delete(access_key_id, who=actor.name)
        except KeyLifecycleError as exc:
            raise PortalError(409, str(exc)) from None
        self.audit(actor, "key_delete", entity=entity, session_id=info.session_id,
                   access_key_id=access_key_id)
        return gone


def _portal_words(text: str) -> str:
    """The key manager speaks the command line's words; the portal's field is named
    ``delete_access_key_id``."""
    return text.replace("--delete ACCESS_KEY_ID", "delete_access_key_id").replace(
        "--delete ", "delete_access_key_id ")


def group_entry(group: GroupDef) -> dict[str, Any]:
    return group_to_data(group)
