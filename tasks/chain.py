"""The chain's steps as Prefect tasks, bundled for the core's render loop.

Each step stays a task of its own (visible in the UI, with its own retries and timeouts, usable
alone in other flows); this bundle is what a flow hands to ``bananaflow.render.render_all``.
``jobs`` runs the same steps as one task run per job or group, for large runs (``task_runs``).
"""

from __future__ import annotations

from bananaflow.render import Steps
from bananaflow.tasks.compress import compress_image
from bananaflow.tasks.generate import generate_image
from bananaflow.tasks.job import render_jobs
from bananaflow.tasks.upload import upload_image
from bananaflow.tasks.upscale import upscale_image

CHAIN = Steps(
    generate=generate_image,
    upscale=upscale_image,
    compress=compress_image,
    upload=upload_image,
    jobs=render_jobs,
)
