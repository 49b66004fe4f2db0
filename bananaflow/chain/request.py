"""What one image asks Google for: the ``ImageRequest`` of a job, online or in a batch line.

One builder for both ways of buying, so a batch line asks for exactly what an online call
would: the job's prompt, ratio, size and seed, its reference images (bytes loaded and checked
against their recorded hash; large ones then sent by file, ``chain.uploads``), and on Vertex the
JPEG the compress step wants
(``imageOutputOptions``). Only the delivery differs: a batch line carries none (the batch is
the tier).
"""

from __future__ import annotations

from typing import Any

from bananaflow.config import Settings
from bananaflow.expand import ImageJob
from bananaflow.expand.references import load_reference
from bananaflow.generation import (
    BackendName,
    EditTurn,
    ImageRequest,
    ProvisionedThroughput,
    ReferenceImage,
    SyncDelivery,
)


def image_request(
    job: ImageJob,
    model: str,
    references: list[ReferenceImage],
    delivery: SyncDelivery,
    encoding: dict[str, Any],
    history: list[EditTurn] | None = None,
    pool: ProvisionedThroughput | None = None,
) -> ImageRequest:
    """``model`` is the id the backend knows; ``encoding`` is :func:`provider_encoding`'s;
    ``history`` is an edit step's earlier exchanges (``chain/conversation.py``); ``pool`` the
    Vertex Provisioned Throughput choice of an online call (``bananaflow.provisioned``)."""
    return ImageRequest(
        prompt=job.prompt,
        aspect_ratio=job.aspect_ratio,
        image_size=job.image_size,
        model=model,
        seed=job.seed,
        reference_images=references,
        history=history or [],
        delivery=delivery,
        provisioned_throughput=pool,
        **encoding,
    )


def provider_encoding(backend: BackendName, settings: Settings) -> dict[str, Any]:
    """Vertex encodes the JPEG we publish, at our quality, when asked (``imageOutputOptions``).

    The compress step then publishes those bytes with only their metadata rewritten
    (``imaging.passthrough``): no 4K decode and encode here, and a JPEG instead of a 20 MB PNG
    over the wire. Not with upscaling, whose input should stay lossless.
    """
    cfg = settings.compress
    if backend != "vertex" or cfg.format != "jpeg" or not cfg.provider_jpeg:
        return {}
    if settings.upscale.enabled:
        return {}
    return {"output_mime_type": "image/jpeg", "output_quality": cfg.quality}


def reference_images(settings: Settings, job: ImageJob) -> list[ReferenceImage]:
    """The job's reference images as sent: bytes read now, refused if they changed."""
    return [
        ReferenceImage(
            mime_type=ref.mime_type,  # type: ignore[arg-type]  # tiers.check_jobs checked it
            data=load_reference(ref, settings.storage, job.job_id),
        )
        for ref in job.references
    ]
