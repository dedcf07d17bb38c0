"""The state store in the cluster: groups, key pairs, port closures and portal users in JetStream
key-value buckets (:class:`~.kvmirror.KvMirror`), behind the same interfaces as the files
(:mod:`dcgateway.state.base`), so the CLI, the portal and every node change and follow one state.

* **groups**: one key, the whole groups document (JSON, ``groups.yaml``'s shape), validated
  whole on every change and written compare-and-set, exactly the file store's read-modify-write
  under a lock. An empty bucket is seeded from the groups file, so a cluster starts with the
  groups the configuration names and a node that starts later reads what was changed since.
* **keys**: one key holding the key store *encrypted as the file is* (AES-256-GCM under the
  master key, the same header and key check): a secret never reaches NATS in clear, and the
  master key file every node has opens it. An empty bucket is seeded from the local key store
  file when there is one.
* **closures**: one key, ``{"locked": {comp_id: {since, reason}}}``.
* **users**: one key per portal user (its name), the record's JSON: password hashes and sealed
  second factors only, as in the file.

The audit trail stays an append-only file per process (``data_dir``): it records, it is not
shared state anyone reads back to decide.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..auth.keystore import FORMAT_VERSION, MAGIC, KeyRecord, KeyStore, _key_check
from ..config import GatewayConfig, GroupDef, group_to_data, groups_from_data
from ..errors import ConfigError, KeyStoreError
from ..fsutil import stat_signature
from ..state.base import AuditSink
from ..state.groups import FileGroupStore
from ..state.users import SecretBox, UserRecord
from .connect import subject_token
from .kvmirror import Conflict, KvMirror

log = logging.getLogger("dcgateway.cluster")

STATE_BUCKETS = ("groups", "keys", "closures", "users")
GROUPS_KEY = "groups"
KEYS_KEY = "store"
CLOSURES_KEY = "locked"
#: keys ``invalid.<comp_id>.<writer>`` of the closures bucket: each process's invalid Logons
INVALID_PREFIX = "invalid"
#: compare-and-set attempts of a read-modify-write before giving up
CAS_ATTEMPTS = 20


class ClusterGroupStore(FileGroupStore):
    """:class:`~dcgateway.state.base.GroupStore` on the groups bucket (module docstring)."""

    def __init__(self, config: GatewayConfig, audit: AuditSink, mirror: KvMirror) -> None:
        super().__init__(config, audit)
        self.mirror = mirror
        self._cache: tuple[int, tuple[GroupDef, ...]] = (-1, ())

    def seed(self) -> None:
        """An empty bucket gets the groups of the groups file (the first process wins); never
        from a configuration loaded without them (a ``keys`` or ``sessions`` command run before
        the first node starts would seed the cluster with no groups at all)."""
        if not self.config.groups_loaded or self.mirror.get("groups", GROUPS_KEY) is not None:
            return
        try:
            self.mirror.write("groups", GROUPS_KEY, _groups_doc(self.config.groups), None)
            log.info("cluster groups seeded from %s (%d groups)", self.path,
                     len(self.config.groups))
        except Conflict:
            pass

    def current(self) -> tuple[GroupDef, ...]:
        got = self.mirror.get("groups", GROUPS_KEY)
        if got is None:
            return ()
        value, rev = got
        if self._cache[0] != rev:
            self._cache = (rev, self._parse(value))
        return self._cache[1]

    def _parse(self, value: bytes) -> tuple[GroupDef, ...]:
        data = json.loads(value)["groups"]
        return groups_from_data(data, self.config.sessions, self.config.entities)

    def signature(self) -> Hashable:
        got = self.mirror.get("groups", GROUPS_KEY)
        return None if got is None else got[1]

    def _change(self, edit: Any) -> tuple[GroupDef, ...]:
        for _ in range(CAS_ATTEMPTS):
            got = self.mirror.fetch("groups", GROUPS_KEY)
            current = [group_to_data(g) for g in self._parse(got[0])] if got else []
            data = edit(current)
            try:
                groups = groups_from_data(data, self.config.sessions, self.config.entities)
            except ConfigError as exc:
                raise ConfigError([f"refused: {p}" for p in exc.problems]) from None
            try:
                self.mirror.write("groups", GROUPS_KEY, _groups_doc(groups),
                                  got[1] if got else None)
                return groups
            except Conflict:
                continue
        raise Conflict("the groups kept changing meanwhile; try again")


def _groups_doc(groups: tuple[GroupDef, ...]) -> bytes:
    return json.dumps({"groups": [group_to_data(g) for g in groups]}).encode()


class ClusterKeyStore(KeyStore):
    """The key store's encrypted document in the keys bucket (module docstring). Reads come
    from the mirror (a Logon costs no network round trip); a transaction reads the cluster's
    current value and writes compare-and-set."""

    def __init__(self, mirror: KvMirror, file_path: Path, master_key_file: Path) -> None:
        super().__init__(Path(f"nats:{mirror.names.bucket('keys')}"), master_key_file)
        self.mirror = mirror
        self.file_path = file_path
        self._sig: tuple[int, Any] | None = None

    def __repr__(self) -> str:
        return f"ClusterKeyStore({self.mirror.names.bucket('keys')!r})"

    def seed(self) -> None:
        """An empty bucket gets the local key store file's document as it is (same format)."""
        if self.mirror.get("keys", KEYS_KEY) is not None or not self.file_path.is_file():
            return
        try:
            self.mirror.write("keys", KEYS_KEY, self.file_path.read_bytes(), None)
            log.info("cluster key store seeded from %s", self.file_path)
        except Conflict:
            pass

    def ensure_master_key(self) -> bool:
        if self.master_key_file.exists() or self.mirror.get("keys", KEYS_KEY) is None:
            return super().ensure_master_key() if not self.master_key_file.exists() else False
        raise self._missing_master_error()

    def _records(self, blob: bytes | None) -> dict[str, KeyRecord]:
        if blob is None:
            return {}
        self._check_frame(blob)
        return self._parse(self._decrypt(blob, self._master_key()))

    def load(self) -> dict[str, KeyRecord]:
        got = self.mirror.fetch("keys", KEYS_KEY)
        return self._records(got[0] if got else None)

    def snapshot(self) -> Mapping[str, KeyRecord]:
        got = self.mirror.get("keys", KEYS_KEY)
        sig = (got[1] if got else 0, stat_signature(self.master_key_file))
        if sig != self._sig:
            try:
                self._cache = MappingProxyType(self._records(got[0] if got else None))
                self._cache_error = None
            except KeyStoreError as e:
                self._cache, self._cache_error = None, e
            self._sig = sig
        if self._cache_error is not None:
            raise type(self._cache_error)(str(self._cache_error))
        assert self._cache is not None
        return self._cache

    def _seal(self, records: Any) -> bytes:
        from ..auth.keystore import _record_to_doc
        master = self._master_key()
        doc = {"format": "dcgateway-keystore", "version": 1,
               "keys": [_record_to_doc(r) for r in records]}
        plaintext = json.dumps(doc, separators=(",", ":")).encode()
        header = MAGIC + bytes([FORMAT_VERSION]) + _key_check(master)
        nonce = secrets.token_bytes(12)
        return header + nonce + AESGCM(master).encrypt(nonce, plaintext, header)

    def save(self, records: Any) -> None:
        got = self.mirror.fetch("keys", KEYS_KEY)
        self.ensure_master_key()
        self.mirror.write("keys", KEYS_KEY, self._seal(records), got[1] if got else None)

    @contextmanager
    def transaction(self) -> Iterator[dict[str, KeyRecord]]:
        """Read-modify-write compare-and-set: a concurrent change makes this one fail with
        a message to try again (it never overwrites the other)."""
        self.ensure_master_key()
        got = self.mirror.fetch("keys", KEYS_KEY)
        records = self._records(got[0] if got else None)
        before = dict(records)
        yield records
        if records != before:
            try:
                self.mirror.write("keys", KEYS_KEY, self._seal(records.values()),
                                  got[1] if got else None)
            except Conflict:
                raise KeyStoreError("the key store changed meanwhile (another administrator?); "
                                    "nothing was changed, try again") from None


