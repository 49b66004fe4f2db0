"""A large run's report keeps counters and the rows that need a person, not every row.

Core level: ``RunTally`` as the render loop feeds it, and the closed manifest read back a row
at a time (what the results table of a large run is built from); then one flow run above
``generate.summary_rows`` under a real Prefect: the results table still lists every job.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from fixtures.prefect import run_artifact

from bananaflow.flows.generate import generate_images
from bananaflow.manifest import ManifestWriter, iter_manifest, read_manifest
from bananaflow.parameters import GenerateParameters
from bananaflow.records import ManifestRow, RunSummary
from bananaflow.storage import Store
from bananaflow.tally import SHEET_ROWS, RunTally

RUN = "run-20261129-tally"


def row(i: int, status: str = "uploaded", **kw: Any) -> ManifestRow:
    fields: dict[str, Any] = {
        "run_id": RUN,
        "job_id": f"j{i:05d}",
        "output_key": f"key-{i}",
        "status": status,
        "stage": "dev",
        "estimated_usd": 0.5,
        "bytes_raw": 10,
        "bytes_final": 3,
        "started_at": f"2026-11-29T00:00:00.{i:06d}+00:00",
    }
    return ManifestRow(**{**fields, **kw})


def test_a_large_run_keeps_failures_and_the_sheet_rows_and_counts_every_job() -> None:
    n = 3000
    rows = [row(i) for i in range(n)]
    rows[7] = row(7, "failed", error="quota: daily limit", error_kind="quota")
    rows[2999] = row(2999, "skipped_budget", error="over budget", estimated_usd=0.0)
    rows[1234] = row(1234, billed_delivery="online", delivery="flex")
    tally = RunTally([r.job_id for r in rows], keep_rows=100)
    tally.extend(reversed(rows))  # jobs end in any order

    kept = tally.rows
    assert not tally.keep_all
    assert len(kept) == SHEET_ROWS + 2  # bounded: not one row per job
    assert [r.job_id for r in kept] == sorted(r.job_id for r in kept)  # job order
    assert {r.job_id: r.error for r in kept if r.status != "uploaded"} == {
        "j00007": "quota: daily limit",
        "j02999": "over budget",
    }
    summary = tally.summary(RUN, "dev", "file:///m.jsonl")
    assert summary.jobs == n and summary.counts == {
        "uploaded": n - 2,
        "failed": 1,
        "skipped_budget": 1,
    }
    assert summary.estimated_usd == 0.5 * (n - 1)
    assert summary.bytes_raw == 10 * (n - 2) and summary.bytes_final == 3 * (n - 2)
    assert summary.billed == {"online": n}


def test_a_small_run_keeps_every_row_and_matches_from_rows() -> None:
    rows = [row(i) for i in range(5)] + [row(5, "failed", error="boom")]
    tally = RunTally([r.job_id for r in rows], keep_rows=100)
    tally.extend(rows[::-1])
    assert tally.keep_all and tally.rows == rows
    assert tally.summary(RUN, "dev", "m") == RunSummary.from_rows(RUN, "dev", "m", rows)


@pytest.mark.parametrize("url", ["file://{tmp}/out", "memory://bf-tally-{name}"])
def test_a_closed_manifest_reads_back_a_row_at_a_time_once_per_job(
    url: str, tmp_path: Path
) -> None:
    store = Store(url.format(tmp=tmp_path, name=tmp_path.name))
    writer = ManifestWriter(store, RUN)
    for i in range(3):
        writer.append(row(i))
    writer.append(row(1, "failed", error="late failure"))  # a job's later row wins
    writer.close()
    got = list(iter_manifest(store, RUN))
    assert [r.job_id for r in got] == ["j00000", "j00001", "j00002"]
    assert got[1].error == "late failure"


def test_close_leaves_a_clean_manifest_as_it_is_and_drops_a_torn_tail(tmp_path: Path) -> None:
    store = Store(f"file://{tmp_path}/out")
    writer = ManifestWriter(store, RUN)
    for i in range(3):
        writer.append(row(i))
    path = tmp_path / "out" / writer.path
    before = path.stat().st_ino
    writer.close()
    assert path.stat().st_ino == before  # already one line per job: not rewritten

    with path.open("a") as f:
        f.write('{"run_id": "run-20261129-tally", "job_id": "j9", "sta')  # crash mid-line
    ManifestWriter(store, RUN).close()
    assert path.read_text().endswith("\n")
    assert [r.job_id for r in read_manifest(store, RUN)] == ["j00000", "j00001", "j00002"]


@pytest.mark.usefixtures("prefect_api")
def test_a_run_above_summary_rows_still_tables_every_job(make_config: Any) -> None:
    config, out = make_config(generate={"summary_rows": 1}, compress={"thumbnails": []})
    prompts = ["a tally owl", "a tally fox", "a tally hare"]
    summary = asyncio.run(generate_images(GenerateParameters(config=config, prompts=prompts)))

    assert summary.jobs == 3 and summary.counts == {"uploaded": 3}
    manifest = read_manifest(Store(out), summary.run_id)
    table = json.loads(run_artifact("bananaflow-results", summary.run_id)["data"])
    assert [r["job"] for r in table] == [r.job_id for r in manifest]
    assert all(r["status"] == "uploaded" and r["uri"] for r in table)
    assert "jobs: 3 (uploaded: 3)" in run_artifact("bananaflow-summary", summary.run_id)["data"]
