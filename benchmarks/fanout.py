"""Fan-out benchmark: the gateway beside a relay that does the FIX work any relay must do, measured
by the same load in the same run.

Systems, alternated per repetition (gateway, relay, gateway, relay, ... with --reps):
  * ``dcgw``: the real gateway, ``dcgateway run`` in its own process, on a config written from
    the template below (one FIX 4.2 source SRC1, --targets K targets CLR1..CLRK, profile fix, one
    group copying every category from the source to every target; every other setting is the
    default unless --dcgw-set adds it), a fresh data_dir and key pairs made with
    ``dcgateway keys create``. Logons are signed with ``dcgateway.auth.signed_logon``.
  * ``relay``: ``benchmarks/bare_relay.py``: frames by BodyLength, verifies the CheckSum,
    rebuilds each copy's header per target (own 34, 49/56, 52, 115, 116, 122), copies the body
    byte for byte, one write per target per read. No journal, no authentication, no routing.
The load (``benchmarks/_fixload.py``) is a third process: it logs on the targets and the source,
then runs the phases: one fixed rate per --rates (each for --seconds), then ``flat``
(--messages ExecutionReports flat out; last, so that the latency phases see the process as it
starts, not the aftermath of a flood). Per copy it measures target receipt - source send, and
checks that every target got every copy exactly once, in order.

Figures per system and phase (medians over the reps): msgs/s in (messages / first send to last
copy received), deliveries/s, p50/p99/p99.9 latency in µs (flat out this is time queued in socket
buffers: read latency at the fixed rates), the system's CPU over the phase (utime+stime from
/proc, 100 = one core), the load's own CPU (near 100 it measures the harness), lost / dup /
out_of_order. For the gateway also, from its /metrics scraped before and after each phase: fsync
p50/p99 (interpolated within the ``dcgateway_journal_fsync_duration_seconds`` buckets), the
number of fsyncs and the mean group-commit batch, and (journal_durability fsync) the p50/p99 of
``dcgateway_journal_commit_wait_seconds``: a commit's wait from its write to the OS until the
loop learns it is durable (above the fsync by any fsync already in flight and the hand-offs to
and from the sync thread). Ratios are dcgw / relay: above 1 the gateway moves more (msgs/s,
deliveries/s) or is slower or costlier (latency, CPU).

Prints exactly one JSON line on stdout (progress goes to stderr):
  {"bench": "fanout", "targets": 4, "reps": 1, "phases": ["rate_2000", "rate_10000", "flat"],
   "dcgw": {PHASE: {"msgs_in_per_s", "deliveries_per_s", "p50_us", "p99_us", "p999_us",
                    "cpu_pct", "load_cpu_pct", "lost", "dup", "out_of_order", "fsync_p50_us",
                    "fsync_p99_us", "fsyncs", "batch_mean", "commit_wait_p50_us",
                    "commit_wait_p99_us"}},
   "relay": {PHASE: {... the same without fsync}},
   "ratio": {PHASE: {"msgs_in_per_s", "deliveries_per_s", "p50_us", "p99_us", "p999_us",
                     "cpu_pct"}},
   "fsync": {"p50_us", "p99_us", "mean_us", "fsyncs", "batch_mean", "commit_wait_p50_us",
             "commit_wait_p99_us"}, "ok": true, "errors": []}
Every process it starts is stopped (SIGTERM, then SIGKILL) on the way out, Ctrl-C included.

  .venv/bin/python benchmarks/fanout.py [--targets 4] [--reps 1] [--dcgw-set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import statistics
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HERE = REPO / "benchmarks"
sys.path.insert(0, str(REPO))

from dcgateway.routing import CATEGORIES  # noqa: E402

GATEWAY, SOURCE, ADMIN = "GW", "SRC1", "bench"
FIGURES = ("msgs_in_per_s", "deliveries_per_s", "p50_us", "p99_us", "p999_us", "cpu_pct")
COUNTS = ("lost", "dup", "out_of_order")
FSYNC = "dcgateway_journal_fsync_duration_seconds"
BATCH = "dcgateway_journal_fsync_batch_records"
WAIT = "dcgateway_journal_commit_wait_seconds"
LISTENING = re.compile(r"listening on [\w.:-]+:(\d+)\s*$", re.M)
METRICS_AT = re.compile(r"metrics on https?://[^\s/]+:(\d+)/metrics")
TEMPLATE_KEYS = ("comp_id", "listen", "metrics", "data_dir", "keystore")

CONFIG = string.Template("""\
# Written by benchmarks/fanout.py for one run. Every setting not written here is the default.
gateway:
  comp_id: GW
  listen: {host: 127.0.0.1, port: 0}
  metrics: {host: 127.0.0.1, port: 0}
  data_dir: $data_dir
  market_close: {time: "16:00", tz: America/Chicago}
  week_start: {day: sunday, time: "16:00", tz: America/Chicago}
  keystore: {path: $keystore, master_key_file: $master_key}
