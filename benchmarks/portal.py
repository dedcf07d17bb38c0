"""Portal benchmark: what a login costs, how fast the group and key API answers, and whether a
portal serving requests slows the gateway's fan-out.

Real parts, all on 127.0.0.1: the gateway (``dcgateway run``) and the portal (``dcgateway
portal``) are two processes sharing one state store (data_dir, key store, groups file) in a
temporary folder; the fan-out load is the fanout benchmark's load process
(``benchmarks/_fixload.py``: one FIX 4.2 source SRC1 and --targets targets CLR1..CLRK, signed
Logons) started once per throughput run; this process is the HTTP client. The config is the
fanout benchmark's (``benchmarks/fanout.py``: entity BENCH, administrator ``bench``, one group
copying every category from SRC1 to every target) plus a ``portal:`` section, and every session
resets its sequence numbers on Logon (each load run is a new process starting at 34=1); the key
pairs are made with ``dcgateway keys create`` as the fanout benchmark makes them.

* login: ``Accounts.login`` (argon2id verification of the password + a TOTP code), median of
  --logins; and one login over HTTP (enrolment through the API first);
* API: --cycles cycles of create, list, show, replace and delete a group (SRC1 to CLR1), list
  key pairs and issue one for CLR1 (deleting an older pair once two are live; never the pair
  the next load run logs on with), paced at about --api-rate requests/s (the portal's default
  limit is 20/s a user); p50/p99 per family, with the gateway idle. The same figures for the
  calls made while the fan-out runs are reported under ``*_during_fanout``;
* fan-out: --repeats pairs of throughput runs (the fanout benchmark's flat-out phase: --messages
  ExecutionReports to K targets, deliveries/s = K * messages / first send to last copy): one
  with the portal idle, one while the API cycles run beside it (started before the load logs
  on, stopped after it logged out); the order within a pair alternates. The ratio of the
  medians (with/without) should stay above 0.95. Every target must get every copy exactly once
  and in order (``lost``, ``dup``, ``out_of_order``: sums over every run).

Prints exactly one JSON line on stdout (progress goes to stderr):
  {"bench": "portal", "login_ms": ..., "login_http_ms": ..., "group_api_p50_ms": ...,
   "group_api_p99_ms": ..., "key_api_p50_ms": ..., "key_api_p99_ms": ...,
   "fanout_deliveries_per_s_without": ..., "fanout_deliveries_per_s_with": ...,
   "fanout_ratio": ..., "lost": 0, ..., "ok": true, "errors": []}
Every process it starts is stopped (SIGTERM, then SIGKILL) on the way out, Ctrl-C included;
every wait is bounded (--timeout per load run, 30 s per HTTP request).

  .venv/bin/python benchmarks/portal.py [--targets 4] [--messages 100000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pyotp
import uvloop

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._fixload import cpu_seconds
from benchmarks.fanout import (
    ADMIN,
    GATEWAY,
    HERE,
    LISTENING,
    SOURCE,
    Child,
    dcgateway_cmd,
    make_keys,
    target_ids,
    write_config,
)
from dcgateway.config import load_config
from dcgateway.portal.accounts import Accounts
from dcgateway.state.users import open_user_store

ENTITY = "BENCH"                         # the fanout benchmark's entity (its administrator: ADMIN)
PASSWORD = "portal load passphrase, long enough"   # must not contain the user name
PORTAL = """
portal:
  listen: {host: 127.0.0.1, port: 0}
  public_url: http://127.0.0.1:0
"""
PORTAL_ON = re.compile(r"dcgateway portal on (https?://\S+)")
SESSION_END = "begin_string: FIX.4.2}"   # how every session line of the fanout config ends
HTTP_TIMEOUT_S = 30.0


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def gateway_config(folder: Path, work: Path, k: int) -> Path:
    """The fanout benchmark's config (``folder/gateway.yaml``, its groups file beside it, the
    key store in ``work/keys``) with every session resetting on Logon and a portal section."""
    config = write_config(folder, work, k, [])
    text = config.read_text()
    if text.count(SESSION_END) != k + 1:
        raise RuntimeError(f"{config}: expected {k + 1} session lines ending {SESSION_END!r}")
    text = text.replace(SESSION_END, SESSION_END[:-1] + ", reset_on_logon: true}")
    config.write_text(text + PORTAL)
    return config


def pct(values: list[float], q: float) -> float | None:
    """Nearest rank (the old fanout benchmark's), rounded to 0.01."""
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 2)


