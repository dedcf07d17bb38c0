"""``dcgateway run --node`` when no NATS server of the cluster answers (closed ports on
127.0.0.1, no ``nats-server`` needed): the node gives up by itself after a bounded time with one
``error:`` line naming the servers (exit 1), and SIGTERM or SIGINT stops it at once while it is
still connecting (a graceful stop: exit 0, the log says what it was doing). Every node started
here is stopped here."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dcgateway.cluster.connect import start_connect_s
from dcgateway.cluster.natslocal import free_ports
from dcgateway.config import load_config

from .nodes import REPO, accepts_connections
from .support import cluster_config, wait_until


class NodeProcess:
    """``dcgateway run --node n1`` with its output in files (read while it runs)."""

    def __init__(self, config: Path, folder: Path) -> None:
        self.out_path, self.err_path = folder / "node.out", folder / "node.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            # faulthandler: a node that does not exit is sent SIGABRT (wait), and its threads'
            # Python stacks are in the failure's message
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dcgateway", "run", "--node", "n1", "--config",
                 str(config)], cwd=REPO, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONFAULTHANDLER": "1"})
        self.started = time.monotonic()

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        """The exit code; fails (the finaliser kills it) when it does not exit in ``timeout``."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)     # its stacks, then it ends
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
            raise AssertionError(f"the node did not exit within {timeout:g}s; stderr (with its "
                                 f"stacks when it was aborted): {self.stderr}") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def closed_cluster(tmp_path: Path) -> tuple[Path, list[str]]:
    """A cluster configuration whose three NATS servers are ports nobody listens on."""
    servers = [f"nats://127.0.0.1:{p}" for p in free_ports(3)]
    return cluster_config(tmp_path / "gw", servers), servers


@pytest.fixture
def node(closed_cluster: tuple[Path, list[str]], tmp_path: Path) -> Iterator[NodeProcess]:
    proc = NodeProcess(closed_cluster[0], tmp_path)
    try:
        yield proc
    finally:
        proc.stop()


def _error_line(node: NodeProcess, servers: list[str]) -> str:
    err = node.stderr
    assert "Traceback" not in err and "encountered error" not in err, err
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, err
    assert all(s in errors[0] for s in servers), errors[0]
    # the rest is the node's log: its first line, and the client's failures as log lines
    others = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("error: ")]
    assert all(" WARNING dcgateway.cluster: " in ln for ln in others), err
    return errors[0]


def test_a_node_no_nats_server_answers_exits_1_by_itself(
        closed_cluster: tuple[Path, list[str]], node: NodeProcess) -> None:
    path, servers = closed_cluster
    bound = start_connect_s(load_config(path).cluster)
    code = node.wait(bound + 20)                   # the bound, plus the interpreter's start
    elapsed = time.monotonic() - node.started
    assert code == 1, (code, node.stderr)
    line = _error_line(node, servers)
    assert "connecting failed on the cluster's NATS servers" in line, line
    assert f"no server answered within {bound:g}s" in line and "Connection refused" in line
    assert elapsed >= bound, elapsed                 # it tried for the whole bound
    assert "dcgateway node n1 on" in node.stdout
    listen = load_config(path).cluster.node("n1").listen
    assert not accepts_connections(listen.port)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_a_node_while_it_connects(
        closed_cluster: tuple[Path, list[str]], node: NodeProcess, sig: int) -> None:
    path, servers = closed_cluster
    bound = start_connect_s(load_config(path).cluster)
    # connecting: its first refused attempt is logged (well before the bound runs out)
    wait_until(lambda: "Connection refused" in node.stderr or node.proc.poll() is not None,
               timeout=bound + 20, what="the node's first connection attempt")
    assert node.proc.poll() is None, node.stderr
    t0 = time.monotonic()
    os.kill(node.proc.pid, sig)
    code = node.wait(5)
    assert time.monotonic() - t0 < 3, time.monotonic() - t0
    # a graceful stop (a supervisor stopping a node that waits for NATS is not a failure):
    # exit 0, no error line, and the log says what it was doing
    err = node.stderr
    assert code == 0, (code, err)
    assert "Traceback" not in err and "error: " not in err, err
    [line] = [ln for ln in err.splitlines() if "before it was up" in ln]
    assert " WARNING dcgateway.cluster" in line and "stopped (SIGTERM or SIGINT)" in line, line
    assert "connecting to the cluster's NATS servers" in line and all(s in line for s in servers)
