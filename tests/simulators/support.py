"""Helpers for the simulator tests: a gateway folder with drop copy groups that exercise every
filter kind, simulators bound to a running gateway, and the expected deliveries per target."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from dcgateway.auth import logon_signer
from dcgateway.config import load_config
from dcgateway.routing import RoutingTable
from simulators.source import SourceSimulator, expected_deliveries
from simulators.target import TargetSimulator
from tests.integration.conftest import write_config

#: Like the contract's groups.yaml (tests/contract), with more filter kinds: CLR001N (ilink2) gets
#: executions, acknowledgments and mass actions of two accounts minus one symbol from both
#: sources; CLRFIX44 (fix) gets everything of ABC123N but desk DESK9's, plus ABD123N's sells.
GROUPS = """
groups:
  - entity: CLEARCO
    name: clearco-fills-acks
    front_end: ilink2
    filters:
      categories: [execution, acknowledgment, mass_action]
      account: {include: [ACCT01, ACCT02]}
      symbol: {exclude: [GEZ6]}
    sources: [ABC123N, ABD123N]
    targets: [CLR001N]
  - entity: CLEARCO
    name: clearco-everything-fix
    front_end: fix
    filters:
      categories: [execution, acknowledgment, order, mass_action]
      sender_sub_id: {exclude: [DESK9]}
    sources: [ABC123N]
    targets: [CLRFIX44]
  - entity: CLEARCO
    name: clearco-abd-sell-orders
    front_end: fix
    filters:
      categories: [order]
      side: {include: ["2"]}
    sources: [ABD123N]
    targets: [CLRFIX44]
"""

SUB_IDS = {"ABC123N": ("OPS", "DESK9"), "ABD123N": ("OPS2",)}


def gateway_folder(tmp_path: Path, extra: str = "", port: int = 0) -> Path:
    folder = tmp_path / "gw"
    write_config(folder, extra=extra, port=port)
    (folder / "groups.yaml").write_text(GROUPS)
    return folder


def routing_table(folder: Path) -> RoutingTable:
    cfg = load_config(folder / "gateway.yaml")
    return RoutingTable.build(cfg.groups, {s.comp_id: s for s in cfg.sessions})


def source(port: int, creds: dict, sender: str = "ABC123N", **kw: Any) -> SourceSimulator:
    kw.setdefault("sub_ids", SUB_IDS.get(sender, ("OPS",)))
    kw.setdefault("seed", 7)
    kw.setdefault("logout_at_end", True)
    return SourceSimulator("127.0.0.1", port, sender, signer=logon_signer(*creds[sender]), **kw)


def target(port: int, creds: dict, comp_id: str, **kw: Any) -> TargetSimulator:
    kw.setdefault("begin_string", "FIX.4.4" if comp_id == "CLRFIX44" else "FIX.4.2")
    kw.setdefault("keep_raw", True)
    # every message from the gateway must be valid in the session's dictionary
    kw.setdefault("dictionary", "FIX.4.4" if kw["begin_string"] == "FIX.4.4" else "ILINK2")
    return TargetSimulator("127.0.0.1", port, comp_id, signer=logon_signer(*creds[comp_id]), **kw)


def expected(table: RoutingTable, *sources: SourceSimulator) -> dict[str, list[tuple[str, str]]]:
    """target -> keys it must receive; per source in send order, sources one after another."""
    out: dict[str, list[tuple[str, str]]] = {}
    for s in sources:
        for t, keys in expected_deliveries(table, s.sender, s.sent_log).items():
            out.setdefault(t, []).extend(keys)
    return out


def assert_exact(t: TargetSimulator, want: list[tuple[str, str]]) -> None:
    """Exactly the expected set, each source's messages in send order, gapless, nothing
    repeated without PossDupFlag, no format problem."""
    assert t.error is None, t.error
    assert t.format_errors == [], t.format_errors[:5]
    assert t.unflagged_duplicates == 0, t.stats()
    got = set(t.delivered)
    assert len(got) == len(want)
    missing, extra = set(want) - got, got - set(want)
    assert not missing and not extra, (sorted(missing)[:5], sorted(extra)[:5])
    for src in {k[0] for k in want}:
        assert t.keys_from(src) == [k for k in want if k[0] == src], f"{src}: order differs"
    assert not [k for k in t.counters if k.startswith("decode_error")], t.counters
    assert t.counters["seq_too_low"] == 0


async def run_until_all(t: TargetSimulator, n: int, timeout: float = 15.0,
                        settle: float = 5.0, **kw: Any) -> dict[str, Any]:
    """Receive until ``n`` unique messages came, then 0.3 s more to catch anything extra: the
    target quiet, logged on and without a gap, within ``settle`` seconds."""
    await t.run(count=n, timeout=timeout, logout=False, **kw)
    return await t.run(idle=0.3, timeout=settle)


async def wait_for(pred, timeout: float = 10.0, step: float = 0.02) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(step)
