"""An edit step's conversation: the earlier steps' images and answers, read from the ledger.

Step k of an edit chain sends the whole conversation (google-image-apis.md §1.6): each earlier
instruction, then that step's image exactly as the model returned it with its thought
signatures. Both are durable the moment a step is paid (the master in the store, the answer in
its ledger record), so the conversation is rebuilt from the ledger alone: a re-run after a crash
between steps, or another run sharing the chain's first steps, pays only for the steps that are
missing.
"""

from __future__ import annotations

import hashlib

from bananaflow.chain.context import ChainContext
from bananaflow.chain.failure import JobFailed
from bananaflow.chain.keys import job_master_key
from bananaflow.expand import ImageJob
from bananaflow.generation import BackendName, EditTurn, ReferenceImage
from bananaflow.records import MasterRef


def earlier_turns(
    ctx: ChainContext, job: ImageJob, backend: BackendName, model: str
) -> list[EditTurn]:
    """The exchanges before ``job``'s step, oldest first; :class:`JobFailed` when a step
    before it has no paid image (it failed, or was refused): this one cannot be asked."""
    edit = job.edit
    if edit is None:
        return []
    turns: list[EditTurn] = []
    for step, (job_id, instruction) in enumerate(
        zip(edit.earlier_jobs, edit.instructions, strict=False), start=1
    ):
        paid = ctx.ledger.paid(job_master_key(job_id, backend, model))
        if paid is None or paid.answer is None:
            raise JobFailed(
                "failed",
                f"step {step} of edit chain {edit.chain_id} (job {job_id}) has no paid image, "
                f"so step {edit.step} cannot be asked; a re-run continues from the last paid step",
                kind="EditStepMissing",
                routes=[],
            )
        turns.append(
            EditTurn(
                instruction=instruction,
                image=ReferenceImage(mime_type=paid.mime_type, data=_bytes(ctx, paid)),  # type: ignore[arg-type]  # a master is PNG or JPEG
                answer=paid.answer,
            )
        )
    return turns


def _bytes(ctx: ChainContext, master: MasterRef) -> bytes:
    """The stored master, checked: the image sent back must be the one that was signed."""
    data = ctx.store.get(master.path)
    if hashlib.sha256(data).hexdigest() != master.sha256:
        raise JobFailed(
            "failed",
            f"the stored image {master.path} of an earlier edit step changed since it was paid",
            kind="EditStepMissing",
            routes=[],
        )
    return data
