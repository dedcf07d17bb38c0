"""The state the metrics read at scrape time (connected, sequence numbers, backlog, key expiry,
journal writable): gathered from the slots, the outboxes and the state store when Prometheus
asks, never kept up to date on the hot path."""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import DcGatewayError
from ..fanout import Outbox
from ..metrics import KeyStatus, SessionStatus, Snapshot, TargetStatus
from ..net.connection import SessionSlot
from ..state import ClosureStore, KeyRecords


def scrape_state(slots: Mapping[str, SessionSlot], outboxes: Mapping[str, Outbox],
                 keys: KeyRecords, closures: ClosureStore, journal_ok: bool) -> Snapshot:
    locked = set(closures.locked())
    sessions = [SessionStatus(name, slot.connection is not None and
                              slot.connection.session is not None,
                              slot.store.next_in, slot.store.next_out, name in locked)
                for name, slot in slots.items()]
    targets = [TargetStatus(name, o.backlog, o.spill_from is not None)
               for name, o in outboxes.items()]
    key_rows = []
    try:
        for r in keys.snapshot().values():
            if r.deleted is None:
                key_rows.append(KeyStatus(r.access_key_id, r.session_id, r.expires.timestamp()))
    except DcGatewayError:
        pass                              # an unreadable key store: no key series
    return Snapshot(sessions, targets, key_rows, journal_ok)
