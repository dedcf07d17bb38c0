"""``dcgateway cluster status``: the cluster as NATS sees it, read in one short-lived connection
(the command runs anywhere the configuration and NATS are reachable, no node needed)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from nats.js.errors import KeyNotFoundError, NotFoundError

from ..config import GatewayConfig
from ..config.cluster import ClusterSettings
from ..errors import DcGatewayError
from .connect import ClusterUnavailable, Names, connect, unavailable
from .leases import ALIVE_LEASES, PRIMARY, lease_key, node_key


@contextmanager
def _doing(config: GatewayConfig, what: str) -> Iterator[None]:
    """Any failure of ``what`` becomes one :class:`ClusterUnavailable` line (no traceback)."""
    assert config.cluster is not None
    try:
        yield
    except DcGatewayError:
        raise
    except Exception as exc:
        raise unavailable(config.cluster, what, exc) from None


async def _status(config: GatewayConfig) -> dict[str, Any]:
    assert config.cluster is not None
    c = config.cluster
    names = Names(c.name)
    with _doing(config, "connecting"):
        # every server tried (twice at most, nats-py counts from 0), then NoServersError:
        # 0 would mean "no limit" to the client and a dead cluster would only time out
        nc = await connect(c, "dcgateway-cluster-status", allow_reconnect=False,
                           max_reconnect_attempts=1, error_level=logging.DEBUG)
    try:
        js = nc.jetstream(timeout=5)
        entries = await _lease_entries(config, js, names)
        primary = entries.get(lease_key(PRIMARY))
        nodes = _nodes(c, entries, primary, time.time())
        holder = primary.get("node") if primary else None
        serving = next((n["node_id"] for n in nodes if n["serving"]), None)
        sessions = [{"comp_id": s.comp_id, "role": s.role, "node": serving,
                     "address": primary.get("address") if primary and serving else None}
                    for s in config.sessions]
        return {"cluster": c.name, "servers": list(c.nats.servers), "lease_s": c.lease_s,
                "primary": serving, "lease_holder": holder, "nodes": nodes,
                "sessions": sessions, "stream": await _stream(config, js, names)}
    finally:
        try:
            await asyncio.wait_for(nc.close(), 5)
        except Exception:
            pass


async def _lease_entries(config: GatewayConfig, js: Any, names: Names
                         ) -> dict[str, dict[str, Any]]:
    """The primary lease and every node's presence entry, as they are in the leases bucket."""
    assert config.cluster is not None
    entries: dict[str, dict[str, Any]] = {}
    with _doing(config, f"reading the leases bucket {names.bucket('leases')}"):
        try:
            kv = await js.key_value(names.bucket("leases"))
            for key in [lease_key(PRIMARY)] + [node_key(n.node_id)
                                                for n in config.cluster.nodes]:
                try:
                    e = await kv.get(key)
                except KeyNotFoundError:
                    continue
                if e.value:
                    entries[key] = json.loads(e.value)
        except (NotFoundError, KeyNotFoundError):
            pass
    return entries


def _nodes(c: ClusterSettings, entries: dict[str, dict[str, Any]], primary: dict[str, Any] | None,
           now: float) -> list[dict[str, Any]]:
    """One row per configured node: alive, what it says it does, whether it serves."""
    nodes = []
    for n in c.nodes:
        seen = entries.get(node_key(n.node_id))
        if seen is not None and now - float(seen.get("renewed", now)) > ALIVE_LEASES * c.lease_s:
            seen = None              # the bucket keeps entries longer (a backstop): not alive
        holds = bool(primary and primary.get("node") == n.node_id and seen is not None)
        # what the node says it does (its presence entry): holding the lease is not serving
        # while its takeover runs (or failed)
        state = (seen.get("state", "serving" if holds else "standby") if seen is not None
                 else None)
        nodes.append({
            "node_id": n.node_id, "address": str(n.listen), "metrics": str(n.metrics),
            "alive": seen is not None, "state": state, "holds_lease": holds,
            "refusal": seen.get("refusal") if seen is not None else None,
            "last_renewal_s": round(now - seen["renewed"], 1) if seen else None,
            "serving": holds and state == "serving"})
    return nodes


async def _stream(config: GatewayConfig, js: Any, names: Names) -> dict[str, Any]:
    """The journal stream: size, sequences, replicas, leader and followers (or missing)."""
    stream: dict[str, Any] = {"name": names.journal}
    with _doing(config, f"reading the journal stream {names.journal}"):
        try:
            info = await js.stream_info(names.journal)
            st, cl = info.state, info.cluster
            stream.update({
                "messages": st.messages, "bytes": st.bytes, "first_seq": st.first_seq,
                "last_seq": st.last_seq, "replicas": info.config.num_replicas,
                "leader": cl.leader if cl else None,
                "followers": [{"name": r.name, "current": bool(r.current),
                               "offline": bool(r.offline), "lag": r.lag}
                              for r in (cl.replicas or [])] if cl else []})
        except NotFoundError:
            stream["missing"] = True
    return stream


def cluster_status(config: GatewayConfig, timeout: float = 15.0) -> dict[str, Any]:
    """The status document (blocking, bounded by ``timeout``); raises
    :class:`~.connect.ClusterUnavailable` saying what failed when NATS cannot answer."""
    assert config.cluster is not None
    try:
        return asyncio.run(asyncio.wait_for(_status(config), timeout))
    except ClusterUnavailable:
        raise
    except (TimeoutError, asyncio.TimeoutError) as exc:
        raise unavailable(config.cluster, f"reading the cluster's state (within {timeout:g}s)",
                          exc) from None


def status_text(doc: dict[str, Any]) -> str:
    lines = [f"cluster {doc['cluster']} on {', '.join(doc['servers'])} "
             f"(lease {doc['lease_s']:g}s)",
             "NODE      ALIVE  SERVING  STATE        ADDRESS                LAST RENEWAL"]
    for n in doc["nodes"]:
        age = "-" if n["last_renewal_s"] is None else f"{n['last_renewal_s']:.1f}s ago"
        lines.append(f"{n['node_id']:<9} {'yes' if n['alive'] else 'no':<6} "
                     f"{'yes' if n['serving'] else '-':<8} {n.get('state') or '-':<12} "
                     f"{n['address']:<22} {age}")
    for n in doc["nodes"]:
        if n.get("refusal"):
            lines.append(f"node {n['node_id']} REFUSES TO SERVE: {n['refusal']}")
    holder = doc.get("lease_holder")
    who = doc["primary"] or (f"no node ({holder} holds the lease and is taking over)"
                             if holder else "no node (a takeover is due)")
    lines.append(f"sessions: all {len(doc['sessions'])} served by {who}")
    s = doc["stream"]
    if s.get("missing"):
        lines.append(f"stream {s['name']}: not created yet (no node has started)")
    else:
        peers = ", ".join(f"{p['name']}{'' if p['current'] else ' (behind)'}"
                          f"{' OFFLINE' if p['offline'] else ''}" for p in s["followers"])
        lines.append(f"stream {s['name']}: {s['messages']:,} records, last {s['last_seq']}, "
                     f"R{s['replicas']}, leader {s['leader']}; followers: {peers or 'none'}")
    return "\n".join(lines)
