"""Promotion dev → prod, the plain-Python half: which dev run, which images, which prod jobs.

Promotion never copies dev bytes: it re-renders the approved jobs on the production backend and
settings, because a dev image (AI Studio, small, JPEG) is not what production ships. What makes
it safe to repeat is identity: the prod job id is recomputed from the dev row with
``compute_job_id`` (same final prompt, ratio and variant, prod size, no backend pin), so a second
promotion of the same images finds them in the prod completion index and pays nothing.

Lineage is written both ways so either side can answer "where did this come from / go to"
without the other run at hand: the prod row names its dev image, the dev row names its prod one.

Everything here is checked before the prod run opens a single connection: an unknown job id or
an unreadable dev run is one readable ``InputError``, not a half-spent promotion.

- ``source``: which dev run, wherever it was written;
- ``approval``: what may be promoted and the tick-box form;
- ``planning``: the production jobs and their lineage;
- ``summary``: what a promotion did.
"""

from bananaflow.promotion.approval import (
    APPROVAL_SHEET_KEY,
    MAX_SHEET_IMAGES,
    MIN_PREFIX,
    Approval,
    ApprovalField,
    ApprovalForm,
    approval_form,
    approval_sheet,
    browser_link,
    candidates,
    field_name,
    select,
)
from bananaflow.promotion.planning import (
    PromotionPlan,
    plan,
    prod_job,
    prod_target,
    record_dev_lineage,
)
from bananaflow.promotion.source import (
    DevRun,
    SourceRef,
    find_run_for_flow_run,
    load_dev_rows,
    parse_source_run,
)
from bananaflow.promotion.summary import PromotedImage, PromotionSummary

__all__ = [
    "APPROVAL_SHEET_KEY",
    "MAX_SHEET_IMAGES",
    "MIN_PREFIX",
    "Approval",
    "ApprovalField",
    "ApprovalForm",
    "DevRun",
    "PromotedImage",
    "PromotionPlan",
    "PromotionSummary",
    "SourceRef",
    "approval_form",
    "approval_sheet",
    "browser_link",
    "candidates",
    "field_name",
    "find_run_for_flow_run",
    "load_dev_rows",
    "parse_source_run",
    "plan",
    "prod_job",
    "prod_target",
    "record_dev_lineage",
    "select",
]
