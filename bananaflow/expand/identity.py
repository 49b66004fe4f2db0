"""A job's id: a hash of everything that changes the image, so it is stable across runs
and machines and a re-run finds what an earlier run paid for.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from bananaflow.expand.specs import PromptSpec


def _canonical(data: Any) -> bytes:
    """Key order, whitespace and platform must never change a hash that names paid-for images."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def compute_job_id(
    *,
    prompt: str,
    aspect_ratio: str,
    image_size: str,
    variant: int,
    backend: str | None,
    model: str | None,
    references: list[str] | None = None,
    earlier_edits: list[str] | None = None,
) -> str:
    """The identity of a render; re-runs and promotion find earlier images through it.

    ``references`` are the content hashes of the reference images, in order: another photo is
    another image, the same photo from another path is the same one. Without references the
    payload is exactly what it was before they existed, so every earlier job keeps its id.

    A step of an edit chain is ``prompt`` (its instruction) applied after ``earlier_edits``
    (the instructions before it, in order) to its start image (``references[0]``): the chain
    up to this step, so two chains sharing their first steps share those steps' images.
    """
    payload: dict[str, Any] = {
        "prompt": prompt,
        "aspect_ratio": aspect_ratio,
        "image_size": image_size,
        "variant": variant,
        "backend": backend,
        "model": model,
    }
    if references:
        payload["references"] = references
    if earlier_edits is not None:
        payload["earlier_edits"] = earlier_edits
    return hashlib.sha256(_canonical(payload)).hexdigest()[:16]


# How an image is bought is not what it is: the same image at another price keeps its name.
_NOT_IDENTITY = {"id", "delivery"}
# Fields added after spec ids were first hashed: left out while unset, so old ids hold.
_LATER_FIELDS = ("quality", "references", "start_image", "edits")


def spec_hash(spec: PromptSpec) -> str:
    data = spec.model_dump(mode="json", exclude=_NOT_IDENTITY)
    for name in _LATER_FIELDS:
        if not data.get(name):
            data.pop(name, None)
    return hashlib.sha256(_canonical(data)).hexdigest()[:12]