class ClusterClosures:
    """:class:`~dcgateway.state.base.ClosureStore` on the closures bucket."""

    def __init__(self, mirror: KvMirror, writer: str | None = None) -> None:
        self.mirror = mirror
        #: this process's key for its invalid Logons (see :meth:`count_invalid`): the node's
        #: ID, so that a restarted node goes on with its own key (the bucket holds one per
        #: node and session); a process that is no node (a command) never counts Logons
        self.writer = subject_token(writer) if writer else "p" + secrets.token_hex(4)
        self._mine: dict[str, dict[str, Any]] = {}

    def __repr__(self) -> str:
        return f"ClusterClosures({self.mirror.names.bucket('closures')!r})"

    # -- invalid Logons, counted across the cluster --------------------------------------------

    def count_invalid(self, comp_id: str, now: float, window_s: float) -> int:
        """This invalid Logon of ``comp_id`` and the others within ``window_s`` seconds, on
        every node: the fifth closes the port wherever the tries were spread (a standby
        checks Logons too). Each process keeps its own under its own key
        (``invalid.<comp_id>.<writer>``: a plain put, no read-modify-write to contend on),
        written in the background so that a slow NATS never holds the Logon path; the
        others' come from the mirror, which their puts reach within milliseconds. A Logon
        accepted, or the port closed, anywhere clears the count (``cleared``)."""
        mine = self._mine.setdefault(comp_id, {"failures": [], "cleared": 0.0})
        mine["failures"] = [t for t in mine["failures"] if now - t <= window_s] + [now]
        self._post(comp_id, mine)
        cleared, failures = self._theirs(comp_id)
        cleared = max(cleared, mine["cleared"])
        return sum(1 for t in [*mine["failures"], *failures]
                   if t > cleared and now - t <= window_s)

    def clear_invalid(self, comp_id: str, now: float) -> None:
        mine = self._mine.get(comp_id)
        cleared, theirs = self._theirs(comp_id)
        if mine is not None:
            cleared = max(cleared, mine["cleared"])
        if not (mine and mine["failures"]) and not [t for t in theirs if t > cleared]:
            return                              # nothing counted anywhere: no write
        self._mine[comp_id] = mine = {"failures": [], "cleared": now}
        self._post(comp_id, mine)

    def _key(self, comp_id: str) -> str:
        return f"{INVALID_PREFIX}.{subject_token(comp_id)}."

    def _post(self, comp_id: str, mine: dict[str, Any]) -> None:
        self.mirror.post("closures", self._key(comp_id) + self.writer,
                         json.dumps(mine).encode())

    def _theirs(self, comp_id: str) -> tuple[float, list[float]]:
        """(latest clearing, failures) recorded by the other processes."""
        prefix = self._key(comp_id)
        cleared, failures = 0.0, []
        for key, (value, _) in self.mirror.items("closures").items():
            if not key.startswith(prefix) or key == prefix + self.writer:
                continue
            try:
                doc = json.loads(value)
                cleared = max(cleared, float(doc.get("cleared", 0.0)))
                failures += [float(t) for t in doc.get("failures", [])]
            except (ValueError, TypeError, AttributeError):
                continue                          # another version's record: not counted
        return cleared, failures

    # -- closures --------------------------------------------------------------------------------

    def _doc(self, got: tuple[bytes, int] | None) -> dict[str, dict[str, Any]]:
        if got is None:
            return {}
        locked = json.loads(got[0]).get("locked", {})
        return {str(k): dict(v) for k, v in locked.items()}

    def is_locked(self, comp_id: str) -> bool:
        return comp_id in self._doc(self.mirror.get("closures", CLOSURES_KEY))

    def locked(self) -> dict[str, dict[str, Any]]:
        return self._doc(self.mirror.get("closures", CLOSURES_KEY))

    def _change(self, edit: Callable[[dict[str, dict[str, Any]]], bool]) -> bool:
        for _ in range(CAS_ATTEMPTS):
            got = self.mirror.fetch("closures", CLOSURES_KEY)
            locked = self._doc(got)
            changed = edit(locked)
            if not changed:
                return False
            try:
                self.mirror.write("closures", CLOSURES_KEY,
                                  json.dumps({"version": 1, "locked": locked}).encode(),
                                  got[1] if got else None)
                return True
            except Conflict:
                continue
        raise Conflict("the port closures kept changing meanwhile; try again")

    def lock(self, comp_id: str, *, now: float, reason: str) -> None:
        """Never raises (the Logon path): a failure is logged."""
        from datetime import datetime, timezone
        since = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

        def edit(locked: dict[str, dict[str, Any]]) -> bool:
            locked[comp_id] = {"since": since, "reason": reason}
            return True
        try:
            self._change(edit)
        except Exception as exc:
            log.error("could not store the port closure of %s in the cluster: %s", comp_id, exc)

    def unlock(self, comp_id: str) -> bool:
        def edit(locked: dict[str, dict[str, Any]]) -> bool:
            return locked.pop(comp_id, None) is not None
        was = self._change(edit)
        if was:
            log.warning("port closure of %s lifted", comp_id)
        return was


