"""Unit tests of the retry policy (bananaflow.retry).

The function being retried is a plain coroutine raising typed errors: it stands in for nothing
network-related, it just scripts outcomes. ``sleep`` is a recorder, so the waits the policy asks
for are asserted exactly and no test waits for real.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

import pytest

from bananaflow.config import RetrySettings
from bananaflow.errors import (
    AuthError,
    BackendError,
    BadRequest,
    InputError,
    MalformedResponse,
    NotFound,
    QuotaExceeded,
    Refused,
    RequestTimedOut,
    Unavailable,
)
from bananaflow.retry import is_retryable, retry_async


class Recorder:
    """An async ``sleep`` that records instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def script(outcomes: Iterable[BaseException | str]) -> tuple[Callable[[], Awaitable[str]], list]:
    """A coroutine factory that raises/returns the scripted outcomes in order."""
    queue = list(outcomes)
    calls: list[int] = []

    async def fn() -> str:
        calls.append(1)
        item = queue.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    return fn, calls


def policy(**kw: object) -> RetrySettings:
    base: dict[str, object] = {
        "initial_delay_s": 1.0,
        "multiplier": 2.0,
        "max_delay_s": 60.0,
        "max_attempts": 6,
        "deadline_s": 600.0,
        "jitter": False,
    }
    base.update(kw)
    return RetrySettings(**base)


def run(coro: Awaitable[object]) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_success_first_time_is_one_attempt_and_no_wait() -> None:
    fn, calls = script(["ok"])
    sleep = Recorder()
    assert run(retry_async(fn, policy(), sleep=sleep)) == ("ok", 1)
    assert sleep.waits == [] and len(calls) == 1


def test_retryable_errors_back_off_exponentially_then_succeed() -> None:
    fn, calls = script([Unavailable("503"), RequestTimedOut("t"), MalformedResponse("m"), "ok"])
    sleep = Recorder()
    result = run(retry_async(fn, policy(), sleep=sleep))
    assert result == ("ok", 4)
    assert sleep.waits == [1.0, 2.0, 4.0]
    assert len(calls) == 4


def test_backoff_is_capped_at_max_delay() -> None:
    fn, _ = script([Unavailable("x")] * 3 + ["ok"])
    sleep = Recorder()
    run(retry_async(fn, policy(initial_delay_s=1, multiplier=10, max_delay_s=5), sleep=sleep))
    assert sleep.waits == [1.0, 5.0, 5.0]


def test_server_retry_delay_is_used_as_given_even_above_max_delay() -> None:
    fn, _ = script(
        [QuotaExceeded("rpm", retry_after=34.0), QuotaExceeded("rpm", retry_after=0.34), "ok"]
    )
    sleep = Recorder()
    result = run(retry_async(fn, policy(max_delay_s=10), sleep=sleep))
    assert result == ("ok", 3)
    assert sleep.waits == [34.0, 0.34]


def test_unavailable_retry_after_header_hint_is_honoured() -> None:
    fn, _ = script([Unavailable("503", retry_after=7.0), "ok"])
    sleep = Recorder()
    run(retry_async(fn, policy(), sleep=sleep))
    assert sleep.waits == [7.0]


def test_quota_without_hint_falls_back_to_backoff() -> None:
    fn, _ = script([QuotaExceeded("vertex dsq"), QuotaExceeded("vertex dsq"), "ok"])
    sleep = Recorder()
    run(retry_async(fn, policy(initial_delay_s=0.5), sleep=sleep))
    assert sleep.waits == [0.5, 1.0]


@pytest.mark.parametrize(
    "error",
    [
        Refused("no", reason="IMAGE_SAFETY"),
        BadRequest("Unknown name"),
        AuthError("401"),
        NotFound("model"),
        QuotaExceeded("daily", per_day=True, retry_after=5.0),
        QuotaExceeded("credits", billing=True),
        BackendError("418"),
    ],
    ids=lambda e: (
        type(e).__name__
        + ("-perday" if getattr(e, "per_day", 0) else "")
        + ("-billing" if getattr(e, "billing", 0) else "")
    ),
)
def test_non_retryable_errors_raise_after_one_attempt(error: BackendError) -> None:
    fn, calls = script([error, "never"])
    sleep = Recorder()
    with pytest.raises(type(error)) as info:
        run(retry_async(fn, policy(), sleep=sleep))
    assert info.value is error
    assert info.value.attempts == 1  # type: ignore[attr-defined]
    assert len(calls) == 1 and sleep.waits == []


