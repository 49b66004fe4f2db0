"""Promotion dev → prod, the plain-Python half: which dev run, which images, which prod jobs.

Promotion never copies dev bytes: it re-renders the approved jobs on the production backend and
settings, because a dev image (AI Studio, small, JPEG) is not what production ships. What makes
it safe to repeat is identity: the prod job id is recomputed from the dev row with
``compute_job_id`` (same final prompt, ratio and variant, prod size, no backend pin), so a second
promotion of the same images finds them in the prod completion index and pays nothing.

Lineage is written both ways so either side can answer "where did this come from / go to"
without the other run at hand: the prod row names its dev image, the dev row names its prod one.

Everything here is checked before the prod run opens a single connection: an unknown job id or
an unreadable dev run is one readable ``InputError``, not a half-spent promotion.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, Field

from bananaflow import runid
from bananaflow.errors import InputError
from bananaflow.expand import ImageJob, compute_job_id
from bananaflow.imaging import contact_sheet
from bananaflow.manifest import ManifestWriter, read_manifest, run_ids
from bananaflow.models import ImageSize
from bananaflow.records import JobStatus, ManifestRow, RunSummary
from bananaflow.storage import Store, check_relative

Approval = Literal["all-uploaded", "list", "ask"]

APPROVAL_SHEET_KEY = "bananaflow-approval-sheet"
MAX_SHEET_IMAGES = 60
MIN_PREFIX = 6  # contact sheets label images with 8 characters of the job id
_MANIFEST_URI = re.compile(r"^(?P<root>.+?)/runs/(?P<run>[^/]+)/manifest\.jsonl$")
_FLOW_RUN_RESOURCE = "prefect.flow-run."


# --------------------------------------------------------------------------- which dev run


class SourceRef(BaseModel):
    """What ``source_run`` named, before it is resolved to a run id in a store.

    ``run_id``: our run id. ``manifest``: a manifest URI, which also names the store.
    ``flow_run``: a Prefect flow-run id (what a deployment trigger can template), resolved by our
    run-id convention: a run id ends with the first 8 characters of its flow run's id.
    """

    kind: Literal["run_id", "manifest", "flow_run"]
    run_id: str | None = None
    store_url: str | None = None
    flow_run_id: uuid.UUID | None = None


def parse_source_run(value: str) -> SourceRef:
    text = value.strip()
    if not text:
        raise InputError(
            "source_run", "is empty", fix="give a dev run id, a manifest URI or a flow-run id"
        )
    match = _MANIFEST_URI.match(text)
    if match:
        run_id = _run_segment(match["run"])
        return SourceRef(kind="manifest", run_id=run_id, store_url=match["root"])
    flow_run = text.removeprefix(_FLOW_RUN_RESOURCE)
    try:
        return SourceRef(kind="flow_run", flow_run_id=uuid.UUID(flow_run))
    except ValueError:
        if text.startswith(_FLOW_RUN_RESOURCE):
            raise InputError(
                "source_run", f"{text!r} is not a flow-run id", fix="use prefect.flow-run.<uuid>"
            ) from None
    if "/" in text or text.endswith(".jsonl"):
        raise InputError(
            "source_run",
            f"{text!r} is neither a run id nor a manifest URI",
            fix="use <run id>, or a URI ending in /runs/<run id>/manifest.jsonl",
        )
    return SourceRef(kind="run_id", run_id=_run_segment(text))


def _run_segment(run_id: str) -> str:
    try:
        return check_relative(run_id, field="source_run")
    except InputError:
        raise InputError(
            "source_run", f"{run_id!r} is not a run id", fix="copy the id from runs/<run id>/"
        ) from None


def find_run_for_flow_run(store: Store, flow_run_id: uuid.UUID) -> str:
    """Our run id of a Prefect flow run, by the run-id convention (``bananaflow.runid``)."""
    found = runid.latest_of(run_ids(store), flow_run_id)
    if found is None:
        raise InputError(
            "source_run",
            f"no run of flow run {flow_run_id} under {store.uri('runs')}",
            fix="set source_config (or the dev run's output) to where the dev run wrote, "
            "or pass the manifest URI",
        )
    return found


def load_dev_rows(store: Store, run_id: str) -> list[ManifestRow]:
    rows = read_manifest(store, run_id)
    if not rows:
        raise InputError(
            "source_run",
            f"run {run_id} has no manifest rows in {store.uri('runs/' + run_id)}",
            fix="check source_config / the manifest URI points at the dev run's storage",
        )
    return rows


# --------------------------------------------------------------------------- which images


def candidates(rows: list[ManifestRow]) -> list[ManifestRow]:
    """Only finished dev images can be approved: a failed or refused job has nothing to look at."""
    return [r for r in rows if r.status == "uploaded"]


def select(
    rows: list[ManifestRow], approve: Approval, job_ids: list[str]
) -> list[ManifestRow] | None:
    """The approved dev rows for ``all-uploaded`` and ``list``; None means "ask a person".

    ``list`` accepts full job ids or unique prefixes of at least 6 characters (what a contact
    sheet shows). Every id is checked before anything runs, and all bad ones are named at once.
    """
    if approve != "list":
        if job_ids:
            raise InputError(
                "job_ids",
                f"job ids are only used with approve: list (approve is {approve})",
                fix="set approve to list, or leave job_ids empty",
            )
        return candidates(rows) if approve == "all-uploaded" else None
    if not job_ids:
        raise InputError(
            "job_ids", "approve is list but no job ids were given", fix="list the dev job ids"
        )
    by_id = {r.job_id: r for r in rows}
    chosen: list[ManifestRow] = []
    unknown: list[str] = []
    not_done: list[str] = []
    for wanted in job_ids:
        row = by_id.get(wanted) or _by_prefix(rows, wanted)
        if row is None:
            unknown.append(wanted)
        elif row.status != "uploaded":
            not_done.append(f"{row.job_id} ({row.status})")
        elif row not in chosen:
            chosen.append(row)
    if unknown:
        raise InputError(
            "job_ids",
            f"{', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not a job of run "
            f"{rows[0].run_id}",
            fix="copy job ids from the dev run's manifest or results table",
        )
    if not_done:
        raise InputError(
            "job_ids",
            f"only uploaded dev images can be promoted; {', '.join(not_done)}",
            fix="re-run the dev batch for those jobs, or leave them out",
        )
    return chosen


def _by_prefix(rows: list[ManifestRow], prefix: str) -> ManifestRow | None:
    if len(prefix) < MIN_PREFIX:
        return None
    hits = [r for r in rows if r.job_id.startswith(prefix)]
    if len(hits) > 1:
        raise InputError(
            "job_ids",
            f"{prefix} matches {len(hits)} jobs ({', '.join(r.job_id for r in hits)})",
            fix="give more characters of the job id",
        )
    return hits[0] if hits else None


class ApprovalField(BaseModel):
    """One tick box of the approval form: which dev image it promotes and what it shows."""

    name: str
    job_id: str
    title: str
    description: str


class ApprovalForm(BaseModel):
    """The form a person fills in the Prefect UI; the flow turns it into a ``RunInput`` model."""

    fields: list[ApprovalField]
    description: str

    def approved(self, answers: dict[str, object]) -> list[str]:
        """Dev job ids whose box was ticked (anything else in ``answers`` is ignored)."""
        return [f.job_id for f in self.fields if answers.get(f.name) is True]


def field_name(job_id: str) -> str:
    return "approve_" + re.sub(r"\W", "_", job_id)


def browser_link(uri: str) -> str:
    """A link a person can open: gs:// objects through the Cloud console's authenticated URL."""
    if uri.startswith("gs://"):
        return "https://storage.cloud.google.com/" + quote(uri.removeprefix("gs://"))
    return uri


