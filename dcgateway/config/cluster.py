"""The ``cluster:`` section of gateway.yaml: several gateway nodes on NATS JetStream.

Why a section of the one shared file rather than a file per node: every node must agree on the
same sessions, groups file, replicas and lease, and clients are told every node's address in
the order given here, so the list of nodes is configuration everyone shares; what differs per
node (its FIX and metrics addresses, its local files) is picked by ``dcgateway run --node ID``
(:func:`dcgateway.cluster.for_node`). Every problem names file, line and path like the rest
of the configuration.

    cluster:
      name: dcgw                  # prefix of every stream and bucket (several gateways, one NATS)
      nats:
        servers: [nats://127.0.0.1:4222, ...]
        creds_file: nats.creds    # optional: NATS decentralised auth (JWT + NKey seed)
        tls: {ca_file: ca.pem, cert_file: client.pem, key_file: client.key}   # optional
        connect_timeout_s: 2
      replicas: 3
      lease_s: 5
      nodes:
        - {node_id: n1, listen: {host: ..., port: ...}, metrics: {host: ..., port: ...}}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from yaml.nodes import Node

from .yamlread import (
    BAD,
    REQUIRED,
    Bad,
    Context,
    MapNode,
    Parser,
    expects,
    file_path,
    is_null,
    join_path,
    list_of,
    node_line,
    number,
    record,
    sequence_items,
    text_of,
)

_NODE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
_NODE_ID_EXPECTED = "1-32 letters, digits, '_' or '-', starting with a letter or digit"
_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
_URL_RE = re.compile(r"(nats|tls)://[^\s/,]+:\d{1,5}")
_HOST_RE = re.compile(r"[^\s/]{1,255}")


@dataclass(frozen=True, slots=True)
class Address:
    """A node's listener (the same shape as the gateway's ``listen``; kept here so that this
    module depends on nothing else of the configuration)."""
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class NatsTls:
    """TLS to the NATS servers: the CA that signs them, and a client certificate when the
    servers verify clients."""
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True, slots=True)
class NatsSettings:
    servers: tuple[str, ...]
    creds_file: Path | None = None
    tls: NatsTls | None = None
    connect_timeout_s: float = 2.0


@dataclass(frozen=True, slots=True)
class ClusterNode:
    node_id: str
    listen: Address
    metrics: Address


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    nats: NatsSettings
    nodes: tuple[ClusterNode, ...]
    replicas: int = 3
    lease_s: float = 5.0
    name: str = "dcgw"
    #: the node this process runs as (``dcgateway run --node``); None for the CLI and the portal
    node_id: str | None = None

    def node(self, node_id: str) -> ClusterNode | None:
        return next((n for n in self.nodes if n.node_id == node_id), None)

    @property
    def this_node(self) -> ClusterNode | None:
        return None if self.node_id is None else self.node(self.node_id)


_port = number(0, 65535, integer=True)
_host_port = record({"host": (text_of(_HOST_RE, "a host name or address"), REQUIRED),
                     "port": (_port, REQUIRED)}, Address, "a mapping {host: ..., port: ...}")
_node_id = text_of(_NODE_ID_RE, _NODE_ID_EXPECTED)
_node = record({"node_id": (_node_id, REQUIRED), "listen": (_host_port, REQUIRED),
                "metrics": (_host_port, REQUIRED)}, ClusterNode,
               "a mapping {node_id, listen: {host, port}, metrics: {host, port}}")
_NODES_EXPECTED = "a non-empty list of {node_id, listen: {host, port}, metrics: {host, port}}"
_servers = list_of(text_of(_URL_RE, "a NATS URL such as nats://127.0.0.1:4222"),
                   "a non-empty list of NATS URLs such as nats://127.0.0.1:4222")


def _nats_tls(base: Path) -> Parser:
    return record({"ca_file": (file_path(base, True), None),
                   "cert_file": (file_path(base, True), None),
                   "key_file": (file_path(base, True), None)}, NatsTls,
                  "a mapping {ca_file, cert_file, key_file} (each optional)")


#: A NATS credentials file (``nsc generate creds``): the user's JWT on the line after the line
#: holding ``BEGIN NATS USER JWT``, its NKey seed on the line after ``BEGIN USER NKEY SEED``,
#: each line ending in a line feed: exactly what the NATS client reads (it takes the next line
#: less its last byte, so a CR, a blank line or an indent there makes an unusable key).
_CREDS_PARTS = ((b"BEGIN NATS USER JWT", re.compile(rb"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+"),
                 "user JWT"),
                (b"BEGIN USER NKEY SEED", re.compile(rb"SU[A-Z2-7]+"), "user NKey seed"))
_CREDS_EXPECTED = ("a NATS credentials file: a user JWT block and a user NKey seed block, "
                   "each value alone on the line after its BEGIN line (as `nsc generate creds` "
                   "writes it)")


def creds_problem(data: bytes) -> str | None:
    """What makes ``data`` unusable as NATS credentials, or None."""
    lines = data.split(b"\n")
    values = []
    for marker, pattern, what in _CREDS_PARTS:
        at = next((i for i, line in enumerate(lines) if marker in line), None)
        if at is None:
            return f"it has no {marker.decode()} line"
        if at + 1 >= len(lines) - 1 or not pattern.fullmatch(lines[at + 1]):   # line + LF
            return (f"the line after {marker.decode()} is not the {what} alone (no blank line, "
                    "spaces or carriage return)")
        values.append(lines[at + 1])
    # nats-py's nkeys extra, which signs the server's nonce with the seed
    import nkeys
    try:
        nkeys.from_seed(bytearray(values[1]))
    except Exception:             # nkeys raises its own errors and binascii's
        return "its user NKey seed is not valid"
    return None


def _creds_file(base: Path) -> Parser:
    """``creds_file``: an existing, readable NATS credentials file the NATS client can use
    (checked here, where the file and line can be named, not at the first connection)."""
    existing = file_path(base, True)

    @expects(_CREDS_EXPECTED)
    def parse(ctx: Context, node: Node, path: str) -> Path | Bad:
        resolved = existing(ctx, node, path)
        if not isinstance(resolved, Path):
            return BAD
        try:
            problem = creds_problem(resolved.read_bytes())
        except OSError as exc:
            problem = f"cannot be read: {exc.strerror or exc}"
        if problem is not None:
            ctx.problem(node_line(node), path, f"{resolved}: {problem}", _CREDS_EXPECTED)
            return BAD
        return resolved
    return parse


def _nats(base: Path) -> Parser:
    return record({"servers": (_servers, REQUIRED),
                   "creds_file": (_creds_file(base), None),
                   "tls": (_nats_tls(base), None),
                   "connect_timeout_s": (number(0.1, 60, integer=False), 2.0)}, NatsSettings,
                  "a mapping {servers: [...], [creds_file, tls, connect_timeout_s]}")


def _nodes(ctx: Context, node: Node, path: str) -> tuple[ClusterNode, ...] | Bad:
    """Every node once, each with its own FIX and metrics address."""
    items = sequence_items(ctx, node, path, _NODES_EXPECTED)
    if items is BAD:
        return BAD
    if not items:
        ctx.problem(node_line(node), path, "empty list", _NODES_EXPECTED)
        return BAD
    out: list[ClusterNode] = []
    ids: dict[str, str] = {}
    addresses: dict[Address, str] = {}
    ok = True
    for item, where in items:
        n = _node(ctx, item, where)
        if n is BAD:
            ok = False
            continue
        line = node_line(item)
        if n.node_id in ids:
            ctx.problem(line, join_path(where, "node_id"), f"{n.node_id!r} is already used by "
                        f"{ids[n.node_id]}", "each node_id once")
            ok = False
        ids.setdefault(n.node_id, where)
        for key, hp in (("listen", n.listen), ("metrics", n.metrics)):
            if hp.port != 0 and hp in addresses:
                ctx.problem(line, join_path(where, key), f"{hp} is already used by "
                            f"{addresses[hp]}", "a different address for every listener")
                ok = False
            addresses.setdefault(hp, join_path(where, key))
        out.append(n)
    return tuple(out) if ok else BAD


_nodes_parser: Parser = expects(_NODES_EXPECTED)(_nodes)


def _spec(base: Path) -> dict[str, tuple[Parser, object]]:
    return {"nats": (_nats(base), REQUIRED),
            "replicas": (number(1, 5, integer=True), 3),
            "lease_s": (number(1, 300, integer=False), 5.0),
            "nodes": (_nodes_parser, REQUIRED),
            "name": (text_of(_NAME_RE, "a letter then up to 31 letters, digits or '_'"),
                     "dcgw")}


def parse_cluster(ctx: Context, m: MapNode, base: Path) -> ClusterSettings | None | Bad:
    """The top-level ``cluster:`` of gateway.yaml: None when absent (one process, as before),
    BAD (reported) when it has a problem."""
    node = m.nodes.get("cluster")
    if node is None or is_null(node):
        return None
    c = MapNode.of(ctx, node, "cluster", "a mapping {nats, replicas, lease_s, nodes}")
    values = c.fields(_spec(base)) if c is not None else None
    if values is None:
        return BAD
    return ClusterSettings(**values)