def median(values: list[Any]) -> float | None:
    nums = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(nums) if nums else None


def totp_of(uri: str) -> pyotp.TOTP:
    otp = pyotp.parse_uri(uri)
    if not isinstance(otp, pyotp.TOTP):
        raise RuntimeError(f"expected a TOTP enrolment URI, got {type(otp).__name__}")
    return otp


def login_cost(config_path: Path, n: int) -> float:
    """Median ms of ``Accounts.login`` (argon2id + TOTP) on a scratch users store."""
    cfg = load_config(config_path)
    with tempfile.TemporaryDirectory(prefix="dcgw-bench-users-") as tmp:
        users = open_user_store(tmp, Path(tmp) / "master.key", Path(tmp) / "keys.db")
        accounts = Accounts(cfg, users)
        t0 = 1_800_000_000.0
        token, _ = accounts.invite(ADMIN, t0)
        _, uri = accounts.begin_enrolment(token, PASSWORD, t0)
        totp = totp_of(uri)
        accounts.confirm_enrolment(token, totp.at(t0), t0)
        took = []
        for i in range(1, n + 1):
            now = t0 + 30 * i
            start = time.perf_counter()
            outcome = accounts.login(ADMIN, PASSWORD, totp.at(now), now).outcome
            took.append((time.perf_counter() - start) * 1000)
            if outcome != "ok":
                raise RuntimeError(f"Accounts.login: {outcome}")
    return statistics.median(took)


class Driver:
    """The HTTP side: one logged-in administrator and the API cycle."""

    def __init__(self, http: httpx.AsyncClient, csrf: str, key_session: str,
                 pair: tuple[str, str], mix: str = "all") -> None:
        self.http = http
        self.mix = mix
        self.headers = {"X-CSRF-Token": csrf}
        self.key_session = key_session
        self.secrets = {pair[0]: pair[1]}       # live pairs of key_session, oldest first
        self.pinned = pair[0]                   # the pair the next load run logs on with
        self.samples: dict[str, list[float]] = {"group": [], "key": [], "other": []}
        self.cycle = 0

    def pin(self) -> tuple[str, str]:
        """The newest live pair, kept live until the next ``pin``."""
        self.pinned = list(self.secrets)[-1]
        return self.pinned, self.secrets[self.pinned]

    async def call(self, family: str, method: str, path: str, **kw: Any) -> httpx.Response:
        start = time.perf_counter()
        r = await self.http.request(method, "/api/v1" + path, headers=self.headers, **kw)
        self.samples[family].append((time.perf_counter() - start) * 1000)
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:300]}")
        return r

    async def one_cycle(self) -> None:
        self.cycle += 1
        base = f"/entities/{ENTITY}"
        if self.mix == "read":                   # reads only: no file the gateway follows moves
            for path in ("/groups", "/groups/fanout"):
                await self.call("group", "GET", base + path)
            for path in (f"{base}/keys", f"{base}/sessions", "/me", f"{base}/keys",
                         f"{base}/audit?limit=50"):
                await self.call("key" if "keys" in path else "other", "GET", path)
            return
        name = f"api-{self.cycle}"
        group = {"name": name, "front_end": "fix", "filters": {"categories": ["execution"]},
                 "sources": [SOURCE], "targets": [self.key_session]}
        groups = f"{base}/groups"
        await self.call("group", "POST", groups, json=group)
        await self.call("group", "GET", groups)
        await self.call("group", "GET", f"{groups}/{name}")
        await self.call("group", "PUT", f"{groups}/{name}",
                        json={**group, "filters": {"categories": ["execution", "order"]}})
        await self.call("group", "DELETE", f"{groups}/{name}")
        await self.call("key", "GET", f"{base}/keys")
        body: dict[str, str] = {"session_id": self.key_session}
        if len(self.secrets) >= 2:               # at most two live pairs a Session ID
            victim = next(k for k in self.secrets if k != self.pinned)
            body["delete_access_key_id"] = victim
        r = await self.call("key", "POST", f"{base}/keys", json=body)
        self.secrets.pop(body.get("delete_access_key_id", ""), None)
        doc = r.json()
        self.secrets[doc["access_key_id"]] = doc["secret_key"]

    async def run(self, cycles: int | None, rate: float, deadline: float,
                  stop: asyncio.Event | None = None) -> int:
        """Cycles paced at ``rate`` requests/s (7 requests a cycle) until ``cycles`` are done,
        ``stop`` is set or time.monotonic() passes ``deadline``; returns the cycles done."""
        period = 7 / rate
        done = 0
        while ((cycles is None or done < cycles) and not (stop and stop.is_set())
               and time.monotonic() < deadline):
            started = time.perf_counter()
            await self.one_cycle()
            done += 1
            pause = max(0.0, period - (time.perf_counter() - started))
            if stop is None:
                await asyncio.sleep(pause)
            else:
                try:
                    await asyncio.wait_for(stop.wait(), pause)
                except TimeoutError:
                    pass
        return done


