"""A/B of the two platforms on the user's own prompts: the jobs, the statistics, the report.

The field measurements in ../shared/reference/platform-measurements.md are one observer's
numbers on someone else's prompts. Before a release the advice is to measure again on yours,
so this module turns one comparison run's manifest rows into the same table: per backend and
size, latency p50/p95, raw and published file sizes, timeout / retry / refusal rates and the
cost of a delivered image.

Definitions (so two comparisons can be compared):

- latency: per uploaded image, from the first request to the last byte, retries and quota waits
  included (``generate_with_retries``); what a caller waits, not one HTTP exchange.
- timeout rate: timed-out requests / generation requests sent (each attempt is a request).
- retry rate: jobs that needed at least one retry / jobs.
- refusal rate and failure rate: jobs ending ``refused`` / ``failed`` over jobs.
- cost per image: estimated spend / uploaded images (refusals are free, failures unbilled).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable

from pydantic import BaseModel, Field

from bananaflow.config import Settings
from bananaflow.expand import ImageJob, compute_job_id
from bananaflow.generation import BackendName, ImageSize
from bananaflow.imaging import contact_sheet
from bananaflow.records import ManifestRow

BACKENDS: tuple[BackendName, BackendName] = ("aistudio", "vertex")
LABELS: dict[BackendName, str] = {"aistudio": "AI Studio", "vertex": "Vertex AI"}

# The field reference per backend (AI Studio, Vertex); sizes the article did not measure: absent.
REFERENCE_LATENCY: dict[str, tuple[str, str]] = {
    "1K": ("2–4 s", "5–10 s"),
    "4K": ("8–15 s", "20–40 s"),
}
REFERENCE_FILE: dict[str, tuple[str, str]] = {
    "1K": ("0.5–1 MB", "2–4 MB"),
    "4K": ("3–5 MB", "15–20 MB"),
}
REFERENCE_TIMEOUT: tuple[str, str] = ("< 1 %", "3–8 %")


# --------------------------------------------------------------------------- jobs


def comparison_jobs(jobs: list[ImageJob], sizes: list[ImageSize]) -> list[ImageJob]:
    """Every prompt × size once per backend, pinned, interleaved (A, B, A, B, …).

    Pinning the backend on the job (not on the run) gives each side its own job id, so both
    rows live in one manifest, and it routes without fallback: a Vertex failure stays a Vertex
    failure instead of being quietly served by AI Studio. Interleaving keeps both platforms
    under the same conditions while the run is in flight.
    """
    out: list[ImageJob] = []
    seen: set[str] = set()
    for job in jobs:
        for size in sizes:
            for backend in BACKENDS:
                job_id = compute_job_id(
                    prompt=job.prompt,
                    aspect_ratio=job.aspect_ratio,
                    image_size=size,
                    variant=job.variant,
                    backend=backend,
                    model=job.model,
                )
                if job_id in seen:
                    continue
                seen.add(job_id)
                out.append(
                    job.model_copy(
                        update={"job_id": job_id, "image_size": size, "backend": backend}
                    )
                )
    return out


def backend_of(row: ManifestRow) -> BackendName:
    """The platform a row measured: its first (and, without fallback, only) route."""
    if row.routes:
        return row.routes[0].backend
    return row.backend or "aistudio"


# --------------------------------------------------------------------------- statistics


def percentile(values: Iterable[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None for no values."""
    data = sorted(values)
    if not data:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    pos = (len(data) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


class BackendStats(BaseModel):
    """One platform at one size, re-measured: a row of the comparison table."""

    backend: BackendName
    image_size: ImageSize
    jobs: int
    uploaded: int
    refused: int
    failed: int
    skipped: int = Field(description="Jobs not started (budget).")
    requests: int = Field(description="Generation requests sent, retries included.")
    latency_p50_s: float | None
    latency_p95_s: float | None
    latency_mean_s: float | None
    bytes_raw_mean: float | None
    bytes_raw_median: float | None
    bytes_final_mean: float | None
    bytes_final_median: float | None
    timeouts: int
    timeout_rate: float = Field(description="Timed-out requests / requests.")
    retries: int = Field(description="Requests that were retried.")
    retry_rate: float = Field(description="Jobs with at least one retry / jobs.")
    retried_kinds: dict[str, int] = Field(description="Why requests were retried, by error kind.")
    refusal_rate: float
    failure_rate: float
    usd_total: float
    usd_per_image: float | None = Field(description="Spend / uploaded images.")


def _timeouts(row: ManifestRow) -> int:
    return sum(r.retried.count("timeout") + (r.outcome == "timeout") for r in row.routes)


def backend_stats(backend: BackendName, size: ImageSize, rows: list[ManifestRow]) -> BackendStats:
    done = [r for r in rows if r.status == "uploaded"]
    measured = [r.latency_s for r in done if r.reused_from_run is None and r.latency_s > 0]
    raw = [float(r.bytes_raw) for r in done]
    final = [float(r.bytes_final) for r in done]
    kinds: dict[str, int] = {}
    for row in rows:
        for route in row.routes:
            for kind in route.retried:
                kinds[kind] = kinds.get(kind, 0) + 1
    requests = sum(route.attempts for row in rows for route in row.routes)
    timeouts = sum(_timeouts(r) for r in rows)
    usd = round(sum(r.estimated_usd for r in rows), 6)
    count = {s: sum(1 for r in rows if r.status == s) for s in ("refused", "failed")}
    return BackendStats(
        backend=backend,
        image_size=size,
        jobs=len(rows),
        uploaded=len(done),
        refused=count["refused"],
        failed=count["failed"],
        skipped=sum(1 for r in rows if r.status == "skipped_budget"),
        requests=requests,
        latency_p50_s=percentile(measured, 50),
        latency_p95_s=percentile(measured, 95),
        latency_mean_s=_mean(measured),
        bytes_raw_mean=_mean(raw),
        bytes_raw_median=_median(raw),
        bytes_final_mean=_mean(final),
        bytes_final_median=_median(final),
        timeouts=timeouts,
        timeout_rate=_rate(timeouts, requests),
        retries=sum(kinds.values()),
        retry_rate=_rate(sum(1 for r in rows if any(x.retried for x in r.routes)), len(rows)),
        retried_kinds=kinds,
        refusal_rate=_rate(count["refused"], len(rows)),
        failure_rate=_rate(count["failed"], len(rows)),
        usd_total=usd,
        usd_per_image=round(usd / len(done), 6) if done else None,
    )


def compute_stats(rows: list[ManifestRow]) -> list[BackendStats]:
    """One ``BackendStats`` per backend × size that has rows, sizes ascending, AI Studio first."""
    groups: dict[tuple[str, BackendName], list[ManifestRow]] = {}
    for row in rows:
        groups.setdefault((row.image_size, backend_of(row)), []).append(row)
    order = {"1K": 0, "2K": 1, "4K": 2}
    keys = sorted(groups, key=lambda k: (order[k[0]], BACKENDS.index(k[1])))
    return [backend_stats(b, s, groups[(s, b)]) for s, b in keys]  # type: ignore[arg-type]


# --------------------------------------------------------------------------- pairs


class Side(BaseModel):
    """One platform's result for one prompt."""

    job_id: str
    status: str
    uri: str = ""
    thumbnail_uri: str = ""
    latency_s: float = 0.0
    bytes_raw: int = 0
    bytes_final: int = 0
    width: int = 0
    height: int = 0
    error: str | None = None


class Pair(BaseModel):
    """The same prompt, ratio, variant and size on both platforms (a row of the picture grid)."""

    prompt: str
    aspect_ratio: str
    image_size: ImageSize
    variant: int
    sides: dict[BackendName, Side]


def pairs(jobs: list[ImageJob], rows: list[ManifestRow]) -> list[Pair]:
    """Group the rows per prompt × size in job order (a missing row is recorded as failed)."""
    by_job = {r.job_id: r for r in rows}
    out: dict[tuple[str, str, str, int], Pair] = {}
    for job in jobs:
        key = (job.prompt, job.aspect_ratio, job.image_size, job.variant)
        pair = out.setdefault(
            key,
            Pair(
                prompt=job.prompt,
                aspect_ratio=job.aspect_ratio,
                image_size=job.image_size,
                variant=job.variant,
                sides={},
            ),
        )
        row = by_job.get(job.job_id)
        backend = job.backend or "aistudio"
        if row is None:
            pair.sides[backend] = Side(job_id=job.job_id, status="failed", error="no row")
            continue
        pair.sides[backend] = Side(
            job_id=row.job_id,
            status=row.status,
            uri=row.uri,
            thumbnail_uri=(row.thumbnail_uris or [row.uri])[0],
            latency_s=row.latency_s,
            bytes_raw=row.bytes_raw,
            bytes_final=row.bytes_final,
            width=row.width,
            height=row.height,
            error=row.error,
        )
    return list(out.values())


MAX_GRID_ROWS = 40  # a picture, not an archive: 2 x 256 px x 40 rows is about 1 MB of JPEG


def comparison_grid(
    found: list[Pair],
    read: Callable[[str], bytes | None],
    *,
    cell: int = 256,
    max_rows: int = MAX_GRID_ROWS,
) -> bytes:
    """AI Studio | Vertex AI, one prompt per row, labelled; a failed side is a red cell.

    ``read`` maps a stored URI to its bytes (None when it cannot be read), so this stays free
    of storage concerns. The grid is 2 * cell wide and min(len(found), max_rows) * cell high.
    """
    images: list[bytes] = []
    labels: list[str] = []
    several_sizes = len({p.image_size for p in found}) > 1
    for pair in found[:max_rows]:
        for backend in BACKENDS:
            side = pair.sides.get(backend)
            name = LABELS[backend] + (f" {pair.image_size}" if several_sizes else "")
            data = read(side.thumbnail_uri) if side and side.status == "uploaded" else None
            images.append(data or b"")
            status = "" if data else f"{side.status if side else 'missing'}: "
            labels.append(f"{name} · {status}{pair.prompt}")
    return contact_sheet(images, labels, columns=len(BACKENDS), cell=cell)


# --------------------------------------------------------------------------- report


class ComparisonReport(BaseModel):
    """Everything a comparison measured; ``compare.json`` is this model."""

    run_id: str
    prompts: int
    image_sizes: list[ImageSize]
    note: str = ""
    stats: list[BackendStats]
    pairs: list[Pair]
    manifest_uri: str = ""
    markdown_uri: str = ""
    grid_uri: str = ""

    def stat(self, backend: BackendName, size: ImageSize) -> BackendStats | None:
        return next((s for s in self.stats if s.backend == backend and s.image_size == size), None)


def _seconds(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f} s"


def _size(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v / 1e6:.2f} MB" if v >= 1e6 else f"{v / 1e3:.0f} KB"


def _pct(v: float) -> str:
    return f"{100 * v:.1f} %"


def _usd(v: float | None) -> str:
    return "—" if v is None else f"${v:.3f}"


_METRICS: list[tuple[str, Callable[[BackendStats], str], dict[str, tuple[str, str]] | None]] = [
    ("images (uploaded / jobs)", lambda s: f"{s.uploaded} / {s.jobs}", None),
    ("generation latency p50", lambda s: _seconds(s.latency_p50_s), REFERENCE_LATENCY),
    ("generation latency p95", lambda s: _seconds(s.latency_p95_s), REFERENCE_LATENCY),
    ("raw file (mean)", lambda s: _size(s.bytes_raw_mean), REFERENCE_FILE),
    ("raw file (median)", lambda s: _size(s.bytes_raw_median), REFERENCE_FILE),
    ("published file (mean)", lambda s: _size(s.bytes_final_mean), None),
    ("published file (median)", lambda s: _size(s.bytes_final_median), None),
    ("request timeout rate", lambda s: _pct(s.timeout_rate), None),
    ("jobs retried", lambda s: _pct(s.retry_rate), None),
    ("refusal rate", lambda s: _pct(s.refusal_rate), None),
    ("failure rate", lambda s: _pct(s.failure_rate), None),
    ("estimated cost per image", lambda s: _usd(s.usd_per_image), None),
]


def comparison_markdown(report: ComparisonReport) -> str:
    """The platform table of platform-measurements.md, re-measured, one section per size."""
    lines = [
        f"# AI Studio vs Vertex AI on your prompts (`{report.run_id}`)",
        "",
        f"{report.prompts} prompt(s) × {', '.join(report.image_sizes)} × 2 platforms; "
        "latency is first request to last byte, retries and quota waits included.",
    ]
    if report.note:
        lines += ["", f"> {report.note}"]
    for size in report.image_sizes:
        sides = [report.stat(b, size) for b in BACKENDS]
        lines += [
            "",
            f"## {size}",
            "",
            "| | AI Studio | Vertex AI | field reference (AI Studio / Vertex) |",
            "|---|---|---|---|",
        ]
        for name, fmt, ref in _METRICS:
            cells = [fmt(s) if s else "—" for s in sides]
            refs = (ref or {}).get(size)
            if name == "request timeout rate":
                refs = REFERENCE_TIMEOUT
            lines.append(f"| {name} | {cells[0]} | {cells[1]} | {' / '.join(refs or ('',))} |")
        kinds = {
            LABELS[s.backend]: ", ".join(f"{k} ×{n}" for k, n in sorted(s.retried_kinds.items()))
            for s in sides
            if s and s.retried_kinds
        }
        if kinds:
            lines += ["", "Retried: " + "; ".join(f"{b}: {k}" for b, k in kinds.items())]
    lines += ["", "| prompt | ratio, size | AI Studio | Vertex AI |", "|---|---|---|---|"]
    for pair in report.pairs:
        cells = []
        for backend in BACKENDS:
            side = pair.sides.get(backend)
            if side is None or side.status != "uploaded":
                cells.append(side.status if side else "missing")
            else:
                cells.append(f"{_seconds(side.latency_s)}, {_size(side.bytes_raw)} raw")
        prompt = " ".join(pair.prompt.split()).replace("|", "/")[:80]
        where = f"{pair.aspect_ratio}, {pair.image_size}"
        lines.append(f"| {prompt} | {where} | {cells[0]} | {cells[1]} |")
    if report.grid_uri:
        lines += ["", f"Side by side: `{report.grid_uri}`"]
    return "\n".join(lines) + "\n"


def comparison_table(report: ComparisonReport) -> list[dict[str, object]]:
    """Every figure, one row per backend × size (Prefect table artifact, spreadsheets)."""
    return [
        {
            "platform": LABELS[s.backend],
            **s.model_dump(exclude={"retried_kinds"}),
            "retried_kinds": ", ".join(f"{k}:{n}" for k, n in sorted(s.retried_kinds.items())),
        }
        for s in report.stats
    ]


def measured(settings: Settings) -> Settings:
    """Cap jobs in flight at the smaller backend concurrency: no job then waits for a
    concurrency slot inside its measured latency (the per-minute quota still applies)."""
    if settings.generate.concurrency:
        return settings
    cap = min(settings.backends.aistudio.concurrency, settings.backends.vertex.concurrency)
    generate = settings.generate.model_copy(update={"concurrency": cap})
    return settings.model_copy(update={"generate": generate})


def setting_note(settings: Settings) -> str:
    """Said under the table, so nobody reads emulator latencies as Google's."""
    if not settings.emulator.embedded:
        return ""
    return f"embedded emulator, every delay x{settings.emulator.time_scale}"
