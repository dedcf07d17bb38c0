"""dcgateway.ratelog: at most one line per key per interval, and what was left unsaid is summed
up: on the key's next line, or by flush() once the interval has passed (a burst that stops)."""

from __future__ import annotations

import logging

from dcgateway.ratelog import RateLimitedLog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_that_stops_is_summed_up_by_flush(caplog) -> None:
    clock = Clock()
    noisy = RateLimitedLog(logging.getLogger("t.ratelog"), interval=10.0, clock=clock)
    caplog.set_level(logging.INFO, logger="t.ratelog")
    for seq in range(46):
        noisy.log(("CLR001N", "copy_rejected"), logging.ERROR, "target %s rejected %d",
                  "CLR001N", seq)
    noisy.flush()                                     # within the interval: nothing yet
    assert [r.getMessage() for r in caplog.records] == ["target CLR001N rejected 0"]
    clock.now += 10.0
    noisy.flush()
    noisy.flush()                                     # said once
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert lines[1:] == [(logging.ERROR, "45 more like this in the last 10s not logged; the "
                          "last one logged: target CLR001N rejected 0")]
    clock.now += 10.0                                 # the next line logs at once, no count
    noisy.log(("CLR001N", "copy_rejected"), logging.ERROR, "target %s rejected %d",
              "CLR001N", 46)
    assert caplog.records[-1].getMessage() == "target CLR001N rejected 46"


def test_the_next_line_carries_the_count_when_the_burst_goes_on(caplog) -> None:
    clock = Clock()
    noisy = RateLimitedLog(logging.getLogger("t.ratelog2"), interval=10.0, clock=clock)
    caplog.set_level(logging.INFO, logger="t.ratelog2")
    for _ in range(3):
        noisy.log("k", logging.WARNING, "bad logon from %s", "198.51.100.7")
    clock.now += 10.0
    noisy.log("k", logging.WARNING, "bad logon from %s", "198.51.100.7")
    noisy.flush()                                     # nothing left unsaid
    assert [r.getMessage() for r in caplog.records] == [
        "bad logon from 198.51.100.7",
        "bad logon from 198.51.100.7 (2 more like this in the last 10s not logged)"]
