"""The order lifecycle generator: deterministic, unique keys, the filter fields on every
message, every category and lifecycle the brief names, and lifecycles that hang together."""

from __future__ import annotations

from collections import Counter

import pytest

from dcgateway.fix.codec import Decoder
from dcgateway.routing import category
from simulators.fixclient import FixClient
from simulators.orders import OrderFlow, message_key

FIXED = "20261124-10:00:00.000"


def flow(**kw) -> OrderFlow:
    kw.setdefault("seed", 42)
    kw.setdefault("sender", "ABC123N")
    return OrderFlow(clock=lambda: FIXED, sub_ids=("OPS", "DESK9"), **kw)


def take(f: OrderFlow, n: int) -> list:
    return [next(f) for _ in range(n)]


def test_same_seed_same_messages_other_seed_others():
    assert take(flow(), 3000) == take(flow(), 3000)
    assert take(flow(), 200) != take(flow(seed=43), 200)


@pytest.mark.parametrize("begin_string", ["FIX.4.2", "FIX.4.4"])
def test_every_message_has_a_unique_key_and_the_filter_fields(begin_string):
    events = take(flow(begin_string=begin_string), 5000)
    keys = [e.key for e in events]
    assert len(set(keys)) == len(keys)
    for e in events:
        f = dict(e.fields)
        # an OrderCancelReject has no instrument in FIX 4.2/4.4: its Account only
        assert ({1} if e.msg_type == "9" else {1, 55, 207, 54}) <= f.keys(), e
        assert e.sub_id in ("OPS", "DESK9")
        assert message_key(e.msg_type, f.get) == e.key


@pytest.mark.parametrize("begin_string,trades", [("FIX.4.2", {"1", "2"}),
                                                 ("FIX.4.4", {"F", "G", "H"})])
def test_all_lifecycle_steps_and_categories_appear(begin_string, trades):
    """FIX 4.2 reports busts and corrections as ExecTransType 1/2 on ExecType 1/2 (4.4's G/H do
    not exist there); the venue's OrderMassActionReport (BZ) is a FIX 4.2 (iLink) message."""
    events = take(flow(begin_string=begin_string), 5000)
    kinds = Counter(e.msg_type for e in events)
    v44 = begin_string == "FIX.4.4"
    assert set(kinds) == {"D", "8", "F", "G", "9"} | (set() if v44 else {"BZ"})
    exec_types = {dict(e.fields)[150] for e in events if e.msg_type == "8"}
    assert exec_types == {"0", "4", "5", "8"} | trades
    assert all((20 in dict(e.fields)) == (begin_string == "FIX.4.2")
               for e in events if e.msg_type == "8")
    client = FixClient("127.0.0.1", 0, "ABC123N", begin_string=begin_string)
    raws = b"".join(client.build(e.msg_type, e.fields, header=[(50, e.sub_id)]) for e in events)
    cats = Counter(category(m) for m in Decoder(1 << 24).feed(raws))
    assert set(cats) == {"order", "acknowledgment", "execution"} | (
        set() if v44 else {"mass_action"})
    if not v44:
        assert {dict(e.fields)[20] for e in events if e.msg_type == "8"} == {"0", "1", "2"}


def test_lifecycles_are_consistent():
    """Fills add up to the order quantity; busts and corrections name a fill (19) that was
    sent before; a cancel reject answers a cancel request; replaces and cancels name the
    ClOrdID they act on (41); quantities are positive."""
    events = take(flow(), 6000)
    exec_ids, clordids = set(), set()
    cancel_requests = set()
    cum: dict[str, int] = {}
    for e in events:
        f = dict(e.fields)
        if e.msg_type in ("D", "F", "G"):
            if e.msg_type != "D":
                assert f[41] in clordids
            clordids.add(f[11])
            if e.msg_type == "F":
                cancel_requests.add(f[11])
        elif e.msg_type == "9":
            assert f[11] in cancel_requests and f[39] == "2" and f[102] == "0"
        elif e.msg_type == "8":
            if f[150] in ("1", "2") and f.get(20, "0") == "0":     # a fill, not a bust/correction
                assert int(f[32]) > 0
                cum[f[37]] = cum.get(f[37], 0) + int(f[32])
                assert int(f[14]) == cum[f[37]] <= int(f[38])
                assert (f[150] == "2") == (int(f[151]) == 0)
            if f[150] in ("G", "H") or f.get(20) in ("1", "2"):
                assert f[19] in exec_ids
            exec_ids.add(f[17])
        elif e.msg_type == "BZ":
            assert f[1373] == "3" and int(f[533]) >= 1


def test_mass_cancel_is_followed_by_the_cancel_of_each_affected_order():
    events = take(flow(p_mass=0.2), 3000)
    for i, e in enumerate(events[:2500]):         # the last ones' acks may come after 3000
        if e.msg_type != "BZ":
            continue
        report = dict(e.fields)[1369]
        acks = [x for x in events[i:] if x.msg_type == "8" and
                dict(x.fields).get(58) == f"mass cancel {report}"]
        assert len(acks) == int(dict(e.fields)[533])
        assert all(dict(a.fields)[150] == "4" for a in acks)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        OrderFlow(accounts=[])
    with pytest.raises(ValueError):
        OrderFlow(outcomes={"fill": 0})


def test_a_plain_fix_42_source_sends_no_mass_action_reports() -> None:
    """35=BZ is iLink 2's, not in FIX 4.2's dictionary: a `fix`-profile FIX 4.2 source (the
    demo's and the CLI's --no-mass-actions) never sends it; an iLink 2 one does."""
    from simulators.source import SourceSimulator
    plain = SourceSimulator("127.0.0.1", 1, "SRC", count=1, mass_actions=False)
    ilink = SourceSimulator("127.0.0.1", 1, "SRC", count=1)
    types = {kind: Counter(next(sim._events).msg_type for _ in range(5000))
             for kind, sim in (("plain", plain), ("ilink", ilink))}
    assert types["plain"]["BZ"] == 0 and types["ilink"]["BZ"] > 0
