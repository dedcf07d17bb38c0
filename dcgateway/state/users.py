"""The portal's users: credentials, enrolment and lockout state (the state store's ``users``).

Who the users *are* comes from gateway.yaml (the administrators of registered entities and the
exchange's operators); what is kept here is only what a user sets or earns: the argon2id
password hash, the TOTP secret (sealed, see :class:`SecretBox`), a pending enrolment, the
invitation's digest and expiry, recent login failures, a lockout, the last accepted TOTP time
step (a code is accepted once: RFC 6238 section 5.2) and a *generation* counter that ends every
web session of the user when it moves (``users reset``, a lockout).

:class:`UserStore` is the interface; :class:`FileUserStore` keeps one JSON document,
``data_dir/portal-users.json``, mode 0600, changed by read-modify-write under an exclusive
``flock`` and replaced atomically (the portal and ``dcgateway users ...`` share it). A
replicated key-value implementation (cluster mode) only needs the same five calls, with a
compare-and-set revision in ``update``.

Secrets at rest: an invitation token is stored as its SHA-256 digest (it is 256 random bits, so
a fast hash suffices); a password only as its argon2id hash; a TOTP secret is a shared secret
that must be recoverable to compute codes, so it is sealed with AES-256-GCM under a key derived
from the gateway's master key (the one that encrypts the key store), bound to the user's name
as associated data. Nothing in this module logs, and a :class:`UserRecord`'s ``repr`` leaves
every secret-bearing field out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import threading
from collections.abc import Callable, Hashable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..auth.keystore import KeyStore
from ..errors import DcGatewayError
from ..fsutil import atomic_write, exclusive_lock, stat_signature

USERS_FILE_NAME = "portal-users.json"
_DOC_FORMAT = "dcgateway-portal-users"
_SEAL_LABEL = b"dcgateway portal totp seal v1"
_NONCE_LEN = 12


class UserStoreError(DcGatewayError):
    """The users file is unreadable or damaged (never carries a secret)."""


@dataclass(frozen=True)
class UserRecord:
    """What the portal keeps about one configured user. Times are epoch seconds."""

    name: str
    password_hash: str | None = field(default=None, repr=False)
    totp_sealed: str | None = field(default=None, repr=False)
    enrolled: float | None = None
    invite_digest: str | None = field(default=None, repr=False)
    invite_expires: float | None = None
    pending_password_hash: str | None = field(default=None, repr=False)
    pending_totp_sealed: str | None = field(default=None, repr=False)
    pending_attempts: int = 0
    failures: tuple[float, ...] = ()
    locked_until: float | None = None
    last_totp_step: int = 0
    last_login: float | None = None
    last_login_address: str | None = None
    generation: int = 0

    @property
    def is_enrolled(self) -> bool:
        return self.enrolled is not None and self.password_hash is not None \
            and self.totp_sealed is not None

    def locked(self, now: float) -> bool:
        return self.locked_until is not None and now < self.locked_until

    def to_doc(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["failures"] = list(self.failures)
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> UserRecord:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in doc.items() if k in known}
        values["failures"] = tuple(float(t) for t in values.get("failures", ()))
        return cls(**values)


def token_digest(token: str) -> str:
    """SHA-256 of an invitation token, hex: what is stored instead of the token."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


class UserStore(Protocol):
    """The portal users of the state store (file or replicated key-value implementation)."""

    def all(self) -> Mapping[str, UserRecord]:
        """Every stored record by name (a user never invited has none)."""
        ...

    def get(self, name: str) -> UserRecord | None: ...

    def update(self, name: str, change: Callable[[UserRecord], UserRecord]) -> UserRecord:
        """Atomically replace ``name``'s record (an empty one when absent) by
        ``change(record)``; ``change`` may raise to abort without writing."""
        ...

    def signature(self) -> Hashable:
        """Changes whenever any record changes (cheap: one ``stat`` or a revision read)."""
        ...

    def seal(self, name: str, secret: str) -> str:
        """``secret`` encrypted for storage in ``name``'s record."""
        ...

    def unseal(self, name: str, sealed: str) -> str: ...


