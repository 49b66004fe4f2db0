"""Prompt specs to concrete image jobs with stable ids.

- ``specs``: the records (a spec as written, a job as rendered);
- ``identity``: a job's id, a hash of what it renders, stable across runs and machines;
- ``expansion``: templates, presets and the matrix of ratios x sizes x variants;
- ``batchfile``: YAML, JSONL and CSV batch files read, each error located;
- ``references``: reference images found, read, sniffed and hashed (part of the job id);
- ``rewrite``: optional prompt rewriting by the backend's text model.
"""

from bananaflow.expand.batchfile import BATCH_SUFFIXES, load_batch
from bananaflow.expand.expansion import expand
from bananaflow.expand.identity import compute_job_id
from bananaflow.expand.references import ReferenceResolver
from bananaflow.expand.rewrite import rewrite_jobs
from bananaflow.expand.specs import (
    MAX_PROMPT_CHARS,
    MAX_VARIANTS,
    ImageJob,
    PromptSpec,
    RunOutput,
)

__all__ = [
    "BATCH_SUFFIXES",
    "MAX_PROMPT_CHARS",
    "MAX_VARIANTS",
    "ImageJob",
    "PromptSpec",
    "ReferenceResolver",
    "RunOutput",
    "compute_job_id",
    "expand",
    "load_batch",
    "rewrite_jobs",
]
