"""A provider batch create refused for quota (429), asked again until it is admitted.

Create is not idempotent: an answer lost in a timeout or a 5xx may hide a batch that was made,
so only a 429 RESOURCE_EXHAUSTED is retried here, the one answer that says no batch exists.
Google sends it when too many batch jobs (or enqueued tokens) are waiting
(batch-and-model-tiers.md §1.6, §7): a wait for running batches to end, not a blip, hence the
long backoff of ``batch.create_retry``. Every other failure is final for this create; the
caller releases the jobs' claims and the next run submits them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from bananaflow.config import RetrySettings, Settings
from bananaflow.errors import BackendError, QuotaExceeded
from bananaflow.retry import retry_async

T = TypeVar("T")

log = logging.getLogger("bananaflow")


def create_policy(settings: Settings) -> RetrySettings:
    """``batch.create_retry``; on the embedded emulator its waits scale with its clock."""
    policy = settings.batch.create_retry
    emu = settings.emulator
    if not emu.embedded:
        return policy
    scale = emu.time_scale
    return policy.model_copy(
        update={
            "initial_delay_s": policy.initial_delay_s * scale,
            "max_delay_s": policy.max_delay_s * scale,
            "deadline_s": policy.deadline_s * scale,
        }
    )


async def admitted(create: Callable[[], Awaitable[T]], policy: RetrySettings) -> T:
    """``create()``, asked again with backoff while it is refused for quota."""

    async def once() -> T:
        try:
            return await create()
        except QuotaExceeded:
            raise
        except BackendError as err:
            err.retryable = False  # this create may have been made: never ask twice
            raise

    def note(err: BackendError, attempt: int, wait_s: float) -> None:
        log.warning("batch create refused (%s); asking again in %.1f s", err.kind, wait_s)

    result, _attempts = await retry_async(once, policy, on_retry=note)
    return result
