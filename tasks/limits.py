"""Per-backend quota gates backed by Prefect global concurrency limits.

Strict: a missing limit is an error (``bananaflow setup`` creates them), never a silent run
without a quota. The rate limit has slot decay (requests per minute); the concurrency limit
caps requests in flight; both hold across every worker talking to the same Prefect server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prefect.concurrency.asyncio import concurrency, rate_limit

from bananaflow.config import Settings
from bananaflow.errors import ConfigError
from bananaflow.generation import BackendName
from bananaflow.routing import RouteDecision


def limit_names(settings: Settings, backend: BackendName) -> tuple[str, str]:
    prefix = settings.limits.name_prefix
    return f"{prefix}-{backend}-rpm", f"{prefix}-{backend}-concurrency"


class PrefectGlobalLimiter:
    def __init__(self, settings: Settings, backend: BackendName):
        self.rate_name, self.concurrency_name = limit_names(settings, backend)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        try:
            # Concurrency first, then the rate token: a token taken while waiting for a slot
            # would let queued requests reach Google in a bunch when the slot frees.
            async with concurrency(self.concurrency_name, strict=True):
                await rate_limit(self.rate_name, strict=True)
                yield
        except Exception as err:
            if type(err).__name__ == "ConcurrencySlotAcquisitionError":
                raise ConfigError(
                    "limits.mode",
                    f"global limits {self.rate_name}/{self.concurrency_name} do not exist",
                    fix="run `bananaflow setup --config <stage>` against this Prefect server",
                ) from None
            raise


def global_limiters(
    settings: Settings, decisions: list[RouteDecision]
) -> dict[BackendName, PrefectGlobalLimiter]:
    """The fleet-wide gates for every backend a run may touch; none in per-process mode."""
    if settings.limits.mode != "global":
        return {}
    names = {b for d in decisions for b in d.backends}
    return {name: PrefectGlobalLimiter(settings, name) for name in names}
