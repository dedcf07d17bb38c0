"""``dcgateway cluster status``: the cluster as NATS sees it, read in one short-lived connection
(the command runs anywhere the configuration and NATS are reachable, no node needed)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from nats.js.errors import KeyNotFoundError, NotFoundError

from ..config import GatewayConfig
from .connect import Names, connect
from .leases import PRIMARY, lease_key, node_key


async def _status(config: GatewayConfig) -> dict[str, Any]:
    assert config.cluster is not None
    c = config.cluster
    names = Names(c.name)
    nc = await connect(c, "dcgateway-cluster-status", allow_reconnect=False,
                       max_reconnect_attempts=0)
    try:
        js = nc.jetstream(timeout=5)
        now = time.time()
        entries: dict[str, dict[str, Any]] = {}
        try:
            kv = await js.key_value(names.bucket("leases"))
            for key in [lease_key(PRIMARY)] + [node_key(n.node_id) for n in c.nodes]:
                try:
                    e = await kv.get(key)
                except KeyNotFoundError:
                    continue
                if e.value:
                    entries[key] = json.loads(e.value)
        except (NotFoundError, KeyNotFoundError):
            pass
        primary = entries.get(lease_key(PRIMARY))
        nodes = []
        for n in c.nodes:
            seen = entries.get(node_key(n.node_id))
            nodes.append({
                "node_id": n.node_id, "address": str(n.listen), "metrics": str(n.metrics),
                "alive": seen is not None,
                "last_renewal_s": round(now - seen["renewed"], 1) if seen else None,
                "serving": bool(primary and primary.get("node") == n.node_id
                                and seen is not None)})
        serving = primary.get("node") if primary else None
        sessions = [{"comp_id": s.comp_id, "role": s.role, "node": serving,
                     "address": primary.get("address") if primary else None}
                    for s in config.sessions]
        stream: dict[str, Any] = {"name": names.journal}
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
        return {"cluster": c.name, "servers": list(c.nats.servers), "lease_s": c.lease_s,
                "primary": serving, "nodes": nodes, "sessions": sessions, "stream": stream}
    finally:
        await nc.close()


def cluster_status(config: GatewayConfig, timeout: float = 15.0) -> dict[str, Any]:
    """The status document (blocking, bounded by ``timeout``)."""
    return asyncio.run(asyncio.wait_for(_status(config), timeout))


def status_text(doc: dict[str, Any]) -> str:
    lines = [f"cluster {doc['cluster']} on {', '.join(doc['servers'])} "
             f"(lease {doc['lease_s']:g}s)",
             "NODE      ALIVE  SERVING  ADDRESS                LAST RENEWAL"]
    for n in doc["nodes"]:
        age = "-" if n["last_renewal_s"] is None else f"{n['last_renewal_s']:.1f}s ago"
        lines.append(f"{n['node_id']:<9} {'yes' if n['alive'] else 'no':<6} "
                     f"{'yes' if n['serving'] else '-':<8} {n['address']:<22} {age}")
    who = doc["primary"] or "no node (a takeover is due)"
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