async def log_in(url: str, config_path: Path) -> tuple[httpx.AsyncClient, str, float]:
    """Invite ADMIN (as ``dcgateway users invite`` does), enrol and log in over the API;
    returns the client (its cookie is the web session), the CSRF token and the login's ms."""
    cfg = load_config(config_path)
    users = open_user_store(cfg.gateway.data_dir, cfg.gateway.keystore.master_key_file,
                            cfg.gateway.keystore.path)
    token, _ = Accounts(cfg, users).invite(ADMIN, time.time())
    http = httpx.AsyncClient(base_url=url, timeout=HTTP_TIMEOUT_S)
    try:
        r = await http.post("/api/v1/enrol", json={"token": token, "password": PASSWORD})
        r.raise_for_status()
        totp = totp_of(r.json()["totp_uri"])
        r = await http.post("/api/v1/enrol/confirm", json={"token": token, "code": totp.now()})
        r.raise_for_status()
        start = time.perf_counter()
        r = await http.post("/api/v1/login", json={"user": ADMIN, "password": PASSWORD,
                                                   "code": totp.at(time.time() + 30)})
        took = (time.perf_counter() - start) * 1000
        r.raise_for_status()
        return http, r.json()["csrf_token"], took
    except BaseException:
        await http.aclose()
        raise


