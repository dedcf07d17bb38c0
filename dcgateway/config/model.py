"""The configuration as frozen dataclasses: what gateway.yaml and groups.yaml say once they are
valid. Everything else in the gateway reads these; only :mod:`.load` and :mod:`.groups` build
them (with every problem reported against file, line and path)."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from ..vocab import CATEGORIES, FRONT_ENDS, PROFILES, ROLES

if TYPE_CHECKING:
    from .cluster import ClusterSettings

BEGIN_STRINGS = ("FIX.4.2", "FIX.4.4")
DURABILITY_MODES = ("fsync", "os")
DEFAULT_BEGIN_STRING = {"ilink2": "FIX.4.2", "fix": "FIX.4.4"}
#: The data dictionary a session is validated against when gateway.yaml names none.
DEFAULT_DICTIONARY = {"ilink2": "ILINK2"}
FILTER_KEYS = ("categories", "account", "symbol", "security_exchange", "side", "sender_sub_id")

__all__ = ["BEGIN_STRINGS", "CATEGORIES", "DEFAULT_BEGIN_STRING", "FILTER_KEYS", "FRONT_ENDS",
           "PROFILES", "ROLES"]


@dataclass(frozen=True, slots=True)
class IncludeExclude:
    """``include`` None = no include condition; a value must be in ``include`` (when given) and
    not in ``exclude``."""
    include: frozenset[str] | None
    exclude: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Filters:
    categories: frozenset[str]
    account: IncludeExclude | None = None
    symbol: IncludeExclude | None = None
    security_exchange: IncludeExclude | None = None
    side: IncludeExclude | None = None            # FIX 54 codes: '1' buy, '2' sell, ...
    sender_sub_id: IncludeExclude | None = None


@dataclass(frozen=True, slots=True)
class GroupDef:
    entity: str
    name: str
    front_end: str       # "ilink2" | "fix"
    filters: Filters
    sources: tuple[str, ...]
    targets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class LocalTime:
    """A wall-clock time in a zone (``market_close``)."""
    time: datetime.time
    tz: ZoneInfo

    def on(self, day: datetime.date) -> datetime.datetime:
        """This time on ``day``, as an aware datetime in the zone."""
        return datetime.datetime.combine(day, self.time, tzinfo=self.tz)


@dataclass(frozen=True, slots=True)
class WeekStart:
    """When the week (and every sequence) starts: ``day`` 0=monday..6=sunday."""
    day: int
    time: datetime.time
    tz: ZoneInfo


@dataclass(frozen=True, slots=True)
class KeystoreSettings:
    path: Path
    master_key_file: Path


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int
    sender: str


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """TLS on the FIX listener (optional; files must exist when the config is loaded)."""
    cert_file: Path
    key_file: Path
    ca_file: Path | None = None
    require_client_cert: bool = False


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    comp_id: str
    listen: HostPort
    metrics: HostPort
    data_dir: Path
    market_close: LocalTime
    week_start: WeekStart
    keystore: KeystoreSettings
    logon_timeout_s: float = 60.0
    sending_time_tolerance_s: float = 30.0
    smtp: SmtpSettings | None = None
    max_message_size: int = 65536
    heartbeat_min_s: int = 5
    heartbeat_max_s: int = 60
    write_buffer_high: int = 1_048_576
    write_buffer_low: int = 262_144
    max_connections: int = 1024
    max_pending_logons: int = 1000              # unauthenticated connections at once (stale ones evicted)
    max_pending_logons_per_address: int = 0     # the same from one address; 0: no own bound
    pre_logon_idle_s: float = 5.0               # a connection silent this long is closed; 0: off
    metrics_tls: TlsSettings | None = None      # TLS on /metrics and /healthz
    max_inbound_msgs_per_s: int = 0             # per session; 0: no limit
    journal_commit_delay_s: float = 0.0         # bound on how long an append waits for its fsync to start
    #: "fsync": a copy leaves once its record is on disk (survives power loss); "os": once its
    #: record is written to the OS, fsync following within journal_fsync_interval_s (survives
    #: any process crash, not a kernel crash or power loss)
    journal_durability: str = "fsync"
    journal_fsync_interval_s: float = 0.05      # os mode: the background fsync's bound
    target_max_pending: int = 10_000            # copies a slow target holds in memory before the journal serves it
    tls: TlsSettings | None = None
    #: A file holding the bearer token ``/metrics`` requires (None: open to whoever reaches it).
    metrics_token_file: Path | None = None
    #: "Environment" column of downloaded key files; None = the key manager's default.
    environment: str | None = None


@dataclass(frozen=True, slots=True)
class PortalSettings:
    """The self-service portal (``dcgateway portal``): where it listens, the URL users reach it
    at (links in e-mails, the Origin check), optional TLS and session timeouts."""
    listen: HostPort
    public_url: str
    tls: TlsSettings | None = None
    idle_timeout_s: float = 900.0
    absolute_timeout_s: float = 43200.0


@dataclass(frozen=True, slots=True)
class Administrator:
    name: str
    email: str


@dataclass(frozen=True, slots=True)
class Entity:
    name: str
    administrators: tuple[Administrator, ...]

    def administers(self, name: str) -> bool:
        return any(a.name == name for a in self.administrators)


@dataclass(frozen=True, slots=True)
class SessionDef:
    comp_id: str
    role: str            # "source" | "target"
    entity: str
    profile: str         # "ilink2" | "fix"
    begin_string: str    # "FIX.4.2" | "FIX.4.4"
    key_scope: str       # the Session ID its keys are issued for (docs/venue.md "Logon rules")
    #: the FIX data dictionary its messages are validated against: "FIX.4.2"/"FIX.4.4" (shipped)
    #: or the absolute path of a QuickFIX-format XML file (a venue's own, with custom tags)
    data_dictionary: str = ""
    reset_on_logon: bool = False          # QuickFIX's ResetOnLogon: every Logon resets to 1
    #: ValidationOptions switches set for this session (the rest keep their defaults)
    validation: tuple[tuple[str, bool], ...] = ()


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    path: Path
    gateway: GatewaySettings
    entities: tuple[Entity, ...]
    sessions: tuple[SessionDef, ...]
    groups: tuple[GroupDef, ...]
    groups_file: Path
    operators: tuple[Administrator, ...] = ()
    portal: PortalSettings | None = None
    #: several nodes on NATS JetStream (``cluster:``); None: one process, the embedded default
    cluster: ClusterSettings | None = None
    #: False when the groups file was not read (``load_config(groups=False)``): ``groups`` is
    #: then empty without meaning "no groups", and must not be written anywhere as such
    groups_loaded: bool = True
    _sessions: Mapping[str, SessionDef] = field(init=False, repr=False, compare=False)
    _entities: Mapping[str, Entity] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_sessions",
                           MappingProxyType({s.comp_id: s for s in self.sessions}))
        object.__setattr__(self, "_entities",
                           MappingProxyType({e.name: e for e in self.entities}))

    def session(self, comp_id: str) -> SessionDef | None:
        return self._sessions.get(comp_id)

    def entity(self, name: str) -> Entity | None:
        return self._entities.get(name)

    def with_groups(self, groups: Iterable[GroupDef]) -> GatewayConfig:
        """The same configuration with other groups (after a SIGHUP reload)."""
        return dataclasses.replace(self, groups=tuple(groups))



