"""Encrypted key store: format, integrity, master key handling, atomic writes, locking."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from dcgateway import fsutil as _fsutil
from dcgateway.auth.keystore import MAGIC, KeyRecord, KeyStore
from dcgateway.errors import KeyStoreCorrupt, KeyStoreError, WrongMasterKey

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=timezone.utc)
REPO = Path(__file__).resolve().parents[2]


def _fill(manager, n=2):
    return [manager.create(sid, now=NOW) for sid in ("ABC", "ABD", "CLR", "XYZ")[:n]]


def test_missing_store_is_empty_and_creates_nothing(store, paths):
    assert store.load() == {}
    assert store.snapshot() == {}
    assert not paths.store.exists()


def test_master_key_created_0600_on_first_write(manager, paths):
    _fill(manager, 1)
    st = os.stat(paths.master)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert len(base64.urlsafe_b64decode(paths.master.read_bytes().strip())) == 32
    assert stat.S_IMODE(os.stat(paths.store).st_mode) == 0o600


def test_store_is_encrypted_at_rest(manager, paths):
    (rec,) = _fill(manager, 1)
    blob = paths.store.read_bytes()
    assert blob.startswith(MAGIC + b"\x01")
    for needle in (rec.secret_key, rec.access_key_id, "ABC", "secret_key"):
        assert needle.encode() not in blob


def test_round_trip(manager, store):
    recs = _fill(manager, 3)
    loaded = store.load()
    assert list(loaded) == [r.access_key_id for r in recs]
    assert list(loaded.values()) == recs


def test_flipped_byte_in_ciphertext_is_corrupt(manager, store, paths):
    _fill(manager)
    blob = bytearray(paths.store.read_bytes())
    blob[-5] ^= 0x01
    paths.store.write_bytes(bytes(blob))
    with pytest.raises(KeyStoreCorrupt) as e:
        store.load()
    assert str(paths.store) in str(e.value)


def test_every_flipped_byte_is_detected(manager, store, paths):
    _fill(manager)
    original = paths.store.read_bytes()
    for i in range(len(original)):
        blob = bytearray(original)
        blob[i] ^= 0x80
        paths.store.write_bytes(bytes(blob))
        with pytest.raises(KeyStoreError) as e:
            store.load()
        # bytes 9..16 are the master-key check: altering them reads as another master key
        expected = WrongMasterKey if 9 <= i < 17 else KeyStoreCorrupt
        assert type(e.value) is expected, (i, e.value)


@pytest.mark.parametrize("keep", [0, 5, 20, 40, -1])
def test_truncated_store_is_corrupt(manager, store, paths, keep):
    _fill(manager)
    blob = paths.store.read_bytes()
    paths.store.write_bytes(blob[:keep] if keep >= 0 else blob[:len(blob) // 2])
    with pytest.raises(KeyStoreCorrupt) as e:
        store.load()
    assert str(paths.store) in str(e.value)


def test_garbage_file_is_corrupt(store, paths):
    paths.store.parent.mkdir(parents=True)
    paths.store.write_bytes(os.urandom(300))
    with pytest.raises(KeyStoreCorrupt):
        store.load()


def test_wrong_master_key(manager, store, paths):
    _fill(manager)
    other = base64.urlsafe_b64encode(os.urandom(32))
    paths.master.write_bytes(other + b"\n")
    with pytest.raises(WrongMasterKey) as e:
        store.load()
    msg = str(e.value)
    assert str(paths.master) in msg and str(paths.store) in msg
    assert other.decode() not in msg


def test_missing_master_key_with_existing_store_is_refused(manager, store, paths):
    _fill(manager)
    paths.master.unlink()
    with pytest.raises(WrongMasterKey) as e:
        store.load()
    assert str(paths.master) in str(e.value)
    with pytest.raises(WrongMasterKey):
        manager.create("ABC", now=NOW)
    assert not paths.master.exists()              # no new key minted that cannot open the store


def test_master_key_file_not_a_key(manager, store, paths):
    _fill(manager)
    paths.master.write_text("not a key at all\n")
    with pytest.raises(KeyStoreError) as e:
        store.load()
    assert str(paths.master) in str(e.value)


def test_failed_write_leaves_old_store_readable(manager, store, paths, monkeypatch):
    before = _fill(manager)

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_fsutil, "replace", boom)
    with pytest.raises(OSError):
        manager.create("CLR", now=NOW)
    monkeypatch.undo()
    assert list(store.load().values()) == before
    leftovers = [p.name for p in paths.data_dir.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_exception_inside_transaction_writes_nothing(manager, store, paths):
    _fill(manager)
    blob = paths.store.read_bytes()
    with pytest.raises(RuntimeError):
        with store.transaction() as records:
            records.clear()
            raise RuntimeError("abort")
    assert paths.store.read_bytes() == blob


def test_snapshot_rereads_only_on_change(manager, store):
    _fill(manager, 1)
    first = store.snapshot()
    assert store.snapshot() is first
    manager.create("ABD", now=NOW)
    second = store.snapshot()
    assert second is not first and len(second) == 2


def test_record_repr_hides_secret(manager, store):
    (rec,) = _fill(manager, 1)
    assert rec.secret_key not in repr(rec)
    assert rec.secret_key not in str(rec)
    assert rec.secret_key not in repr(store.load())
    assert rec.secret_key not in repr(store)


def test_concurrent_cli_processes_do_not_lose_updates(paths):
    code = ("import sys; from dcgateway.auth import open_key_manager; "
            "m = open_key_manager(sys.argv[1], sys.argv[2], sys.argv[3]); "
            "[m.create(f'{sys.argv[4]}{i}', who='p') for i in range(6)]")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, "-c", code, str(paths.store), str(paths.master),
                               str(paths.audit), sid], env=env)
             for sid in ("AAA", "BBB", "CCC", "DDD")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    records = KeyStore(paths.store, paths.master).load()
    assert sorted(r.session_id for r in records.values()) == sorted(
        f"{p}{i}" for p in ("AAA", "BBB", "CCC", "DDD") for i in range(6))
    lines = paths.audit.read_text().splitlines()
    assert sum(json.loads(x)["action"] == "create" for x in lines) == 24


def test_keyrecord_status():
    rec = KeyRecord("A" * 20, "ABC", "s" * 43, NOW, datetime(2027, 3, 1, 22, tzinfo=timezone.utc))
    assert rec.status(NOW) == "active"
    assert rec.status(rec.expires) == "expired"
    assert rec.info(NOW).to_json()["status"] == "active"
    assert "secret_key" not in rec.info(NOW).to_json()