def test_other_exceptions_are_not_retried() -> None:
    fn, calls = script([InputError("prompt", "blank"), "never"])
    with pytest.raises(InputError):
        run(retry_async(fn, policy(), sleep=Recorder()))
    assert len(calls) == 1


def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    errors = [Unavailable(f"503 #{i}") for i in range(5)]
    fn, calls = script(errors)
    sleep = Recorder()
    with pytest.raises(Unavailable) as info:
        run(retry_async(fn, policy(max_attempts=3), sleep=sleep))
    assert info.value is errors[2]
    assert info.value.attempts == 3  # type: ignore[attr-defined]
    assert len(calls) == 3
    assert sleep.waits == [1.0, 2.0]


def test_stops_when_the_next_wait_would_pass_the_deadline() -> None:
    fn, calls = script([Unavailable("x")] * 6)
    sleep = Recorder()
    with pytest.raises(Unavailable) as info:
        run(retry_async(fn, policy(deadline_s=5.0), sleep=sleep))
    # waits 1 + 2 = 3 fit in 5 s; the next (4) would end at 7 > 5, so attempt 3 is the last
    assert sleep.waits == [1.0, 2.0]
    assert len(calls) == 3
    assert info.value.attempts == 3  # type: ignore[attr-defined]


def test_server_delay_beyond_the_deadline_fails_now_instead_of_sleeping() -> None:
    fn, calls = script([QuotaExceeded("rpm", retry_after=120.0), "ok"])
    sleep = Recorder()
    with pytest.raises(QuotaExceeded):
        run(retry_async(fn, policy(deadline_s=60.0), sleep=sleep))
    assert sleep.waits == [] and len(calls) == 1


def test_jitter_stays_within_bounds() -> None:
    fn, _ = script([Unavailable("x")] * 5 + ["ok"])
    sleep = Recorder()
    run(
        retry_async(
            fn, policy(initial_delay_s=1, multiplier=2, max_delay_s=6, jitter=True), sleep=sleep
        )
    )
    bases = [1.0, 2.0, 4.0, 6.0, 6.0]
    assert len(sleep.waits) == 5
    for wait, base in zip(sleep.waits, bases, strict=True):
        assert base <= wait <= min(base + 1.0, 6.0)


def test_on_retry_sees_error_attempt_and_wait() -> None:
    first, second = QuotaExceeded("rpm", retry_after=3.0), Unavailable("503")
    fn, _ = script([first, second, "ok"])
    seen: list[tuple[BackendError, int, float]] = []
    run(
        retry_async(fn, policy(), sleep=Recorder(), on_retry=lambda e, n, w: seen.append((e, n, w)))
    )
    assert seen == [(first, 1, 3.0), (second, 2, 2.0)]


def test_a_plain_sync_sleep_callable_is_accepted() -> None:
    waits: list[float] = []
    fn, _ = script([Unavailable("x"), "ok"])
    assert run(retry_async(fn, policy(), sleep=waits.append)) == ("ok", 2)
    assert waits == [1.0]


def test_retry_verdicts_come_from_the_error_classes() -> None:
    assert is_retryable(QuotaExceeded("rpm"))
    assert not is_retryable(QuotaExceeded("d", per_day=True))
    assert not is_retryable(QuotaExceeded("b", billing=True))
    assert is_retryable(Unavailable("x")) and is_retryable(RequestTimedOut("x"))
    assert not is_retryable(Refused("x", reason="NO_IMAGE"))
    assert not is_retryable(ValueError("x"))


def test_real_asyncio_sleep_default_works_with_tiny_waits() -> None:
    fn, _ = script([Unavailable("x"), "ok"])
    assert run(retry_async(fn, policy(initial_delay_s=0.001))) == ("ok", 2)


def test_an_attempt_sees_what_is_left_of_the_deadline() -> None:
    """The policy's own clock (real time in attempts + waits asked for) tells each attempt."""
    from bananaflow.retry import remaining_s

    seen: list[float | None] = []

    async def fn() -> str:
        seen.append(remaining_s())
        if len(seen) < 3:
            raise Unavailable("busy")
        return "ok"

    assert remaining_s() is None
    result = run(retry_async(fn, policy(deadline_s=100.0, initial_delay_s=10.0), sleep=Recorder()))
    assert result == ("ok", 3)
    assert seen == [pytest.approx(100, abs=1), pytest.approx(90, abs=1), pytest.approx(70, abs=1)]
    assert remaining_s() is None
