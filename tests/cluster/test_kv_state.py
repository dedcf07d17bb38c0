"""The state store in the cluster's key-value buckets: what one process changes (groups, key
pairs, port closures, portal users) every other process sees within a second; a process that
opens the store later reads the current state; key pairs stay encrypted in NATS; concurrent
changes never overwrite each other; the CLI writes there in cluster mode."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dcgateway.cluster.kvstate import KEYS_KEY
from dcgateway.cluster.natslocal import LocalNatsCluster
from dcgateway.config import load_config
from dcgateway.errors import KeyStoreError
from dcgateway.state import StateStore, open_state

from .support import cluster_config, run_cli, wait_until

#: The promise is "within a second" (a watcher pushes every change, typically in milliseconds);
#: the bound leaves room for a machine busy with other jobs.
FOLLOW_S = 2.0
NEW_GROUP = {"entity": "CLEARCO", "name": "acks", "front_end": "fix",
             "filters": {"categories": ["acknowledgment"]}, "sources": ["ABD123N"],
             "targets": ["CLRFIX44"]}


@pytest.fixture
def config_path(tmp_path: Path, nats_cluster: LocalNatsCluster) -> Path:
    return cluster_config(tmp_path, nats_cluster.urls)


@pytest.fixture
def two(config_path: Path) -> Iterator[tuple[StateStore, StateStore]]:
    config = load_config(config_path)
    a = open_state(config)
    b = open_state(config)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_groups_seeded_from_the_file_and_followed_everywhere(two) -> None:
    a, b = two
    assert [g.name for g in a.groups.current()] == ["all", "fills"]
    sig = b.groups.signature()
    t0 = time.monotonic()
    a.groups.create(NEW_GROUP, actor="carl")
    wait_until(lambda: b.groups.signature() != sig, FOLLOW_S, what="the other process sees it")
    assert time.monotonic() - t0 < FOLLOW_S
    assert [g.name for g in b.groups.current()] == ["all", "fills", "acks"]
    b.groups.delete("CLEARCO", "fills", actor=None)
    wait_until(lambda: [g.name for g in a.groups.current()] == ["all", "acks"], FOLLOW_S)


def test_a_process_started_later_reads_the_current_state(config_path: Path, two) -> None:
    a, _ = two
    a.groups.create(NEW_GROUP, actor=None)
    a.closures.lock("ABC123N", now=time.time(), reason="bad_signature")
    later = open_state(load_config(config_path))
    try:
        assert "acks" in [g.name for g in later.groups.current()]
        assert later.closures.is_locked("ABC123N")
    finally:
        later.close()


def test_an_invalid_group_is_refused_whole(two) -> None:
    a, b = two
    from dcgateway.errors import ConfigError
    with pytest.raises(ConfigError, match="refused"):
        a.groups.create({**NEW_GROUP, "targets": ["NOPE"]}, actor=None)
    assert [g.name for g in b.groups.current()] == ["all", "fills"]


def test_key_pairs_are_shared_and_encrypted_in_nats(two) -> None:
    a, b = two
    rec = a.keys.create("ABC", who="test")
    wait_until(lambda: rec.access_key_id in b.keys.store.snapshot(), FOLLOW_S,
               what="the key pair on the other process")
    assert b.keys.store.snapshot()[rec.access_key_id].secret_key == rec.secret_key
    raw = a.keys.store.mirror.fetch("keys", KEYS_KEY)[0]
    assert rec.secret_key.encode() not in raw and rec.access_key_id.encode() not in raw
    assert raw.startswith(b"DCGWKEYS")
    a.keys.delete(rec.access_key_id, who="test")
    wait_until(lambda: b.keys.store.snapshot()[rec.access_key_id].deleted is not None, FOLLOW_S)


def test_concurrent_key_changes_never_overwrite_each_other(two) -> None:
    a, b = two
    a.keys.create("ABC", who="test")
    with pytest.raises(KeyStoreError, match="changed meanwhile"):
        with a.keys.store.transaction() as records:
            b.keys.create("ABD", who="test")       # lands while a's change is open
            records.clear()
    assert len(b.keys.store.load()) == 2


def test_port_closures_and_users(two) -> None:
    a, b = two
    a.closures.lock("ABC123N", now=time.time(), reason="bad_signature")
    wait_until(lambda: b.closures.is_locked("ABC123N"), FOLLOW_S)
    assert b.closures.unlock("ABC123N") is True
    wait_until(lambda: not a.closures.is_locked("ABC123N"), FOLLOW_S)
    assert a.users is not None and b.users is not None
    a.users.update("carl", lambda r: r.__class__(**{**r.to_doc(), "failures": (1.0,),
                                                     "name": "carl"}))
    wait_until(lambda: b.users.get("carl") is not None, FOLLOW_S)
    sealed = a.users.seal("carl", "totp-secret")
    assert b.users.unseal("carl", sealed) == "totp-secret"


def test_the_cli_changes_the_cluster(config_path: Path, two) -> None:
    a, _ = two
    r = run_cli("groups", "create", "--entity", "CLEARCO", "--name", "acks", "--front-end", "fix",
                "--filter", "categories=acknowledgment", "--source", "ABD123N",
                "--target", "CLRFIX44", "--json", config=config_path)
    assert r.returncode == 0, r.stderr
    wait_until(lambda: "acks" in [g.name for g in a.groups.current()], FOLLOW_S)
    r = run_cli("groups", "list", "--json", config=config_path)
    assert [g["name"] for g in json.loads(r.stdout)["groups"]] == ["all", "fills", "acks"]
    before = (config_path.parent / "groups.yaml").read_bytes()
    r = run_cli("groups", "delete", "acks", config=config_path)      # the text names the store
    assert r.returncode == 0 and "from the cluster " in r.stdout, r.stderr
    assert "groups.yaml is not changed" in r.stdout
    assert (config_path.parent / "groups.yaml").read_bytes() == before
    r = run_cli("keys", "create", "--session-id", "ABC", "--json", config=config_path)
    assert r.returncode == 0, r.stderr
    key_id = json.loads(r.stdout)["access_key_id"]
    wait_until(lambda: key_id in a.keys.store.snapshot(), FOLLOW_S)
    a.closures.lock("CLR001N", now=time.time(), reason="bad_signature")
    r = run_cli("sessions", "unlock", "CLR001N", "--json", config=config_path)
    assert r.returncode == 0 and json.loads(r.stdout)["was_locked"] is True, r.stderr
    wait_until(lambda: not a.closures.is_locked("CLR001N"), FOLLOW_S)


def test_a_command_run_before_any_node_does_not_seed_the_groups(config_path: Path) -> None:
    """``keys create`` is what an operator runs first on a new cluster (nobody logs on without
    a key); it does not read the groups file, so it must leave the groups bucket empty for the
    first process that does to seed it from the file (else every node would route nothing)."""
    r = run_cli("keys", "create", "--session-id", "ABC", "--json", config=config_path)
    assert r.returncode == 0, r.stderr
    r = run_cli("sessions", "list", "--json", config=config_path)
    assert r.returncode == 0, r.stderr
    state = open_state(load_config(config_path))
    try:
        assert [g.name for g in state.groups.current()] == ["all", "fills"]
    finally:
        state.close()


def test_cluster_status_without_nodes(config_path: Path, two) -> None:
    r = run_cli("cluster", "status", "--json", config=config_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["primary"] is None and [n["alive"] for n in doc["nodes"]] == [False, False]
    assert doc["stream"].get("missing") is True
    r = run_cli("cluster", "status", config=config_path)
    assert "not created yet" in r.stdout and "served by no node" in r.stdout


def test_invalid_logons_are_counted_across_the_cluster(two) -> None:
    """Three tries on one node and two on another close the port (a standby checks Logons
    too: counted per node, an attacker would get four tries per node); an accepted Logon on
    either clears the count everywhere."""
    a, b = two
    t = time.time()

    def recorded(store, other, n: int) -> bool:    # other's tries reached store's mirror
        key = f"invalid.ABC123N.{other.closures.writer}"
        got = store.closures.mirror.items("closures").get(key)
        return got is not None and len(json.loads(got[0])["failures"]) == n
    assert [a.closures.count_invalid("ABC123N", t + i, 60) for i in range(3)] == [1, 2, 3]
    wait_until(lambda: recorded(b, a, 3), FOLLOW_S)
    assert [b.closures.count_invalid("ABC123N", t + 3 + i, 60) for i in range(2)] == [4, 5]
    assert a.closures.count_invalid("ABD123N", t + 5, 60) == 1     # per session
    wait_until(lambda: recorded(a, b, 2), FOLLOW_S)
    a.closures.clear_invalid("ABC123N", t + 6)              # a Logon accepted on a

    def cleared() -> bool:
        got = b.closures.mirror.items("closures").get(f"invalid.ABC123N.{a.closures.writer}")
        return got is not None and json.loads(got[0])["cleared"] == t + 6
    wait_until(cleared, FOLLOW_S)
    assert b.closures.count_invalid("ABC123N", t + 7, 60) == 1
    assert b.closures.count_invalid("ABC123N", t + 100, 60) == 1   # older than the window
