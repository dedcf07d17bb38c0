"""The key store: every key pair the gateway issued, encrypted at rest (docs/architecture.md rule 7).

File format (``keystore.path``, e.g. ``var/keys.db``), all integers big-endian::

    offset  size  field
    0       8     magic  b"DCGWKEYS"
    8       1     format version (1)
    9       8     key check: HMAC-SHA256(master key, b"dcgateway keystore key check v1")[:8]
    17      12    AES-GCM nonce (random per write)
    29      n+16  AES-256-GCM ciphertext + tag of the JSON document below

Bytes 0..16 (magic, version, key check) are the associated data, so none of them can be altered
without the tag failing. The key check tells a wrong master key (:class:`WrongMasterKey`) apart
from a damaged or tampered file (:class:`KeyStoreCorrupt`); it is a one-way function of the key,
which it does not reveal. The JSON document::

    {"format": "dcgateway-keystore", "version": 1,
     "keys": [{"access_key_id": "...", "session_id": "ABC", "secret_key": "...",
               "created": "2026-03-01T15:00:00Z", "expires": "2027-03-01T22:00:00Z",
               "deleted": null}, ...]}

A deleted pair keeps its record (for ``keys list`` and the audit trail) with ``deleted`` set and its
secret erased.

The master key file holds the 256-bit master key as base64 text. It is created with mode 0600 on
first use when absent (and only when no store exists yet: a store without its master key is an
error, not a reason to mint a new key that cannot open it).

Writes are atomic (temp file, fsync, rename, fsync of the directory) and read-modify-write cycles
take an exclusive ``flock`` (:meth:`KeyStore.transaction`), so the gateway and any number of CLI
processes can share the store. A missing store file is an empty store.
"""

from __future__ import annotations

import base64
import binascii
import hmac as _hmac
import json
import logging
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as _chmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import KeyStoreCorrupt, KeyStoreError, WrongMasterKey
from ..fsutil import StatSignature, atomic_write, create_exclusive, exclusive_lock, stat_signature

log = logging.getLogger("dcgateway.auth.keystore")

MAGIC = b"DCGWKEYS"
FORMAT_VERSION = 1
_KEY_CHECK_LEN = 8
_HEADER_LEN = len(MAGIC) + 1 + _KEY_CHECK_LEN
_NONCE_LEN = 12
_TAG_LEN = 16
_KEY_CHECK_LABEL = b"dcgateway keystore key check v1"
_DOC_FORMAT = "dcgateway-keystore"

STATUS_ACTIVE = "active"
STATUS_EXPIRED = "expired"
STATUS_DELETED = "deleted"


# ----------------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------------

def iso_utc(dt: datetime) -> str:
    """``2027-03-01T22:00:00Z`` (seconds precision, UTC)."""
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso_utc(text: str) -> datetime:
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError("timestamp without a timezone")
    return dt.astimezone(timezone.utc)


@dataclass(frozen=True)
class KeyInfo:
    """The public view of a key pair (``keys list``): never the secret."""

    access_key_id: str
    session_id: str
    created: datetime
    expires: datetime
    status: str                     # active | expired | deleted (at the time asked)
    deleted: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {"access_key_id": self.access_key_id, "session_id": self.session_id,
                "created": iso_utc(self.created), "expires": iso_utc(self.expires),
                "status": self.status,
                "deleted": iso_utc(self.deleted) if self.deleted else None}


@dataclass(frozen=True)
class KeyRecord:
    """One issued key pair. ``secret_key`` (base64url, 43 chars) is left out of ``repr``/``str``
    so a record can be logged or shown in a traceback without leaking it."""

    access_key_id: str
    session_id: str
    secret_key: str = field(repr=False)
    created: datetime
    expires: datetime
    deleted: datetime | None = None

    def status(self, now: datetime) -> str:
        if self.deleted is not None:
            return STATUS_DELETED
        return STATUS_EXPIRED if now >= self.expires else STATUS_ACTIVE

    def is_live(self, now: datetime) -> bool:
        return self.deleted is None and now < self.expires

    def info(self, now: datetime) -> KeyInfo:
        return KeyInfo(self.access_key_id, self.session_id, self.created, self.expires,
                       self.status(now), self.deleted)

    def to_json(self) -> dict[str, str]:
        """The ``keys create --json`` document: exactly these five fields (the README's command line)."""
        return {"session_id": self.session_id, "access_key_id": self.access_key_id,
                "secret_key": self.secret_key, "created": iso_utc(self.created),
                "expires": iso_utc(self.expires)}


