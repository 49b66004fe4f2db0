"""The retry policy for one backend call, built on tenacity.

Only a :class:`~bananaflow.errors.BackendError` whose ``retryable`` flag is true is retried: the
error classes already encode Google's retry rules (reference §5.4), so this module never looks at
status codes. A refusal, a 4xx, a per-day quota or a billing 429 fails after one attempt, because
repeating it would either be refused again or only burn time.

When the server says how long to wait (``RetryInfo.retryDelay`` or ``Retry-After``, surfaced as
``retry_after`` on the error) that wait is used as given: waiting less only earns another 429.
It is not capped by ``max_delay_s``; the overall ``deadline_s`` bounds it instead. Otherwise the
wait is exponential (``initial_delay_s`` × ``multiplier``ⁿ, capped at ``max_delay_s``) plus up to
``initial_delay_s`` of random jitter so that a burst of failed jobs does not retry in lockstep.

The deadline is checked *before* sleeping: if the next wait would end past ``deadline_s`` the
last error is raised now instead of sleeping and then giving up. Time is counted as real time
spent in attempts plus the waits that were asked for, so an injected fake ``sleep`` (tests, or a
caller that sleeps elsewhere) sees the same decisions as a real one.

Checking between attempts cannot stop an attempt that never ends (a body trickled a byte at a
time keeps every socket timeout from firing), so the attempt itself asks :func:`remaining_s`
how much of the deadline is left and the backend cuts the whole request there.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.stop import stop_base
from tenacity.wait import wait_base, wait_exponential_jitter

from bananaflow.config import RetrySettings
from bananaflow.errors import BackendError

T = TypeVar("T")

SleepFn = Callable[[float], Awaitable[None] | None]
OnRetry = Callable[[BackendError, int, float], None]

__all__ = ["OnRetry", "SleepFn", "is_retryable", "remaining_s", "retry_async", "server_hint"]


def is_retryable(exc: BaseException) -> bool:
    """The single retry verdict: the error class decides, never the caller."""
    return isinstance(exc, BackendError) and bool(exc.retryable)


def server_hint(exc: BaseException | None) -> float | None:
    """The wait the server asked for, if the error carries one (quota / unavailable)."""
    hint = getattr(exc, "retry_after", None)
    if hint is None:
        return None
    try:
        value = float(hint)
    except (TypeError, ValueError):
        return None
    return value if value >= 0 else None


class _WaitServerHintOrBackoff(wait_base):
    """Server's hint when present, else tenacity's exponential backoff with jitter."""

    def __init__(self, policy: RetrySettings) -> None:
        # ``initial`` (not 9.2's ``multiplier``): google-genai pins tenacity < 9.2 and both
        # run here; 9.2 only deprecates the name.
        self._backoff = wait_exponential_jitter(
            initial=policy.initial_delay_s,
            max=policy.max_delay_s,
            exp_base=policy.multiplier,
            jitter=policy.initial_delay_s if policy.jitter else 0,
        )

    def __call__(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        hint = server_hint(exc)
        if hint is not None:
            return hint
        return float(self._backoff(retry_state))


class _Clock:
    """Elapsed time = real time outside sleeps + requested sleeps (see module docstring)."""

    def __init__(self, sleep: SleepFn) -> None:
        self._sleep = sleep
        self.start = time.monotonic()
        self.slept_real = 0.0
        self.slept_asked = 0.0

    async def sleep(self, seconds: float) -> None:
        t0 = time.monotonic()
        self.slept_asked += seconds
        try:
            result = self._sleep(seconds)
            if inspect.isawaitable(result):
                await result
        finally:
            self.slept_real += time.monotonic() - t0

    def elapsed(self) -> float:
        active = (time.monotonic() - self.start) - self.slept_real
        return max(active, 0.0) + self.slept_asked


# The running retry loop's clock and deadline, for the attempt inside it (see remaining_s).
_current: ContextVar[tuple[_Clock, float] | None] = ContextVar("bananaflow_retry", default=None)


def remaining_s() -> float | None:
    """Seconds left of ``deadline_s`` in the innermost :func:`retry_async`; None outside one.

    Measured on the policy's own clock, so it agrees with when the policy stops retrying.
    """
    current = _current.get()
    if current is None:
        return None
    clock, deadline_s = current
    return deadline_s - clock.elapsed()


class _StopAtDeadline(stop_base):
    """Stop when sleeping the upcoming wait would overrun the overall budget."""

    def __init__(self, deadline_s: float, clock: _Clock) -> None:
        self._deadline_s = deadline_s
        self._clock = clock

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self._clock.elapsed() + retry_state.upcoming_sleep > self._deadline_s


def _mark_attempts(exc: BaseException, attempts: int) -> None:
    """The manifest records attempts for failures too, so put the count on the error."""
    with contextlib.suppress(AttributeError, TypeError):  # exotic exception types
        exc.attempts = attempts  # type: ignore[attr-defined]


async def retry_async(
    fn: Callable[[], Awaitable[T]],
    policy: RetrySettings,
    *,
    sleep: SleepFn = asyncio.sleep,
    on_retry: OnRetry | None = None,
) -> tuple[T, int]:
    """Run ``fn`` until it succeeds or the policy gives up; return ``(result, attempts)``.

    On final failure the last error is re-raised unchanged (not tenacity's ``RetryError``) with
    an ``attempts`` attribute, so callers keep one vocabulary of typed errors.
    ``on_retry(error, attempt_number, wait_s)`` is called before each wait, e.g. for logging.
    """
    clock = _Clock(sleep)

    def _before_sleep(retry_state: RetryCallState) -> None:
        if on_retry is None or retry_state.outcome is None:
            return
        exc = retry_state.outcome.exception()
        if isinstance(exc, BackendError):
            on_retry(exc, retry_state.attempt_number, retry_state.upcoming_sleep)

    retrying = AsyncRetrying(
        sleep=clock.sleep,
        stop=stop_after_attempt(policy.max_attempts) | _StopAtDeadline(policy.deadline_s, clock),
        wait=_WaitServerHintOrBackoff(policy),
        retry=retry_if_exception(is_retryable),
        before_sleep=_before_sleep,
        reraise=True,
    )
    attempts = 0
    result: Any = None
    token = _current.set((clock, policy.deadline_s))
    try:
        async for attempt in retrying:
            with attempt:
                attempts = attempt.retry_state.attempt_number
                result = await fn()
    except Exception as exc:
        _mark_attempts(exc, attempts)
        raise
    finally:
        _current.reset(token)
    return result, attempts
