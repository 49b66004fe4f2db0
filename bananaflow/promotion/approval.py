"""What may be promoted (finished dev images) and how a person picks them in the UI.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import quote

from pydantic import BaseModel

from bananaflow.errors import InputError
from bananaflow.generation import ImageSize
from bananaflow.imaging import contact_sheet
from bananaflow.records import ManifestRow
from bananaflow.sheet import read_images
from bananaflow.storage import Store

Approval = Literal["all-uploaded", "list", "ask"]
APPROVAL_SHEET_KEY = "bananaflow-approval-sheet"
MAX_SHEET_IMAGES = 60
MIN_PREFIX = 6  # contact sheets label images with 8 characters of the job id


def candidates(rows: list[ManifestRow]) -> list[ManifestRow]:
    """Only finished dev images can be approved: a failed or refused job has nothing to look at,
    and an edit step is refused (:func:`edit_step_problem`)."""
    return [r for r in rows if r.status == "uploaded" and r.edit is None]


def edit_step_problem(row: ManifestRow) -> str | None:
    """Why an edit step is not promoted: its prod render would need every earlier step of the
    chain paid on the prod backend and model (the conversation is sent back signed), which a
    promotion of one image does not buy; rendering the chain's batch with the prod config does."""
    if row.edit is None:
        return None
    return f"{row.job_id} (step {row.edit.step} of edit chain {row.edit.chain_id})"


def select(
    rows: list[ManifestRow], approve: Approval, job_ids: list[str]
) -> list[ManifestRow] | None:
    """The approved dev rows for ``all-uploaded`` and ``list``; None means "ask a person".

    ``list`` accepts full job ids or unique prefixes of at least 6 characters (what a contact
    sheet shows). Every id is checked before anything runs, and all bad ones are named at once.
    """
    if approve != "list":
        if job_ids:
            raise InputError(
                "job_ids",
                f"job ids are only used with approve: list (approve is {approve})",
                fix="set approve to list, or leave job_ids empty",
            )
        return candidates(rows) if approve == "all-uploaded" else None
    if not job_ids:
        raise InputError(
            "job_ids", "approve is list but no job ids were given", fix="list the dev job ids"
        )
    by_id = {r.job_id: r for r in rows}
    chosen: list[ManifestRow] = []
    unknown: list[str] = []
    not_done: list[str] = []
    edits: list[str] = []
    for wanted in job_ids:
        row = by_id.get(wanted) or _by_prefix(rows, wanted)
        if row is None:
            unknown.append(wanted)
        elif row.status != "uploaded":
            not_done.append(f"{row.job_id} ({row.status})")
        elif (problem := edit_step_problem(row)) is not None:
            edits.append(problem)
        elif row not in chosen:
            chosen.append(row)
    if unknown:
        raise InputError(
            "job_ids",
            f"{', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not a job of run "
            f"{rows[0].run_id}",
            fix="copy job ids from the dev run's manifest or results table",
        )
    if not_done:
        raise InputError(
            "job_ids",
            f"only uploaded dev images can be promoted; {', '.join(not_done)}",
            fix="re-run the dev batch for those jobs, or leave them out",
        )
    if edits:
        raise InputError(
            "job_ids",
            f"an edit step cannot be promoted on its own: {', '.join(edits)}",
            fix="render the chain's batch with the prod config (bananaflow generate --config "
            "prod --batch ...), or leave them out",
        )
    return chosen


def _by_prefix(rows: list[ManifestRow], prefix: str) -> ManifestRow | None:
    if len(prefix) < MIN_PREFIX:
        return None
    hits = [r for r in rows if r.job_id.startswith(prefix)]
    if len(hits) > 1:
        raise InputError(
            "job_ids",
            f"{prefix} matches {len(hits)} jobs ({', '.join(r.job_id for r in hits)})",
            fix="give more characters of the job id",
        )
    return hits[0] if hits else None


class ApprovalField(BaseModel):
    """One tick box of the approval form: which dev image it promotes and what it shows."""

    name: str
    job_id: str
    title: str
    description: str


class ApprovalForm(BaseModel):
    """The form a person fills in the Prefect UI; the flow turns it into a ``RunInput`` model."""

    fields: list[ApprovalField]
    description: str

    def approved(self, answers: dict[str, object]) -> list[str]:
        """Dev job ids whose box was ticked (anything else in ``answers`` is ignored)."""
        return [f.job_id for f in self.fields if answers.get(f.name) is True]


def field_name(job_id: str) -> str:
    return "approve_" + re.sub(r"\W", "_", job_id)


def browser_link(uri: str) -> str:
    """A link a person can open: gs:// objects through the Cloud console's authenticated URL."""
    if uri.startswith("gs://"):
        return "https://storage.cloud.google.com/" + quote(uri.removeprefix("gs://"))
    return uri


def approval_form(rows: list[ManifestRow], dev_run: str, prod_size: ImageSize) -> ApprovalForm:
    fields: list[ApprovalField] = []
    table = ["| approve | job | prompt | dev image |", "|---|---|---|---|"]
    for row in rows:
        thumb = (row.thumbnail_uris or [row.uri])[0]
        prompt = _one_line(row.prompt, 120)
        fields.append(
            ApprovalField(
                name=field_name(row.job_id),
                job_id=row.job_id,
                title=f"{row.job_id[:8]} · {_one_line(row.prompt, 60)}",
                description=(
                    f"Prompt: {prompt} ({row.aspect_ratio}, {row.image_size}, variant "
                    f"{row.variant}). Dev image: {browser_link(row.uri)} — thumbnail: "
                    f"{browser_link(thumb)}"
                ),
            )
        )
        table.append(
            f"| `{field_name(row.job_id)}` | `{row.job_id}` | {prompt.replace('|', '/')} | "
            f"[image]({browser_link(row.uri)}) · [thumbnail]({browser_link(thumb)}) |"
        )
    description = "\n".join(
        [
            f"# Promote dev run `{dev_run}` to production",
            "",
            f"Tick the images to re-render on Vertex at {prod_size} and publish to the "
            "production bucket. Unticked images are not promoted. This run's artifact "
            f"`{APPROVAL_SHEET_KEY}` shows them, labelled with the first 8 characters of each "
            "job id.",
            "",
            *table,
        ]
    )
    return ApprovalForm(fields=fields, description=description)


def approval_sheet(store: Store, rows: list[ManifestRow]) -> bytes | None:
    """The candidates' thumbnails on one labelled sheet: the links in the form point at
    storage a browser cannot open (file://, gs://), but a person must see what they approve."""
    shown = rows[:MAX_SHEET_IMAGES]
    read = read_images(store, [store.relative((r.thumbnail_uris or [r.uri])[0]) for r in shown])
    images = [data or b"" for data in read]  # an unreadable cell is drawn red and labelled
    labels = [f"{row.job_id[:8]} {row.prompt}" for row in shown]
    return contact_sheet(images, labels) if images else None


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
