"""``sessions list`` and ``replay`` in a cluster read the serving node's files (each node keeps
its own session files and copy of the journal under ``data_dir/NODE_ID``), say which node's
they read, and take ``--node ID``; they never claim that nothing runs while a node serves."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dcgateway.cluster.natslocal import LocalNatsCluster
from dcgateway.state import STATUS_FILE_NAME

from .support import cluster_config, run_cli


@pytest.fixture
def config_path(tmp_path: Path, nats_cluster: LocalNatsCluster) -> Path:
    return cluster_config(tmp_path, nats_cluster.urls, nodes=3)


def serving(config_path: Path, node: str, sequences: dict[str, list[int]]) -> None:
    """The status file a serving node keeps (this test's process stands in for it: alive)."""
    folder = config_path.parent / "var" / node
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STATUS_FILE_NAME).write_text(json.dumps({
        "pid": os.getpid(), "port": 1, "connected": {"CLRFIX44": 1.0},
        "sequences": sequences, "sessions": [], "groups": {}}))


def test_sessions_list_shows_the_serving_nodes_sessions(config_path: Path) -> None:
    serving(config_path, "n2", {"CLRFIX44": [3, 238]})
    done = run_cli("sessions", "list", "--json", config=config_path)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    row = next(r for r in doc["sessions"] if r["comp_id"] == "CLRFIX44")
    assert doc["node"] == "n2" and doc["gateway_running"] is True
    assert row["connected"] is True and (row["next_in"], row["next_out"]) == (3, 238)
    text = run_cli("sessions", "list", config=config_path).stdout
    assert "(node n2 serves them)" in text and "not running" not in text
    other = json.loads(run_cli("sessions", "list", "--json", "--node", "n1",
                               config=config_path).stdout)
    assert other["node"] == "n1" and other["gateway_running"] is False
    text = run_cli("sessions", "list", "--node", "n1", config=config_path).stdout
    assert "(node n1 does not serve them now" in text and "no node" not in text


def test_replay_reads_a_nodes_journal_and_names_it(config_path: Path) -> None:
    serving(config_path, "n3", {})
    done = run_cli("replay", "--target", "CLRFIX44", "--from-seq", "1", "--to-seq", "2",
                   config=config_path)
    assert done.returncode == 0 and "journal of node n3" in done.stdout, done.stderr
    wrong = run_cli("replay", "--target", "CLRFIX44", "--from-seq", "1", "--node", "n9",
                    config=config_path)
    assert wrong.returncode == 2 and "expected one of n1, n2, n3" in wrong.stderr
