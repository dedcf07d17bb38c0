"""The asyncio shell around the cores, one job per module: what the composition root
(:mod:`dcgateway.gateway`) wires between the network shell and the sans-I/O fan-out.

* :mod:`.flow`         fan-out decisions applied to connections; durable copies to targets
* :mod:`.events`       session events -> logs, metrics, status (one table)
* :mod:`.pump`         hot-path counters -> Prometheus, once a second and before a scrape
* :mod:`.status`       ``status.json`` for the CLI and the portal
* :mod:`.health`       is the journal writable (``/healthz``, Logons during a disk fault)
* :mod:`.maintenance`  groups reload, journal retention, the weekly sequence reset
* :mod:`.sessions`     each configured session assembled (settings, store, outbox, adapter)
* :mod:`.session_sync` the sessions' files fdatasync'd off the loop (``fsync`` durability)
* :mod:`.snapshot`     the state gauges read at scrape time
* :mod:`.process`      the process: umask, the uvloop runner, SIGTERM/SIGINT as a stop (and
  a long step raced against it)
* :mod:`.support`      TLS contexts, the metrics token, the descriptor limit, GC and GIL
  tuning, the acceptor's settings, the key-expiry notifier
"""

from ..errors import listening
from .events import EventSink, copy_describer
from .flow import Flow
from .health import UNWRITABLE_TEXT, JournalHealth
from .maintenance import RETENTION_S, Maintenance, week_start_before
from .process import cancel_and_wait, run_until_signalled, unless_stopped
from .pump import MetricsPump
from .session_sync import SessionFileSync
from .sessions import (
    adapt_copies,
    make_slot,
    session_config,
    session_files,
    wake_on_source_reads,
)
from .snapshot import scrape_state
from .status import StatusFile
from .support import (
    acceptor_settings,
    expiry_notifier,
    fit_descriptor_limit,
    key_owners,
    log_recovery,
    metrics_token,
    server_ssl_context,
    tune_for_latency,
    tune_gc,
    tune_threads,
)

__all__ = [
    "EventSink", "Flow", "JournalHealth", "Maintenance", "MetricsPump", "RETENTION_S",
    "SessionFileSync", "StatusFile", "UNWRITABLE_TEXT", "acceptor_settings", "adapt_copies",
    "cancel_and_wait", "copy_describer", "expiry_notifier", "fit_descriptor_limit",
    "key_owners", "listening", "log_recovery", "make_slot", "metrics_token",
    "run_until_signalled", "scrape_state", "server_ssl_context", "session_config",
    "session_files", "tune_for_latency", "tune_gc", "tune_threads", "unless_stopped",
    "wake_on_source_reads", "week_start_before",
]
