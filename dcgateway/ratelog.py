"""Log lines that an unauthenticated peer can provoke are rate limited: at most one line per key
(e.g. session and reason) per interval, the next one saying how many were suppressed meanwhile.
A flood of bad Logons or connections then costs the log a few lines a minute, not one each, and
the counts stay exact in the metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable


class RateLimitedLog:
    """``log(key, level, msg, *args)`` logs at most once per ``interval`` seconds per ``key``."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 4096) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self.max_keys = max_keys
        self._last: dict[Hashable, tuple[float, int]] = {}
        #: key -> the last line logged (level, msg, args), formatted only if flush() needs it
        self._said: dict[Hashable, tuple[int, str, tuple[object, ...]]] = {}

    def log(self, key: Hashable, level: int, msg: str, *args: object) -> None:
        now = self.clock()
        last, suppressed = self._last.get(key, (float("-inf"), 0))
        if now - last < self.interval:
            self._last[key] = (last, suppressed + 1)
            return
        if len(self._last) >= self.max_keys:
            self._last.clear()            # bounded memory: a spray of keys resets the window
            self._said.clear()
        self._last[key] = (now, 0)
        if suppressed:
            msg += " (%d more like this in the last %gs not logged)"
            args = (*args, suppressed, self.interval)
        self.logger.log(level, msg, *args)
        self._said[key] = (level, msg, args)

    def flush(self) -> None:
        """Sum up what a burst that has stopped left unsaid: for every key whose lines were
        suppressed and whose interval has passed, one line with the count (call it
        periodically; without it the count waited for the key's next line, maybe never)."""
        now = self.clock()
        for key, (last, suppressed) in list(self._last.items()):
            if suppressed and now - last >= self.interval:
                self._last[key] = (now, 0)
                level, msg, args = self._said.get(key, (logging.WARNING, str(key), ()))
                self.logger.log(level, "%d more like this in the last %gs not logged; the last "
                                "one logged: %s", suppressed, now - last,
                                msg % args if args else msg)
