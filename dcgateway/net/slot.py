"""A configured session as the network shell sees it: its durable store, its outbox when it is
a drop copy target, and, while logged on, its connection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..fix.session_types import SessionConfig

if TYPE_CHECKING:
    from ..fanout import Outbox
    from .connection import FixConnection


@dataclass
class SessionSlot:
    comp_id: str
    role: str
    config: SessionConfig
    store: Any                                  # a SessionStore with sync() and close()
    connection: FixConnection | None = None
    logons: int = 0
    outbox: Outbox | None = None                # a drop copy target's outbound stream
    bytes_in: int = 0                           # cumulative, read by the metrics pump
    bytes_out: int = 0
