"""What a running gateway tells other processes about its sessions (``sessions list``, the
portal's sessions view): ``data_dir/status.json``, rewritten by the gateway when a session logs
on or off and once a second while sequence numbers move, and trusted only while the pid in it is
alive. Without a running gateway the sequence numbers are read from the session files as last
stored, and ``connected`` is unknown (reported as False).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..config import GatewayConfig
from .base import ClosureStore
from .session_files import peek_sequences

STATUS_FILE_NAME = "status.json"


def read_status(data_dir: Path) -> dict[str, Any]:
    """The running gateway's status document, or {} when none runs (a stale file from a dead
    gateway says nothing)."""
    try:
        doc = json.loads((Path(data_dir) / STATUS_FILE_NAME).read_text())
        os.kill(int(doc["pid"]), 0)
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


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
        rows.append({"comp_id": s.comp_id, "role": s.role, "entity": s.entity,
                     "profile": s.profile, "begin_string": s.begin_string,
                     "session_id": s.key_scope, "connected": s.comp_id in connected,
                     "next_in": int(pair[0]), "next_out": int(pair[1]),
                     "port_closed": s.comp_id in locked})
    return rows
