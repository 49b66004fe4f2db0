"""The production jobs of the approved images, and the lineage written into both manifests.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from bananaflow.expand import ImageJob, compute_job_id
from bananaflow.generation import ImageSize
from bananaflow.manifest import ManifestWriter
from bananaflow.records import ManifestRow
from bananaflow.storage import Store


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
