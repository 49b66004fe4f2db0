"""Turning a run into figures: quota use from the emulator's own request log, medians, ratios.

Why the emulator's log: it is one clock and one point of view for every peer (when each
generation request arrived, how long the "model" took, what was answered), so the throughput of
a hand-written script and of a Prefect flow are measured the same way.

Two ceilings are reported for a batch of N images:

* the long-run quota ceiling of the brief, ``min(concurrency / latency, RPM / window)``, with
  the latency the emulator actually served in that run;
* the finite-batch ceiling: the makespan of an ideal client (zero overhead, a slot refilled the
  instant it frees, the RPM window used to the last request) replaying the same latencies under
  the same quota rules. A finite batch pays a ramp and a tail that the long-run formula does not
  see (the last wave waits for its slowest request), and a sliding RPM window lets the first
  window's requests through at the concurrency pace, so for small N this ceiling can be below
  or above the formula.
"""

from __future__ import annotations

import heapq
import math
import statistics
from typing import Any


def median(values: list[float]) -> float:
    clean = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return float(statistics.median(clean)) if clean else float("nan")


def ratio(a: float, b: float) -> float:
    return a / b if b and math.isfinite(a) and math.isfinite(b) else float("nan")


def ideal_makespan(
    durations: list[float], concurrency: int, rpm: int | None, window_s: float
) -> float:
    """Seconds an overhead-free client needs for these request durations under the quota."""
    free = [0.0] * max(1, concurrency)
    starts: list[float] = []
    end = 0.0
    for d in durations:
        t = heapq.heappop(free)
        if rpm and window_s > 0 and len(starts) >= rpm:
            t = max(t, starts[-rpm] + window_s)
        starts.append(t)
        end = max(end, t + d)
        heapq.heappush(free, t + d)
    return end


def quota_use(
    log: list[dict[str, Any]], concurrency: int, rpm: int, window_s: float
) -> dict[str, float]:
    """Throughput of one run as the emulator saw it, against both ceilings."""
    if not log:
        return {"ok": 0, "rejected": 0, "throughput": float("nan")}
    ok = [e for e in log if e.get("status") == 200]
    start = min(e["t"] for e in log)
    end = max(e["t"] + (e.get("duration_s") or 0.0) for e in log)
    span = end - start
    durations = [e["duration_s"] for e in ok]
    latency = statistics.fmean(durations) if durations else float("nan")
    formula = min(concurrency / latency, rpm / window_s) if window_s > 0 else concurrency / latency
    ideal = ideal_makespan(durations, concurrency, rpm, window_s)
    throughput = len(ok) / span if span > 0 else float("nan")
    # While the client still had requests to start (first start .. last start), how many of
    # the concurrency slots did accepted requests hold on average? The drain after the last
    # start is excluded: no client can fill slots it has no work for.
    if ok:
        last_start = max(e["t"] for e in ok)
        busy = sum(max(0.0, min(e["t"] + e["duration_s"], last_start) - e["t"]) for e in ok)
        window = last_start - start
        in_flight = busy / window if window > 0 else float("nan")
    else:
        in_flight = float("nan")
    return {
        "ok": len(ok),
        "rejected": len(log) - len(ok),
        "span_s": span,
        "latency_s": latency,
        "throughput": throughput,
        "ceiling_formula": formula,
        "ratio_formula": ratio(throughput, formula),
        "ceiling_ideal": ratio(len(ok), ideal),
        "ratio_ideal": ratio(ideal, span),
        "mean_in_flight": in_flight,
        "slot_use": ratio(in_flight, concurrency),
    }


def summarise(runs: list[dict[str, float]], keys: list[str]) -> dict[str, Any]:
    """Median of each key over repetitions, plus the raw values (for the JSON)."""
    return {k: median([r.get(k, float("nan")) for r in runs]) for k in keys} | {
        "reps": len(runs),
        "raw": runs,
    }
