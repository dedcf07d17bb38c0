"""Crash safety: a child process appends through the real group committer and reports what it was
told is durable; the parent SIGKILLs it mid-stream and checks every reported entry survived,
byte-identical. Plus a model-based property test of append/flush/sync/reset/crash/recover."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcgateway.journal import SegmentJournal

from .test_segment import crash, msg, reopen

CHILD = textwrap.dedent("""
    import asyncio, collections, sys
    from dcgateway.journal import GroupCommitter, SegmentJournal
    from tests.journal.test_segment import msg

    async def main(path, segment_bytes, durability):
        j = SegmentJournal(path, segment_bytes=segment_bytes, checkpoint_records=700,
                           durability=durability)
        j.recover()
        batches = collections.deque()        # (last lsn of the batch, source seq, T2 seq)
        i = t2 = last_app = 0
        reported = (0, 0, 0)

        def on_durable(lsn):
            nonlocal reported
            while batches and batches[0][0] <= lsn:
                reported = batches.popleft()
            print(lsn, reported[1], reported[2], flush=True)

        gc = GroupCommitter(j, asyncio.get_running_loop(), on_durable)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(gc.run())
            while True:                      # until SIGKILL
                for _ in range(37):
                    i += 1
                    if i % 100 == 0:         # a source heartbeat consumed this seq
                        lsn = j.append_source_next_in("SRC", i + 1)
                        continue
                    targets = [("T1", i)]
                    if i % 3 == 0:
                        t2 += 1
                        targets.append(("T2", t2 + t2 // 10))   # T2 has gaps (admin msgs)
                    lsn = j.append("SRC", i, 1000.0 + i, msg(i), targets)
                    last_app = i
                batches.append((lsn, last_app, t2))
                gc.notify()
                await asyncio.sleep(0)

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
""")


def t2_seq(k: int) -> int:
    return k + k // 10


@pytest.mark.parametrize("durability", ["fsync", "os"])
@pytest.mark.parametrize("segment_bytes", [64 << 10, 64 << 20])
def test_durable_entries_survive_kill_9(tmp_path, segment_bytes, durability):
    """What the committer reported durable survives a kill -9 in both local modes: in ``os``
    mode the records were only written to the OS when they were reported (the page cache
    outlives the process)."""
    path = tmp_path / "journal"
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(segment_bytes),
                             durability],
                            stdout=subprocess.PIPE, text=True, cwd=repo)
    lsn = src = t2 = 0
    try:
        for line in proc.stdout:
            lsn, src, t2 = map(int, line.split())
            if src >= 6000:
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert src >= 6000, "child stopped early"
    j, rec = reopen(path, segment_bytes=segment_bytes)
    assert rec.last_lsn >= lsn
    assert rec.target_next_seq["T1"] >= src + 1 and rec.source_next_in["SRC"] >= src + 1
    assert rec.target_next_seq["T2"] >= t2_seq(t2) + 1
    got = []
    for first in range(1, src + 1, 2500):               # ResendRequest-sized reads
        got += j.read_target("T1", first, min(first + 2499, src))
    sources = [e.source_seq for e in got]
    assert sources == [s for s in range(1, src + 1) if s % 100 != 0]   # heartbeats: no entry
    assert all(e.raw == msg(e.source_seq) and e.target_seq == e.source_seq for e in got)
    got2 = j.read_target("T2", 1, t2_seq(t2))
    assert [e.target_seq for e in got2] == [t2_seq(k) for k in range(1, t2 + 1)]
    assert all(e.raw == msg(e.source_seq) for e in got2)
    nxt = rec.target_next_seq["T1"]
    j.append("SRC", 10**6, 1.0, b"after", [("T1", nxt)])  # usable after the crash
    j.close()
    j, _ = reopen(path, segment_bytes=segment_bytes)
    assert j.read_target("T1", nxt, nxt)[0].raw == b"after"
    j.close()


# -- model-based property test ------------------------------------------------------------------------

ops = st.lists(st.one_of(
    st.tuples(st.just("append"), st.sets(st.sampled_from("ABC")), st.integers(0, 3),
              st.integers(0, 400)),
    st.tuples(st.just("flush")), st.tuples(st.just("sync")), st.tuples(st.just("reset"),
                                                                         st.sampled_from("ABC")),
    st.tuples(st.just("crash")), st.tuples(st.just("close"))), max_size=60)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_journal_matches_a_model_across_crashes(program):
    """After a crash, exactly the records handed to the OS survive (the page cache outlives the
    process); everything durable is among them; reads match the model byte for byte."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "j"
        j = SegmentJournal(path, segment_bytes=2048, checkpoint_records=7)
        j.recover()
        model: dict[str, list[tuple[int, bytes, int]]] = {t: [] for t in "ABC"}  # (seq, raw, lsn)
        nxt = dict.fromkeys("ABC", 1)
        n = 0
        for op in program:
            if op[0] == "append":
                _, targets, gap, size = op
                n += 1
                raw = msg(n, pad=size)
                assign = [(t, nxt[t] + gap) for t in sorted(targets)]
                lsn = j.append("S", n, float(n), raw, assign)
                for t, s in assign:
                    model[t].append((s, raw, lsn))
                    nxt[t] = s + 1
            elif op[0] == "flush":
                j.flush_writes()
            elif op[0] == "sync":
                assert j.sync() == j.appended_lsn
            elif op[0] == "reset":
                j.reset_target(op[1])
                model[op[1]] = []
                nxt[op[1]] = 1
            else:
                written, durable = j.written_lsn, j.durable_lsn
                (crash if op[0] == "crash" else SegmentJournal.close)(j)
                j = SegmentJournal(path, segment_bytes=2048, checkpoint_records=7)
                rec = j.recover()
                assert rec.last_lsn >= durable
                assert rec.last_lsn == (written if op[0] == "crash" else j.appended_lsn)
                for t in "ABC":
                    model[t] = [m for m in model[t] if m[2] <= rec.last_lsn]
                    nxt[t] = rec.target_next_seq.get(t, 1)
                    assert nxt[t] == (model[t][-1][0] + 1 if model[t] else nxt[t])
            for t in "ABC":
                got = j.read_target(t, 1, 10_000, durable_only=False)
                assert [(e.target_seq, e.raw, e.lsn) for e in got] == model[t]
        j.close()
