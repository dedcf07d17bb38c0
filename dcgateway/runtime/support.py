"""Process-level helpers of the composition root: TLS contexts, the metrics bearer token, the
descriptor limit, the garbage collector and the GIL switch interval, the acceptor's settings, and
who is told when a key is about to expire."""

from __future__ import annotations

import gc
import logging
import resource
import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..auth import NOTICES_FILE_NAME, NoticeLog
from ..config import Administrator, GatewayConfig
from ..errors import ConfigError
from ..journal import Recovery
from ..net.acceptor import AcceptorSettings
from ..notify import ExpiryNotifier, LogMailer, SmtpMailer
from ..state.base import KeyRecords

log = logging.getLogger("dcgateway")

#: How long a thread may wait for the GIL before the holder is asked to let it go (CPython's
#: default is 5 ms). The journal's sync thread needs the GIL twice per group commit, right after
#: its wake-up and right after its fdatasync; while the event loop is busy, the default makes it
#: wait up to 5 ms each time, and every copy waits with it (journal_durability: fsync).
SWITCH_INTERVAL_S = 0.0005


def log_recovery(recovery: Recovery, seconds: float, groups_version: str) -> None:
    """What the start found in the journal; a torn record cut at its end is a warning."""
    log.info("recovered journal in %.3fs: %d records in %d segments (%d torn bytes cut); "
             "groups version %s", seconds, recovery.records, recovery.segments,
             recovery.torn_bytes, groups_version)
    if recovery.torn_bytes:
        log.warning("journal: cut %d bytes of a torn record at its end (the machine or the "
                    "process stopped while it was being written)", recovery.torn_bytes)


def tune_threads() -> None:
    """Latency of the commit hand-offs (:data:`SWITCH_INTERVAL_S`); called once the gateway is
    up. The loop thread pays a GIL hand-over at most twice per commit."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def tune_gc() -> None:
    """Latency: the hot path allocates no reference cycles, so the cyclic GC's full collections
    (tens of ms once a burst leaves many objects alive) buy nothing; freeze what start-up built
    and make collections rare."""
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


def tune_for_latency() -> None:
    """:func:`tune_gc` and :func:`tune_threads`; called once the gateway is up (run and demo)."""
    tune_gc()
    tune_threads()


#: Descriptors kept for everything but FIX connections: journal segments and indexes, session
#: files, the metrics server and its scrapers, the key store, logs.
FD_RESERVE = 128


def server_ssl_context(tls: Any) -> ssl.SSLContext | None:
    """TLS on a listener when its ``tls`` settings are configured (standard library ssl); a
    client certificate is required when ``require_client_cert`` says so."""
    if tls is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # (the files were checked when the configuration was loaded; never prompt for a passphrase)
    ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file), password=lambda: b"")
    if tls.ca_file is not None:
        ctx.load_verify_locations(str(tls.ca_file))
    ctx.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_NONE
    return ctx


def metrics_token(path: Path | None) -> bytes | None:
    """The bearer token ``/metrics`` requires, read from ``gateway.metrics_token_file`` (kept out
    of gateway.yaml: it is a secret). An empty or unreadable file stops the start with a reason
    that names the file, never the token; one that others may read is named in a warning."""
    if path is None:
        return None
    try:
        token = Path(path).read_bytes().strip()
        mode = Path(path).stat().st_mode & 0o777
    except OSError as exc:
        raise ConfigError(f"gateway.metrics_token_file {path}: cannot read it "
                          f"({exc.strerror})") from None
    if mode & 0o077:
        log.warning("gateway.metrics_token_file %s is readable by others (mode %04o); "
                    "expected mode 0600: chmod 600 it", path, mode)
    if not token or not all(0x21 <= b <= 0x7e for b in token):
        raise ConfigError(f"gateway.metrics_token_file {path}: expected one line of printable "
                          "ASCII (the bearer token), without spaces")
    return token


def fit_descriptor_limit(max_connections: int, sessions: int) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit, then bound the FIX connections to what
    fits under it, so a flood of connections meets a clean refusal instead of EMFILE in the
    journal, the metrics server or the key store."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        want = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d: %s", soft, exc)
    room = max(16, soft - FD_RESERVE - 2 * sessions)
    if room < max_connections:
        log.warning("max_connections lowered from %d to %d to fit the open-file limit (%d)",
                    max_connections, room, soft)
        return room
    return max_connections


def key_owners(config: GatewayConfig
               ) -> Callable[[str], tuple[str, tuple[Administrator, ...]] | None]:
    """Session ID (key scope) -> (entity, its administrators), for expiry notices."""
    by_scope = {s.key_scope: s.entity for s in config.sessions}

    def owner(session_id: str) -> tuple[str, tuple[Administrator, ...]] | None:
        name = by_scope.get(session_id)
        ent = config.entity(name) if name else None
        return None if ent is None else (ent.name, ent.administrators)
    return owner


def acceptor_settings(config: GatewayConfig) -> AcceptorSettings:
    """The network shell's limits, from the ``gateway`` section."""
    g = config.gateway
    return AcceptorSettings(
        our_comp_id=g.comp_id, logon_timeout=g.logon_timeout_s,
        max_message_size=g.max_message_size, write_buffer_high=g.write_buffer_high,
        write_buffer_low=g.write_buffer_low, max_connections=g.max_connections,
        max_inbound_rate=g.max_inbound_msgs_per_s, max_pending_logons=g.max_pending_logons,
        max_pending_logons_per_address=g.max_pending_logons_per_address,
        pre_logon_idle=g.pre_logon_idle_s)


def expiry_notifier(config: GatewayConfig, keys: KeyRecords, data_dir: Path,
                    clock: Callable[[], float]) -> ExpiryNotifier:
    """Key-expiry notices to the entities' administrators: by ``smtp`` when configured, else
    to the log; what was sent is remembered under ``data_dir``."""
    smtp = config.gateway.smtp
    mailer = SmtpMailer(smtp.host, smtp.port, smtp.sender) if smtp is not None else LogMailer()
    return ExpiryNotifier(lambda: list(keys.snapshot().values()),
                          NoticeLog(data_dir / NOTICES_FILE_NAME), key_owners(config), mailer,
                          clock=clock)
