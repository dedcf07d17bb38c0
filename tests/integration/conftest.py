"""Integration fixtures: a gateway on 127.0.0.1 port 0 with real files, real sockets and the
simplefix-based client from simulators/. Any exception that reaches the event loop's exception
handler fails the test (the asyncpg rule)."""

from __future__ import annotations

import asyncio
import os
import selectors
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import pytest_asyncio

from dcgateway.auth import logon_signer, open_key_manager
from dcgateway.config import GatewayConfig, load_config
from dcgateway.gateway import Gateway
from simulators.fixclient import FixClient

REPO = Path(__file__).resolve().parents[2]

SESSIONS = """
sessions:
  - {comp_id: ABC123N, role: source, entity: TRADECO, profile: ilink2, begin_string: FIX.4.2}
  - {comp_id: ABD123N, role: source, entity: TRADECO, profile: ilink2, begin_string: FIX.4.2}
  - {comp_id: CLR001N, role: target, entity: CLEARCO, profile: ilink2, begin_string: FIX.4.2}
  - {comp_id: CLRFIX44, role: target, entity: CLEARCO, profile: fix, begin_string: FIX.4.4}
"""


def write_config(folder: Path, *, port: int = 0, logon_timeout: float = 60, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "groups.yaml").write_text("groups: []\n")
    text = textwrap.dedent(f"""
        gateway:
          comp_id: DCGW
          listen: {{host: 127.0.0.1, port: {port}}}
          metrics: {{host: 127.0.0.1, port: 0}}
          data_dir: var
          market_close: {{time: "16:00", tz: America/Chicago}}
          week_start: {{day: sunday, time: "16:00", tz: America/Chicago}}
          logon_timeout_s: {logon_timeout}
          sending_time_tolerance_s: 30
          keystore: {{path: var/keys.db, master_key_file: var/master.key}}
        @EXTRA@
        entities:
          - {{name: TRADECO, administrators: [{{name: tina, email: tina@tradeco.example}}]}}
          - {{name: CLEARCO, administrators: [{{name: carl, email: carl@clearco.example}}]}}
        groups_file: groups.yaml
    """).replace("@EXTRA@\n", textwrap.indent(extra.strip() + "\n", "  ") if extra else "") + SESSIONS
    path = folder / "gateway.yaml"
    path.write_text(text)
    return path


def key_manager(cfg: GatewayConfig):
    g = cfg.gateway
    return open_key_manager(g.keystore.path, g.keystore.master_key_file,
                            g.data_dir / "keys-audit.jsonl", market_close="16:00",
                            market_close_tz="America/Chicago")


def issue_keys(cfg: GatewayConfig) -> dict[str, tuple[str, str]]:
    """One key pair per Session ID of the config (reused when the folder already has them):
    comp_id -> (access key id, secret)."""
    km = key_manager(cfg)
    scopes = {s.key_scope for s in cfg.sessions}
    have = {i.session_id: i.access_key_id for i in km.list() if i.status == "active"}
    creds: dict[str, tuple[str, str]] = {}
    for scope in sorted(scopes):
        if scope in have:
            rec = km.store.load()[have[scope]]
        else:
            rec = km.create(scope, who="test")
        creds[scope] = (rec.access_key_id, rec.secret_key)
    return {s.comp_id: creds[s.key_scope] for s in cfg.sessions}


def signed_client(port: int, sender: str, creds: dict[str, tuple[str, str]], **kw) -> FixClient:
    if sender in creds and "signer" not in kw:
        kw["signer"] = logon_signer(*creds[sender])
    kw.setdefault("sender_sub_id", "OPS")
    if sender in ("CLRFIX44",):
        kw.setdefault("begin_string", "FIX.4.4")
    return FixClient("127.0.0.1", port, sender, **kw)


class RunningGateway:
    def __init__(self, gw: Gateway, stop: asyncio.Event, task: asyncio.Task,
                 creds: dict[str, tuple[str, str]]) -> None:
        self.gw = gw
        self.stop_event = stop
        self.task = task
        self.creds = creds

    @property
    def port(self) -> int:
        assert self.gw.port is not None
        return self.gw.port

    def client(self, sender: str = "ABC123N", **kw) -> FixClient:
        """A client that signs its Logon with the session's key pair (unless signer= is given)."""
        return signed_client(self.port, sender, self.creds, **kw)

    async def stop(self) -> None:
        self.stop_event.set()
        await asyncio.wait_for(self.task, 15)

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the gateway's Prometheus registry (hot-path counters pushed first); 0
        when the series does not exist."""
        return metric(self.gw, name, **labels)

    def metric_labels(self, name: str, label: str) -> dict[str, float]:
        """``{label value: sample}`` of every non-zero series of ``name``."""
        self.gw.pump.push()
        out = {}
        for fam in self.gw.registry.collect():
            for s in fam.samples:
                if s.name == name and s.value and label in s.labels:
                    out[s.labels[label]] = out.get(s.labels[label], 0) + s.value
        return out


def metric(gw: Gateway, name: str, **labels: str) -> float:
    gw.pump.push()
    return gw.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def folder(tmp_path) -> Path:
    """A gateway folder with the test sessions and the shipped groups (the contract's)."""
    f = tmp_path / "gw"
    write_config(f)
    shutil.copy(REPO / "config" / "groups.yaml", f / "groups.yaml")
    return f


@pytest_asyncio.fixture
async def start_gateway(tmp_path, loop_errors):
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _l, ctx: loop_errors.append(ctx))
    running: list[RunningGateway] = []

    async def _start(folder: Path | None = None, **kw) -> RunningGateway:
        folder = folder or tmp_path / "gw"
        if not (folder / "gateway.yaml").exists() or kw:
            write_config(folder, **kw)
        cfg = load_config(folder / "gateway.yaml")
        creds = issue_keys(cfg)
        gw = Gateway(cfg)
        await gw.start()
        stop = asyncio.Event()
        rg = RunningGateway(gw, stop, asyncio.create_task(gw.serve(stop)), creds)
        running.append(rg)
        return rg

    yield _start
    for rg in running:
        if not rg.task.done():
            await rg.stop()


class GatewayProcess:
    """`python -m dcgateway run` as a real subprocess (for SIGTERM and kill -9 tests)."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None

    def start(self, timeout: float = 20.0) -> int:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "dcgateway", "run", "--config", str(self.config)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not sel.select(timeout=deadline - time.monotonic()):
                break
            line = self.proc.stdout.readline()
            if not line:
                break
            if "listening on" in line:
                self.port = int(line.rsplit(":", 1)[1])
                sel.close()
                return self.port
        sel.close()
        self.proc.kill()
        out, err = self.proc.communicate()
        raise RuntimeError(f"gateway did not start: {out}\n{err}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 15.0) -> tuple[int, str]:
        assert self.proc is not None
        _, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, err

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.communicate(timeout=10)


@pytest.fixture
def gateway_process():
    procs: list[GatewayProcess] = []

    def _make(config: Path) -> GatewayProcess:
        gp = GatewayProcess(config)
        procs.append(gp)
        return gp

    yield _make
    for gp in procs:
        if gp.proc is not None and gp.proc.poll() is None:
            gp.proc.kill()
            gp.proc.communicate(timeout=10)
