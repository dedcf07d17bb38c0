"""The exception tree. Every error the gateway or CLI reports to a person derives from
:class:`DcGatewayError`, carries a message that says what is wrong and what was expected, and never
contains a secret (docs/architecture.md rule 7). The CLI maps them to exit codes: 2 for usage/validation
(:class:`UsageError`, :class:`ConfigError`, :class:`KeyLifecycleError`), 1 for the rest.

    DcGatewayError
    ├── UsageError            bad command-line arguments or refused operator action (exit 2)
    ├── ConfigError           gateway.yaml / groups.yaml invalid: file, line, path, expectation (exit 2)
    ├── KeyLifecycleError     a key operation the venue rules refuse (third pair, unknown id) (exit 2)
    ├── KeyStoreError         key store unreadable (exit 1)
    │   ├── KeyStoreCorrupt   tampered or truncated file
    │   └── WrongMasterKey    the master key does not open the store
    ├── StoreError            session state / journal files unusable (exit 1)
    └── JournalError          journal append or fsync failed (exit 1)

:func:`listening` turns a listener's failure to open into one that names its setting.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class DcGatewayError(Exception):
    """Base of every error dcgateway reports."""

    exit_code = 1


class UsageError(DcGatewayError):
    exit_code = 2


class ConfigError(DcGatewayError):
    """One or more configuration problems. ``problems`` lists each as
    ``"<file>:<line>: <path>: <what is wrong>; expected <what>"``."""

    exit_code = 2

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class KeyLifecycleError(DcGatewayError):
    exit_code = 2


class KeyStoreError(DcGatewayError):
    pass


class KeyStoreCorrupt(KeyStoreError):
    pass


class WrongMasterKey(KeyStoreError):
    pass


class StoreError(DcGatewayError):
    pass


class JournalError(DcGatewayError):
    pass


@contextlib.contextmanager
def listening(key: str, host: str, port: int) -> Iterator[None]:
    """Around the start of a listener: a failure to listen (a host name that does not resolve,
    an address not on this machine, a port in use) names the setting, the address and why."""
    try:
        yield
    except OSError as exc:
        raise DcGatewayError(f"{key}: cannot listen on {host}:{port}: "
                             f"{exc.strerror or exc}") from None
