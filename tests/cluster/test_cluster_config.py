"""The ``cluster:`` section: the contract's example loads as written, every problem names file,
line and path, ``--node`` picks the node's addresses and puts its files under data_dir/<node>,
and the local NATS cluster the tests and the demo use starts and stops cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest

from dcgateway.cluster.natslocal import LocalNatsCluster
from dcgateway.cluster.nodeconfig import for_node
from dcgateway.config import HostPort, load_config
from dcgateway.errors import ConfigError

from .conftest import needs_nats
from .support import cluster_config

CONTRACT_EXAMPLE = """
cluster:
  nats:
    servers: [nats://127.0.0.1:4222, nats://127.0.0.1:4223, nats://127.0.0.1:4224]
    # creds_file, tls: optional, for a secured NATS
  replicas: 3                 # JetStream replicas of every stream and bucket the gateway creates
  lease_s: 5                  # a session whose node stops renewing is free after this
  nodes:                      # every gateway node; clients are told these addresses, in this order
    - {node_id: n1, listen: {host: 127.0.0.1, port: 9878}, metrics: {host: 127.0.0.1, port: 9100}}
    - {node_id: n2, listen: {host: 127.0.0.1, port: 9879}, metrics: {host: 127.0.0.1, port: 9101}}
"""


def _with_cluster(tmp_path: Path, section: str) -> Path:
    path = cluster_config(tmp_path, ["nats://127.0.0.1:4222"])
    text = path.read_text()
    path.write_text(text[:text.index("\ncluster:")] + "\n" + section.lstrip("\n"))
    return path


def test_contract_example_loads(tmp_path: Path) -> None:
    config = load_config(_with_cluster(tmp_path, CONTRACT_EXAMPLE))
    c = config.cluster
    assert c is not None
    assert c.nats.servers == ("nats://127.0.0.1:4222", "nats://127.0.0.1:4223",
                              "nats://127.0.0.1:4224")
    assert (c.replicas, c.lease_s, c.name, c.node_id) == (3, 5, "dcgw", None)
    assert [n.node_id for n in c.nodes] == ["n1", "n2"]
    assert str(c.nodes[1].listen) == "127.0.0.1:9879"


def test_without_cluster_nothing_changes(tmp_path: Path) -> None:
    path = _with_cluster(tmp_path, "")
    assert load_config(path).cluster is None


def test_for_node_takes_addresses_and_puts_files_under_the_node(tmp_path: Path) -> None:
    config = load_config(_with_cluster(tmp_path, CONTRACT_EXAMPLE))
    n2 = for_node(config, "n2")
    assert n2.gateway.listen == HostPort("127.0.0.1", 9879)
    assert n2.gateway.metrics == HostPort("127.0.0.1", 9101)
    assert n2.gateway.data_dir == config.gateway.data_dir / "n2"
    assert n2.gateway.keystore == config.gateway.keystore
    assert n2.cluster is not None and n2.cluster.node_id == "n2"
    with pytest.raises(ConfigError, match="no node 'n3'; expected one of n1, n2"):
        for_node(config, "n3")


def test_for_node_without_a_cluster_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no cluster: section"):
        for_node(load_config(_with_cluster(tmp_path, "")), "n1")


BAD_CASES = [
    ("cluster:\n  nats: {servers: [http://x:1]}\n  nodes: []\n",
     ["cluster.nats.servers[0]: 'http://x:1' is not valid; expected a NATS URL",
      "cluster.nodes: empty list"]),
    ("cluster:\n  nats: {servers: [nats://a:1]}\n  replicas: 7\n  nodes:\n"
     "    - {node_id: n1, listen: {host: h, port: 1}, metrics: {host: h, port: 2}}\n",
     ["cluster.replicas: '7' is out of range; expected a whole number from 1 to 5"]),
    ("cluster:\n  nats: {servers: [nats://a:1]}\n  nodes:\n"
     "    - {node_id: n1, listen: {host: h, port: 1}, metrics: {host: h, port: 2}}\n"
     "    - {node_id: n1, listen: {host: h, port: 1}, metrics: {host: h, port: 3}}\n",
     ["cluster.nodes[1].node_id: 'n1' is already used by cluster.nodes[0]",
      "cluster.nodes[1].listen: h:1 is already used by cluster.nodes[0].listen"]),
    ("cluster:\n  nats: {servers: [nats://a:1]}\n  lease: 5\n  nodes:\n"
     "    - {node_id: n1, listen: {host: h, port: 1}, metrics: {host: h, port: 2}}\n",
     ["cluster.lease: unknown key 'lease' (did you mean 'lease_s'?)"]),
    ("cluster:\n  replicas: 3\n",
     ["cluster.nats: missing", "cluster.nodes: missing"]),
]


@pytest.mark.parametrize("section, expected", BAD_CASES)
def test_problems_name_file_line_and_path(tmp_path: Path, section: str,
                                          expected: list[str]) -> None:
    path = _with_cluster(tmp_path, section)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = "\n".join(info.value.problems)
    for e in expected:
        assert e in text, text
    assert all(p.startswith(f"{path}:") for p in info.value.problems)


@needs_nats
def test_local_nats_cluster_starts_answers_and_stops(tmp_path: Path) -> None:
    cluster = LocalNatsCluster(tmp_path)
    try:
        cluster.start(timeout=60)
        assert all(s.running for s in cluster.servers)
        cluster.kill_server(1)
        assert not cluster.servers[1].running
        cluster.start_server(1)
        cluster.wait_ready(60)
        assert cluster.servers[1].running
    finally:
        cluster.stop()
    assert not any(s.running for s in cluster.servers)


def _creds(seed: bytes) -> str:
    """A credentials file as ``nsc generate creds`` writes it (the JWT is only carried)."""
    return ("-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QifQ.eyJzdWIiOiJVIn0.c2ln\n"
            "------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n\n"
            "-----BEGIN USER NKEY SEED-----\n" + seed.decode() + "\n"
            "------END USER NKEY SEED------\n")


def _user_seed() -> bytes:
    import nkeys
    return bytes(nkeys.encode_seed(bytes(range(32)), nkeys.PREFIX_BYTE_USER))


_NOT_ALONE = "is not the {} alone (no blank line, spaces or carriage return)"


@pytest.mark.parametrize("content, problem", [
    ("x\n", "it has no BEGIN NATS USER JWT line"),
    (_creds(b"SUAAAA"), "its user NKey seed is not valid"),
    # what the NATS client would read wrongly (it takes the next line less its last byte)
    (_creds(_user_seed()).replace("\n", "\r\n"), _NOT_ALONE.format("user JWT")),
    (_creds(_user_seed()).replace("SEED-----\n", "SEED-----\n\n"),
     _NOT_ALONE.format("user NKey seed")),
    (_creds(_user_seed()).replace("SEED-----\nSU", "SEED-----\n  SU"),
     _NOT_ALONE.format("user NKey seed")),
    (_creds(_user_seed()).split("------END USER")[0].rstrip("\n"),
     _NOT_ALONE.format("user NKey seed")),                    # no line feed after the seed
])
def test_creds_file_must_be_nats_credentials(tmp_path: Path, content: str, problem: str) -> None:
    """creds_file is checked where its file and line can be named: a file that is not NATS
    credentials, or whose seed is not a valid user NKey, is a configuration error, not a
    failure at the first connection."""
    section = CONTRACT_EXAMPLE.replace("    # creds_file, tls: optional, for a secured NATS",
                                       "    creds_file: nats.creds")
    path = _with_cluster(tmp_path, section)
    (tmp_path / "nats.creds").write_text(content)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    text = str(exc.value)
    assert f"{path}:" in text and "cluster.nats.creds_file" in text and problem in text, text


@needs_nats
def test_creds_file_is_used_to_connect(tmp_path: Path, nats_cluster: LocalNatsCluster) -> None:
    """A valid credentials file loads and the NATS client connects with it (its nkeys extra
    installed: without it every connection failed with "No module named 'nkeys'"). This NATS
    does not ask for authentication; the client still reads and prepares the seed."""
    from .support import run_cli
    path = cluster_config(tmp_path, nats_cluster.urls)
    text = path.read_text()
    path.write_text(text.replace(f"    servers: [{', '.join(nats_cluster.urls)}]",
                                 f"    servers: [{', '.join(nats_cluster.urls)}]\n"
                                 "    creds_file: nats.creds"))
    (tmp_path / "nats.creds").write_text(_creds(_user_seed()))
    assert load_config(path).cluster.nats.creds_file == tmp_path / "nats.creds"
    r = run_cli("cluster", "status", config=path)
    assert r.returncode == 0 and "nkeys" not in r.stderr, (r.stdout, r.stderr)