class Bench:
    """One run: the processes it started (stopped by ``stop_all``) and what they share."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.children: list[Child] = []
        self.errors: list[str] = []
        self.runs = 0

    def start(self, cmd: list[str], log: str) -> Child:
        child = Child(cmd, self.work / log)
        self.children.append(child)
        return child

    def stop_all(self) -> None:
        for child in reversed(self.children):
            child.stop()

    def creds_file(self, creds: dict[str, list[str]]) -> Path:
        """The load's key-pair file (0600), rewritten for each run."""
        path = self.work / "creds-run.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(creds, fh)
        return path

    async def load_run(self, port: int, gateway_pid: int, portal_pid: int,
                       creds: Path) -> dict[str, Any]:
        """One flat-out run of the fanout benchmark's load process (its phase ``flat``, plus
        the portal's CPU over the whole run)."""
        a = self.args
        self.runs += 1
        cmd = [sys.executable, str(HERE / "_fixload.py"), "--port", str(port),
               "--pid", str(gateway_pid), "--gateway", GATEWAY, "--source", SOURCE,
               "--targets", ",".join(target_ids(a.targets)), "--phases", f"flat:{a.messages}",
               "--settle", str(a.settle), "--max-seconds", str(a.timeout),
               "--creds", str(creds)]
        p0, w0 = cpu_seconds(portal_pid), time.monotonic()
        load = self.start(cmd, f"load-{self.runs}.log")
        try:
            deadline = w0 + a.timeout + 30
            while load.proc.poll() is None:
                if time.monotonic() > deadline:
                    return {"ok": False, "errors": [f"load run {self.runs}: timed out"]}
                await asyncio.sleep(0.05)
        finally:
            load.stop()
        portal_cpu = round(100 * (cpu_seconds(portal_pid) - p0) / (time.monotonic() - w0), 1)
        out = load.output()
        for line in reversed(out.splitlines()):
            if line.startswith("{"):
                try:
                    result = json.loads(line)
                except ValueError:
                    break
                flat: dict[str, Any] = next((p for p in result.get("phases", []) if p["phase"] == "flat"), {})
                return {**flat, "ok": bool(result.get("ok")) and bool(flat),
                        "errors": result.get("errors", []), "portal_cpu_pct": portal_cpu}
        return {"ok": False, "errors": [f"load run {self.runs}: no result: {out[-600:]!r}"]}

    async def fanout(self, driver: Driver, port: int, gw_pid: int, portal_pid: int,
                     base_creds: dict[str, list[str]], with_portal: bool) -> dict[str, Any]:
        a = self.args
        creds = self.creds_file({**base_creds, driver.key_session: list(driver.pin())})
        if not with_portal:
            return await self.load_run(port, gw_pid, portal_pid, creds)
        stop = asyncio.Event()
        beside = asyncio.create_task(driver.run(None, a.api_rate, time.monotonic()
                                                + a.timeout + 60, stop))
        try:
            await asyncio.sleep(0.3)            # the API load runs before the load logs on
            result = await self.load_run(port, gw_pid, portal_pid, creds)
            stop.set()
            result["api_cycles"] = await beside
        finally:
            if not beside.done():
                beside.cancel()
                try:
                    await beside
                except (asyncio.CancelledError, RuntimeError, httpx.HTTPError):
                    pass
        return result

    async def drive(self, port: int, gw_pid: int, portal_pid: int, url: str, config: Path,
                    creds: dict[str, list[str]]) -> dict[str, Any]:
        a = self.args
        http, csrf, login_http_ms = await log_in(url, config)
        try:
            key_session = target_ids(a.targets)[0]
            driver = Driver(http, csrf, key_session, (creds[key_session][0],
                                                      creds[key_session][1]), a.mix)
            progress(f"API: {a.cycles} cycles at {a.api_rate} requests/s, gateway idle")
            await driver.run(a.cycles, a.api_rate, time.monotonic() + a.cycles * 7 / a.api_rate
                             + a.cycles * 7 * HTTP_TIMEOUT_S)
            api = driver.samples
            driver.samples = {"group": [], "key": [], "other": []}
            runs: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
            for i in range(a.repeats):
                for label in (("without", "with") if i % 2 == 0 else ("with", "without")):
                    r = await self.fanout(driver, port, gw_pid, portal_pid, creds,
                                          label == "with")
                    runs[label].append(r)
                    progress(f"pair {i + 1}/{a.repeats} {label:7} portal: deliveries/s "
                             f"{r.get('deliveries_per_s')} in {r.get('msgs_in_per_s')}/s "
                             f"gateway cpu {r.get('cpu_pct')}% portal cpu "
                             f"{r.get('portal_cpu_pct')}% load cpu {r.get('load_cpu_pct')}% "
                             f"lost {r.get('lost')} dup {r.get('dup')}"
                             + (f" api cycles {r.get('api_cycles')}" if label == "with" else "")
                             + ("" if r.get("ok") else f" NOT OK {r.get('errors')}"))
        finally:
            await http.aclose()
        return self.figures(login_http_ms, api, driver.samples, runs)

    def figures(self, login_http_ms: float, api: dict[str, list[float]],
                beside: dict[str, list[float]], runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        a = self.args
        wo = median([r.get("deliveries_per_s") for r in runs["without"]])
        w = median([r.get("deliveries_per_s") for r in runs["with"]])
        every = runs["without"] + runs["with"]
        errors = [e for r in every for e in r.get("errors", [])]
        ok = all(r.get("ok") for r in every)
        out: dict[str, Any] = {"bench": "portal", "targets": a.targets, "messages": a.messages,
                               "login_ms": None, "login_http_ms": round(login_http_ms, 1)}
        for name, samples in (("", api), ("_during_fanout", beside)):
            for family in ("group", "key"):
                out[f"{family}_api_calls{name}"] = len(samples[family])
                out[f"{family}_api_p50_ms{name}"] = pct(samples[family], 0.5)
                out[f"{family}_api_p99_ms{name}"] = pct(samples[family], 0.99)
        out.update({
            "fanout_deliveries_per_s_without": None if wo is None else round(wo),
            "fanout_deliveries_per_s_with": None if w is None else round(w),
            "fanout_ratio": round(w / wo, 3) if w is not None and wo else None,
            "fanout_runs_without": [r.get("deliveries_per_s") for r in runs["without"]],
            "fanout_runs_with": [r.get("deliveries_per_s") for r in runs["with"]],
            "gateway_cpu_pct_without": median([r.get("cpu_pct") for r in runs["without"]]),
            "gateway_cpu_pct_with": median([r.get("cpu_pct") for r in runs["with"]]),
            "portal_cpu_pct_with": median([r.get("portal_cpu_pct") for r in runs["with"]]),
            "load_cpu_pct_with": median([r.get("load_cpu_pct") for r in runs["with"]]),
            "api_rate": a.api_rate, "mix": a.mix, "repeats": a.repeats,
            "lost": sum(r.get("lost", 0) or 0 for r in every),
            "dup": sum(r.get("dup", 0) or 0 for r in every),
            "out_of_order": sum(r.get("out_of_order", 0) or 0 for r in every),
            "ok": ok and len(every) == 2 * a.repeats, "errors": errors[:20],
        })
        return out

    def run(self) -> dict[str, Any]:
        a = self.args
        progress("key pairs (dcgateway keys create)")
        creds = json.loads(make_keys(self.work, a.targets).read_text())
        config = gateway_config(self.work / "gw", self.work, a.targets)
        progress(f"login cost: {a.logins} x Accounts.login")
        login_ms = login_cost(config, a.logins)
        gw = self.start([*dcgateway_cmd(), "run", "--config", str(config)], "gateway.log")
        portal = self.start([*dcgateway_cmd(), "portal", "--config", str(config),
                             "--log-level", "WARNING"], "portal.log")
        port = int(gw.wait_for(LISTENING, 60).group(1))
        url = portal.wait_for(PORTAL_ON, 60).group(1)
        progress(f"gateway on 127.0.0.1:{port} (pid {gw.proc.pid}), portal on {url} "
                 f"(pid {portal.proc.pid})")
        out = uvloop.run(self.drive(port, gw.proc.pid, portal.proc.pid, url, config, creds))
        out["login_ms"] = round(login_ms, 1)
        for child, name in ((portal, "portal"), (gw, "gateway")):
            child.stop()
            if child.proc.returncode:
                out["ok"] = False
                out["errors"].append(f"{name} exited rc={child.proc.returncode}: "
                                     f"{child.output()[-400:]}")
        return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", type=int, default=4)
    ap.add_argument("--messages", type=int, default=100_000, help="per throughput run")
    ap.add_argument("--repeats", type=int, default=5, help="pairs of throughput runs")
    ap.add_argument("--cycles", type=int, default=40, help="API cycles (7 calls each)")
    ap.add_argument("--api-rate", type=float, default=5.0,
                    help="API requests/s offered (default 5: a busy portal, several administrators)")
    ap.add_argument("--logins", type=int, default=5)
    ap.add_argument("--mix", choices=("all", "read"), default="all",
                    help="all: the cycle above; read: GETs only (groups, keys, sessions, audit)")
    ap.add_argument("--settle", type=float, default=1.0,
                    help="seconds between a load run's Logons and its burst")
    ap.add_argument("--timeout", type=float, default=120.0, help="bound on one load run, s")
    args = ap.parse_args(argv)
    if not (1 <= args.targets <= 64 and args.messages >= 1 and args.repeats >= 1
            and args.cycles >= 0 and args.logins >= 1 and args.api_rate > 0
            and args.timeout > 0):
        raise SystemExit("--targets 1..64, --messages/--repeats/--logins >= 1, --cycles >= 0, "
                         "--api-rate and --timeout > 0")
    signal.signal(signal.SIGTERM, signal.default_int_handler)   # SIGTERM cleans up like Ctrl-C
    work = Path(tempfile.mkdtemp(prefix="dcgw-bench-portal-"))  # holds key pairs: removed below
    bench = Bench(args, work)
    try:
        try:
            out = bench.run()
        except Exception as exc:      # noqa: BLE001 - still one JSON line, saying what failed
            out = {"bench": "portal", "ok": False, "errors": [f"{type(exc).__name__}: {exc}"]}
        finally:
            bench.stop_all()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out))
    return 0 if out.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
