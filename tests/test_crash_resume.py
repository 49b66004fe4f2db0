"""Crash and resume: the real CLI killed or starved mid-batch, then run again.

Each scenario is ``reliability.crash`` at CI size: ``bananaflow generate --batch … --config …``
in a subprocess against an emulator in this process on loopback. The rule under test: the second
run finishes the batch and makes zero generation requests for jobs the first run had finished
(an ``uploaded`` manifest row, or a master in the completion index).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# `reliability` lives at the repo root next to `tests/` (not an installed package).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reliability.crash import CrashResult, run_crash_scenario

pytestmark = pytest.mark.usefixtures("prefect_api")
JOBS = 12


def _second_run_finishes_without_repaying(r: CrashResult) -> None:
    assert r.second_exit == 0, r.stderr_tail
    assert r.second_counts == {"uploaded": JOBS} and r.second_accounted == JOBS
    assert r.second_requests_for_finished == 0
    # It paid only for what was not finished (plus, at most, requests in flight at the kill).
    assert r.second_generation_requests <= JOBS - r.finished_before + 2


def test_sigkill_mid_batch_then_rerun(tmp_path: Path) -> None:
    r = run_crash_scenario("sigkill", JOBS, workdir=tmp_path)
    assert r.first_exit == -9 and r.disruption.startswith("SIGKILL")
    assert 0 < r.finished_before < JOBS  # killed mid-batch, with work already finished
    assert r.first_uploaded <= r.first_rows < JOBS
    _second_run_finishes_without_repaying(r)


def test_emulator_down_fails_jobs_with_a_reason_then_rerun(tmp_path: Path) -> None:
    r = run_crash_scenario("emulator-down", JOBS, outage_s=2.0, workdir=tmp_path)
    assert r.disruption.startswith("emulator stopped")
    assert r.first_exit == 1 and r.first_rows == JOBS  # every job accounted for
    assert r.first_failed_reasons and all(
        "unavailable" in reason for reason in r.first_failed_reasons
    )
    _second_run_finishes_without_repaying(r)


def test_emulator_down_within_the_retry_budget_is_waited_out(tmp_path: Path) -> None:
    r = run_crash_scenario("emulator-down-waits", JOBS, outage_s=1.5, workdir=tmp_path)
    assert r.disruption.startswith("emulator stopped")
    assert r.first_exit == 0 and r.first_uploaded == JOBS
    _second_run_finishes_without_repaying(r)
    assert r.second_generation_requests == 0


def test_storage_down_mid_run_then_rerun(tmp_path: Path) -> None:
    r = run_crash_scenario("storage-down", JOBS, outage_s=2.0, workdir=tmp_path)
    assert r.disruption.startswith("storage stopped")
    assert r.first_rows == JOBS  # the outage delayed the run; nothing was lost
    assert r.first_exit in (0, 1)
    assert all(k.split(": ", 1)[1] for k in r.first_failed_reasons)  # any failure says why
    _second_run_finishes_without_repaying(r)
