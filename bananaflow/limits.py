"""Per-backend quota gates: every HTTP attempt to a backend passes one.

Google bills and throttles per request, so the gate sits around each attempt (retries included),
not around a job. The core knows only the ``Limiter`` protocol; the Prefect layer supplies a
limiter backed by global concurrency limits so that all workers share one quota.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

from bananaflow.backends.base import ImageBackend
from bananaflow.generation import GeneratedImage, ImageRequest, UpscaledImage


class Limiter(Protocol):
    def slot(self) -> AbstractAsyncContextManager[None]:
        """Hold one request slot (concurrency) after taking one request token (rate)."""
        ...


class SlidingWindow:
    """At most ``limit`` request starts in any ``window_s``: how Google counts a per-minute quota.

    A leaky bucket (aiolimiter) admits a burst of ``limit`` and then refills continuously, so
    within one window it lets through up to twice the quota and the excess comes back as 429s.
    Starts are recorded when a request really starts (after its concurrency slot), and a small
    margin covers the time a request takes to reach the server.
    """

    def __init__(self, limit: int, window_s: float, margin: float = 0.02):
        self.limit = limit
        self.window_s = window_s * (1 + margin)
        self._starts: deque[float] = deque()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:  # FIFO: waiters start in arrival order
            while True:
                now = time.monotonic()
                while self._starts and self._starts[0] + self.window_s <= now:
                    self._starts.popleft()
                if len(self._starts) < self.limit:
                    self._starts.append(now)
                    return
                await asyncio.sleep(self._starts[0] + self.window_s - now)


class LocalLimiter:
    """One process's quota: a semaphore for concurrency and a sliding window for RPM.

    ``window_s`` is 60 for real Google; with the emulator's time scale it shrinks with it, so a
    scaled run meets the same ceiling the emulator enforces.
    """

    def __init__(self, requests_per_minute: int, concurrency: int, window_s: float = 60.0):
        self._rate = SlidingWindow(requests_per_minute, window_s) if window_s > 0 else None
        self._slots = asyncio.Semaphore(concurrency)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._slots:
            if self._rate is not None:
                await self._rate.acquire()
            yield


class LimitedBackend(ImageBackend):
    """A backend whose every call goes through a limiter; otherwise identical to the wrapped one."""

    def __init__(self, inner: ImageBackend, limiter: Limiter):
        self.inner = inner
        self.limiter = limiter
        self.name = inner.name
        self.model = inner.model

    def check_request(self, request: ImageRequest) -> None:
        self.inner.check_request(request)

    async def generate(self, request: ImageRequest) -> GeneratedImage:
        async with self.limiter.slot():
            return await self.inner.generate(request)

    async def upscale(self, data: bytes, mime_type: str, factor: int) -> UpscaledImage:
        async with self.limiter.slot():
            return await self.inner.upscale(data, mime_type, factor)

    async def rewrite_prompt(self, prompt: str) -> str:
        async with self.limiter.slot():
            return await self.inner.rewrite_prompt(prompt)

    async def aclose(self) -> None:
        await self.inner.aclose()
