"""The benchmark entry point runs end to end at its tiny size and produces every figure.

Values are not checked (timings belong to the benchmark, not to tests); what is checked would be
false if a peer, an emulator, the Prefect server or a figure's computation were broken: every
figure is present and finite, every peer delivered every image, the re-run paid for nothing.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.report import TARGETS, lookup
from benchmarks.suite import FULL, Suite

ROOT = Path(__file__).resolve().parent.parent


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # If this test is stopped (a hang guard, Ctrl-C), the benchmark gets a Ctrl-C of its own:
    # it then stops the Prefect server and emulators it started, which would run on as orphans
    # after a SIGKILL (they lead process groups of their own).
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--out",
            str(out),
            "--docs",
            str(out / "benchmarks.md"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = proc.communicate(timeout=900)  # a hang guard, not a timing assertion
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert proc.returncode == 0, stderr[-4000:]
    return json.loads((out / "quick.json").read_text()), out


def test_every_target_figure_is_present_and_finite(quick: tuple[dict[str, Any], Path]) -> None:
    results, _ = quick
    for target in TARGETS:
        value = lookup(results["figures"], target.path)
        assert _finite(value), f"{'.'.join(target.path)} = {value!r}"
    assert {t["key"] for t in results["targets"]} == {t.key for t in TARGETS}


def test_every_peer_delivered_every_image(quick: tuple[dict[str, Any], Path]) -> None:
    figures = quick[0]["figures"]
    for profile in ("aistudio", "vertex"):
        block = figures["throughput_vs_quota"][profile]
        for peer in ("bananaflow", "sdk_script"):
            for run in block[peer]["raw"]:
                assert run["failed"] == 0 and run["ok"] == block["images"], (profile, peer)
                assert _finite(run["ratio_formula"]) and _finite(run["ratio_ideal"])
        recipe = figures["bananaflow_vs_recipe"][profile]["recipe"]
        assert recipe["failed"] == 0 and recipe["ok"] == recipe["images"]


def test_rerun_paid_nothing_and_breakdowns_are_complete(
    quick: tuple[dict[str, Any], Path],
) -> None:
    figures = quick[0]["figures"]
    rerun = figures["rerun"]
    assert rerun["generation_requests"] == 0 < rerun["first_generation_requests"]
    cpu = figures["orchestration_cpu"]
    assert all(_finite(v) for v in cpu["breakdown_ms"].values())
    scaling = figures["scaling"]["points"]
    planned = list(figures["scaling"]["planned"])
    ran = [p["images"] for p in scaling]
    # The largest point is cut to what fits the time budget on a busy machine (never below
    # twice the one before, so the quick size's two points always run); the page must then say
    # so. Every point that ran is complete.
    assert ran[:-1] == planned[:-1] and 2 * ran[-2] <= ran[-1] <= planned[-1]
    if ran != planned:
        assert any(n.startswith("scaling:") for n in quick[0]["notes"]), ran
    assert all(p["counts"] == {"uploaded": p["images"]} for p in scaling)


def test_results_page_and_machine_are_written(quick: tuple[dict[str, Any], Path]) -> None:
    results, out = quick
    machine = results["meta"]["machine"]
    assert machine["nproc"] and machine["python"] and machine["packages"]["prefect"]
    page = (out / "benchmarks.md").read_text()
    assert page == (out / "quick.md").read_text()
    for target in results["targets"]:
        assert target["figure"] in page


@pytest.mark.parametrize(
    ("elapsed", "s_per_image", "expected"),
    [
        (0.0, 0.1, 1000),  # fits: runs as planned
        (0.0, 1.0, 400),  # 550 s left at 1.15 s/image: cut to whole hundreds
        (560.0, 1.0, 200),  # nothing left: never below twice the point before
    ],
)
def test_largest_scaling_point_is_cut_to_the_budget_never_below_twice_the_previous(
    tmp_path: Path, elapsed: float, s_per_image: float, expected: int
) -> None:
    suite = Suite(FULL, tmp_path)
    suite.elapsed = lambda: elapsed  # type: ignore[method-assign]
    n = suite._largest_that_fits({"images": 100, "s_per_image": s_per_image}, 1000)
    assert n == expected
    assert any(note.startswith("scaling:") for note in suite.notes) == (expected != 1000)