def approval_form(rows: list[ManifestRow], dev_run: str, prod_size: ImageSize) -> ApprovalForm:
    fields: list[ApprovalField] = []
    table = ["| approve | job | prompt | dev image |", "|---|---|---|---|"]
    for row in rows:
        thumb = (row.thumbnail_uris or [row.uri])[0]
        prompt = _one_line(row.prompt, 120)
        fields.append(
            ApprovalField(
                name=field_name(row.job_id),
                job_id=row.job_id,
                title=f"{row.job_id[:8]} · {_one_line(row.prompt, 60)}",
                description=(
                    f"Prompt: {prompt} ({row.aspect_ratio}, {row.image_size}, variant "
                    f"{row.variant}). Dev image: {browser_link(row.uri)} — thumbnail: "
                    f"{browser_link(thumb)}"
                ),
            )
        )
        table.append(
            f"| `{field_name(row.job_id)}` | `{row.job_id}` | {prompt.replace('|', '/')} | "
            f"[image]({browser_link(row.uri)}) · [thumbnail]({browser_link(thumb)}) |"
        )
    description = "\n".join(
        [
            f"# Promote dev run `{dev_run}` to production",
            "",
            f"Tick the images to re-render on Vertex at {prod_size} and publish to the "
            "production bucket. Unticked images are not promoted. This run's artifact "
            f"`{APPROVAL_SHEET_KEY}` shows them, labelled with the first 8 characters of each "
            "job id.",
            "",
            *table,
        ]
    )
    return ApprovalForm(fields=fields, description=description)


