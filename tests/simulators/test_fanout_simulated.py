"""Simulated trading through a real gateway: sources play order lifecycles, targets check that
each receives exactly what its groups promise (computed from the sources' sent logs with
dcgateway.routing), gapless, in order, with 43=Y on anything shown twice."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from dcgateway.fanout import CopyAdapter
from dcgateway.fix.codec import Decoder
from dcgateway.fix.dictionary import load_dictionary
from dcgateway.fix.dropcopy import CopySource
from dcgateway.fix.validate import Validator
from dcgateway.routing import category

from .support import (
    assert_exact,
    expected,
    gateway_folder,
    routing_table,
    run_until_all,
    source,
    target,
)

pytestmark = pytest.mark.asyncio

valid_44 = Validator(load_dictionary("FIX.4.4"))
to_44 = CopyAdapter("CLRFIX44", load_dictionary("FIX.4.4"),
                    {b"ABC123N": load_dictionary("ILINK2"), b"ABD123N": load_dictionary("ILINK2")})


def decode(raw: bytes):
    [m] = Decoder(1 << 20).feed(raw)
    return m


async def test_live_targets_get_exactly_their_groups_in_both_formats(tmp_path, start_gateway):
    folder = gateway_folder(tmp_path)
    gw = await start_gateway(folder)
    ilink = target(gw.port, gw.creds, "CLR001N")
    fix = target(gw.port, gw.creds, "CLRFIX44")
    await asyncio.gather(ilink.run(duration=0.2, logout=False), fix.run(duration=0.2, logout=False))
    abc = source(gw.port, gw.creds, "ABC123N", count=400, logout_at_end=True)
    abd = source(gw.port, gw.creds, "ABD123N", count=200, seed=11, logout_at_end=True)
    summaries = await asyncio.gather(abc.run(), abd.run())
    assert [s["sent"] for s in summaries] == [400, 200]
    assert all(s["rejects"] == 0 and s["error"] is None for s in summaries), summaries
    want = expected(routing_table(folder), abc, abd)
    assert 100 < len(want["CLR001N"]) < 600 and 200 < len(want["CLRFIX44"]) < 600

    await asyncio.gather(run_until_all(ilink, len(want["CLR001N"])),
                         run_until_all(fix, len(want["CLRFIX44"])))
    for t in (ilink, fix):
        assert_exact(t, want[t.comp_id])
        assert t.gaps_requested == 0 and t.duplicates == 0      # live: nothing to repair
        assert not any(d.poss_dup for d in t.delivered.values())
    assert (ilink.front_end, fix.front_end) == ("ilink2", "fix")

    sent = {(s.sender, m.key): m for s in (abc, abd) for m in s.sent_log}
    # ilink2: the original, byte for byte, inside <RTRF>; source seq from the inner header
    for key, d in ilink.delivered.items():
        assert d.raw == sent[key].raw and d.source_seq == sent[key].seq
    # fix: same MsgType and body; 115/116/122 name the source, its SenderSubID and SendingTime
    for key, d in fix.delivered.items():
        copy, orig = decode(d.raw), decode(sent[key].raw)
        assert copy.begin_string == b"FIX.4.4" and copy.msg_type == orig.msg_type
        # the FIX 4.2 source's body translated for the FIX 4.4 target (ExecTransType folded
        # into ExecType), and valid in the target's data dictionary
        assert copy.body == to_44(CopySource(orig)).body
        assert valid_44.validate(copy) is None, copy
        assert (copy.header[115], copy.header.get(116), copy.header[122]) == \
            (orig.header[49], orig.header[50], orig.header[52])
        assert copy.header[49] == b"DCGW" and copy.header[56] == b"CLRFIX44"
    # categories per target agree with dcgateway.routing on what was sent
    for t in (ilink, fix):
        cats = Counter(category(decode(sent[k].raw)) for k in want[t.comp_id])
        assert t.counts_by_category == cats
    assert set(fix.counts_by_category) >= {"execution", "acknowledgment", "order"}
    # the source summaries count per category what dcgateway.routing says
    assert summaries[0]["by_category"].keys() >= {"execution", "acknowledgment", "order"}


async def test_target_logging_on_after_the_run_catches_up_in_chunks(tmp_path, start_gateway):
    """More than 2500 copies wait for a target that was offline: it sees the gap at Logon and
    asks once (16=0), as QuickFIX does, and gets all of it; a client that asks in chunks of 400
    (16=end) gets each chunk; all with 43=Y and 122."""
    folder = gateway_folder(tmp_path)
    gw = await start_gateway(folder)
    abc = source(gw.port, gw.creds, "ABC123N", count=2800, sub_ids=("OPS",), logout_at_end=True)
    await abc.run()
    want = expected(routing_table(folder), abc)
    assert len(want["CLRFIX44"]) > 2500
    await asyncio.sleep(0.1)
    fix = target(gw.port, gw.creds, "CLRFIX44")
    ilink = target(gw.port, gw.creds, "CLR001N", resend_mode="explicit", resend_chunk=400)
    await asyncio.gather(run_until_all(fix, len(want["CLRFIX44"])),
                         run_until_all(ilink, len(want["CLR001N"])))
    for t in (fix, ilink):
        assert_exact(t, want[t.comp_id])
        assert all(d.poss_dup and d.orig_sending_time for d in t.delivered.values())
        assert t.duplicates == 0
    assert fix.resend_requests[0] == (1, 0)
    assert len(fix.resend_requests) == 1 + fix.counters["resend_stalled"]
    assert len(ilink.resend_requests) >= len(want["CLR001N"]) // 400
    assert all(end - begin < 400 for begin, end in ilink.resend_requests)
