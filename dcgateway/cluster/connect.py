"""Connecting to the cluster's NATS servers, and the names of what the gateway keeps there.

Every stream and bucket name starts with ``cluster.name`` (``dcgw`` by default), so several
gateways (or the tests) can share one NATS deployment without seeing each other's state.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client

from ..config.cluster import ClusterSettings


@dataclass(frozen=True, slots=True)
class Names:
    """Streams, subjects and buckets of one cluster (``cluster.name``)."""

    prefix: str

    @property
    def journal(self) -> str:              # the replicated journal (source messages, markers)
        return f"{self.prefix.upper()}_JOURNAL"

    @property
    def targets(self) -> str:              # per-target outbound records (the fence)
        return f"{self.prefix.upper()}_TARGETS"

    def bucket(self, what: str) -> str:    # groups, keys, closures, users, leases
        return f"{self.prefix}_{what}"

    def source_subject(self, source: str) -> str:
        return f"{self.prefix}.src.{subject_token(source)}"

    def marker_subject(self, source: str) -> str:
        return f"{self.prefix}.mark.{subject_token(source)}"

    def target_subject(self, target: str) -> str:
        return f"{self.prefix}.tgt.{subject_token(target)}"

    def session_subject(self, comp_id: str) -> str:
        return f"{self.prefix}.sess.{subject_token(comp_id)}"


def subject_token(name: str) -> str:
    """A CompID as one subject token or KV key: itself when it is made of letters, digits,
    '_' and '-', else ``x`` + its hex (a CompID may hold any printable character but '=')."""
    if name and all(c.isascii() and (c.isalnum() or c in "_-") for c in name):
        return name
    return "x" + name.encode().hex()


def connect_options(settings: ClusterSettings, name: str) -> dict[str, Any]:
    """nats-py ``connect`` keyword arguments: servers, TLS, credentials, bounded timeouts and
    reconnection that never gives up (a NATS server restarting must not end the node)."""
    n = settings.nats
    opts: dict[str, Any] = {
        "servers": list(n.servers), "name": name, "connect_timeout": n.connect_timeout_s,
        "allow_reconnect": True, "max_reconnect_attempts": -1, "reconnect_time_wait": 0.2,
        "ping_interval": 1, "max_outstanding_pings": 3,
    }
    if n.creds_file is not None:
        opts["user_credentials"] = str(n.creds_file)
    if n.tls is not None or any(s.startswith("tls://") for s in n.servers):
        ctx = ssl.create_default_context(
            cafile=str(n.tls.ca_file) if n.tls is not None and n.tls.ca_file else None)
        if n.tls is not None and n.tls.cert_file is not None:
            ctx.load_cert_chain(str(n.tls.cert_file),
                                str(n.tls.key_file) if n.tls.key_file else None)
        opts["tls"] = ctx
    return opts


async def connect(settings: ClusterSettings, name: str, **extra: Any) -> Client:
    """A connection to the cluster's servers (the first that answers)."""
    return await nats.connect(**{**connect_options(settings, name), **extra})
