"""Per-backend quotas: requests per minute and per day (sliding windows) and concurrency.

Windows hold *accepted* requests only; a 429 doesn't use a slot, as at Google. Durations scale
with ``time_scale`` so a test can exhaust and recover a "minute" in well under a second; at
``time_scale == 0`` there is no time, hence no windows, and only the concurrency cap remains.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Literal

from bananaflow.config import BackendProfile

MINUTE_S = 60.0
DAY_S = 86_400.0
BUSY_RETRY_S = 1.0


@dataclass(frozen=True)
class Rejection:
    """Why a request was refused a slot, and when retrying can succeed (None: not soon)."""

    kind: Literal["minute", "day", "concurrency"]
    limit: int
    retry_after_s: float | None


class BackendQuota:
    def __init__(self, profile: BackendProfile, time_scale: float):
        self.profile = profile
        self.time_scale = time_scale
        self._minute: deque[float] = deque()
        self._day: deque[float] = deque()
        self.active = 0

    def reset(self) -> None:
        self._minute.clear()
        self._day.clear()

    @staticmethod
    def _expire(window: deque[float], length: float, now: float) -> None:
        while window and window[0] + length <= now:
            window.popleft()

    def admit(self, now: float | None = None) -> Rejection | None:
        """Take a slot (the caller must ``release()`` it when done) or say why not."""
        now = time.monotonic() if now is None else now
        p, scale = self.profile, self.time_scale
        if scale > 0:
            day_len, minute_len = DAY_S * scale, MINUTE_S * scale
            self._expire(self._day, day_len, now)
            self._expire(self._minute, minute_len, now)
            if p.requests_per_day is not None and len(self._day) >= p.requests_per_day:
                return Rejection("day", p.requests_per_day, None)
            rpm = p.requests_per_minute
            if rpm is not None and len(self._minute) >= rpm:
                # The slot frees when the oldest request in the window leaves it.
                oldest = self._minute[len(self._minute) - rpm]
                return Rejection("minute", rpm, oldest + minute_len - now)
        if p.concurrency is not None and self.active >= p.concurrency:
            return Rejection("concurrency", p.concurrency, BUSY_RETRY_S * scale)
        if scale > 0:
            self._day.append(now)
            self._minute.append(now)
        self.active += 1
        return None

    def release(self) -> None:
        self.active = max(0, self.active - 1)


class ProvisionedOrder:
    """Vertex Provisioned Throughput bought by the project: images per emulated minute.

    A sliding window of the images PT served, like the per-minute quota. At ``time_scale == 0``
    there is no time, so the order never refills: it is a fixed number of images until
    ``reset()``, which lets a test count exactly which calls PT served.
    """

    def __init__(self, images_per_min: int, time_scale: float):
        self.images_per_min = images_per_min
        self.time_scale = time_scale
        self._served: deque[float] = deque()

    def reset(self) -> None:
        self._served.clear()

    def take(self, now: float | None = None) -> bool:
        """Serve one image from the order if any is left this minute."""
        if self.images_per_min <= 0:
            return False
        now = time.monotonic() if now is None else now
        if self.time_scale > 0:
            BackendQuota._expire(self._served, MINUTE_S * self.time_scale, now)
        if len(self._served) >= self.images_per_min:
            return False
        self._served.append(now)
        return True
