"""Configuration: gateway.yaml and groups.yaml -> frozen dataclasses, every problem reported with
file, line and path (``config/gateway.yaml:14: sessions[2].role: 'sorce' is not allowed; expected
one of source, target``).

* :mod:`.model`     the dataclasses (:class:`GatewayConfig`, :class:`GroupDef`, ...)
* :mod:`.load`      gateway.yaml: :func:`load_config`
* :mod:`.groups`    groups.yaml: :func:`load_groups` (reload), :func:`groups_from_data` (CLI,
  portal), writing groups back, the rules across groups
* :mod:`.yamlread`  YAML as a node tree with line numbers, and the generic value parsers
"""

from .groups import (
                     MAX_SOURCES_PER_TARGET,
                     SIDE_CODES,
                     SIDE_NAMES,
                     declares_no_groups,
                     dump_groups,
                     group_to_data,
                     groups_from_data,
                     load_groups,
                     read_groups,
                     write_groups_atomic,
)
from .load import load_config
from .model import (
                     BEGIN_STRINGS,
                     CATEGORIES,
                     DEFAULT_BEGIN_STRING,
                     FILTER_KEYS,
                     FRONT_ENDS,
                     PROFILES,
                     ROLES,
                     Administrator,
                     Entity,
                     Filters,
                     GatewayConfig,
                     GatewaySettings,
                     GroupDef,
                     HostPort,
                     IncludeExclude,
                     KeystoreSettings,
                     LocalTime,
                     PortalSettings,
                     SessionDef,
                     SmtpSettings,
                     TlsSettings,
                     WeekStart,
)

__all__ = [
    "Administrator", "BEGIN_STRINGS", "CATEGORIES", "DEFAULT_BEGIN_STRING", "Entity",
    "FILTER_KEYS", "FRONT_ENDS", "Filters", "GatewayConfig", "GatewaySettings", "GroupDef",
    "HostPort", "IncludeExclude", "KeystoreSettings", "LocalTime", "MAX_SOURCES_PER_TARGET",
    "PROFILES", "PortalSettings", "ROLES", "SIDE_CODES", "SIDE_NAMES", "SessionDef",
    "SmtpSettings", "TlsSettings", "WeekStart", "dump_groups", "group_to_data",
    "declares_no_groups", "groups_from_data", "load_config", "load_groups", "read_groups", "write_groups_atomic",
]
