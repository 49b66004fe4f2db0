"""What a promotion did, for the UI and the flow's result.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from bananaflow.promotion.approval import Approval
from bananaflow.promotion.planning import PromotionPlan
from bananaflow.records import JobStatus, RunSummary


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
