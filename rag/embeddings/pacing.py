"""Adaptive concurrency: a call rate learned from the provider's throttling.

Calls are paced (one start every ``1 / rate`` seconds) from the first few successes on, so the
limiter never sends a burst that a quota has to reject:

- *startup*: the pace is ``startup_gain`` times the success rate just observed, so it doubles
  about once a second, until the first throttle. The quota then lies between what got through
  and the pace that was rejected: the pace drops below the one and aims halfway.
- *probing*, scale-free CUBIC (as TCP and botocore's adaptive retry mode do): after a cut to
  ``beta`` times the quota the pace climbs back in ``cbrt((1 - beta) / probe)`` seconds, stays
  near it, and only then probes beyond it, slowly at first. A throttle while probing cuts the
  pace again (at most once per ``min_cut_interval`` and twenty calls at the new pace). A
  token-bucket quota so costs about one rejected call per probe.
- Some services reject a share of calls whatever the pace (flaky, not a quota): that background
  share is learned over windows of twenty calls sent below the learned quota. A stray throttle
  cuts the pace only where the background is quiet (under 2%); elsewhere only a share a
  quarter above the background does.
- When a quarter of the latest calls fail beyond the background (or two thirds, right after a
  cut) the quota itself dropped: the pace follows what still gets through, at once.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class AdaptiveConcurrency:
    """How many calls may be in flight, and how fast they may start."""

    def __init__(
        self,
        initial: int = 4,
        minimum: int = 1,
        maximum: int = 64,
        *,
        beta: float = 0.9,
        probe: float = 0.0005,
        startup_gain: float = 2.0,
        min_cut_interval: float = 1.0,
        min_rate: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.limit = float(initial)  # calls in flight; grows once calls are paced
        self.minimum = minimum
        self.maximum = maximum
        self.beta = beta
        self.probe = probe
        self.startup_gain = startup_gain
        self.min_cut_interval = min_cut_interval
        self.min_rate = min_rate
        self.rate: float | None = None  # calls per second, once the first successes are in
        self.in_flight = 0
        self._clock = clock
        self._sleep = sleep
        self._startup = True
        self._w_max = 0.0  # the quota as last learned (CUBIC's W_max)
        self._k = 0.0  # seconds from the last cut back to it
        self._next_start = 0.0
        self._last_cut = float("-inf")
        self._latest: deque[bool] = deque(maxlen=20)  # calls sent since the last cut: throttled?
        self._learned = False  # whether the quota aimed at was measured (not guessed)
        self._background = _Background()  # the share of calls the service rejects anyway
        self._successes = _Window()
        self._attempts = _Window()
        self._cond = threading.Condition()

    def acquire(self) -> float:
        """Wait for a slot (and for the pace); returns the start time for release()."""
        with self._cond:
            while self.in_flight >= int(self.limit):
                self._cond.wait()
            self.in_flight += 1
        while True:  # a cut while we wait re-paces us at the new, lower rate
            with self._cond:
                epoch = self._last_cut
                wait = 0.0
                if self.rate is not None:
                    now = self._clock()
                    start = max(now, self._next_start)
                    self._next_start = start + 1.0 / self.rate
                    wait = start - now
            if wait > 0:
                self._sleep(wait)
            with self._cond:
                if self._last_cut == epoch:
                    return self._clock()

    def release(self, started: float, throttled: bool) -> None:
        with self._cond:
            self.in_flight -= 1
            now = self._clock()
            self._attempts.add(now)
            if started >= self._last_cut:  # sent at the current pace: evidence about it
                self._latest.append(throttled)
                if self._learned and self.rate is not None and self.rate < self._w_max:
                    self._background.add(throttled)  # below the quota: none is its doing
                if throttled:
                    self._on_throttle(now)
            if not throttled:
                self._grow(now)
            self._cond.notify_all()

    def _on_throttle(self, now: float) -> None:
        latest = sum(self._latest)
        share = latest / len(self._latest)  # of the latest calls
        succeeded = self._successes.rate(now)
        if self.rate is None or succeeded is None:  # no rate known yet: halve the concurrency
            self.limit = max(float(self.minimum), self.limit / 2)
            self._reset(now)
        elif self._startup:
            recent = self._successes.recent(now) or succeeded
            self._cut(now, aim=(recent + self.rate) / 2, base=recent)
            self._startup = False
        else:
            # a cut takes effect before the next: a second, and twenty calls at the new pace
            sent = len(self._latest)
            settled = now - self._last_cut >= self.min_cut_interval and sent == self._latest.maxlen
            excess = share - self._background.share  # over what the service rejects anyway
            if (latest >= 8 and share >= 2 / 3) or (settled and excess >= 0.25):
                through = self.rate * (1 - excess)  # the quota dropped: follow what gets through
                self._background.discard()  # quota evidence, not background
                self._cut(now, aim=through, base=through)
            elif settled and self._background.share < 0.02:  # a quiet service: probing crossed
                quota = min(self.rate, succeeded)  # the quota; what a saturated one lets through
                self._cut(now, aim=quota, base=quota)

    def _cut(self, now: float, aim: float, base: float) -> None:
        self._learned = not self._startup  # the startup's aim is a guess
        self._w_max = max(aim, self.min_rate)
        self.rate = max(self.min_rate, self.beta * base)
        self._k = (max(0.0, self._w_max - self.rate) / (self.probe * self._w_max)) ** (1 / 3)
        self._next_start = now + 2.0 / self.rate  # let the exhausted quota refill a little
        self._reset(now)

    def _reset(self, now: float) -> None:
        self._latest.clear()
        self._last_cut = now

    def _grow(self, now: float) -> None:
        self._successes.add(now)
        if self._startup:
            succeeded = self._successes.rate(now)
            if succeeded is not None:  # paced from here on; the pace, not the limit, grows
                self.rate = max(self.min_rate, self.startup_gain * succeeded)
                self.limit = min(float(self.maximum), self.limit + 1)
            return
        self.limit = min(float(self.maximum), self.limit + 1.0 / max(self.limit, 1.0))
        t = now - self._last_cut
        cubic = self._w_max * (1 + self.probe * (t - self._k) ** 3)
        # a caller that sends less than its pace (app-limited) must not bank a burst
        ceiling = max(self._w_max, self.startup_gain * (self._attempts.rate(now) or 0.0))
        self.rate = max(self.min_rate, min(cubic, ceiling))


class FixedConcurrency(AdaptiveConcurrency):
    """A constant limit and no pacing (the baseline adaptive concurrency is compared with)."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit, limit, limit)

    def release(self, started: float, throttled: bool) -> None:
        with self._cond:
            self.in_flight -= 1
            self._cond.notify_all()