def approval_sheet(store: Store, rows: list[ManifestRow]) -> bytes | None:
    """The candidates' thumbnails on one labelled sheet: the links in the form point at
    storage a browser cannot open (file://, gs://), but a person must see what they approve."""
    images: list[bytes] = []
    labels: list[str] = []
    for row in rows[:MAX_SHEET_IMAGES]:
        path = store.relative((row.thumbnail_uris or [row.uri])[0])
        try:
            data = store.get(path) if path else None
        except FileNotFoundError:
            data = None
        images.append(data or b"")  # an unreadable cell is drawn red and labelled
        labels.append(f"{row.job_id[:8]} {row.prompt}")
    return contact_sheet(images, labels) if images else None


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------- prod jobs


def prod_job(row: ManifestRow, image_size: ImageSize) -> ImageJob:
    """The dev image's job as production renders it: same final prompt, prod size, no pins.

    No backend or model pin: production routing and the prod config's model decide, which is
    the point of promotion. (A per-job ``model`` set in the dev batch is not carried over: the
    manifest records the model that answered, not whether it was pinned.)
    """
    job_id = compute_job_id(
        prompt=row.prompt,
        aspect_ratio=row.aspect_ratio,
        image_size=image_size,
        variant=row.variant,
        backend=None,
        model=None,
    )
    return ImageJob(
        job_id=job_id,
        spec_id=row.spec_id or row.job_id,
        prompt=row.prompt,
        original_prompt=row.original_prompt or row.prompt,
        aspect_ratio=row.aspect_ratio,
        image_size=image_size,
        variant=row.variant,
        presets=row.presets,
        rewritten=row.rewritten,
    )


class PromotionPlan(BaseModel):
    """The prod jobs to render and, per prod job, the dev rows it stands for."""

    jobs: list[ImageJob]
    sources: dict[str, list[ManifestRow]] = Field(
        default_factory=dict, description="prod job id → the approved dev rows it renders."
    )

    def prod_lineage(self) -> dict[str, dict[str, str]]:
        """What each prod row records about its dev origin (the first dev row if several)."""
        return {
            job_id: {
                "dev_run": dev[0].run_id,
                "dev_job": dev[0].job_id,
                "dev_uri": dev[0].uri,
                "dev_sha256": dev[0].sha256,
            }
            for job_id, dev in self.sources.items()
        }


def plan(approved: list[ManifestRow], image_size: ImageSize) -> PromotionPlan:
    """Two dev images that differ only in dev size are one prod image: rendered once."""
    jobs: list[ImageJob] = []
    sources: dict[str, list[ManifestRow]] = {}
    for row in approved:
        job = prod_job(row, image_size)
        if job.job_id not in sources:
            jobs.append(job)
            sources[job.job_id] = []
        sources[job.job_id].append(row)
    return PromotionPlan(jobs=jobs, sources=sources)


def record_dev_lineage(
    dev_store: Store, dev_run: str, plan: PromotionPlan, prod_rows: list[ManifestRow]
) -> int:
    """Re-append each promoted dev row with where its prod image is; returns rows written.

    Latest row per job wins in a manifest, so appending is how a finished run's row changes.
    A dev row that already names the same prod image is left alone: a repeated promotion
    changes nothing in the dev run.
    """
    writer = ManifestWriter(dev_store, dev_run)
    written = 0
    for prod in prod_rows:
        if prod.status != "uploaded":
            continue
        link = {
            "prod_run": prod.reused_from_run or prod.run_id,
            "prod_job": prod.job_id,
            "prod_uri": prod.uri,
        }
        for dev in plan.sources.get(prod.job_id, []):
            if all(dev.lineage.get(k) == link[k] for k in ("prod_job", "prod_uri")):
                continue
            writer.append(dev.model_copy(update={"lineage": {**dev.lineage, **link}}))
            written += 1
    if written:
        writer.close()
    return written


