"""Compare by delivery: the same prompts bought online, flex, priority and batch, measured.

``comparison`` weighs two platforms; this weighs the ways of buying on one platform, on the
user's own prompts: what an image cost (at the tier that actually billed it), how long it took
from submit to stored, and how often the delivery let the job down (a flex call shed and
bought online instead, a batch line failed, missing or expired).

Definitions (so two comparisons can be compared):

- cost per image: the delivery's spend / its uploaded images, each image priced at the tier
  Google reported (a downgraded priority call costs standard, a shed flex call bought online
  costs online).
- turnaround: per uploaded image, submit → image stored. Online/flex/priority: the job's start
  to its manifest row; batch: the provider batch's creation to the row, so the whole batch
  wait is in it. On the emulator these are its time-scaled seconds (said in the report).
- shed: flex calls Google turned away (one per shed attempt); lost lines: batch lines that
  came back failed, missing, or not at all (batch FAILED, CANCELLED, EXPIRED).
- fallback rate: jobs bought by another delivery than decided / jobs.
- failure rate: jobs ending ``failed`` or ``refused`` / jobs.

Every comparison job has an id of its own run (prompt, size, delivery and the comparison's run
id): a batch line must never find an earlier comparison's image in the ledger, and each
delivery must render rather than reuse another's master.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime

from pydantic import BaseModel, Field

from bananaflow.batch.book import BatchBook
from bananaflow.batch.deliver import deliver
from bananaflow.batch.provider import Providers
from bananaflow.chain import ChainContext
from bananaflow.comparison import percentile
from bananaflow.expand import ImageJob, compute_job_id
from bananaflow.generation import DELIVERIES, Delivery, ImageSize
from bananaflow.records import ManifestRow
from bananaflow.render import Progress, Steps, render_all
from bananaflow.routing import RouteDecision, partition_by_delivery
from bananaflow.storage import Store

SIZE_ORDER: dict[str, int] = {"512": 0, "1K": 1, "2K": 2, "4K": 3}

# --------------------------------------------------------------------------- jobs


def delivery_jobs(
    jobs: list[ImageJob], sizes: list[ImageSize], deliveries: list[Delivery], run_id: str
) -> list[ImageJob]:
    """Every prompt × size once per delivery, pinned on the job, interleaved per prompt."""
    out: list[ImageJob] = []
    seen: set[str] = set()
    for job in jobs:
        for size in sizes:
            base = compute_job_id(
                prompt=job.prompt,
                aspect_ratio=job.aspect_ratio,
                image_size=size,
                variant=job.variant,
                backend=job.backend,
                model=job.model,
            )
            for delivery in deliveries:
                job_id = hashlib.sha256(f"{run_id}/{base}/{delivery}".encode()).hexdigest()[:16]
                if job_id in seen:
                    continue
                seen.add(job_id)
                out.append(
                    job.model_copy(
                        update={"job_id": job_id, "image_size": size, "delivery": delivery}
                    )
                )
    return out


async def render_deliveries(
    ctx: ChainContext,
    jobs: list[ImageJob],
    decisions: list[RouteDecision],
    steps: Steps,
    bar: Progress,
    providers: Providers | None = None,
) -> list[ManifestRow]:
    """The synchronous deliveries through the chain, the batch ones through the real batch
    path (submit, poll until it ends, collect): a comparison measures the whole wait.
    ``providers`` defaults to the config's batch APIs."""
    synchronous, batch = partition_by_delivery(jobs, decisions)
    rows: list[ManifestRow] = []
    if synchronous:
        rows += await render_all(
            ctx, [j for j, _ in synchronous], [d for _, d in synchronous], steps, bar
        )
    if batch:
        rows += await deliver(
            ctx,
            [j for j, _ in batch],
            [d for _, d in batch],
            steps,
            bar,
            wait=True,
            providers=providers,
        )
    return rows


def batch_submissions(store: Store, run_id: str) -> dict[str, str]:
    """Job id → when its provider batch was created, for the run's batches (the book)."""
    return {
        job.job_id: record.created_at
        for record in BatchBook(store).all()
        if record.run_id == run_id
        for job in record.jobs
    }


# --------------------------------------------------------------------------- statistics


class DeliveryStats(BaseModel):
    """One delivery at one size, measured: a row of the delivery table."""

    delivery: Delivery
    image_size: ImageSize
    jobs: int
    uploaded: int
    failed: int = Field(description="Jobs ending failed or refused.")
    fell_back: int = Field(description="Jobs bought by another delivery than decided.")
    shed: int = Field(description="Flex calls shed by Google (attempts).")
    lines_lost: int = Field(description="Batch lines failed, missing, expired or cancelled.")
    billed: dict[str, int] = Field(description="Uploaded images per tier that billed them.")
    usd_total: float
    usd_per_image: float | None = Field(description="Spend / uploaded images.")
    turnaround_p50_s: float | None
    turnaround_p95_s: float | None
    turnaround_max_s: float | None
    failure_rate: float
    fallback_rate: float


