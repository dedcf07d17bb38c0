"""The drop copy group wizard's logic, apart from HTTP: the six steps the venue's portal walks
(Registered Entity, Group Name, Front End System with the group's Target Sessions, Filters,
Source Sender Comps, Submit), the draft a session keeps between them, and where a problem
found on submit belongs (an error is shown on the step that caused it).

A draft is plain data (a dict in the web session) so that Back and Next never lose what was
typed; the final check is the group store's own validation, the same as the command line's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..config import CATEGORIES, FILTER_KEYS, FRONT_ENDS, GroupDef, group_to_data
from ..config.yamlread import NAME_EXPECTED, NAME_RE

#: (number, key, the label the venue's portal uses)
STEPS: tuple[tuple[int, str, str], ...] = (
    (1, "entity", "Registered Entity"), (2, "name", "Group Name"),
    (3, "front_end", "Front End System"), (4, "filters", "Filters"),
    (5, "sources", "Source Sender Comps"), (6, "submit", "Submit"))
LAST_STEP = len(STEPS)
_STEP_OF_KEY = {"entity": 1, "name": 2, "front_end": 3, "targets": 3, "filters": 4,
                "sources": 5}
FIELD_LABELS = {"account": "Account", "symbol": "Symbol",
                "security_exchange": "Security Exchange", "side": "Side",
                "sender_sub_id": "Sender Sub ID"}


def new_draft(entity: str | None = None) -> dict[str, Any]:
    return {"mode": "create", "original": None, "entity": entity or "", "name": "",
            "front_end": "", "targets": [], "categories": [], "fields": {}, "sources": [],
            "errors": {}}


def draft_of(group: GroupDef) -> dict[str, Any]:
    """A draft to edit ``group`` (its entity stays)."""
    data = group_to_data(group)
    fields: dict[str, str] = {}
    for key in FILTER_KEYS[1:]:
        cond = data["filters"].get(key) or {}
        for part in ("include", "exclude"):
            if cond.get(part):
                fields[f"{key}_{part}"] = values_text(cond[part])
    return {"mode": "edit", "original": group.name, "entity": group.entity,
            "name": group.name, "front_end": group.front_end,
            "targets": list(group.targets), "categories": data["filters"]["categories"],
            "fields": fields, "sources": list(group.sources), "errors": {}}


def values_text(values: Sequence[str]) -> str:
    """A filter's values as the wizard's text field shows them, comma-separated. A value that
    holds a comma or a double quote, or begins or ends with a space, is written in double quotes
    (a quote inside doubled, as in CSV), so that :func:`split_values` gives every value back
    whole: editing a group and submitting it unchanged leaves it unchanged."""
    return ", ".join(_quoted(v) for v in values)


def _quoted(value: str) -> str:
    if "," in value or '"' in value or value != value.strip():
        return '"' + value.replace('"', '""') + '"'
    return value


def split_values(text: str) -> list[str]:
    """The values typed in a filter's field: separated by commas or line breaks, each stripped
    of spaces around it; a value in double quotes is taken as written (see :func:`values_text`).
    Raises ValueError, with what is wrong, for a quote left open or text after a closing one."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in _SEPARATORS:
            i += 1
        if i >= n:
            break
        if text[i] != '"':
            end = min((k for k in (text.find(c, i) for c in ",\n") if k >= 0), default=n)
            value = text[i:end].strip()
            if value:
                out.append(value)
            i = end
            continue
        parts: list[str] = []
        j = i + 1
        while True:
            k = text.find('"', j)
            if k < 0:
                raise ValueError(f"a value in quotes is not closed: {text[i:i + 20]}")
            parts.append(text[j:k])
            if text.startswith('"', k + 1):       # "" inside quotes: one quote
                parts.append('"')
                j = k + 2
                continue
            j = k + 1
            break
        while j < n and text[j] in " \t\r":
            j += 1
        if j < n and text[j] not in ",\n":
            raise ValueError(f"after a value in quotes, a comma is expected: {text[i:j + 1]}")
        out.append("".join(parts))
        i = j
    return out


_SEPARATORS = " \t\r\n,"


