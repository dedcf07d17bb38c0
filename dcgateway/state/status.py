"""What a running gateway tells other processes about its sessions (``sessions list``, the
portal's sessions view): ``data_dir/status.json``, rewritten by the gateway when a session logs
on or off and once a second while sequence numbers move, and trusted only while the pid in it is
alive. Without a running gateway the sequence numbers are read from the session files as last
stored (a target's next outbound seq: after the last copy journaled for it, if that is later),
and ``connected`` is unknown (reported as False).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import GatewayConfig
from ..journal.replay import last_seq
from ..vocab import Role
from .base import ClosureStore
from .session_files import peek_sequences

STATUS_FILE_NAME = "status.json"


def read_status(data_dir: Path) -> dict[str, Any]:
    """The running gateway's status document, or {} when none runs (a stale file from a dead
    gateway says nothing)."""
    try:
        doc = json.loads((Path(data_dir) / STATUS_FILE_NAME).read_text())
        pid = int(doc["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    try:
        os.kill(pid, 0)
    except PermissionError:
        pass                   # alive, and another user's (the gateway's service account)
    except OSError:
        return {}
    return doc if isinstance(doc, dict) else {}


@dataclass(frozen=True)
class GroupsOutcome:
    """Whether the running gateway follows a change of the groups file (:func:`groups_outcome`).
    ``state``: ``applied`` (its routing table is ``version``), ``refused`` (``reason``; it goes
    on routing by ``version``), ``unconfirmed`` (no answer in time: see its log) or
    ``not running``."""
    state: str
    pid: int | None = None
    version: str = ""
    reason: str = ""


def groups_reloads(data_dir: Path) -> int | None:
    """How many group reloads the running gateway has reported (None: none runs, or it does not
    report them); read before a change, for :func:`groups_outcome`."""
    groups = read_status(data_dir).get("groups")
    reloads = groups.get("reloads") if isinstance(groups, dict) else None
    return reloads if isinstance(reloads, int) else None


def groups_outcome(data_dir: Path, version: str, reloads_before: int | None,
                   timeout: float = 5.0, poll: float = 0.1) -> GroupsOutcome:
    """After the groups file was changed (its routing table would be ``version``): wait, at
    most ``timeout`` seconds, until the running gateway has the table in use or has refused the
    file in a reload after ``reloads_before`` (:func:`groups_reloads`). The gateway looks at
    the file once a second."""
    if reloads_before is None:
        return GroupsOutcome("not running")
    deadline = time.monotonic() + timeout
    while True:
        status = read_status(data_dir)
        groups = status.get("groups")
        if not isinstance(groups, dict):
            return GroupsOutcome("not running")
        pid = status.get("pid")
        in_use = str(groups.get("version", ""))
        if in_use == version:
            return GroupsOutcome("applied", pid, in_use)
        reloads = groups.get("reloads")
        if isinstance(reloads, int) and reloads > reloads_before and groups.get("refused"):
            return GroupsOutcome("refused", pid, in_use, str(groups["refused"]))
        if time.monotonic() >= deadline:
            return GroupsOutcome("unconfirmed", pid, in_use)
        time.sleep(poll)


def session_rows(config: GatewayConfig, closures: ClosureStore,
                 status: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per configured session: comp_id, role, entity, profile, begin_string,
    session_id (key scope), connected, next_in, next_out, port_closed."""
    g = config.gateway
    status = read_status(g.data_dir) if status is None else status
    connected = status.get("connected", {})
    seqs = status.get("sequences", {})
    locked = closures.locked()
    rows = []
    for s in config.sessions:
        pair = seqs.get(s.comp_id)
        if not (isinstance(pair, list) and len(pair) == 2):
            pair = peek_sequences(g.data_dir / "sessions" / f"{s.comp_id}.log") or (1, 1)
            if s.role == Role.TARGET:
                # the copies journaled for it hold their seqs whether or not it logged on since:
                # the next start goes on after the last of them, and so does this view
                pair = (pair[0], max(int(pair[1]), last_seq(g.data_dir / "journal", s.comp_id) + 1))
        rows.append({"comp_id": s.comp_id, "role": s.role, "entity": s.entity,
                     "profile": s.profile, "begin_string": s.begin_string,
                     "session_id": s.key_scope, "connected": s.comp_id in connected,
                     "next_in": int(pair[0]), "next_out": int(pair[1]),
                     "port_closed": s.comp_id in locked})
    return rows