def _seconds_between(start: str, end: str) -> float:
    return max(0.0, (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds())


def turnaround_s(row: ManifestRow, submitted: dict[str, str]) -> float:
    """Submit → stored; a batch job counts from its provider batch's creation."""
    start = submitted.get(row.job_id) if row.delivery == "batch" else None
    return _seconds_between(start or row.started_at, row.finished_at)


def delivery_stats(
    delivery: Delivery, size: ImageSize, rows: list[ManifestRow], submitted: dict[str, str]
) -> DeliveryStats:
    done = [r for r in rows if r.status == "uploaded"]
    times = [turnaround_s(r, submitted) for r in done]
    usd = round(sum(r.estimated_usd for r in rows), 6)
    failed = sum(1 for r in rows if r.status in ("failed", "refused"))
    fell_back = sum(1 for r in rows if any(a.delivery != r.delivery for a in r.routes))
    billed: dict[str, int] = {}
    for row in done:
        tier = row.billed_delivery or row.delivery
        billed[tier] = billed.get(tier, 0) + 1
    attempts = [a for r in rows for a in r.routes]
    return DeliveryStats(
        delivery=delivery,
        image_size=size,
        jobs=len(rows),
        uploaded=len(done),
        failed=failed,
        fell_back=fell_back,
        shed=sum(1 for a in attempts if a.outcome == "shed"),
        lines_lost=sum(
            1 for a in attempts if a.delivery == "batch" and a.outcome not in ("ok", "refused")
        ),
        billed=dict(sorted(billed.items())),
        usd_total=usd,
        usd_per_image=round(usd / len(done), 6) if done else None,
        turnaround_p50_s=percentile(times, 50),
        turnaround_p95_s=percentile(times, 95),
        turnaround_max_s=max(times) if times else None,
        failure_rate=failed / len(rows) if rows else 0.0,
        fallback_rate=fell_back / len(rows) if rows else 0.0,
    )


def compute_delivery_stats(
    rows: list[ManifestRow], submitted: dict[str, str]
) -> list[DeliveryStats]:
    """One ``DeliveryStats`` per delivery × size that has rows, sizes ascending, then in
    ``DELIVERIES`` order (online, flex, priority, batch)."""
    groups: dict[tuple[ImageSize, Delivery], list[ManifestRow]] = {}
    for row in rows:
        groups.setdefault((row.image_size, row.delivery), []).append(row)
    keys = sorted(groups, key=lambda k: (SIZE_ORDER[k[0]], DELIVERIES.index(k[1])))
    return [delivery_stats(d, s, groups[(s, d)], submitted) for s, d in keys]


# --------------------------------------------------------------------------- report


class DeliveryReport(BaseModel):
    """Everything a comparison by delivery measured; its ``compare.json`` is this model."""

    run_id: str
    prompts: int
    image_sizes: list[ImageSize]
    deliveries: list[Delivery]
    backend: str
    note: str = Field("", description="Where the seconds come from (emulator: time-scaled).")
    stats: list[DeliveryStats]
    manifest_uri: str = ""
    markdown_uri: str = ""

    def stat(self, delivery: Delivery, size: ImageSize) -> DeliveryStats | None:
        return next(
            (s for s in self.stats if s.delivery == delivery and s.image_size == size), None
        )


def _secs(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f} s"


def _usd(v: float | None) -> str:
    return "—" if v is None else f"${v:.4f}"


def _pct(v: float) -> str:
    return f"{100 * v:.1f} %"


COLUMNS: list[tuple[str, Callable[[DeliveryStats], str]]] = [
    ("delivery", lambda s: s.delivery),
    ("size", lambda s: s.image_size),
    ("images", lambda s: f"{s.uploaded} / {s.jobs}"),
    ("cost / image", lambda s: _usd(s.usd_per_image)),
    ("billed as", lambda s: ", ".join(f"{k} {n}" for k, n in s.billed.items()) or "—"),
    ("turnaround p50", lambda s: _secs(s.turnaround_p50_s)),
    ("turnaround p95", lambda s: _secs(s.turnaround_p95_s)),
    ("shed", lambda s: str(s.shed)),
    ("lines lost", lambda s: str(s.lines_lost)),
    ("fallback rate", lambda s: _pct(s.fallback_rate)),
    ("failure rate", lambda s: _pct(s.failure_rate)),
]


def delivery_rows(report: DeliveryReport) -> list[list[str]]:
    """The table's cells, one list per delivery × size (CLI, markdown)."""
    return [[fmt(s) for _, fmt in COLUMNS] for s in report.stats]


def delivery_markdown(report: DeliveryReport) -> str:
    names = [name for name, _ in COLUMNS]
    lines = [
        f"# Deliveries compared on your prompts (`{report.run_id}`)",
        "",
        f"{report.prompts} prompt(s) × {', '.join(report.image_sizes)} × "
        f"{', '.join(report.deliveries)} on {report.backend}; turnaround is submit → image "
        "stored (batch: the provider batch's creation → stored, the whole wait).",
    ]
    if report.note:
        lines += ["", f"> {report.note}"]
    lines += ["", "| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    lines += ["| " + " | ".join(cells) + " |" for cells in delivery_rows(report)]
    return "\n".join(lines) + "\n"


def delivery_table(report: DeliveryReport) -> list[dict[str, object]]:
    """Every figure, one row per delivery × size (Prefect table artifact, spreadsheets)."""
    return [
        {
            **s.model_dump(exclude={"billed"}),
            "billed": ", ".join(f"{k}:{n}" for k, n in s.billed.items()),
        }
        for s in report.stats
    ]


def time_note(scale: float, embedded: bool) -> str:
    """Said with the table, so nobody reads emulator seconds as Google's."""
    if not embedded:
        return ""
    return (
        f"seconds are the embedded emulator's, every delay x{scale} (batch waits included): "
        "compare deliveries with each other, not with Google's clock"
    )
