"""The chain for one job, as plain async functions; Prefect tasks are thin shells over these.

generate → [upscale] → compress → upload → manifest row. Between steps only small references
travel (``MasterRef``, ``CompressedRef``); bytes stay in storage or in the run's work dir.

Paying once: a generated master is written to storage and indexed under ``master_key`` (job id +
model) before anything else happens to it, and a finished job is indexed under ``output_key``
(master key + every setting that changes the published bytes). A re-run looks both up first,
so a crash at any point costs at most the request that was in flight.

- ``context``: what one run's steps share (clients, store, ledger, manifest, budget);
- ``keys``: the identities of a master and of a published result;
- ``objects``: where a stored object goes and what metadata it carries;
- ``generate``: claim, pay once, keep the master durable;
- ``conversation``: an edit step's earlier turns (images and signatures), from the ledger;
- ``uploads``: large references uploaded once and named by file (``fileData``);
- ``derive``: upscale, compress and upload the derivative;
- ``rows``: the one place a manifest row is built;
- ``failure``: how a job ends without an image.
"""

from bananaflow.chain.context import (
    ChainContext,
    check_upload_names,
    claim_ttl_s,
    local_limiter,
    open_context,
)
from bananaflow.chain.derive import compress_master, upload_derivative, upscale_master
from bananaflow.chain.failure import JobFailed, JobsEnded
from bananaflow.chain.generate import generate_master, reserve_budget, store_master
from bananaflow.chain.keys import master_key, model_for, output_key, primary_output_key
from bananaflow.chain.rows import base_row, failed_row, reused_row, uploaded_row

__all__ = [
    "ChainContext",
    "JobFailed",
    "JobsEnded",
    "base_row",
    "check_upload_names",
    "claim_ttl_s",
    "compress_master",
    "failed_row",
    "generate_master",
    "local_limiter",
    "master_key",
    "model_for",
    "open_context",
    "output_key",
    "primary_output_key",
    "reserve_budget",
    "reused_row",
    "store_master",
    "upload_derivative",
    "uploaded_row",
    "upscale_master",
]
