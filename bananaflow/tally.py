"""A run's finished rows as its report needs them, in memory that stops growing with the run.

A 7 KiB ``ManifestRow`` held per job for the whole run was most of the flow process's growth
per image (benchmarks/results/overhead.md, "100 → 10,000 images"); every row is already in the
manifest the moment it finishes. So a tally keeps every row only up to ``keep_rows`` jobs;
beyond that it keeps what a person reads first and cannot get from counters: every job that
did not upload (each failure with its reason), and the first uploaded rows to finish (the
contact sheet's). Counts, cost and bytes are summed as rows arrive, whatever is kept.
"""

from __future__ import annotations

from typing import Literal

from bananaflow.records import ManifestRow, RunSummary
from bananaflow.sheet import MAX_SHEET_IMAGES

SHEET_ROWS = MAX_SHEET_IMAGES  # enough uploaded rows for the contact sheet


class RunTally:
    """Rows added as jobs finish, in any order; ``rows`` gives the kept ones in job order."""

    def __init__(self, order: list[str], keep_rows: int | None = None):
        """``order``: the run's job ids in the order they were given (rows come back so);
        ``keep_rows``: None keeps every row (small runs, and flows that use every row)."""
        self._position = {job_id: i for i, job_id in enumerate(order)}
        self.keep_all = keep_rows is None or len(order) <= keep_rows
        self._kept: dict[str, ManifestRow] = {}
        self._sheet = 0
        self.jobs = 0
        self.counts: dict[str, int] = {}
        self.billed: dict[str, int] = {}
        self.estimated_usd = 0.0
        self.bytes_raw = 0
        self.bytes_final = 0

    def add(self, row: ManifestRow) -> None:
        """One job's final row (a job is added once)."""
        self.jobs += 1
        self.counts[row.status] = self.counts.get(row.status, 0) + 1
        delivery = row.billed_delivery or row.delivery
        self.billed[delivery] = self.billed.get(delivery, 0) + 1
        self.estimated_usd += row.estimated_usd
        if row.status == "uploaded":
            self.bytes_raw += row.bytes_raw
            self.bytes_final += row.bytes_final
        if self.keep_all or row.status != "uploaded":
            self._kept[row.job_id] = row
        elif self._sheet < SHEET_ROWS:
            self._sheet += 1
            self._kept[row.job_id] = row

    def extend(self, rows: list[ManifestRow]) -> None:
        for row in rows:
            self.add(row)

    @property
    def rows(self) -> list[ManifestRow]:
        """The kept rows in job order (every row when ``keep_all``)."""
        last = len(self._position)
        return sorted(self._kept.values(), key=lambda r: self._position.get(r.job_id, last))

    def summary(
        self,
        run_id: str,
        stage: Literal["dev", "prod"],
        manifest_uri: str,
        contact_sheet_uri: str | None = None,
    ) -> RunSummary:
        return RunSummary(
            run_id=run_id,
            stage=stage,
            manifest_uri=manifest_uri,
            contact_sheet_uri=contact_sheet_uri,
            counts=dict(self.counts),
            estimated_usd=round(self.estimated_usd, 4),
            bytes_raw=self.bytes_raw,
            bytes_final=self.bytes_final,
            jobs=self.jobs,
            billed=dict(self.billed),
            rows=self.rows,
        )
