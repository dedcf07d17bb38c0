"""The self-service portal: firms' administrators manage their drop copy groups and key pairs
from a browser or the JSON API, behind a login with two factors (its own process:
``dcgateway portal``; the demo starts it beside the gateway).

* :mod:`.app`       :func:`create_app`: the ASGI app (Starlette) from config + state store
* :mod:`.server`    :class:`PortalServer`: uvicorn on a socket bound here, in the caller's loop
* :mod:`.accounts`  users, enrolment, login, lockout (argon2id passwords, RFC 6238 TOTP)
* :mod:`.websession`, :mod:`.security`, :mod:`.ratelimit`: sessions, headers/CSRF, limits
* :mod:`.service`   entitlements and the state-store calls shared by the API and the pages
* :mod:`.api`, :mod:`.pages`, :mod:`.pages_groups`, :mod:`.pages_keys`, :mod:`.wizard`
* :mod:`.cli`       ``dcgateway portal`` and ``dcgateway users ...``

The portal changes state only through the state store (:mod:`dcgateway.state`), so a running
gateway follows its changes exactly as it follows the command line's.

Importing this package is cheap (the command line builds its parser from :mod:`.cli` on every
run); the web stack is imported when one of the names below is first used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"Accounts": ".accounts", "Principal": ".accounts", "directory": ".accounts",
            "create_app": ".app", "Limits": ".ratelimit", "PortalServer": ".server"}
__all__ = ["Accounts", "Limits", "PortalServer", "Principal", "create_app", "directory"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
