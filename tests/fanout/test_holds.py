"""The fan-out's memory bounds against the journal's two watermarks, sans I/O: sources are held
while too many records are not durable (what copies wait for), and, with durability ``os``, while
too many are not on the disk although copies of them have left (a stalled fsync pauses the
sources, never the copies)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dcgateway.config import Filters, GroupDef, SessionDef
from dcgateway.fanout import Fanout, HoldSources, Outbox, TargetStore
from dcgateway.fanout import router as router_mod
from dcgateway.fix.codec import Decoder, RawMessage, encode_fields
from dcgateway.journal import SegmentJournal
from dcgateway.routing import CATEGORIES, RoutingTable
from dcgateway.state.session_files import FileSessionStore

NOW = 1_780_000_000.0


def order(i: int) -> RawMessage:
    raw = encode_fields("FIX.4.2", "D", [(49, "SRC"), (56, "DCGW"), (34, i),
                                         (52, "20260601-10:00:00.000")],
                        [(11, f"C{i}"), (55, "ESZ6"), (54, 1), (38, 1), (40, 1),
                         (60, "20260601-10:00:00")])
    (msg,) = Decoder().feed(raw)
    assert isinstance(msg, RawMessage)
    return msg


def rig(root: Path, durability: str) -> tuple[SegmentJournal, Fanout, Outbox]:
    journal = SegmentJournal(root / "journal", durability=durability)
    journal.recover()
    outbox = Outbox("T", "FIX.4.4", "fix", "DCGW", journal, 10_000)
    outbox.store = TargetStore(outbox, FileSessionStore(root / "T.log"), journal, 1)
    sessions = {"SRC": SessionDef("SRC", "source", "E", "fix", "FIX.4.2", "SRC"),
                "T": SessionDef("T", "target", "E", "fix", "FIX.4.4", "T")}
    table = RoutingTable.build([GroupDef("E", "g", "fix", Filters(frozenset(CATEGORIES)),
                                         ("SRC",), ("T",))], sessions)
    return journal, Fanout(journal, table, {"T": outbox}, notify=lambda: None), outbox


def holds(decisions: list) -> list[bool]:
    return [d.hold for d in decisions if isinstance(d, HoldSources)]


@pytest.fixture
def small_bounds(monkeypatch):
    monkeypatch.setattr(router_mod, "MAX_UNDURABLE", 20)
    monkeypatch.setattr(router_mod, "RESUME_UNDURABLE", 10)
    monkeypatch.setattr(router_mod, "MAX_UNSYNCED", 50)
    monkeypatch.setattr(router_mod, "RESUME_UNSYNCED", 25)


def test_os_mode_a_lagging_disk_holds_sources_not_copies(tmp_path, small_bounds):
    journal, fanout, outbox = rig(tmp_path, "os")
    outbox.attach()
    seq = 0
    decisions: list = []
    while not holds(decisions):
        seq += 1
        decisions = fanout.from_source("SRC", [order(seq)], NOW, seq + 1)
        journal.flush_writes()                     # the commit of each read; no fsync at all
        assert journal.durable_lsn == journal.appended_lsn > journal.synced_lsn
        fanout.on_durable(journal.durable_lsn)
        assert outbox.take(journal.durable_lsn, NOW)     # copies keep leaving
    assert fanout.sources_held and 25 < seq < 60
    ready, decisions = fanout.on_durable(journal.durable_lsn)
    assert holds(decisions) == []                  # still not on the disk: stays held
    journal.sync_to_disk()                         # the background fsync catches up
    ready, decisions = fanout.on_durable(journal.durable_lsn)
    assert holds(decisions) == [False] and not fanout.sources_held
    journal.close()


def test_fsync_mode_sources_held_until_durable(tmp_path, small_bounds):
    journal, fanout, outbox = rig(tmp_path, "fsync")
    outbox.attach()
    decisions: list = []
    seq = 0
    while not holds(decisions):
        seq += 1
        decisions = fanout.from_source("SRC", [order(seq)], NOW, seq + 1)
        journal.flush_writes()
        assert outbox.take(journal.durable_lsn, NOW) == []     # nothing durable: no copy
    assert 10 < seq < 30
    journal.sync_to_disk()
    ready, decisions = fanout.on_durable(journal.durable_lsn)
    assert holds(decisions) == [False] and ready == [outbox]
    assert len(outbox.take(journal.durable_lsn, NOW)) == seq
    journal.close()
