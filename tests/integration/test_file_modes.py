"""Everything the gateway creates under data_dir is private to its user (files 0600, directories
0700) whatever the process umask and whichever path creates it: the journal, its index, session
stores (including the fresh one written by a sequence reset), the key store, port closures, the
status file and the audit logs."""

from __future__ import annotations

import os

import pytest

from simulators.fixclient import get
from tests.fsmodes import loose_modes

from .conftest import write_config

pytestmark = pytest.mark.asyncio


@pytest.fixture
def permissive_umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


async def test_data_dir_is_private_after_logons_and_a_sequence_reset(tmp_path, start_gateway,
                                                                     permissive_umask):
    folder = tmp_path / "gw"
    write_config(folder)
    (folder / "groups.yaml").write_text(
        "groups:\n  - {entity: CLEARCO, name: all, front_end: fix, filters: {categories: "
        "[execution, acknowledgment, order]}, sources: [ABC123N], targets: [CLRFIX44]}\n")
    gw = await start_gateway(folder)
    source, target = gw.client("ABC123N"), gw.client("CLRFIX44")
    assert get(await source.logon(), 35) == "A"
    assert get(await target.logon(), 35) == "A"
    await target.logout()
    await target.close()
    again = gw.client("CLRFIX44")
    assert get(await again.logon(reset=True), 35) == "A"       # 141=Y: a fresh session store
    bad = gw.client("ABD123N", signer=lambda header, body: [(354, 20), (355, "X" * 20)])
    assert get(await bad.logon(), 35) == "5"                   # an audited refusal, closures file
    await bad.close()
    await again.logout()
    await again.close()
    await source.logout()
    await source.close()
    await gw.stop()
    assert loose_modes(folder / "var") == []
