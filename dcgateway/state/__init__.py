"""The state store: groups, key pairs, port closures, portal users and the audit trail.

The gateway, the command line and the portal share one :class:`StateStore`; each of its parts is
an interface (:mod:`.base`) with the files under ``data_dir`` as the embedded implementation
(:func:`open_state`). Cluster mode swaps in replicated key-value buckets behind the same calls.

* ``groups``    :class:`~.base.GroupStore`: drop copy groups, validated whole on every change
* ``keys``      :class:`~dcgateway.auth.KeyManager`: the venue's key-pair lifecycle on top of
  ``keys.store`` (:class:`~.base.KeyRecords`, encrypted at rest)
* ``closures``  :class:`~.base.ClosureStore`: port closures
* ``audit``     :class:`~.base.AuditSink`: who did what, when, from where, with what outcome
* ``users``     :class:`~.users.UserStore`: the portal's users (credentials, enrolment,
  lockout), ``data_dir/portal-users.json``
* :func:`session_rows`: the sessions as a running gateway reports them
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..auth import KeyManager, KeyStore, MarketClose, PortClosures
from ..auth.lockout import state_path
from ..config import GatewayConfig
from .audit import KINDS, AuditTrail
from .base import AuditSink, ClosureStore, GroupStore, KeyRecords
from .groups import FileGroupStore, find_group, folder_lock
from .status import (
    STATUS_FILE_NAME,
    GroupsOutcome,
    groups_outcome,
    groups_reloads,
    read_status,
    session_rows,
)
from .users import (
    USERS_FILE_NAME,
    FileUserStore,
    SecretBox,
    UserRecord,
    UserStore,
    UserStoreError,
    open_user_store,
)

__all__ = [
    "AuditSink", "AuditTrail", "ClosureStore", "FileGroupStore", "GroupStore", "KINDS",
    "KeyRecords", "STATUS_FILE_NAME", "StateStore", "entity_of_session_id", "find_group",
    "folder_lock", "open_state", "read_status", "session_rows", "GroupsOutcome",
    "groups_outcome", "groups_reloads",
    "FileUserStore", "SecretBox", "USERS_FILE_NAME", "UserRecord", "UserStore", "UserStoreError",
    "open_user_store",
]


@dataclass(frozen=True)
class StateStore:
    config: GatewayConfig
    groups: GroupStore
    keys: KeyManager
    closures: ClosureStore
    audit: AuditSink
    users: UserStore | None = None
    #: releases what the store holds open (cluster mode: its NATS connection); None for files
    closer: Callable[[], None] | None = None

    def close(self) -> None:
        if self.closer is not None:
            self.closer()


def entity_of_session_id(config: GatewayConfig, session_id: str) -> str | None:
    """The registered entity whose sessions use the key scope (Session ID) ``session_id``."""
    return next((s.entity for s in config.sessions if s.key_scope == session_id), None)


def open_state(config: GatewayConfig) -> StateStore:
    """The state store of ``config``: files under ``data_dir`` (the embedded default), or the
    cluster's key-value buckets when gateway.yaml has a ``cluster:`` section."""
    g = config.gateway
    audit = AuditTrail(g.data_dir, lambda sid: entity_of_session_id(config, sid))
    if config.cluster is not None:
        return _open_cluster_state(config, audit)
    keys = KeyManager(KeyStore(g.keystore.path, g.keystore.master_key_file),
                      MarketClose.parse(g.market_close.time.strftime("%H:%M"),
                                        g.market_close.tz.key),
                      audit.log("keys"), environment=g.environment or "DCGW",
                      session_ids={s.key_scope for s in config.sessions})
    return StateStore(config=config, groups=FileGroupStore(config, audit), keys=keys,
                      closures=PortClosures(state_path(g.data_dir)), audit=audit,
                      users=open_user_store(g.data_dir, g.keystore.master_key_file,
                                            g.keystore.path))


def _open_cluster_state(config: GatewayConfig, audit: AuditTrail) -> StateStore:
    """Cluster mode (:mod:`dcgateway.cluster.kvstate`): the same calls on replicated buckets;
    the key manager's lifecycle rules on top of the cluster's key store."""
    from ..cluster.kvstate import cluster_state_parts
    g = config.gateway
    groups, store, closures, users, mirror = cluster_state_parts(config, audit)
    keys = KeyManager(store, MarketClose.parse(g.market_close.time.strftime("%H:%M"),
                                               g.market_close.tz.key),
                      audit.log("keys"), environment=g.environment or "DCGW",
                      session_ids={s.key_scope for s in config.sessions})
    return StateStore(config=config, groups=groups, keys=keys, closures=closures, audit=audit,
                      users=users, closer=mirror.close)
