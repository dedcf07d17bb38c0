"""The journal's health (``/healthz``, ``dcgateway_journal_writable``): a failed write probe is
cleared by a probe, not by a commit (writes through files already open go on in a journal
folder that was removed or renamed; only the probe, which creates a file, notices)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from dcgateway.runtime import JournalHealth


def health(tmp_path: Path) -> tuple[JournalHealth, list[bool]]:
    changes: list[bool] = []
    journal = SimpleNamespace(appended_lsn=5, durable_lsn=5, written_lsn=5)
    return JournalHealth(journal, tmp_path, changes.append), changes   # type: ignore[arg-type]


def test_a_failed_probe_is_not_cleared_by_a_commit(tmp_path: Path) -> None:
    h, changes = health(tmp_path)
    assert h.probe("cannot write in /gone/journal: No such file or directory") is False
    assert h.check(True) == (False, "journal is not writable: cannot write in /gone/journal: "
                                    "No such file or directory")
    h.committed()                               # a write through an open file succeeded
    assert not h.ok and changes == [False]
    assert h.probe(None) is True                 # the folder is back
    assert h.ok and changes == [False, True]


def test_a_failed_commit_is_cleared_by_the_next_commit(tmp_path: Path) -> None:
    h, changes = health(tmp_path)
    h.failed("No space left on device")
    assert not h.ok
    h.committed()
    assert h.ok and changes == [False, True]


def test_the_probe_writes_in_the_folder_and_names_a_missing_one(tmp_path: Path) -> None:
    h, _ = health(tmp_path)
    assert h.probe_io() is None and not list(tmp_path.iterdir())
    gone, _ = health(tmp_path / "gone")
    assert "No such file or directory" in (gone.probe_io() or "")


def test_a_sync_of_records_written_before_a_failure_does_not_clear_it(tmp_path: Path) -> None:
    """A full disk: records 6..9 could not be written; the background fdatasync of 1..5 then
    completes. The journal is not writable again until what was appended is written."""
    h, changes = health(tmp_path)
    h.journal.appended_lsn = 9                  # type: ignore[misc]
    h.failed("No space left on device")
    h.committed()                               # 1..5 synced: no recovery
    assert not h.ok and changes == [False]
    h.journal.written_lsn = 9                   # type: ignore[misc]
    h.committed()
    assert h.ok and changes == [False, True]
