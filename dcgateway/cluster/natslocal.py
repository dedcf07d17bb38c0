"""A local NATS cluster on 127.0.0.1: three ``nats-server`` processes with JetStream, each with
its own store directory, routed to each other. The demo (``dcgateway demo --cluster``), the
tests and the benchmark run the gateway's cluster mode on it; production runs real servers in
three failure domains (the README's cluster section).

Why processes, not an embedded fake: what the cluster mode must survive (a server killed and
restarted, a leader elected again, a quorum acknowledging a publish) is what the real server
does. Every wait here is bounded, and :meth:`LocalNatsCluster.stop` ends every process it
started (SIGTERM, then SIGKILL after a grace period), so a failed test leaves nothing running.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

#: Where Debian's ``nats-server`` package installs the server (also looked up on PATH).
DEBIAN_NATS_SERVER = "/usr/sbin/nats-server"


def nats_server_binary() -> str | None:
    """The ``nats-server`` executable, or None when it is not installed."""
    found = shutil.which("nats-server")
    if found:
        return found
    return DEBIAN_NATS_SERVER if os.access(DEBIAN_NATS_SERVER, os.X_OK) else None


def _die_with_parent() -> None:
    """In the child, before exec (Linux): SIGTERM when the process that started it dies, so a
    test run or a demo killed outright leaves no server behind."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)     # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports free right now (bound then released: a small race, fine on a
    machine the tests own)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class NatsServer:
    name: str
    port: int
    cluster_port: int
    store_dir: Path
    config_file: Path
    log_file: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class LocalNatsCluster:
    """``size`` JetStream servers on 127.0.0.1 under ``folder`` (one store dir each)."""

    folder: Path
    size: int = 3
    name: str = "dcgw"
    fsync: str = "default"               # JetStream sync_interval: "default" or e.g. "always"
    servers: list[NatsServer] = field(default_factory=list)

    def __post_init__(self) -> None:
        binary = nats_server_binary()
        if binary is None:
            raise FileNotFoundError("nats-server is not installed (Debian: apt-get install "
                                    "nats-server)")
        self.binary = binary
        self.folder = Path(self.folder)
        ports = free_ports(2 * self.size)
        for i in range(self.size):
            d = self.folder / f"nats{i + 1}"
            d.mkdir(parents=True, exist_ok=True)
            self.servers.append(NatsServer(f"s{i + 1}", ports[2 * i], ports[2 * i + 1],
                                           d / "store", d / "server.conf", d / "server.log"))
        for s in self.servers:
            s.config_file.write_text(self._config(s))

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def _config(self, s: NatsServer) -> str:
        routes = ", ".join(f"nats-route://127.0.0.1:{o.cluster_port}" for o in self.servers
                           if o is not s)
        sync = "" if self.fsync == "default" else f"\n  sync_interval: {self.fsync}"
        return (f'server_name: {s.name}\nlisten: "127.0.0.1:{s.port}"\n'
                f'jetstream {{\n  store_dir: "{s.store_dir}"\n  max_memory_store: 64MB\n'
                f"  max_file_store: 4GB{sync}\n}}\n"
                f'cluster {{\n  name: {self.name}\n  listen: "127.0.0.1:{s.cluster_port}"\n'
                f"  routes: [{routes}]\n}}\n")

    # -- processes --------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Start every server and wait (bounded) until JetStream answers with a meta leader."""
        for i in range(self.size):
            self.start_server(i)
        self.wait_ready(timeout)

    def start_server(self, i: int) -> None:
        s = self.servers[i]
        if s.running:
            return
        log = open(s.log_file, "ab")
        try:
            s.proc = subprocess.Popen([self.binary, "-c", str(s.config_file)],
                                      stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True,
                                      preexec_fn=_die_with_parent)
        finally:
            log.close()

    def kill_server(self, i: int) -> None:
        """SIGKILL one server (a machine lost) and reap it."""
        s = self.servers[i]
        if s.proc is not None and s.proc.poll() is None:
            s.proc.send_signal(signal.SIGKILL)
            s.proc.wait(10)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every running server accepts connections and JetStream has a meta leader
        (a stream can be created); TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        for s in self.servers:
            if not s.running:
                continue
            while not _port_open(s.port):
                if s.proc is not None and s.proc.poll() is not None:
                    raise RuntimeError(f"nats-server {s.name} exited with {s.proc.returncode}; "
                                       f"see {s.log_file}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"nats-server {s.name} did not listen on {s.port}")
                time.sleep(0.05)
        from .natsprobe import wait_jetstream
        wait_jetstream(self.urls, max(1.0, deadline - time.monotonic()))

    def stop(self, grace: float = 10.0) -> None:
        """Stop every server this object started: SIGTERM, then SIGKILL past ``grace``."""
        for s in self.servers:
            if s.running and s.proc is not None:
                s.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for s in self.servers:
            if s.proc is None:
                continue
            try:
                s.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                s.proc.kill()
                s.proc.wait(10)

    def __enter__(self) -> LocalNatsCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False
