"""Retry policy (full-jitter backoff, Retry-After) and the circuit breaker, with injected clocks."""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from sdk._resilience import RETRY_STATUSES, CircuitBreaker, Retry


class FakeClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _never() -> float:
    raise AssertionError("rand() must not be drawn when Retry-After decides the wait")


# --- Retry ---------------------------------------------------------------------------------


def test_retry_defaults_retry_once_on_429_and_503() -> None:
    retry = Retry()
    assert (retry.attempts, retry.base, retry.cap) == (2, 0.05, 1.0)
    assert retry.statuses == RETRY_STATUSES == frozenset({429, 503})


@pytest.mark.parametrize("n", range(8))
def test_delay_is_full_jitter_within_the_capped_exponential(n: int) -> None:
    retry = Retry(base=0.1, cap=1.0)
    bound = min(1.0, 0.1 * 2**n)
    assert retry.delay(n, rand=lambda: 0.0) == 0.0
    assert retry.delay(n, rand=lambda: 1.0 - 1e-12) == pytest.approx(bound)
    assert retry.delay(n, rand=lambda: 0.5) == pytest.approx(bound / 2)


def test_delay_bound_reaches_the_cap_and_stays_there() -> None:
    retry = Retry(base=0.1, cap=0.5)
    bounds = [retry.delay(n, rand=lambda: 1.0) for n in range(6)]
    assert bounds == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5, 0.5])


def test_default_random_delays_stay_within_bounds() -> None:
    retry = Retry(base=0.05, cap=1.0)
    for n in range(6):
        bound = min(1.0, 0.05 * 2**n)
        draws = [retry.delay(n) for _ in range(200)]
        assert all(0.0 <= d <= bound for d in draws)
        assert len(set(draws)) > 1  # jittered, not a constant


@pytest.mark.parametrize(("header", "expected"), [("0", 0.0), ("2", 2.0), (" 3 ", 3.0), ("4", 4.0)])
def test_retry_after_seconds_are_honoured(header: str, expected: float) -> None:
    assert Retry(cap=5.0).delay(0, header, rand=_never) == expected


@pytest.mark.parametrize("header", ["6", "120", "86400"])
def test_retry_after_is_capped(header: str) -> None:
    assert Retry(cap=5.0).delay(3, header, rand=_never) == 5.0


@pytest.mark.parametrize("header", ["", "soon", "-1", "1.5", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_retry_after_that_is_not_whole_seconds_falls_back_to_jitter(header: str) -> None:
    retry = Retry(base=0.1, cap=1.0)
    assert retry.delay(2, header, rand=lambda: 0.5) == pytest.approx(0.2)


def test_retry_after_with_a_non_ascii_digit_does_not_crash() -> None:
    # "²".isdigit() is True but float("²") raises: a header a proxy sends must never make
    # decide() raise, it should just be ignored (or read as a number of seconds).
    delay = Retry(base=0.1, cap=1.0).delay(0, "²", rand=lambda: 0.5)
    assert 0.0 <= delay <= 1.0


@pytest.mark.parametrize(
    "kwargs",
    [{"attempts": 0}, {"attempts": -1}, {"base": -0.01}, {"cap": -1.0}],
)
def test_invalid_retry_parameters_raise(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"Retry\."):
        Retry(**kwargs)  # type: ignore[arg-type]


def test_one_attempt_and_zero_waits_are_allowed_and_retry_is_frozen() -> None:
    retry = Retry(attempts=1, base=0.0, cap=0.0)
    assert retry.delay(5, rand=lambda: 1.0) == 0.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        retry.attempts = 3  # type: ignore[misc]


# --- CircuitBreaker ------------------------------------------------------------------------


def open_breaker(clock: FakeClock, failures: int = 3, reset_after: float = 5.0) -> CircuitBreaker:
    breaker = CircuitBreaker(failures=failures, reset_after=reset_after, clock=clock)
    for _ in range(failures):
        breaker.failure()
    assert breaker.state == "open"
    return breaker


def test_breaker_opens_after_n_consecutive_failures() -> None:
    breaker = CircuitBreaker(failures=3, reset_after=5.0, clock=FakeClock())
    for _ in range(2):
        breaker.failure()
        assert breaker.state == "closed"
        assert breaker.allow()
    breaker.failure()
    assert breaker.state == "open"
    assert not breaker.allow()


def test_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker(failures=3, clock=FakeClock())
    for _ in range(5):
        breaker.failure()
        breaker.failure()
        breaker.success()
    assert breaker.state == "closed"
    breaker.failure()
    breaker.failure()
    assert breaker.allow()


def test_open_breaker_refuses_until_reset_after() -> None:
    clock = FakeClock()
    breaker = open_breaker(clock, reset_after=5.0)
    for _ in range(10):
        assert not breaker.allow()
    clock.advance(4.999)
    assert breaker.state == "open"
    assert not breaker.allow()
    clock.advance(0.001)
    assert breaker.state == "half-open"


def test_half_open_lets_exactly_one_trial_through() -> None:
    clock = FakeClock()
    breaker = open_breaker(clock)
    clock.advance(5.0)
    assert breaker.allow()
    assert not breaker.allow()
    assert not breaker.allow()
    clock.advance(100.0)  # still one trial outstanding: nothing else goes through
    assert not breaker.allow()


def test_concurrent_allow_in_half_open_claims_one_trial() -> None:
    clock = FakeClock()
    breaker = open_breaker(clock)
    clock.advance(5.0)
    start = threading.Barrier(16)

    def claim(_: int) -> bool:
        start.wait()
        return breaker.allow()

    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(claim, range(16)))
    assert outcomes.count(True) == 1


def test_trial_success_closes_the_breaker() -> None:
    clock = FakeClock()
    breaker = open_breaker(clock, failures=3)
    clock.advance(5.0)
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed"
    assert all(breaker.allow() for _ in range(5))
    breaker.failure()
    breaker.failure()  # the count restarted from zero: 2 < 3
    assert breaker.state == "closed"


def test_trial_failure_reopens_for_a_full_period() -> None:
    clock = FakeClock()
    breaker = open_breaker(clock, failures=5, reset_after=5.0)
    clock.advance(7.0)
    assert breaker.allow()
    breaker.failure()  # one failed trial is enough, whatever `failures` says
    assert breaker.state == "open"
    assert not breaker.allow()
    clock.advance(4.9)
    assert not breaker.allow()
    clock.advance(0.1)
    assert breaker.allow()  # a new trial, a period after the failed one


def test_reset_closes_an_open_breaker() -> None:
    breaker = open_breaker(FakeClock())
    breaker.reset()
    assert breaker.state == "closed"
    assert breaker.allow()


def test_breaker_rejects_fewer_than_one_failure() -> None:
    with pytest.raises(ValueError, match="failures"):
        CircuitBreaker(failures=0)


def test_failures_from_many_threads_are_all_counted() -> None:
    breaker = CircuitBreaker(failures=4000, clock=FakeClock())
    start = threading.Barrier(8)

    def fail(_: int) -> None:
        start.wait()
        for _ in range(499):
            breaker.failure()

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(fail, range(8)))
    assert breaker.state == "closed"  # 8 * 499 = 3992 < 4000: no update was lost or doubled
    for _ in range(8):
        breaker.failure()
    assert breaker.state == "open"
