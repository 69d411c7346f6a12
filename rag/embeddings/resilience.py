"""Adaptive concurrency and a circuit breaker for remote embedding providers.

The limiter learns the provider's quota from throttling (slow start, then additive increase and
multiplicative decrease of a paced call rate); the breaker opens after a run of consecutive
failures and fails fast until its cool-down has passed.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from rag.errors import EmbeddingError

T = TypeVar("T")
R = TypeVar("R")


class ThrottledError(EmbeddingError):
    """The provider said: too many requests (retry later, with less concurrency)."""


class TransientError(EmbeddingError):
    """A timeout, a dropped connection or a 5xx: worth a retry."""


class CircuitOpenError(EmbeddingError):
    """The provider kept failing; calls fail fast until the cool-down has passed."""


class AdaptiveConcurrency:
    """How many calls may be in flight, and how fast they may start, learned from throttling.

    Slow start: the concurrency limit grows by one per success (doubling per round trip) until
    the first throttle. From then on calls are paced at a rate that follows CUBIC (as TCP and
    botocore's adaptive retry mode do): on a throttle, once per round trip, the rate drops to
    ``beta`` times the success rate just observed; it then climbs back to that level within
    about ``K`` seconds and probes beyond it slowly, then faster the longer no throttle comes.
    A job so fills its quota with few rejected calls.
    """

    def __init__(
        self,
        initial: int = 4,
        minimum: int = 1,
        maximum: int = 64,
        *,
        beta: float = 0.85,
        scale: float = 0.2,
        min_cut_interval: float = 1.0,
    ) -> None:
        self.limit = float(initial)
        self.minimum = minimum
        self.maximum = maximum
        self.beta = beta
        self.scale = scale
        self.min_cut_interval = min_cut_interval
        self.rate: float | None = None  # calls per second, once a throttle was seen
        self.in_flight = 0
        self._w_max = 0.0
        self._k = 0.0
        self._next_start = 0.0
        self._last_cut = 0.0
        self._successes: deque[float] = deque()
        self._first_success: float | None = None
        self._slow_start = True
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
                    now = time.monotonic()
                    start = max(now, self._next_start)
                    self._next_start = start + 1.0 / self.rate
                    wait = start - now
            if wait > 0:
                time.sleep(wait)
            with self._cond:
                if self._last_cut == epoch:
                    return time.monotonic()

    def release(self, started: float, throttled: bool) -> None:
        with self._cond:
            self.in_flight -= 1
            now = time.monotonic()
            if throttled:
                # one cut per round trip, and none while the last cut takes effect
                if started >= self._last_cut and now - self._last_cut >= self.min_cut_interval:
                    self._cut(now)
            else:
                self._grow(now)
            self._cond.notify_all()

    def _observed_rate(self, now: float) -> float | None:
        """Successes per second over the last second (None while too few to tell)."""
        while self._successes and self._successes[0] < now - 1.0:
            self._successes.popleft()
        window = min(1.0, now - self._first_success) if self._first_success else 0.0
        if len(self._successes) < 5 or window <= 0:
            return None
        return len(self._successes) / window

    def _cut(self, now: float) -> None:
        self._slow_start = False
        observed = self._observed_rate(now)
        if observed is None:  # too early to know the rate: halve the concurrency
            self.limit = max(float(self.minimum), self.limit / 2)
        else:
            self._w_max = observed if self.rate is None else min(self.rate, observed)
            self._k = (self._w_max * (1 - self.beta) / self.scale) ** (1 / 3)
            self.rate = max(0.5, self._w_max * self.beta)
            self._next_start = now + 1.0 / self.rate
        self._last_cut = now

    def _grow(self, now: float) -> None:
        self._successes.append(now)
        if self._first_success is None:
            self._first_success = now
        if self._slow_start:
            self.limit = min(float(self.maximum), self.limit + 1)  # doubles per round trip
            return
        self.limit = min(float(self.maximum), self.limit + 1.0 / max(self.limit, 1.0))
        if self.rate is not None:
            t = now - self._last_cut
            cubic = self.scale * (t - self._k) ** 3 + self._w_max
            self.rate = max(0.5, min(cubic, 2 * self._w_max))  # probe, never leap


class FixedConcurrency(AdaptiveConcurrency):
    """A constant limit and no pacing (the baseline adaptive concurrency is compared with)."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit, limit, limit)

    def release(self, started: float, throttled: bool) -> None:
        with self._cond:
            self.in_flight -= 1
            self._cond.notify_all()


class CircuitBreaker:
    def __init__(self, threshold: int = 8, cooldown_seconds: float = 30.0) -> None:
        self.threshold = threshold
        self.cooldown = cooldown_seconds
        self._failures = 0
        self._opened_at: float | None = None
        self._lock = threading.Lock()

    def check(self) -> None:
        with self._lock:
            if self._opened_at is None:
                return
            if time.monotonic() - self._opened_at < self.cooldown:
                raise CircuitOpenError(
                    f"embedding provider failed {self._failures} times in a row; circuit open"
                )
            self._opened_at = None  # half-open: let calls try again

    def record(self, ok: bool) -> None:
        with self._lock:
            if ok:
                self._failures = 0
                return
            self._failures += 1
            if self._failures >= self.threshold:
                self._opened_at = time.monotonic()


@dataclass
class RetryPolicy:
    max_attempts: int = 10
    backoff_seconds: float = 0.1
    backoff_max_seconds: float = 5.0
    deadline_seconds: float = 600.0

    def sleep(self, attempt: int) -> None:
        cap = min(self.backoff_max_seconds, self.backoff_seconds * 2**attempt)
        time.sleep(random.uniform(0, cap))  # noqa: S311 - jitter


@dataclass
class CallStats:
    calls: int = 0
    throttled: int = 0
    failed: int = 0


class ResilientCaller:
    """Runs provider calls through the limiter, the breaker and the retry policy."""

    def __init__(
        self,
        limiter: AdaptiveConcurrency,
        breaker: CircuitBreaker | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.limiter = limiter
        self.breaker = breaker or CircuitBreaker()
        self.retry = retry or RetryPolicy()
        self.stats = CallStats()
        self._lock = threading.Lock()

    def call(self, fn: Callable[[], R]) -> R:
        deadline = time.monotonic() + self.retry.deadline_seconds
        for attempt in range(self.retry.max_attempts):
            self.breaker.check()
            started = self.limiter.acquire()
            throttled = False
            try:
                result = fn()
            except ThrottledError:
                throttled = True
                self._count(throttled=1)
            except TransientError:
                self.breaker.record(ok=False)
                self._count(failed=1)
            else:
                self.breaker.record(ok=True)
                self._count()
                return result
            finally:
                self.limiter.release(started, throttled)
            if time.monotonic() >= deadline:
                break
            self.retry.sleep(attempt)
        raise EmbeddingError(f"embedding call still failing after {attempt + 1} attempts")

    def _count(self, throttled: int = 0, failed: int = 0) -> None:
        with self._lock:
            self.stats.calls += 1
            self.stats.throttled += throttled
            self.stats.failed += failed

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """Call ``fn`` on every item, as many in flight as the limiter allows; order kept."""

        def one(item: T) -> R:
            return self.call(lambda: fn(item))

        if len(items) <= 1:
            return [one(item) for item in items]
        workers = max(1, min(len(items), self.limiter.maximum))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(one, items))
