"""The fault matrix: one batch through the real flow while every fault class fires at random.

The emulator draws each fault class at a seeded rate per request (``BackendProfile.fault_rates``),
the GCS emulator is stopped mid-run and restarted, and some objects already exist under the
names the run will write (identical bytes for some jobs, different bytes for others). Then the
emulator's request log (its ``fault`` field per request) is joined with the manifest rows by
prompt, and the bucket is listed, to answer: was every job accounted for, was any lost, was any
paid for or uploaded twice, and how did each fault class end. A second pass on a fault-free
emulator then shows that the next run finishes the rest without paying again for what was done.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from bananaflow.chain import master_key
from bananaflow.expand import ImageJob
from bananaflow.manifest import read_manifest
from bananaflow.records import ManifestRow
from bananaflow.storage import Store
from reliability.flowrun import run_flow
from reliability.harness import (
    MAX_ATTEMPTS,
    Emulator,
    GcsServer,
    emulator_settings,
    generation_requests_by_prompt,
    quiet_prefect,
    service_account,
    write_batch,
    write_config,
)

# Per request, per backend. Generous on purpose: ~30 % of image requests meet a fault.
IMAGE_FAULT_RATES: dict[str, float] = {
    "quota": 0.03,  # 429 with RetryInfo (AI Studio) / bare DSQ 429 (Vertex)
    "quota_daily": 0.01,  # 429 per-day quota
    "quota_billing": 0.01,  # 429 without details (AI Studio: billing)
    "500": 0.02,
    "503": 0.02,
    "504": 0.02,
    "hang": 0.01,
    "reset": 0.02,
    "truncated_json": 0.02,
    "malformed_json": 0.02,
    "bad_base64": 0.02,
    "lying_mime": 0.02,
    "no_image": 0.01,  # HTTP 200, text only (the model talked instead of drawing)
    "image_safety": 0.01,
    "no_image_refusal": 0.01,  # finishReason NO_IMAGE
}
TOKEN_FAULT_RATES: dict[str, float] = {"token_expired": 0.03, "token_error": 0.2}
HANG_S = 1200.0  # x time_scale 0.01 = 12 s held open; the client's 1K read timeout is 8 s, long
# enough that a busy machine reading a real answer late is not mistaken for a hang (and paid twice)
TRANSIENT_FAULTS = ("500", "503", "504", "reset", "hang")  # retried by every policy
GENERATION_OPERATIONS = ("generateContent", "streamGenerateContent")
USABLE_FAULTS = (None, "random:lying_mime")  # a 200 whose image the client can keep
REASON_LABELS: tuple[tuple[str, str], ...] = (
    ("per_day", "per-day quota (not retried)"),
    ("perday", "per-day quota (not retried)"),
    ("prepayment", "billing 429 (not retried)"),
    ("storage conflict", "storage conflict"),
    ("token", "token endpoint"),
    ("timeout", "timeout"),
    ("unavailable", "unavailable"),
    ("malformed", "malformed response"),
)
NOUNS = ("teapot", "bicycle", "lighthouse", "fox", "violin", "cactus", "kite", "lantern")


class FaultOutcome(BaseModel):
    """How the jobs hit by one fault class ended (a job hit twice counts once per class)."""

    fault: str
    injected: int
    jobs_hit: int = 0
    uploaded: int = 0
    failed: dict[str, int] = Field(default_factory=dict)
    refused: int = 0
    skipped: int = 0
    lost: int = 0


class StorageOutage(BaseModel):
    after_generation_requests: int = 0
    outage_s: float = 0.0
    happened: bool = False


class ResumeResult(BaseModel):
    generation_requests: int
    requests_for_jobs_finished_before: int
    counts: dict[str, int]
    accounted: int


class MatrixResult(BaseModel):
    jobs: int
    seed: int
    time_scale: float
    rows: int
    accounted_pct: float
    lost: int
    counts: dict[str, int]
    failed_without_reason: int
    generation_requests: dict[str, int]
    requests_per_uploaded_job: float
    usable_answers_max_per_job: int
    jobs_paid_twice: int
    objects: int
    jobs_with_duplicate_derivatives: int
    jobs_with_duplicate_masters: int
    uploaded_rows_without_object: int
    outcomes: list[FaultOutcome]
    token_faults: dict[str, int]
    auth_failures: int
    given_up_early: int = Field(
        description="Jobs whose every image request met a transient fault, yet that made fewer "
        "requests than the retry policy allows: a transient fault that ended a job."
    )
    storage_outage: StorageOutage
    identical_existing_jobs: dict[str, str]
    conflicting_existing_jobs: dict[str, str]
    resume: ResumeResult
    duration_s: float
    image_fault_rates: dict[str, float]
    token_fault_rates: dict[str, float]


class _OutageMonitor(threading.Thread):
    """Stops the GCS emulator once the run is well under way, then brings it back."""

    def __init__(self, emu: Emulator, gcs: GcsServer, at: int, outage_s: float):
        super().__init__(daemon=True, name="gcs-outage")
        self.emu, self.gcs, self.at, self.outage_s = emu, gcs, at, outage_s
        self.result = StorageOutage(after_generation_requests=at, outage_s=outage_s)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            if self.emu.generation_requests() >= self.at:
                self.gcs.stop()
                time.sleep(self.outage_s)
                self.gcs.start()
                self.result.happened = True
                return
            time.sleep(0.02)


def _specs(n: int) -> list[dict[str, Any]]:
    """Unique prompts (the join key with the emulator log), 40 % routed to Vertex."""
    return [
        {
            "text": f"fault matrix job {i:04d}: a {NOUNS[i % len(NOUNS)]} on a wooden table",
            "backend": "vertex" if i % 5 < 2 else "aistudio",
        }
        for i in range(n)
    ]


def _job_of(row: ManifestRow) -> ImageJob:
    return ImageJob(
        job_id=row.job_id,
        spec_id=row.spec_id,
        prompt=row.prompt,
        original_prompt=row.original_prompt or row.prompt,
        aspect_ratio=row.aspect_ratio,
        image_size=row.image_size,
        variant=row.variant,
    )


def _seed_existing(
    store: Store, seed_rows: list[ManifestRow], n_identical: int
) -> tuple[list[ManifestRow], list[ManifestRow]]:
    """Make the matrix run meet objects that already exist under its names.

    The first ``n_identical`` jobs lose only their done-entry: the run republishes byte-identical
    objects (create-only must call that success). The others get different bytes under their
    derivative's name: the run must fail them with a clear reason, never overwrite.
    """
    identical, conflicting = seed_rows[:n_identical], seed_rows[n_identical:]
    for row in seed_rows:
        store.delete(f"ledger/done/{row.output_key}.json")
    for row in conflicting:
        path = store.relative(row.uri)
        assert path is not None
        store.put(
            path,
            b"not the bytes bananaflow would write " + row.sha256.encode(),
            content_type="image/jpeg",
            create_only=False,
        )
    return identical, conflicting


def _outcomes(
    requests: list[dict[str, Any]], by_prompt: dict[str, ManifestRow]
) -> tuple[list[FaultOutcome], dict[str, int]]:
    hits: dict[str, set[str]] = defaultdict(set)
    injected: Counter[str] = Counter()
    unattributed: Counter[str] = Counter()
    for entry in requests:
        fault = entry.get("fault")
        if not fault:
            continue
        name = fault.removeprefix("random:")
        injected[name] += 1
        prompt = entry.get("prompt")
        if prompt is None:  # token faults happen before the body is read: no job to join
            unattributed[name] += 1
            continue
        hits[name].add(prompt)
    outcomes = []
    for name in sorted(injected, key=lambda n: (-injected[n], n)):
        out = FaultOutcome(fault=name, injected=injected[name], jobs_hit=len(hits[name]))
        failed: Counter[str] = Counter()
        for prompt in hits[name]:
            row = by_prompt.get(prompt)
            if row is None:
                out.lost += 1
            elif row.status == "uploaded":
                out.uploaded += 1
            elif row.status == "refused":
                out.refused += 1
            elif row.status == "skipped_budget":
                out.skipped += 1
            else:
                failed[_reason(row)] += 1
        out.failed = dict(failed)
        outcomes.append(out)
    return outcomes, dict(unattributed)


def _given_up_early(requests: list[dict[str, Any]]) -> int:
    """Jobs that only ever met transient faults and still stopped before the last attempt.

    Counted from the emulator's log, order-free (a held-open "hang" is logged after the retry
    that overtook it): a job with any answer that was not a transient fault ended on that answer.
    """
    tried: Counter[str] = Counter()
    transient: Counter[str] = Counter()
    for entry in requests:
        prompt = entry.get("prompt")
        if prompt is None or entry.get("operation") not in GENERATION_OPERATIONS:
            continue
        tried[prompt] += 1
        if (entry.get("fault") or "").removeprefix("random:") in TRANSIENT_FAULTS:
            transient[prompt] += 1
    return sum(1 for p, n in transient.items() if n == tried[p] and n < MAX_ATTEMPTS)


def _reason(row: ManifestRow) -> str:
    """A short, stable label for a failure reason (the kind plus the error's class of words)."""
    error = (row.error or "").lower()
    for needle, label in REASON_LABELS:
        if needle in error:
            return label
    return row.error_kind or "unknown"


def run_fault_matrix(
    jobs: int = 500,
    *,
    seed: int = 11,
    time_scale: float = 0.01,
    outage_s: float = 3.0,
    existing: tuple[int, int] = (2, 2),
    workdir: Path | None = None,
) -> MatrixResult:
    """Run the matrix; ``existing`` = (jobs meeting identical objects, jobs meeting conflicts)."""
    quiet_prefect()
    started = time.monotonic()
    tmp = Path(workdir or tempfile.mkdtemp(prefix="bf-matrix-"))
    faulty = emulator_settings(
        time_scale=time_scale,
        seed=seed,
        fault_rates={
            "aistudio": dict(IMAGE_FAULT_RATES),
            "vertex": {**IMAGE_FAULT_RATES, **TOKEN_FAULT_RATES},
        },
        profiles={"aistudio": {"hang_s": HANG_S}, "vertex": {"hang_s": HANG_S}},
    )
    with (
        GcsServer(tmp / "gcs") as gcs,
        Emulator(faulty) as emu,
        Emulator(emulator_settings(time_scale=time_scale, seed=seed)) as clean,
    ):
        storage_url = gcs.new_bucket() + "/matrix"
        store = Store(storage_url, gcs.options)
        specs = _specs(jobs)
        batch = write_batch(tmp / "batch.yaml", specs)

        def config(name: str, target: Emulator) -> Path:
            return write_config(
                tmp / f"{name}.yaml",
                target.url,
                api_key=target.settings.api_keys[0],
                service_account=service_account(tmp / f"sa-{name}.json", target),
                project=target.settings.project,
                storage_url=storage_url,
                storage_options=gcs.options,
            )

        # 1. objects that already exist under the names the matrix run will write
        n_same, n_diff = existing
        seed_batch = write_batch(tmp / "seed-batch.yaml", specs[: n_same + n_diff])
        seeded, _ = run_flow(config("seed", clean), batch_file=seed_batch)
        identical, conflicting = _seed_existing(store, seeded.rows, n_same)
        clean.reset()

        # 2. the matrix run, with the GCS emulator stopped and restarted part-way
        monitor = _OutageMonitor(emu, gcs, at=max(1, int(jobs * 0.4)), outage_s=outage_s)
        monitor.start()
        summary, _ = run_flow(config("matrix", emu), batch_file=batch)
        monitor.done.set()
        monitor.join()
        gcs.start()  # in case the run ended before the outage was over

        rows = read_manifest(store, summary.run_id)
        by_prompt = {r.prompt: r for r in rows}
        requests = emu.requests()
        objects = gcs.objects(storage_url)

        # 3. the next run, on a fault-free emulator, over the same batch
        finished = {r.prompt for r in rows if r.status == "uploaded"}
        finished |= {r.prompt for r in rows if _master_indexed(store, r)}
        resumed, _ = run_flow(config("resume", clean), batch_file=batch)
        resume_requests = generation_requests_by_prompt(clean.requests())

    outcomes, unattributed = _outcomes(requests, by_prompt)
    gen = Counter(
        e["backend"]
        for e in requests
        if e.get("operation") == "generateContent" and e["backend"] != "auth"
    )
    usable: Counter[str] = Counter(
        e["prompt"]
        for e in requests
        if e.get("prompt") and e.get("outcome") == "ok" and e.get("fault") in USABLE_FAULTS
    )
    counts = Counter(r.status for r in rows)
    uploaded = counts.get("uploaded", 0)
    derivatives, masters = _objects_per_job(objects)
    names = {o["name"] for o in objects}
    bucket_prefix = storage_url.removeprefix("gs://").split("/", 1)[0] + "/"
    return MatrixResult(
        jobs=jobs,
        seed=seed,
        time_scale=time_scale,
        rows=len(rows),
        accounted_pct=round(100.0 * len(rows) / jobs, 2),
        lost=jobs - len({r.prompt for r in rows} & {s["text"] for s in specs}),
        counts=dict(counts),
        failed_without_reason=sum(1 for r in rows if r.status != "uploaded" and not r.error),
        generation_requests=dict(gen),
        requests_per_uploaded_job=round(sum(gen.values()) / uploaded, 3) if uploaded else 0.0,
        usable_answers_max_per_job=max(usable.values(), default=0),
        jobs_paid_twice=sum(1 for v in usable.values() if v > 1),
        objects=len(objects),
        jobs_with_duplicate_derivatives=sum(1 for v in derivatives.values() if v > 1),
        jobs_with_duplicate_masters=sum(1 for v in masters.values() if v > 1),
        uploaded_rows_without_object=sum(
            1
            for r in rows
            if r.status == "uploaded" and r.uri.removeprefix("gs://" + bucket_prefix) not in names
        ),
        outcomes=outcomes,
        token_faults=unattributed,
        auth_failures=sum(1 for r in rows if r.error_kind == "AuthError"),
        given_up_early=_given_up_early(requests),
        storage_outage=monitor.result,
        identical_existing_jobs={
            r.job_id[:12]: by_prompt[r.prompt].status for r in identical if r.prompt in by_prompt
        },
        conflicting_existing_jobs={
            r.job_id[:12]: (by_prompt[r.prompt].error or by_prompt[r.prompt].status)
            for r in conflicting
            if r.prompt in by_prompt
        },
        resume=ResumeResult(
            generation_requests=sum(resume_requests.values()),
            requests_for_jobs_finished_before=sum(
                n for p, n in resume_requests.items() if p in finished
            ),
            counts=dict(resumed.counts),
            accounted=len(resumed.rows),
        ),
        duration_s=round(time.monotonic() - started, 1),
        image_fault_rates=IMAGE_FAULT_RATES,
        token_fault_rates=TOKEN_FAULT_RATES,
    )


def _master_indexed(store: Store, row: ManifestRow) -> bool:
    backend = row.routes[0].backend if row.routes else row.backend
    if backend is None:
        return False
    model = row.model or "gemini-3-pro-image"
    return store.exists(f"ledger/jobs/{master_key(_job_of(row), backend, model)}/paid.json")


def _objects_per_job(objects: list[dict[str, Any]]) -> tuple[Counter[str], Counter[str]]:
    """Published derivatives and masters per job, from each object's ``job-id`` metadata."""
    derivatives: Counter[str] = Counter()
    masters: Counter[str] = Counter()
    for obj in objects:
        job = (obj.get("metadata") or {}).get("job-id")
        if not job:
            continue
        if "/masters/" in obj["name"]:
            masters[job] += 1
        elif "/thumbs/" not in obj["name"]:
            derivatives[job] += 1
    return derivatives, masters