$extra
entities:
  - {name: BENCH, administrators: [{name: bench, email: bench@localhost}]}
groups_file: $groups
sessions:
  - {comp_id: SRC1, role: source, entity: BENCH, profile: fix, begin_string: FIX.4.2}
$targets""")

GROUPS = string.Template("""\
groups:
  - entity: BENCH
    name: fanout
    front_end: fix
    filters: {categories: [$categories]}
    sources: [SRC1]
    targets: [$targets]
""")


def target_ids(k: int) -> list[str]:
    return [f"CLR{i}" for i in range(1, k + 1)]


def settings_yaml(sets: list[str]) -> str:
    """--dcgw-set KEY=VALUE (KEY may be dotted, with or without ``gateway.``) as YAML lines of the
    gateway section; VALUE is written as it stands (YAML)."""
    tree: dict = {}
    for item in sets:
        key, sep, value = item.partition("=")
        path = key.strip().removeprefix("gateway.").split(".")
        if not sep or not all(re.fullmatch(r"[A-Za-z0-9_]+", p) for p in path):
            raise SystemExit(f"--dcgw-set {item!r}: expected KEY=VALUE")
        if path[0] in TEMPLATE_KEYS:
            raise SystemExit(f"--dcgw-set {item!r}: gateway.{path[0]} is the template's")
        node = tree
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = value.strip()

    def lines(node: dict, indent: int) -> list[str]:
        out = []
        for k, v in node.items():
            if isinstance(v, dict):
                out += [" " * indent + f"{k}:", *lines(v, indent + 2)]
            else:
                out.append(" " * indent + f"{k}: {v}")
        return out
    return "\n".join(lines(tree, 2))


def write_config(folder: Path, work: Path, k: int, sets: list[str]) -> Path:
    """gateway.yaml + groups.yaml in ``folder`` (data_dir ``folder/data``, the key store in
    ``work/keys``, shared by every run); returns the config's path."""
    (folder / "data").mkdir(parents=True)
    targets = target_ids(k)
    groups = folder / "groups.yaml"
    groups.write_text(GROUPS.substitute(categories=", ".join(CATEGORIES),
                                        targets=", ".join(targets)))
    config = folder / "gateway.yaml"
    config.write_text(CONFIG.substitute(
        data_dir=json.dumps(str(folder / "data")), groups=json.dumps(str(groups)),
        keystore=json.dumps(str(work / "keys" / "keys.db")),
        master_key=json.dumps(str(work / "keys" / "master.key")), extra=settings_yaml(sets),
        targets="".join(f"  - {{comp_id: {t}, role: target, entity: BENCH, profile: fix, "
                        f"begin_string: FIX.4.2}}\n" for t in targets)))
    return config


def dcgateway_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("dcgateway")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "dcgateway"]


def make_keys(work: Path, k: int) -> Path:
    """One key pair per session, made as an operator does (``dcgateway keys create --json``);
    written to ``work/creds.json`` (0600) as ``{CompID: [access_key_id, secret_key]}``."""
    (work / "keys").mkdir(mode=0o700)
    config = write_config(work / "admin", work, k, [])
    creds = {}
    for sid in [SOURCE, *target_ids(k)]:
        p = subprocess.run([*dcgateway_cmd(), "keys", "create", "--session-id", sid, "--json",
                            "--as", ADMIN, "--config", str(config)], capture_output=True,
                           text=True, timeout=120, stdin=subprocess.DEVNULL, cwd=REPO)
        try:
            doc = json.loads(p.stdout)
            creds[sid] = [doc["access_key_id"], doc["secret_key"]]
        except (ValueError, KeyError, TypeError):
            raise RuntimeError(f"dcgateway keys create --session-id {sid}: rc={p.returncode} "
                               f"{(p.stderr or p.stdout)[-400:]}") from None
    path = work / "creds.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(creds, fh)
    return path