# --------------------------------------------------------------------------- result


class PromotedImage(BaseModel):
    dev_job: str
    prod_job: str
    prompt: str
    status: JobStatus
    dev_uri: str
    prod_uri: str = ""
    reused: bool = Field(False, description="Already in production: nothing was rendered.")
    error: str | None = None


class PromotionSummary(BaseModel):
    """What a promotion did; the flow's result and the source of its markdown artifact."""

    dev_run: str
    dev_manifest_uri: str
    approval: Approval
    candidates: int
    approved: list[str] = Field(default_factory=list, description="Dev job ids approved.")
    prod_run: str | None = None
    prod_manifest_uri: str | None = None
    counts: dict[str, int] = Field(default_factory=dict)
    rendered: int = Field(0, description="Prod images rendered by this run (paid).")
    reused: int = Field(0, description="Prod images an earlier promotion had already made.")
    estimated_usd: float = 0.0
    dev_rows_updated: int = 0
    images: list[PromotedImage] = Field(default_factory=list)

    @classmethod
    def build(
        cls,
        *,
        dev_run: str,
        dev_manifest_uri: str,
        approval: Approval,
        candidates: int,
        plan: PromotionPlan,
        prod: RunSummary | None,
        dev_rows_updated: int = 0,
    ) -> PromotionSummary:
        by_job = {r.job_id: r for r in (prod.rows if prod else [])}
        images: list[PromotedImage] = []
        for job in plan.jobs:
            row = by_job.get(job.job_id)
            for dev in plan.sources[job.job_id]:
                images.append(
                    PromotedImage(
                        dev_job=dev.job_id,
                        prod_job=job.job_id,
                        prompt=dev.prompt,
                        status=row.status if row else "failed",
                        dev_uri=dev.uri,
                        prod_uri=row.uri if row else "",
                        reused=bool(row and row.reused_from_run),
                        error=row.error if row else "not rendered",
                    )
                )
        rows = prod.rows if prod else []
        return cls(
            dev_run=dev_run,
            dev_manifest_uri=dev_manifest_uri,
            approval=approval,
            candidates=candidates,
            approved=[d.job_id for dev in plan.sources.values() for d in dev],
            prod_run=prod.run_id if prod else None,
            prod_manifest_uri=prod.manifest_uri if prod else None,
            counts=prod.counts if prod else {},
            rendered=sum(1 for r in rows if r.status == "uploaded" and not r.reused_from_run),
            reused=sum(1 for r in rows if r.reused_from_run),
            estimated_usd=prod.estimated_usd if prod else 0.0,
            dev_rows_updated=dev_rows_updated,
            images=images,
        )

    def markdown(self) -> str:
        lines = [
            f"# Promotion of dev run `{self.dev_run}`",
            "",
            f"- approval: {self.approval}; {len(self.approved)} of {self.candidates} "
            "uploaded dev images approved",
            f"- prod run: `{self.prod_run or '—'}` ({self.rendered} rendered, {self.reused} "
            f"already in production, ${self.estimated_usd:.3f})",
            f"- prod manifest: `{self.prod_manifest_uri or '—'}`",
            f"- dev manifest: `{self.dev_manifest_uri}` ({self.dev_rows_updated} rows linked)",
        ]
        if self.images:
            lines += ["", "| dev job | prod job | status | prod image |", "|---|---|---|---|"]
            lines += [
                f"| `{i.dev_job}` | `{i.prod_job}` | {i.status}{' (reused)' if i.reused else ''}"
                f" | {i.prod_uri or (i.error or '')[:120]} |"
                for i in self.images
            ]
        return "\n".join(lines)


class DevRun(BaseModel):
    """A resolved dev run: where it lives and its rows (small: one row per job)."""

    run_id: str
    store_url: str
    store_options: dict[str, Any] = Field(default_factory=dict)
    manifest_uri: str
    rows: list[ManifestRow]

    def store(self) -> Store:
        return Store(self.store_url, self.store_options)
