"""The local quota gate: no window ever sees more than the quota, no more than N in flight."""

from __future__ import annotations

import asyncio
import time

from bananaflow.limits import LocalLimiter, SlidingWindow


def test_sliding_window_never_admits_more_than_the_limit_in_any_window() -> None:
    limit, window = 3, 0.2

    async def main() -> list[float]:
        gate = SlidingWindow(limit, window, margin=0.0)
        starts: list[float] = []

        async def one() -> None:
            await gate.acquire()
            starts.append(time.monotonic())

        await asyncio.gather(*(one() for _ in range(10)))
        return sorted(starts)

    starts = asyncio.run(main())
    assert len(starts) == 10
    for i, t in enumerate(starts):
        # Google's count: any window starting at a request holds at most `limit` starts.
        # (A leaky bucket admits a full burst and then refills, which breaks this.)
        assert sum(1 for s in starts[i:] if s < t + window * 0.999) <= limit


def test_local_limiter_caps_requests_in_flight() -> None:
    async def main() -> int:
        limiter = LocalLimiter(requests_per_minute=1000, concurrency=2, window_s=60.0)
        in_flight = peak = 0

        async def one() -> None:
            nonlocal in_flight, peak
            async with limiter.slot():
                in_flight += 1
                peak = max(peak, in_flight)
                await asyncio.sleep(0.01)
                in_flight -= 1

        await asyncio.gather(*(one() for _ in range(8)))
        return peak

    assert asyncio.run(main()) == 2


def test_mmap_threshold_is_set_on_linux() -> None:
    import sys

    from bananaflow.memory import return_large_buffers_to_os

    assert return_large_buffers_to_os() is sys.platform.startswith("linux")