def field_problems(draft: Mapping[str, Any]) -> list[str]:
    """What is wrong with the filter fields as typed (step 4): a quote left open, text after
    a closing one. Checked again on submit: the steps can be posted in any order."""
    problems = []
    for key in FILTER_KEYS[1:]:
        for part in ("include", "exclude"):
            try:
                split_values(draft["fields"].get(f"{key}_{part}", ""))
            except ValueError as exc:
                problems.append(f"{FIELD_LABELS[key]}: {part}: {exc}")
    return problems


def _values_shown(text: str) -> list[str]:
    try:
        return split_values(text)
    except ValueError:
        return [text]            # shown as typed; submit refuses it (field_problems)


def entry_of(draft: Mapping[str, Any]) -> dict[str, Any]:
    """The draft as one groups.yaml entry without ``entity`` (the API's POST body); a filter
    field that cannot be read is one value as typed (check :func:`field_problems` first)."""
    filters: dict[str, Any] = {"categories": list(draft["categories"])}
    for key in FILTER_KEYS[1:]:
        cond = {part: _values_shown(draft["fields"].get(f"{key}_{part}", ""))
                for part in ("include", "exclude")}
        cond = {part: values for part, values in cond.items() if values}
        if cond:
            filters[key] = cond
    return {"name": draft["name"], "front_end": draft["front_end"], "filters": filters,
            "sources": list(draft["sources"]), "targets": list(draft["targets"])}


def step_of(path: str) -> int:
    """The step whose field ``path`` (``targets[1]``, ``filters.account``) belongs to."""
    head = re.split(r"[.\[]", path, maxsplit=1)[0]
    return _STEP_OF_KEY.get(head, LAST_STEP)


def errors_by_step(errors: Sequence[Mapping[str, str]]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for e in errors:
        where = f"{e['path']}: " if e.get("path") else ""
        out.setdefault(step_of(e.get("path", "")), []).append(where + e["message"])
    return out


def apply_step(draft: dict[str, Any], step: int, form: Any, entities: Sequence[str],
               choices: Mapping[str, Any] | None) -> list[str]:
    """Take one step's form into ``draft``; returns the problems found at once (shown on the
    same step; the whole group is checked again on submit)."""
    if step == 1:
        if draft["mode"] == "create":
            draft["entity"] = str(form.get("entity") or "")
        if draft["entity"] not in entities:
            return [f"choose one of your registered entities: {', '.join(entities)}"]
    elif step == 2:
        draft["name"] = str(form.get("name") or "").strip()
        if not NAME_RE.fullmatch(draft["name"]):
            return [f"a group name is {NAME_EXPECTED}"]
    elif step == 3:
        return _front_end_step(draft, form, choices)
    elif step == 4:
        draft["categories"] = [c for c in CATEGORIES if c in form.getlist("categories")]
        draft["fields"] = {f"{k}_{p}": str(form.get(f"{k}_{p}") or "").strip()
                           for k in FILTER_KEYS[1:] for p in ("include", "exclude")}
        problems = field_problems(draft)
        if not draft["categories"]:
            problems.insert(0, "choose at least one category")
        return problems
    elif step == 5:
        known = {s["comp_id"] for s in (choices or {}).get("sources", [])}
        draft["sources"] = [s for s in form.getlist("sources") if s in known]
        if not draft["sources"]:
            return ["choose at least one source sender comp"]
    return []


def _front_end_step(draft: dict[str, Any], form: Any,
                    choices: Mapping[str, Any] | None) -> list[str]:
    draft["front_end"] = str(form.get("front_end") or "")
    targets = {t["comp_id"]: t for t in (choices or {}).get("targets", [])}
    draft["targets"] = [t for t in form.getlist("targets") if t in targets]
    if draft["front_end"] not in FRONT_ENDS:
        return [f"choose a front end system: {', '.join(FRONT_ENDS)}"]
    if not draft["targets"]:
        return ["choose at least one of the entity's target sessions"]
    wrong = [t for t in draft["targets"] if draft["front_end"] not in targets[t]["front_ends"]]
    if wrong:
        return [f"{t} already receives {targets[t]['front_ends'][0]} copies from another "
                "group; a target takes one front end" for t in wrong]
    return []
