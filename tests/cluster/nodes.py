"""Gateway nodes as the tests run them: ``dcgateway run --node ID`` processes (SIGKILL, SIGSTOP,
restart), key pairs issued with the CLI into the cluster, and who serves right now (read from
the leases bucket). Every process started here is stopped by :meth:`Nodes.stop_all`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nats

from dcgateway.config import GatewayConfig, load_config

from .support import close_nats

REPO = Path(__file__).resolve().parents[2]
SCOPES = ("ABC", "ABD", "CLR", "CLRFIX44")


def issue_cluster_keys(config_path: Path) -> dict[str, tuple[str, str]]:
    """A key pair per Session ID, created with ``dcgateway keys create`` (into the cluster):
    comp_id -> (access key id, secret)."""
    cfg = load_config(config_path)
    by_scope = {}
    for scope in sorted({s.key_scope for s in cfg.sessions}):
        r = subprocess.run([sys.executable, "-m", "dcgateway", "keys", "create", "--session-id",
                            scope, "--json", "--config", str(config_path)], cwd=REPO,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        by_scope[scope] = (doc["access_key_id"], doc["secret_key"])
    return {s.comp_id: by_scope[s.key_scope] for s in cfg.sessions}


def accepts_connections(port: int) -> bool:
    """Whether something on 127.0.0.1 accepts a TCP connection on ``port``."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


class Nodes:
    """The cluster's gateway nodes of ``config_path`` as processes."""

    def __init__(self, config_path: Path, log_dir: Path) -> None:
        self.config_path = config_path
        self.config: GatewayConfig = load_config(config_path)
        assert self.config.cluster is not None
        self.cluster = self.config.cluster
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, Any] = {}

    def address(self, node_id: str) -> tuple[str, int]:
        n = self.cluster.node(node_id)
        assert n is not None
        return n.listen.host, n.listen.port

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [self.address(n.node_id) for n in self.cluster.nodes]

    def start(self, node_id: str, timeout: float = 30.0) -> None:
        """Start the node and wait (bounded) until its FIX port answers."""
        log = self._logs.get(node_id)
        if log is None:
            log = self._logs[node_id] = open(self.log_dir / f"{node_id}.log", "ab")
        self.procs[node_id] = subprocess.Popen(
            [sys.executable, "-m", "dcgateway", "run", "--node", node_id, "--config",
             str(self.config_path), "--log-level", "INFO"], cwd=REPO, stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        port = self.address(node_id)[1]
        while not accepts_connections(port):
            if self.procs[node_id].poll() is not None:
                raise RuntimeError(f"node {node_id} exited; see {self.log_dir}/{node_id}.log")
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {node_id} did not listen on {port}")
            time.sleep(0.05)

    def kill(self, node_id: str) -> None:
        p = self.procs[node_id]
        if p.poll() is None:
            os.kill(p.pid, signal.SIGCONT)
            p.kill()
        p.wait(10)

    def signal(self, node_id: str, sig: int) -> None:
        os.kill(self.procs[node_id].pid, sig)

    def stop(self, node_id: str, timeout: float = 20.0) -> int | None:
        p = self.procs.get(node_id)
        if p is None:
            return None
        if p.poll() is None:
            os.kill(p.pid, signal.SIGCONT)
            p.terminate()
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        return p.returncode

    def stop_all(self) -> None:
        for node_id in list(self.procs):
            self.stop(node_id)
        for log in self._logs.values():
            log.close()

    def log_text(self, node_id: str) -> str:
        return (self.log_dir / f"{node_id}.log").read_text(errors="replace")

    async def primary(self) -> str | None:
        """The node holding the primary lease now (None while it is free)."""
        got = await self.primary_lease()
        return None if got is None else got[0]

    async def primary_lease(self) -> tuple[str, str] | None:
        """(node, lease term) of the primary lease now (None while it is free); the term
        changes at every takeover."""
        nc = await nats.connect(servers=list(self.cluster.nats.servers))
        try:
            kv = await nc.jetstream().key_value(f"{self.cluster.name}_leases")
            try:
                e = await kv.get("lease.primary")
            except Exception:
                return None
            if not e.value:
                return None
            doc = json.loads(e.value)
            return str(doc.get("node")), str(doc.get("term"))
        finally:
            await close_nats(nc)

    async def wait_primary(self, timeout: float = 30.0, after: str = "") -> tuple[str, str]:
        """(node, term) of a primary other than term ``after`` (a takeover, by whichever node
        won it) that has started serving."""
        import asyncio
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            p = await self.primary_lease()
            if p is not None and p[1] != after and "serves every session" in \
                    self.log_text(p[0]).rsplit("acquired lease", 1)[-1]:
                return p
            await asyncio.sleep(0.1)
        raise AssertionError(f"no new primary within {timeout}s")
