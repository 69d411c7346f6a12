"""The adaptive limiter against a simulated token-bucket quota, on a simulated clock.

Deterministic: the limiter's clock and sleep are injected, calls take a fixed latency, and the
"service" is a token bucket whose rate may change during the run.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from rag.embeddings.resilience import AdaptiveConcurrency


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


@dataclass
class Outcome:
    ok: list[float] = field(default_factory=list)  # completion times of successful calls
    throttled: list[float] = field(default_factory=list)

    def rate(self, start: float, end: float) -> float:
        return sum(start <= t < end for t in self.ok) / (end - start)

    def wasted(self, after: float = 0.0) -> float:
        throttled = sum(t >= after for t in self.throttled)
        return throttled / (throttled + sum(t >= after for t in self.ok))


def simulate(
    quota: Callable[[float], float],
    seconds: float,
    *,
    latency: float = 0.05,
    burst: float = 2.0,
    flaky: float = 0.0,
    **limiter_options: float,
) -> tuple[Outcome, AdaptiveConcurrency]:
    """A client with unlimited work against a token bucket of ``quota(t)`` calls per second
    that also rejects a ``flaky`` share of calls at random, whatever the pace."""
    rng = random.Random(7)
    clock = FakeClock()
    limiter = AdaptiveConcurrency(2, 1, 64, clock=clock, sleep=clock.sleep, **limiter_options)
    tokens, filled_at = burst, 0.0
    pending: list[tuple[float, float, bool]] = []
    outcome = Outcome()
    while clock.now < seconds:
        while pending and (pending[0][0] <= clock.now or limiter.in_flight >= int(limiter.limit)):
            done, started, ok = heapq.heappop(pending)
            clock.now = max(clock.now, done)
            limiter.release(started, throttled=not ok)
            (outcome.ok if ok else outcome.throttled).append(clock.now)
        started = limiter.acquire()
        tokens = min(burst, tokens + (clock.now - filled_at) * quota(clock.now))
        filled_at = clock.now
        ok = tokens >= 1 and rng.random() >= flaky
        tokens -= 1 if ok else 0
        heapq.heappush(pending, (clock.now + latency, started, ok))
    return outcome, limiter


@pytest.mark.parametrize("calls_per_second", [10.0, 40.0, 400.0])
def test_fills_a_steady_quota_with_under_one_percent_wasted(calls_per_second: float) -> None:
    outcome, _ = simulate(lambda t: calls_per_second, 120)
    assert outcome.rate(0, 120) <= calls_per_second * 1.01
    assert outcome.rate(10, 120) >= 0.95 * calls_per_second
    if calls_per_second >= 40:
        assert outcome.wasted() <= 0.01  # about one rejected call per probe
    else:  # one 50 ms call in flight is twice the quota already, and a probe every ~7 s
        assert outcome.wasted(after=10) <= 0.02  # is one call in 70


def test_follows_a_quota_that_drops_and_comes_back() -> None:
    outcome, _ = simulate(lambda t: 20.0 if 40 <= t < 80 else 100.0, 140)
    dropped = [t for t in outcome.throttled if 40 <= t < 42]
    assert len(dropped) <= 25  # cut within a few round trips (1 s at the old pace: 80)
    assert 0.85 * 20 <= outcome.rate(45, 80) <= 20 * 1.01
    assert outcome.rate(110, 140) >= 0.85 * 100  # probes back up once the quota is back
    assert outcome.wasted() <= 0.02


def test_startup_is_paced_and_rejects_only_a_few_calls() -> None:
    outcome, limiter = simulate(lambda t: 200.0, 10)
    first_second = [t for t in outcome.throttled if t < 3]
    assert len(first_second) <= 6
    assert limiter.rate is not None and 150 <= limiter.rate <= 230


def test_a_caller_that_sends_less_than_its_pace_does_not_bank_a_burst() -> None:
    clock = FakeClock()
    limiter = AdaptiveConcurrency(2, 1, 64, clock=clock, sleep=clock.sleep, min_cut_interval=0)
    for _ in range(50):  # learn a rate of about 100 calls/s, then one throttle
        limiter.release(limiter.acquire(), throttled=False)
        clock.sleep(0.01)
    limiter.release(limiter.acquire(), throttled=True)
    for _ in range(30):  # then an idle minute: one call every two seconds
        clock.sleep(2.0)
        limiter.release(limiter.acquire(), throttled=False)
    # at most the aim (halfway between the 100/s that got through and the 200/s pace that was
    # rejected), not CUBIC's value after an idle minute (thousands)
    assert limiter.rate is not None and limiter.rate <= 150


def test_no_rate_before_any_success_halves_the_concurrency() -> None:
    clock = FakeClock()
    limiter = AdaptiveConcurrency(8, 1, 64, clock=clock, sleep=clock.sleep, min_cut_interval=0)
    started = limiter.acquire()
    limiter.release(started, throttled=True)
    assert (limiter.limit, limiter.rate) == (4, None)
    limiter.in_flight += 1
    limiter.release(started - 1, throttled=True)  # started before the last cut: no second cut
    assert limiter.limit == 4


def test_a_long_run_without_throttles_keeps_its_windows_small() -> None:
    # a quota that ends the startup, then none: no throttle for 58 s
    outcome, limiter = simulate(lambda t: 40.0 if t < 2 else 1e9, 60)
    assert len(outcome.ok) > 10_000 and max(outcome.throttled) < 2.5
    assert len(limiter._successes._events) <= 2_000  # about a second of events, not all of them


@pytest.mark.parametrize("flaky", [0.05, 0.3])
def test_random_rejections_that_do_not_follow_the_pace_do_not_starve_the_job(flaky: float) -> None:
    outcome, _ = simulate(lambda t: 1e9, 60, flaky=flaky)
    assert outcome.rate(30, 60) >= outcome.rate(0, 5)  # learned as background, not cut to 0


def test_a_quota_behind_a_flaky_service_is_still_found() -> None:
    outcome, _ = simulate(lambda t: 40.0, 120, flaky=0.05)
    assert 0.8 * 40 * 0.95 <= outcome.rate(20, 120) <= 40 * 1.01


# -- the benchmark's comparison with botocore's adaptive mode (bench/limiter_compare.py) --------
def test_the_comparison_reports_medians_and_ratios_to_botocore() -> None:
    from bench.limiter_compare import Run, ratio, summarize, table

    runs = [
        Run("ours", 1, share, wasted, 100)
        for share, wasted in ((0.80, 0.02), (0.90, 0.01), (0.85, 0.03))
    ]
    runs += [Run("botocore adaptive", 1, s, 0.02, 100) for s in (0.5, 0.3, 0.4)]
    runs += [Run("ours", 4, 0.6, 0.2, 100), Run("botocore adaptive", 4, 0.4, 0.0, 100)]
    summaries = summarize(runs)
    assert [(s.config, s.processes, s.runs) for s in summaries] == [
        ("ours", 1, 3),
        ("botocore adaptive", 1, 3),
        ("ours", 4, 1),
        ("botocore adaptive", 4, 1),
    ]
    ours = summaries[0]
    assert (ours.share, ours.wasted) == (0.85, 0.02)  # medians, each on its own
    assert ratio(0.85, 0.4) == pytest.approx(2.125)
    assert (ratio(0.2, 0.0), ratio(0.0, 0.0)) == (float("inf"), 1.0)
    lines = table(summaries)
    assert lines[1].split()[-2:] == ["2.12", "1.00"]  # ours x1 against botocore x1
    assert lines[3].split()[-2:] == ["1.50", "inf"]  # ours x4 against botocore x4
