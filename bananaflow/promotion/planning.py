"""The production jobs of the approved images, and the lineage written into both manifests.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from bananaflow.config import GenerateSettings, QualityPreset
from bananaflow.expand import ImageJob, compute_job_id
from bananaflow.expand.expansion import quality_preset
from bananaflow.generation import ImageSize
from bananaflow.manifest import ManifestWriter
from bananaflow.records import ManifestRow
from bananaflow.storage import Store


def prod_target(
    generate: GenerateSettings, quality: str | None, image_size: ImageSize | None
) -> tuple[str | None, QualityPreset | None, ImageSize]:
    """The production quality, its preset and size: an explicit size wins over the preset's,
    the preset's over the prod config's (a draft promoted as ``final`` becomes a 2K Pro image)."""
    name = quality or generate.quality
    preset = quality_preset(generate, name, "the promotion")
    size = image_size or (preset.image_size if preset else None) or generate.image_size
    return name, preset, size


def prod_job(
    row: ManifestRow,
    image_size: ImageSize,
    quality: str | None = None,
    preset: QualityPreset | None = None,
) -> ImageJob:
    """The dev image's job as production renders it: same final prompt and references, prod
    size, and only the pins of the production quality preset.

    Without a preset no backend or model is pinned: production routing and the prod config's
    model decide, which is the point of promotion. (A per-job ``model`` set in the dev batch,
    e.g. by its draft preset, is not carried over: a draft tier is not what production ships.)
    """
    preset = preset or QualityPreset()
    job_id = compute_job_id(
        prompt=row.prompt,
        aspect_ratio=row.aspect_ratio,
        image_size=image_size,
        variant=row.variant,
        backend=preset.backend,
        model=preset.model,
        references=[r.sha256 for r in row.references],
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
        backend=preset.backend,
        model=preset.model,
        quality=quality,
        references=row.references,
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


def plan(
    approved: list[ManifestRow],
    image_size: ImageSize,
    quality: str | None = None,
    preset: QualityPreset | None = None,
) -> PromotionPlan:
    """Two dev images that differ only in dev size (or tier) are one prod image: rendered once."""
    jobs: list[ImageJob] = []
    sources: dict[str, list[ManifestRow]] = {}
    for row in approved:
        job = prod_job(row, image_size, quality, preset)
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