def _record_to_doc(r: KeyRecord) -> dict[str, Any]:
    return {"access_key_id": r.access_key_id, "session_id": r.session_id,
            "secret_key": r.secret_key, "created": iso_utc(r.created),
            "expires": iso_utc(r.expires), "deleted": iso_utc(r.deleted) if r.deleted else None}


def _record_from_doc(d: Any) -> KeyRecord:
    deleted = d.get("deleted")
    rec = KeyRecord(str(d["access_key_id"]), str(d["session_id"]), str(d["secret_key"]),
                    parse_iso_utc(d["created"]), parse_iso_utc(d["expires"]),
                    parse_iso_utc(deleted) if deleted else None)
    if not rec.access_key_id or not rec.session_id:
        raise ValueError("empty access key id or session id")
    return rec


# ----------------------------------------------------------------------------------------------
# Master key
# ----------------------------------------------------------------------------------------------

def _key_check(master: bytes) -> bytes:
    h = _chmac.HMAC(master, hashes.SHA256())
    h.update(_KEY_CHECK_LABEL)
    return h.finalize()[:_KEY_CHECK_LEN]


def _decode_master(text: bytes, path: Path) -> bytes:
    token = text.strip()
    try:
        raw = base64.urlsafe_b64decode(token.replace(b"+", b"-").replace(b"/", b"_")
                                       + b"=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise KeyStoreError(f"master key file {path} does not hold a base64-encoded 256-bit key")
    return raw


# ----------------------------------------------------------------------------------------------
# The store
# ----------------------------------------------------------------------------------------------

class KeyStore:
    """File-backed, encrypted key store. ``load()`` reads the file now; ``snapshot()`` returns
    the last read unless the file (or the master key file) changed since, which costs two
    ``stat`` calls: the authenticator calls it on every Logon, so a key created or deleted by
    the CLI in another process takes effect at the next Logon without a restart."""

    def __init__(self, path: str | os.PathLike[str],
                 master_key_file: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.master_key_file = Path(master_key_file)
        self._cache_sig: tuple[StatSignature | None, StatSignature | None] | None = None
        self._cache: Mapping[str, KeyRecord] | None = None
        self._cache_error: KeyStoreError | None = None

    def __repr__(self) -> str:
        return f"KeyStore(path={str(self.path)!r}, master_key_file={str(self.master_key_file)!r})"

    # -- master key --------------------------------------------------------------------------

    def ensure_master_key(self) -> bool:
        """Create the master key file (0600) if it is absent and no store exists yet; True when
        this call created it."""
        if self.master_key_file.exists():
            return False
        if self.path.exists():
            raise self._missing_master_error()
        text = base64.urlsafe_b64encode(secrets.token_bytes(32)) + b"\n"
        created = create_exclusive(self.master_key_file, text, 0o600)
        if created:
            log.info("created master key file %s (mode 0600)", self.master_key_file)
        return created

    def _missing_master_error(self) -> WrongMasterKey:
        return WrongMasterKey(
            f"master key file {self.master_key_file} is missing but key store {self.path} exists; "
            f"restore the master key file the store was written with")

    def _master_key(self) -> bytes:
        try:
            with open(self.master_key_file, "rb") as f:
                st = os.fstat(f.fileno())
                text = f.read(4096)
        except FileNotFoundError:
            raise self._missing_master_error() from None
        except OSError as e:
            raise KeyStoreError(f"cannot read master key file {self.master_key_file}: "
                                f"{e.strerror}") from None
        if st.st_mode & 0o077:
            log.warning("master key file %s is readable by group/others (mode %o); "
                        "it should be 0600", self.master_key_file, st.st_mode & 0o777)
        return _decode_master(text, self.master_key_file)

    # -- reading -----------------------------------------------------------------------------

    def load(self) -> dict[str, KeyRecord]:
        """Every record, by access key id, in creation order. Raises :class:`KeyStoreCorrupt`,
        :class:`WrongMasterKey` or :class:`KeyStoreError`; never returns partial data."""
        try:
            with open(self.path, "rb") as f:
                blob = f.read()
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise KeyStoreError(f"cannot read key store {self.path}: {e.strerror}") from None
        self._check_frame(blob)          # a damaged file is reported as such, whatever the key
        return self._parse(self._decrypt(blob, self._master_key()))

    def snapshot(self) -> Mapping[str, KeyRecord]:
        """Like :meth:`load`, but re-reads only when the store or master key file changed
        (inode, size, mtime or ctime). The result is a read-only view."""
        sig = (stat_signature(self.path), stat_signature(self.master_key_file))
        if sig != self._cache_sig:
            try:
                records = self.load()
                self._cache, self._cache_error = MappingProxyType(records), None
                log.info("key store %s (re)loaded: %d key pairs", self.path, len(records))
            except KeyStoreError as e:
                self._cache, self._cache_error = None, e
            self._cache_sig = sig
        if self._cache_error is not None:
            raise type(self._cache_error)(str(self._cache_error))
        assert self._cache is not None
        return self._cache

    def _check_frame(self, blob: bytes) -> None:
        if len(blob) < _HEADER_LEN + _NONCE_LEN + _TAG_LEN:
            raise KeyStoreCorrupt(f"key store {self.path} is truncated ({len(blob)} bytes)")
        if blob[:len(MAGIC)] != MAGIC:
            raise KeyStoreCorrupt(f"{self.path} is not a dcgateway key store (bad magic)")
        if blob[len(MAGIC)] != FORMAT_VERSION:
            raise KeyStoreCorrupt(f"key store {self.path} has unknown format version "
                                  f"{blob[len(MAGIC)]} (expected {FORMAT_VERSION})")

    def _decrypt(self, blob: bytes, master: bytes) -> bytes:
        header = blob[:_HEADER_LEN]
        if not _hmac.compare_digest(header[len(MAGIC) + 1:], _key_check(master)):
            raise WrongMasterKey(
                f"the master key in {self.master_key_file} does not open key store {self.path} "
                f"(the store was written with another master key, or its header was altered)")
        nonce = blob[_HEADER_LEN:_HEADER_LEN + _NONCE_LEN]
        try:
            return AESGCM(master).decrypt(nonce, blob[_HEADER_LEN + _NONCE_LEN:], header)
        except InvalidTag:
            raise KeyStoreCorrupt(f"key store {self.path} failed its integrity check: "
                                  f"the file is damaged, truncated or was altered") from None

    def _parse(self, plaintext: bytes) -> dict[str, KeyRecord]:
        try:
            doc = json.loads(plaintext)
            if doc.get("format") != _DOC_FORMAT or doc.get("version") != 1:
                raise ValueError("unexpected format/version")
            records = [_record_from_doc(d) for d in doc["keys"]]
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            # e never holds key material: parse errors name positions and field names only
            raise KeyStoreCorrupt(f"key store {self.path} holds an invalid document "
                                  f"({type(e).__name__})") from None
        return {r.access_key_id: r for r in records}

    # -- writing -----------------------------------------------------------------------------

    def save(self, records: Iterable[KeyRecord]) -> None:
        """Write ``records`` atomically. Call inside :meth:`transaction` (which holds the lock)
        unless the caller has its own exclusion."""
        self.ensure_master_key()
        master = self._master_key()
        doc = {"format": _DOC_FORMAT, "version": 1,
               "keys": [_record_to_doc(r) for r in records]}
        plaintext = json.dumps(doc, separators=(",", ":")).encode()
        header = MAGIC + bytes([FORMAT_VERSION]) + _key_check(master)
        nonce = secrets.token_bytes(_NONCE_LEN)
        atomic_write(self.path, header + nonce + AESGCM(master).encrypt(nonce, plaintext, header))

    @contextmanager
    def transaction(self) -> Iterator[dict[str, KeyRecord]]:
        """Exclusive read-modify-write across processes: yields the records (by access key id,
        in creation order) to change in place; they are written back when the block exits
        normally and something changed. An exception inside the block writes nothing."""
        with exclusive_lock(self.path):
            self.ensure_master_key()
            records = self.load()
            before = dict(records)
            yield records
            if records != before:
                self.save(records.values())