class Child:
    """A process this benchmark started: output to a log file (a pipe nobody reads could stall
    it), stopped with SIGTERM, then SIGKILL after 15 s."""

    def __init__(self, cmd: list[str], log: Path) -> None:
        self.log = log
        with open(log, "wb") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=REPO)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = pattern.search(self.output())
            if m:
                return m
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.log.name}: exited rc={self.proc.returncode}: "
                                   f"{self.output()[-800:]}")
            time.sleep(0.05)
        raise RuntimeError(f"{self.log.name}: no {pattern.pattern!r} after {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_load(port: int, pid: int, args: argparse.Namespace, creds: Path | None = None,
             metrics_url: str = "") -> dict:
    """The load process against one system: its JSON result (``ok`` False if it failed)."""
    phases = [f"rate:{r}:{args.seconds}" for r in args.rates] + [f"flat:{args.messages}"]
    cmd = [sys.executable, str(HERE / "_fixload.py"), "--port", str(port), "--pid", str(pid),
           "--gateway", GATEWAY, "--source", SOURCE,
           "--targets", ",".join(target_ids(args.targets)),
           "--phases", ",".join(phases), "--settle", str(args.settle),
           "--max-seconds", str(args.max_seconds)]
    if creds is not None:
        cmd += ["--creds", str(creds)]
    if metrics_url:
        cmd += ["--metrics", metrics_url, "--metric-prefix", "dcgateway_journal_fsync_",
                "--metric-prefix", WAIT]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, cwd=REPO)
    try:
        out, err = proc.communicate(timeout=args.max_seconds + 30)
    except subprocess.TimeoutExpired:
        return {"ok": False, "phases": [], "errors": ["load process timed out"]}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"ok": False, "phases": [],
                "errors": [f"load output: {out[-300:]!r} {err[-600:]!r}"]}


def run_dcgw(rep: int, work: Path, creds: Path, args: argparse.Namespace) -> dict:
    folder = work / f"dcgw-{rep}"
    config = write_config(folder, work, args.targets, args.dcgw_set)
    gw = Child([*dcgateway_cmd(), "run", "--config", str(config)], folder / "gateway.log")
    try:
        port = int(gw.wait_for(LISTENING, 60).group(1))
        metrics = METRICS_AT.search(gw.output())
        if metrics is None:
            raise RuntimeError("the gateway did not log its metrics port")
        result = run_load(port, gw.proc.pid, args, creds,
                          f"http://127.0.0.1:{metrics.group(1)}/metrics")
    finally:
        gw.stop()
    if gw.proc.returncode:
        result.setdefault("errors", []).append(f"gateway exited rc={gw.proc.returncode}: "
                                               f"{gw.output()[-400:]}")
        result["ok"] = False
    result["data_dir_bytes"] = sum(f.stat().st_size for f in (folder / "data").rglob("*")
                                   if f.is_file())
    shutil.rmtree(folder, ignore_errors=True)
    return result


def run_relay(rep: int, work: Path, args: argparse.Namespace) -> dict:
    relay = Child([sys.executable, str(HERE / "bare_relay.py"), "--port", "0", "--comp-id",
                   GATEWAY, "--source", SOURCE, "--targets", ",".join(target_ids(args.targets))],
                  work / f"relay-{rep}.log")
    try:
        port = int(relay.wait_for(LISTENING, 30).group(1))
        result = run_load(port, relay.proc.pid, args)
    finally:
        relay.stop()
    for line in reversed(relay.output().splitlines()):
        if line.startswith("{"):
            result["relay_stats"] = json.loads(line)
            break
    return result


# -- figures ----------------------------------------------------------------------------------

def bucket_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Prometheus' histogram_quantile: linear within the bucket that holds rank q (cumulative
    counts, sorted by upper bound; the +Inf bucket answers with the largest finite bound)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower
            if count <= below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return None


def fsync_figures(deltas: list[dict[str, float]]) -> dict:
    """fsync p50/p99 (µs), mean, count and mean batch from /metrics deltas, summed over phases."""
    total: dict[str, float] = {}
    for d in deltas:
        for key, v in d.items():
            total[key] = total.get(key, 0.0) + v

    def quantiles_us(name: str) -> tuple[float | None, float | None]:
        buckets = sorted((float(key.split("{", 1)[1][:-1]), v) for key, v in total.items()
                         if key.startswith(name + "_bucket{"))
        p50, p99 = bucket_quantile(buckets, 0.50), bucket_quantile(buckets, 0.99)
        return (None if p50 is None else round(p50 * 1e6, 1),
                None if p99 is None else round(p99 * 1e6, 1))

    count = total.get(FSYNC + "_count", 0.0)
    p50, p99 = quantiles_us(FSYNC)
    wait50, wait99 = quantiles_us(WAIT)
    batches = total.get(BATCH + "_count", 0.0)
    return {"p50_us": p50, "p99_us": p99,
            "mean_us": round(total.get(FSYNC + "_sum", 0.0) / count * 1e6, 1) if count else None,
            "fsyncs": int(count),
            "batch_mean": round(total.get(BATCH + "_sum", 0.0) / batches, 2) if batches else None,
            "commit_wait_p50_us": wait50, "commit_wait_p99_us": wait99}


