"""The metrics' vocabulary: names, buckets, refusal reasons, and the scrape-time snapshot the
gateway hands to :class:`~.collectors.SnapshotCollector`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

PREFIX = "dcgateway_"

#: Receipt -> write of a copy, seconds. Sub-millisecond resolution: the loopback two-hop floor is
#: ~115 µs p50 (docs/architecture.md), so the interesting range is 50 µs .. a few ms; the tail buckets catch
#: a target served from the journal.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
#: One fdatasync, seconds (docs/architecture.md: p50 ~200 µs, p99 ~390 µs on this kind of machine).
FSYNC_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: Journal records covered by one fsync (the group-commit batch size).
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)

#: ``category`` label of a received application message that no drop copy category covers
#: (:func:`dcgateway.routing.category` answered None).
OTHER_CATEGORY = "other"

#: ``reason`` label of ``dcgateway_connections_refused_total``: connections turned away before a
#: configured session was identified (the acceptor's refusals, and Logons naming no configured
#: session). Anything else is counted as ``other``.
REFUSAL_REASONS: tuple[str, ...] = (
    "max_connections", "first_message_not_logon", "garbage_before_logon", "logon_timeout",
    "wrong_target_comp_id", "unknown_session", "already_logged_on", "rate_limit",
    "sequence_reset", "evicted_before_logon", "max_pending_logons", "idle_before_logon",
    "invalid_first_message", "journal_unwritable", "other")


# -- the snapshot: what the gateway reports at scrape time ------------------------------------

class SessionStatus(NamedTuple):
    """One configured session, as the gateway sees it now."""

    comp_id: str
    connected: bool             # logged on (a connection is bound to the session)
    next_in: int                # next expected inbound MsgSeqNum (34)
    next_out: int               # next outbound MsgSeqNum (34) the gateway will send
    port_closed: bool = False   # locked after too many invalid Logons, until an operator unlocks


class TargetStatus(NamedTuple):
    """One target session's copy queue."""

    comp_id: str
    backlog: int                # copies routed to it (target seq assigned), not yet written
    from_journal: bool = False  # catching up from the journal (slow or was offline)


class KeyStatus(NamedTuple):
    """One live (not deleted) key pair. Only its public Access Key ID is ever a label."""

    access_key_id: str
    session_id: str             # the key scope it was issued for
    expires: float              # epoch seconds


class Snapshot(NamedTuple):
    """What ``snapshot()`` returns. Rows naming a session that is not configured are ignored."""

    sessions: Sequence[SessionStatus] = ()
    targets: Sequence[TargetStatus] = ()
    keys: Sequence[KeyStatus] = ()
    journal_writable: bool = True


