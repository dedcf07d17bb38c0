"""The outbox's run queue (fanout._Pending): what the writer may take in one run."""

from __future__ import annotations

from dcgateway.fanout import _Pending


def queue(*items: tuple[int, int]) -> _Pending:
    q = _Pending()
    for seq, lsn in items:
        q.append((seq, lsn, None, 0.0, "execution"))   # type: ignore[arg-type]
    return q


def seqs(run) -> list[int]:
    return [item[0] for item in run]


def test_run_stops_at_the_first_copy_not_yet_durable():
    q = queue((1, 10), (2, 11), (3, 11), (4, 12), (5, 13))
    assert seqs(q.take_run(1, 11, 1000)) == [1, 2, 3]
    assert len(q) == 2 and q.first()[0] == 4
    assert q.take_run(4, 11, 1000) == []                # 4's record is not durable yet
    assert seqs(q.take_run(4, 13, 1000)) == [4, 5]
    assert not q and len(q) == 0


def test_run_is_bounded_and_must_start_at_the_cursor():
    q = queue(*[(s, s) for s in range(1, 11)])
    assert q.take_run(2, 100, 1000) == []               # the writer's cursor is elsewhere
    assert seqs(q.take_run(1, 100, 4)) == [1, 2, 3, 4]
    assert seqs(q.take_run(5, 100, 4)) == [5, 6, 7, 8]
    assert seqs(q.take_run(9, 100, 4)) == [9, 10]


def test_a_hole_in_the_seqs_leaves_the_run_to_the_one_at_a_time_path():
    # seq 3 belongs to a session message (Heartbeat...) that must go between 2 and 4
    q = queue((1, 1), (2, 1), (4, 2))
    assert q.take_run(1, 5, 1000) == []
    assert len(q) == 3 and q.first()[0] == 1            # nothing taken
    q.pop_first()
    q.pop_first()
    assert seqs(q.take_run(4, 5, 1000)) == [4]


def test_taken_items_are_released():
    q = queue(*[(s, s) for s in range(1, 10_001)])
    for first in range(1, 10_001, 1000):
        assert seqs(q.take_run(first, 10**9, 1000)) == list(range(first, first + 1000))
        assert len(q._items) - q._head == 10_000 - (first + 999)
        assert q._head <= 4096 or q._head * 2 <= len(q._items)   # compacted as it goes
    assert not q and q._items == []
