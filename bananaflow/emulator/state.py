"""Everything the emulator remembers between requests, and the numbers tests read back.

One ``EmulatorState`` per app. It is touched only from the event loop thread (renders run in
workers but return their bytes to the loop), so plain dicts are safe without locks.
"""

from __future__ import annotations

import random
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from bananaflow.config import EmulatorSettings
from bananaflow.emulator.auth import TokenStore
from bananaflow.emulator.batchstate import AsyncStore
from bananaflow.emulator.faults import ALL_FAULTS, TIER, FaultQueue
from bananaflow.emulator.imagegen import RenderCache
from bananaflow.emulator.quota import BackendQuota, ProvisionedOrder

BACKENDS = ("aistudio", "vertex")
LOG_LIMIT = 20_000  # the request log is for tests and debugging, not an unbounded archive


@dataclass
class Call:
    """One request in progress: its log entry, and whether its outcome was counted yet."""

    backend: str
    operation: str
    entry: dict[str, Any]
    started: float
    in_flight: bool = False
    counted: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def check_fault_rates(settings: EmulatorSettings) -> None:
    """A misspelt fault name would silently inject nothing; refuse it when the app is built."""
    rated = ALL_FAULTS - TIER  # tier faults have their own rate fields
    for name, profile in settings.profiles.items():
        unknown = sorted(set(profile.fault_rates) - rated)
        if unknown:
            known = ", ".join(sorted(rated))
            raise ValueError(
                f"emulator.profiles.{name}.fault_rates: unknown fault(s) {', '.join(unknown)}; "
                f"known: {known} (flex shedding and priority downgrades: flex_shed_rate, "
                "priority_downgrade_rate)"
            )


class EmulatorState:
    def __init__(self, settings: EmulatorSettings):
        check_fault_rates(settings)
        self.settings = settings
        self.rng = random.Random(settings.seed)
        self.tokens = TokenStore()
        self.faults = FaultQueue()
        self.asyncs = AsyncStore.load(settings.batch.state_dir)  # Files API, provider batches
        self.cache = RenderCache(settings.image_cache_size)
        # The Pro model's small interim "thought" images, kept apart from the final images.
        self.draft_cache = RenderCache(settings.image_cache_size)
        self.quotas = {
            b: BackendQuota(settings.profiles[b], settings.time_scale)
            for b in BACKENDS
            if b in settings.profiles
        }
        vertex = settings.profiles.get("vertex")
        self.provisioned = ProvisionedOrder(
            vertex.provisioned_images_per_min if vertex is not None else 0, settings.time_scale
        )
        self._new_counters()

    def _new_counters(self) -> None:
        self.generation_requests: Counter[str] = Counter({b: 0 for b in BACKENDS})
        self.by_route: dict[str, Counter[str]] = {}
        self.in_flight: Counter[str] = Counter({b: 0 for b in BACKENDS})
        self.peak_in_flight: Counter[str] = Counter({b: 0 for b in BACKENDS})
        self.faults_applied: Counter[str] = Counter()
        # Vertex image answers per billing pool (usageMetadata.trafficType): PT vs on-demand.
        self.traffic_types: Counter[str] = Counter()
        self.log: deque[dict[str, Any]] = deque(maxlen=LOG_LIMIT)
        self.tokens_at_reset = self.tokens.issued
        self.renders_at_reset = self.cache.renders
        self.hits_at_reset = self.cache.hits

    def reset(self) -> None:
        """Forget counters, log, queued faults, quota and PT windows; keep tokens and the cache.

        The RNG is re-seeded so a test after ``reset()`` sees the same random faults as a fresh
        server would.
        """
        self.faults.clear()
        self.asyncs.creates = 0
        self.asyncs.uploaded = 0
        for q in self.quotas.values():
            q.reset()
        self.provisioned.reset()
        self.rng = random.Random(self.settings.seed)
        self._new_counters()

    # ------------------------------------------------------------------ request lifecycle

    def begin(
        self,
        *,
        method: str,
        url: str,
        backend: str,
        operation: str,
        model: str | None,
        generation: bool,
        api: bool,
    ) -> Call:
        now = time.monotonic()
        entry: dict[str, Any] = {
            "method": method,
            "url": url,
            "backend": backend,
            "operation": operation,
            "model": model,
            "status": None,
            "outcome": None,
            "t": now,
            "duration_s": None,
            "fault": None,
        }
        self.log.append(entry)
        call = Call(backend, operation, entry, now)
        if generation:
            self.generation_requests[backend] += 1
        if api:
            call.in_flight = True
            self.in_flight[backend] += 1
            self.peak_in_flight[backend] = max(
                self.peak_in_flight[backend], self.in_flight[backend]
            )
        return call

    def decide(self, call: Call, status: int, outcome: str) -> None:
        """Record the outcome once, as soon as it is known (a hang is counted before it hangs)."""
        if call.counted:
            return
        call.counted = True
        call.entry["status"] = status
        call.entry["outcome"] = outcome
        self.by_route.setdefault(f"{call.backend}:{call.operation}", Counter())[outcome] += 1

    def note_fault(self, call: Call, name: str) -> None:
        call.entry["fault"] = name
        self.faults_applied[name] += 1

    def end(self, call: Call) -> None:
        call.entry["duration_s"] = round(time.monotonic() - call.started, 6)
        if call.in_flight:
            call.in_flight = False
            self.in_flight[call.backend] -= 1

    # ------------------------------------------------------------------ reading back

    def stats(self) -> dict[str, Any]:
        return {
            "generation_requests": dict(self.generation_requests),
            "by_route": {k: dict(v) for k, v in sorted(self.by_route.items())},
            "peak_in_flight": dict(self.peak_in_flight),
            "in_flight": dict(self.in_flight),
            "tokens_issued": self.tokens.issued - self.tokens_at_reset,
            "tokens_issued_total": self.tokens.issued,
            "requests_logged": len(self.log),
            "faults_applied": dict(self.faults_applied),
            "traffic_types": dict(self.traffic_types),
            "faults_pending": self.faults.pending(),
            "images_rendered": self.cache.renders - self.renders_at_reset,
            "image_cache_hits": self.cache.hits - self.hits_at_reset,
            "quota_active": {b: q.active for b, q in self.quotas.items()},
            "batches_created": self.asyncs.creates,
            "files_uploaded": self.asyncs.uploaded,
        }

    def requests(self) -> list[dict[str, Any]]:
        return [dict(e) for e in self.log]