def median(values: list) -> float | None:
    values = [v for v in values if isinstance(v, (int, float))]
    return round(statistics.median(values), 1) if values else None


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def summary(results: dict[str, list[dict]], phases: list[str]) -> dict:
    out: dict = {"dcgw": {}, "relay": {}, "ratio": {}}
    for system, runs in results.items():
        for name in phases:
            rows = [p for r in runs for p in r.get("phases", []) if p["phase"] == name]
            fig: dict = {f: median([p[f] for p in rows]) for f in (*FIGURES, "load_cpu_pct")}
            fig.update({c: sum(p[c] for p in rows) for c in COUNTS})
            fig["runs"] = len(rows)
            if system == "dcgw":
                fs = fsync_figures([p.get("metrics", {}) for p in rows])
                fig.update(fsync_p50_us=fs["p50_us"], fsync_p99_us=fs["p99_us"],
                           fsyncs=fs["fsyncs"], batch_mean=fs["batch_mean"],
                           commit_wait_p50_us=fs["commit_wait_p50_us"],
                           commit_wait_p99_us=fs["commit_wait_p99_us"])
            out[system][name] = fig
    for name in phases:
        gw, relay = out["dcgw"].get(name, {}), out["relay"].get(name, {})
        out["ratio"][name] = {f: ratio(gw.get(f), relay.get(f)) for f in FIGURES}
        if len(results["dcgw"]) > 1:        # run i of the gateway over run i of the relay
            per_rep = []
            for g, r in zip(results["dcgw"], results["relay"], strict=False):
                gp: dict = next((p for p in g.get("phases", []) if p["phase"] == name), {})
                rp: dict = next((p for p in r.get("phases", []) if p["phase"] == name), {})
                per_rep.append({f: ratio(gp.get(f), rp.get(f)) for f in FIGURES})
            out["ratio"][name]["per_rep"] = per_rep
    out["fsync"] = fsync_figures([p.get("metrics", {}) for r in results["dcgw"]
                                  for p in r.get("phases", [])])
    return out


def progress(system: str, rep: int, result: dict) -> None:
    for p in result.get("phases", []):
        print(f"{system:5} rep {rep + 1} {p['phase']:10} in={p['msgs_in_per_s']} "
              f"deliveries={p['deliveries_per_s']} p50={p['p50_us']} p99={p['p99_us']} "
              f"p99.9={p['p999_us']} cpu={p['cpu_pct']}% load_cpu={p['load_cpu_pct']}% "
              f"lost={p['lost']} dup={p['dup']}", file=sys.stderr, flush=True)
    if not result.get("ok"):
        print(f"{system:5} rep {rep + 1} NOT OK: {result.get('errors')}", file=sys.stderr,
              flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", type=int, default=4, help="target sessions K")
    ap.add_argument("--messages", type=int, default=200_000, help="flat-out phase: messages")
    ap.add_argument("--rates", default="2000,10000", help="fixed-rate phases, msgs/s")
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of each fixed rate")
    ap.add_argument("--reps", type=int, default=1, help="gateway, relay, gateway, relay, ...")
    ap.add_argument("--dcgw-set", action="append", default=[], metavar="KEY=VALUE",
                    help="a gateway setting added to the config (repeatable)")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds before each phase")
    ap.add_argument("--max-seconds", type=float, default=600.0, help="bound on one load run")
    args = ap.parse_args(argv)
    args.rates = [int(r) for r in args.rates.split(",") if r]
    if not 1 <= args.targets <= 64 or args.reps < 1 or args.messages < 1:
        raise SystemExit("--targets 1..64, --reps >= 1, --messages >= 1")
    settings_yaml(args.dcgw_set)                     # refuse a bad --dcgw-set before starting
    phases = [f"rate_{r}" for r in args.rates] + ["flat"]
    signal.signal(signal.SIGTERM, signal.default_int_handler)   # SIGTERM cleans up like Ctrl-C
    work = Path(tempfile.mkdtemp(prefix="dcgw-fanout-"))       # holds key pairs: removed below
    results: dict[str, list[dict]] = {"dcgw": [], "relay": []}
    try:
        creds = make_keys(work, args.targets)
        for rep in range(args.reps):
            for system in ("dcgw", "relay"):
                try:
                    res = run_dcgw(rep, work, creds, args) if system == "dcgw" else \
                        run_relay(rep, work, args)
                except RuntimeError as exc:
                    res = {"ok": False, "phases": [], "errors": [str(exc)]}
                progress(system, rep, res)
                results[system].append(res)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = {"bench": "fanout", "targets": args.targets, "reps": args.reps, "phases": phases,
           "flat_messages": args.messages, "rate_seconds": args.seconds,
           "dcgw_set": args.dcgw_set, **summary(results, phases),
           "ok": all(r.get("ok") for rs in results.values() for r in rs),
           "errors": [e for rs in results.values() for r in rs for e in r.get("errors", [])],
           "python": sys.version.split()[0]}
    print(json.dumps(out))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
