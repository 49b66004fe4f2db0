"""Where a stored object goes (prefix, template) and the job metadata it carries.
"""

from __future__ import annotations

import hashlib

from bananaflow.chain.context import ChainContext
from bananaflow.expand import ImageJob
from bananaflow.records import (
    MasterRef,
)
from bananaflow.storage import object_name


def object_metadata(ctx: ChainContext, job: ImageJob, master: MasterRef) -> dict[str, str]:
    return {
        "job-id": job.job_id,
        "run-id": ctx.run_id,
        "stage": ctx.settings.stage,
        "backend": master.backend,
        "model": master.model,
        "prompt-sha256": hashlib.sha256(job.prompt.encode()).hexdigest()[:16],
    }


def path_for(ctx: ChainContext, sub: str, sha: str, ext: str) -> str:
    prefix = "/".join(p for p in (ctx.settings.upload.prefix.strip("/"), sub) if p)
    return object_name(ctx.settings.upload.name_template, prefix=prefix, sha=sha, ext=ext)
