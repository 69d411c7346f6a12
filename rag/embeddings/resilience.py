"""Resilient calls to remote embedding providers: pacing, a circuit breaker and retries.

The limiter (``rag.embeddings.pacing``) learns the provider's quota from throttling; the breaker
opens after a run of consecutive failures and fails fast until its cool-down has passed.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from rag.embeddings.pacing import AdaptiveConcurrency, FixedConcurrency
from rag.errors import EmbeddingError

__all__ = [
    "AdaptiveConcurrency",
    "CircuitBreaker",
    "CircuitOpenError",
    "FixedConcurrency",
    "ResilientCaller",
    "RetryPolicy",
    "ThrottledError",
    "TransientError",
]

T = TypeVar("T")
R = TypeVar("R")


class ThrottledError(EmbeddingError):
    """The provider said: too many requests (retry later, with less concurrency)."""


class TransientError(EmbeddingError):
    """A timeout, a dropped connection or a 5xx: worth a retry."""


class CircuitOpenError(EmbeddingError):
    """The provider kept failing; calls fail fast until the cool-down has passed."""


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