class ClusterUserStore:
    """:class:`~dcgateway.state.users.UserStore` on the users bucket, one key per user,
    compare-and-set updates."""

    def __init__(self, mirror: KvMirror, box: SecretBox) -> None:
        self.mirror = mirror
        self.box = box

    def __repr__(self) -> str:
        return f"ClusterUserStore({self.mirror.names.bucket('users')!r})"

    def all(self) -> Mapping[str, UserRecord]:
        return MappingProxyType({k: UserRecord.from_doc(json.loads(v))
                                 for k, (v, _) in self.mirror.items("users").items()})

    def get(self, name: str) -> UserRecord | None:
        got = self.mirror.get("users", name)
        return None if got is None else UserRecord.from_doc(json.loads(got[0]))

    def update(self, name: str, change: Callable[[UserRecord], UserRecord]) -> UserRecord:
        for _ in range(CAS_ATTEMPTS):
            got = self.mirror.fetch("users", name)
            old = UserRecord.from_doc(json.loads(got[0])) if got else UserRecord(name)
            new = change(old)
            if new.name != name:
                raise ValueError("a user record cannot be renamed")
            try:
                self.mirror.write("users", name, json.dumps(new.to_doc()).encode(),
                                  got[1] if got else None)
                return new
            except Conflict:
                continue
        raise Conflict(f"user {name!r} kept changing meanwhile; try again")

    def signature(self) -> Hashable:
        return self.mirror.revision("users")

    def seal(self, name: str, secret: str) -> str:
        return self.box.seal(name, secret)

    def unseal(self, name: str, sealed: str) -> str:
        return self.box.unseal(name, sealed)


def cluster_state_parts(config: GatewayConfig, audit: AuditSink
                        ) -> tuple[ClusterGroupStore, ClusterKeyStore, ClusterClosures,
                                   ClusterUserStore, KvMirror]:
    """The parts of the state store in cluster mode (``dcgateway.state.open_state`` assembles
    them); the mirror is the thing to close."""
    assert config.cluster is not None
    g = config.gateway
    mirror = KvMirror(config.cluster, STATE_BUCKETS).start()
    try:
        groups = ClusterGroupStore(config, audit, mirror)
        groups.seed()
        keys = ClusterKeyStore(mirror, g.keystore.path, g.keystore.master_key_file)
        keys.seed()
        users = ClusterUserStore(mirror, SecretBox(g.keystore.master_key_file, g.keystore.path))
        closures = ClusterClosures(mirror, writer=config.cluster.node_id)
        return groups, keys, closures, users, mirror
    except BaseException:
        mirror.close()
        raise
