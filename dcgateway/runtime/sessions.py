"""Each configured session, assembled: its engine settings (with the validator of its data
dictionary), its durable store, and for a drop copy target its outbox, its target store and the
adapter that makes copies valid in its dictionary. Called by the composition root once per
session at start; kept here so the root only composes."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from ..config import GatewayConfig, SessionDef
from ..fanout import CopyAdapter, Outbox, SendingTimes, TargetStore
from ..fix.dictionary import DictionaryCache, with_secure_logon
from ..fix.session import SessionConfig
from ..fix.validate import ValidationOptions, Validator
from ..journal import Committer, GroupCommitter, Journal, Recovery
from ..net.connection import SessionSlot
from ..routing import CLASSIFIER_TAGS
from ..state.session_files import FileSessionStore
from ..vocab import Role

log = logging.getLogger("dcgateway")

#: Seqs of a ResendRequest answered per turn of the loop: a request is always answered whole (an
#: engine that asked for 1..0 waits for all of it), a target's copies read back from the journal
#: and rebuilt cost tens of µs each, so 200 keep a slice to a few ms, and the connection rests
#: as long between slices (:data:`dcgateway.net.connection.CATCHUP_REST_RATIO`).
RESEND_SLICE = 200


def session_config(config: GatewayConfig, sdef: SessionDef,
                   dictionaries: DictionaryCache) -> SessionConfig:
    """A session's engine settings, with the validator of its data dictionary (one per session:
    its layout cache lives as long as the session's configuration)."""
    g = config.gateway
    # A source's validator captures the tags routing classifies by as it matches a compiled
    # layout (with validation.layout_cache_size 0 nothing is compiled, so nothing is captured).
    validator = Validator(with_secure_logon(dictionaries.get(sdef.data_dictionary)),
                          ValidationOptions(**dict(sdef.validation)),
                          capture=CLASSIFIER_TAGS if sdef.role == Role.SOURCE else frozenset())
    return SessionConfig(begin_string=sdef.begin_string.encode(),
                         our_comp_id=g.comp_id.encode(), their_comp_id=sdef.comp_id.encode(),
                         heartbeat_min=g.heartbeat_min_s, heartbeat_max=g.heartbeat_max_s,
                         validator=validator, reset_on_logon=sdef.reset_on_logon,
                         resend_slice=RESEND_SLICE)


def make_slot(config: GatewayConfig, sdef: SessionDef, data_dir: Path, journal: Journal,
              recovery: Recovery, dictionaries: DictionaryCache,
              sending_times: SendingTimes | None = None) -> SessionSlot:
    """A source's next inbound seq comes from the journal (what was durably accepted), never
    from its session file; a target's next outbound seq is the larger of its session file's
    (admin messages) and the journal's (copies), and what it was last handed is remembered.
    After a power loss, the outbound seq continues past every number the session can have sent
    (:class:`~dcgateway.state.session_files.FileSessionStore`, ``floor``), durably, before
    anything is sent."""
    g = config.gateway
    # The session files are fdatasync'd in the background (runtime.session_sync) only where
    # they must survive a power loss: `os` durability promises what survives the process, and
    # in a cluster the sequence numbers are replicated and the files are a cache.
    floor = 1 if sdef.role == Role.SOURCE else recovery.target_next_seq.get(sdef.comp_id, 1)
    store = FileSessionStore(data_dir / "sessions" / f"{sdef.comp_id}.log",
                             fsync=g.journal_durability == "fsync" and config.cluster is None,
                             defer_next_in=sdef.role == Role.SOURCE, floor=floor)
    if store.recovered_torn_bytes:
        log.warning("session %s: dropped a torn record (%d bytes) at the end of %s",
                    sdef.comp_id, store.recovered_torn_bytes, store.path)
    if store.after_power_loss:
        log.warning("session %s: its session file was open when the machine stopped (power "
                    "loss or kernel crash) or is torn; its outbound MsgSeqNum continues at %d, "
                    "past any it can have sent (the gap is filled on request)",
                    sdef.comp_id, store.next_out)
    cfg = session_config(config, sdef, dictionaries)
    if sdef.role == Role.SOURCE:
        store.set_next_in(recovery.source_next_in.get(sdef.comp_id, 1))
        return SessionSlot(sdef.comp_id, sdef.role, cfg, store)
    outbox = Outbox(sdef.comp_id, sdef.begin_string, sdef.profile, g.comp_id, journal,
                    g.target_max_pending, sending_times)
    next_out = max(store.next_out, floor)
    outbox.store = target = TargetStore(outbox, store, journal, next_out)
    outbox.written_upto = target.recovered_delivered()
    return SessionSlot(sdef.comp_id, sdef.role, cfg, target, outbox=outbox)


def session_files(slots: Iterable[SessionSlot]) -> list[FileSessionStore]:
    """The session file of each slot made by :func:`make_slot` (a target's is in its
    :class:`~dcgateway.fanout.TargetStore`)."""
    return [s.store.file if isinstance(s.store, TargetStore) else s.store for s in slots]


def adapt_copies(sessions: Iterable[SessionDef], outboxes: dict[str, Outbox],
                 dictionaries: DictionaryCache) -> None:
    """Each target's copies made valid in its data dictionary (:mod:`dcgateway.fanout.adapt`)."""
    sdefs = list(sessions)
    sources = {s.comp_id.encode(): dictionaries.get(s.data_dictionary)
               for s in sdefs if s.role == Role.SOURCE}
    for s in sdefs:
        if s.comp_id in outboxes:
            outboxes[s.comp_id].adapter = CopyAdapter(
                s.comp_id, dictionaries.get(s.data_dictionary), sources)


def wake_on_source_reads(slots: Iterable[SessionSlot], committer: Committer) -> None:
    """``fsync`` mode: each source's read wakes the journal's sync thread as it begins
    (:meth:`~dcgateway.journal.GroupCommitter.expect_append`), so that its wake-up overlaps the
    read's work. Nothing for ``os`` mode, delayed commits or another committer (a cluster's)."""
    if isinstance(committer, GroupCommitter) and committer.wakes_early:
        for slot in slots:
            if slot.role == Role.SOURCE:
                slot.before_read = committer.expect_append
