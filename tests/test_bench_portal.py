"""benchmarks/portal.py: the config it runs the gateway and the portal on, and its percentile
(the benchmark itself starts processes and takes minutes: run it by hand)."""

from __future__ import annotations

from benchmarks.fanout import ADMIN, SOURCE, target_ids
from benchmarks.portal import ENTITY, gateway_config, pct
from dcgateway.config import load_config


def test_the_config_is_the_fanout_one_with_a_portal_and_resets_on_logon(tmp_path):
    (tmp_path / "keys").mkdir()
    cfg = load_config(gateway_config(tmp_path / "gw", tmp_path, 3))
    assert [s.comp_id for s in cfg.sessions] == [SOURCE, *target_ids(3)]
    assert all(s.reset_on_logon and s.begin_string == "FIX.4.2" for s in cfg.sessions)
    assert cfg.portal is not None and cfg.portal.listen.port == 0
    entity = next(e for e in cfg.entities if e.name == ENTITY)
    assert entity.administers(ADMIN)
    assert [g.targets for g in cfg.groups] == [tuple(target_ids(3))]


def test_pct_is_nearest_rank():
    assert pct([], 0.5) is None
    assert pct([3.0, 1.0, 2.0], 0.5) == 2.0
    assert pct([float(i) for i in range(1, 101)], 0.99) == 100.0