class SecretBox:
    """AES-256-GCM with a key derived (HMAC-SHA256, a fixed label) from the master key file, so
    the TOTP secrets and the key store never share a key. The name is the associated data: a
    sealed secret copied to another user's record does not open."""

    def __init__(self, master_key_file: str | os.PathLike[str],
                 keystore_path: str | os.PathLike[str] | None = None) -> None:
        self.master_key_file = Path(master_key_file)
        self.keystore_path = Path(keystore_path) if keystore_path is not None else None
        self._key: bytes | None = None

    def __repr__(self) -> str:
        return f"SecretBox({str(self.master_key_file)!r})"

    def _derived(self) -> bytes:
        if self._key is None:
            if self.keystore_path is not None:       # first use ever: create it (0600)
                KeyStore(self.keystore_path, self.master_key_file).ensure_master_key()
            try:
                text = self.master_key_file.read_bytes().strip()
                raw = base64.urlsafe_b64decode(text.replace(b"+", b"-").replace(b"/", b"_")
                                               + b"=" * (-len(text) % 4))
            except (OSError, binascii.Error, ValueError):
                raw = b""
            if len(raw) != 32:
                raise UserStoreError(f"master key file {self.master_key_file} is missing or "
                                     "does not hold a base64-encoded 256-bit key")
            self._key = hmac.new(raw, _SEAL_LABEL, hashlib.sha256).digest()
        return self._key

    def seal(self, name: str, secret: str) -> str:
        nonce = secrets.token_bytes(_NONCE_LEN)
        blob = AESGCM(self._derived()).encrypt(nonce, secret.encode(), _aad(name))
        return base64.urlsafe_b64encode(nonce + blob).decode()

    def unseal(self, name: str, sealed: str) -> str:
        try:
            blob = base64.urlsafe_b64decode(sealed.encode())
            return AESGCM(self._derived()).decrypt(blob[:_NONCE_LEN], blob[_NONCE_LEN:],
                                                   _aad(name)).decode()
        except (InvalidTag, binascii.Error, ValueError, UnicodeDecodeError):
            raise UserStoreError(f"the second factor of user {name!r} does not open with the "
                                 "master key (restored another master key?)") from None


def _aad(name: str) -> bytes:
    return b"dcgateway-totp:" + name.encode()


class FileUserStore:
    """:class:`UserStore` on ``data_dir/portal-users.json`` (mode 0600, flock, atomic writes).
    Reads are cached and re-done only when the file's stat signature changes, so the portal can
    look a user up on every request for the cost of one ``stat``. Thread-safe (the portal calls
    it from worker threads)."""

    def __init__(self, path: str | os.PathLike[str], box: SecretBox) -> None:
        self.path = Path(path)
        self.box = box
        self._lock = threading.Lock()
        self._sig: Hashable = object()
        self._cache: Mapping[str, UserRecord] = MappingProxyType({})

    def __repr__(self) -> str:
        return f"FileUserStore({str(self.path)!r})"

    def _read(self) -> dict[str, UserRecord]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise UserStoreError(f"cannot read {self.path}: {exc.strerror}") from None
        try:
            doc = json.loads(raw)
            if doc.get("format") != _DOC_FORMAT or doc.get("version") != 1:
                raise ValueError("unexpected format or version")
            return {str(n): UserRecord.from_doc(d) for n, d in doc["users"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UserStoreError(f"{self.path} holds an invalid users document "
                                 f"({type(exc).__name__})") from None

    def all(self) -> Mapping[str, UserRecord]:
        with self._lock:
            sig = stat_signature(self.path)
            if sig != self._sig:
                self._cache = MappingProxyType(self._read())
                self._sig = sig
            return self._cache

    def get(self, name: str) -> UserRecord | None:
        return self.all().get(name)

    def update(self, name: str, change: Callable[[UserRecord], UserRecord]) -> UserRecord:
        with exclusive_lock(self.path):
            records = self._read()
            new = change(records.get(name) or UserRecord(name))
            if new.name != name:
                raise ValueError("a user record cannot be renamed")
            records[name] = new
            doc = {"format": _DOC_FORMAT, "version": 1,
                   "users": {n: r.to_doc() for n, r in sorted(records.items())}}
            atomic_write(self.path, json.dumps(doc, indent=1).encode(), 0o600)
        return new

    def signature(self) -> Hashable:
        return stat_signature(self.path)

    def seal(self, name: str, secret: str) -> str:
        return self.box.seal(name, secret)

    def unseal(self, name: str, sealed: str) -> str:
        return self.box.unseal(name, sealed)


def open_user_store(data_dir: str | os.PathLike[str], master_key_file: str | os.PathLike[str],
                    keystore_path: str | os.PathLike[str] | None = None) -> FileUserStore:
    """The embedded users store of a gateway's ``data_dir``."""
    return FileUserStore(Path(data_dir) / USERS_FILE_NAME,
                         SecretBox(master_key_file, keystore_path))


__all__ = [
    "USERS_FILE_NAME",
    "FileUserStore",
    "SecretBox",
    "UserRecord",
    "UserStore",
    "UserStoreError",
    "open_user_store",
    "token_digest",
]
