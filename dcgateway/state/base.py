"""The state store's interfaces: what the gateway, the command line and the portal share.

Everything an operator or a firm's administrator changes while the gateway runs lives behind
these protocols: drop copy groups, key pairs, port closures, portal users and the audit trail.
The embedded default keeps them in files under ``data_dir`` (:mod:`.files`); cluster mode keeps
them in replicated key-value buckets. The gateway *follows* the store (it polls a cheap
signature and rebuilds its routing table off the hot path); the CLI and the portal *change* it
only through these calls, so a change made in one place reaches a running gateway exactly as a
change made in the other.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol

from ..auth.keystore import KeyRecord
from ..config import GroupDef


class GroupStore(Protocol):
    """Drop copy groups. Every change is validated whole (the same rules as ``check-config``)
    and either applied entirely or refused with :class:`~dcgateway.errors.ConfigError` naming
    each problem's path (``groups[0].targets[1]: ...``)."""

    def current(self) -> tuple[GroupDef, ...]: ...

    def signature(self) -> Hashable:
        """Changes whenever the groups change; cheap (one ``stat`` or one revision read)."""
        ...

    def create(self, data: Mapping[str, Any], *, actor: str | None) -> GroupDef: ...

    def replace(self, entity: str, name: str, data: Mapping[str, Any], *,
                actor: str | None) -> GroupDef: ...

    def delete(self, entity: str, name: str, *, actor: str | None) -> GroupDef: ...


class KeyRecords(Protocol):
    """Where key pairs are kept, encrypted at rest (:class:`~dcgateway.auth.KeyStore` is the
    file implementation); :class:`~dcgateway.auth.KeyManager` applies the venue's lifecycle
    on top of it."""

    def ensure_master_key(self) -> bool: ...

    def load(self) -> dict[str, KeyRecord]: ...

    def snapshot(self) -> Mapping[str, KeyRecord]: ...

    def transaction(self) -> AbstractContextManager[dict[str, KeyRecord]]: ...


class ClosureStore(Protocol):
    """Sessions locked after too many invalid Logons (port closures)."""

    def is_locked(self, comp_id: str) -> bool: ...

    def locked(self) -> dict[str, dict[str, Any]]: ...

    def lock(self, comp_id: str, *, now: float, reason: str) -> None: ...

    def count_invalid(self, comp_id: str, now: float, window_s: float) -> int: ...

    def clear_invalid(self, comp_id: str, now: float) -> None: ...

    def unlock(self, comp_id: str) -> bool: ...


class AuditSink(Protocol):
    """The append-only audit trail: who did what, when, from where, with which outcome."""

    def record(self, kind: str, action: str, *, who: str | None, entity: str | None = None,
               outcome: str = "ok", address: str | None = None, **fields: Any
               ) -> dict[str, Any]: ...

    def entries(self, entity: str | None = None) -> Iterator[dict[str, Any]]: ...