class _Background:
    """The share of calls a service throttles whatever the pace (a flaky service rejects some
    at random; a quota, below it, none): averaged over windows of ``size`` calls."""

    def __init__(self, size: int = 20, weight: float = 0.2) -> None:
        self.size = size
        self.weight = weight
        self.share = 0.0
        self._windows = 0
        self._calls = 0
        self._throttled = 0

    def add(self, throttled: bool) -> None:
        self._calls += 1
        self._throttled += throttled
        if self._calls == self.size:
            self._windows += 1
            weight = max(self.weight, 1 / self._windows)  # a plain mean for the first windows
            self.share += weight * (self._throttled / self._calls - self.share)
            self.discard()

    def discard(self) -> None:
        self._calls = self._throttled = 0


class _Window:
    """Events per second over the last second, or over the latest ``keep`` events when a second
    holds fewer (a slow quota would otherwise be measured in whole events); None while fewer than
    ``minimum`` events were seen."""

    def __init__(self, seconds: float = 1.0, minimum: int = 5, keep: int = 20) -> None:
        self.seconds = seconds
        self.minimum = minimum
        self.keep = keep
        self._events: deque[float] = deque()

    def add(self, now: float) -> None:
        self._events.append(now)
        self._prune(now)  # here, not only in rate(): a long run without throttles stays small

    def _prune(self, now: float) -> None:
        events = self._events
        while len(events) > self.keep and events[0] < now - self.seconds:
            events.popleft()

    def recent(self, now: float, events: int = 10) -> float | None:
        """Events per second over the last ``events`` of them (None while too few)."""
        if len(self._events) < events:
            return None
        span = now - self._events[-events]
        return (events - 1) / span if span > 0 else None

    def rate(self, now: float) -> float | None:
        self._prune(now)
        events = self._events
        if len(events) < self.minimum:
            return None
        span = events[-1] - events[0]  # n events span n - 1 intervals
        return (len(events) - 1) / span if span > 0 else None
