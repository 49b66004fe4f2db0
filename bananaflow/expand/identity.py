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
) -> str:
    """The identity of a render; re-runs and promotion find earlier images through it."""
    payload = {
        "prompt": prompt,
        "aspect_ratio": aspect_ratio,
        "image_size": image_size,
        "variant": variant,
        "backend": backend,
        "model": model,
    }
    return hashlib.sha256(_canonical(payload)).hexdigest()[:16]


# How an image is bought is not what it is: the same image at another price keeps its name.
_NOT_IDENTITY = {"id", "delivery"}


def spec_hash(spec: PromptSpec) -> str:
    data = spec.model_dump(mode="json", exclude=_NOT_IDENTITY)
    return hashlib.sha256(_canonical(data)).hexdigest()[:12]
