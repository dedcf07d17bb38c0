"""Rate limits (OWASP ASVS 5.0 "Authentication": anti-automation; "API and web service").

A token bucket per key (a client address for logins and enrolment, a user for API calls):
``rate`` tokens a second up to ``burst``. The table of buckets is bounded (least recently
used keys go first), so a flood of addresses cannot grow memory. Runs on the event loop thread.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """The portal's rate limits (per second, burst)."""

    login_rate: float = 0.2            # logins and enrolment steps per client address
    login_burst: float = 10.0
    api_rate: float = 20.0             # requests per logged-in user
    api_burst: float = 100.0
    anonymous_rate: float = 5.0        # other requests without a session, per address
    anonymous_burst: float = 50.0


class RateLimiter:
    def __init__(self, rate: float, burst: float, *, clock: Callable[[], float],
                 max_keys: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        """0.0 when the request may go on (a token is taken), else the seconds to wait."""
        now = self.clock()
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            wait = 0.0
        else:
            self._buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / self.rate if self.rate > 0 else 3600.0
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait
