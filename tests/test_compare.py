"""A/B comparison: the statistics on hand-made rows, then the flow on both emulated platforms."""

from __future__ import annotations

import asyncio
import io
import json

import pytest
from fixtures.prefect import latest_artifact
from PIL import Image

from bananaflow import comparison
from bananaflow.comparison import BackendStats, ComparisonReport
from bananaflow.expand import ImageJob, compute_job_id
from bananaflow.flows.compare import CompareParameters, compare
from bananaflow.manifest import read_manifest
from bananaflow.records import ManifestRow, RouteAttempt
from bananaflow.storage import Store

# --------------------------------------------------------------------------- statistics


def _row(
    backend: str,
    status: str = "uploaded",
    *,
    latency: float = 1.0,
    raw: int = 1000,
    final: int = 100,
    retried: list[str] | None = None,
    outcome: str = "ok",
    attempts: int = 1,
    size: str = "1K",
    usd: float = 0.134,
) -> ManifestRow:
    return ManifestRow(
        run_id="compare-x",
        job_id=f"{backend}-{latency}-{raw}-{status}",
        output_key="k",
        status=status,  # type: ignore[arg-type]
        stage="dev",
        image_size=size,  # type: ignore[arg-type]
        backend=backend if status == "uploaded" else None,  # type: ignore[arg-type]
        routes=[
            RouteAttempt(
                backend=backend,  # type: ignore[arg-type]
                reason="job override",
                outcome=outcome,
                attempts=attempts,
                retried=retried or [],
            )
        ],
        latency_s=latency if status == "uploaded" else 0.0,
        bytes_raw=raw if status == "uploaded" else 0,
        bytes_final=final if status == "uploaded" else 0,
        estimated_usd=usd if status == "uploaded" else 0.0,
    )


def test_percentile_interpolates_between_ranks():
    assert comparison.percentile([], 50) is None
    assert comparison.percentile([3.0], 95) == 3.0
    assert comparison.percentile([4.0, 1.0, 3.0, 2.0], 50) == pytest.approx(2.5)
    assert comparison.percentile([1.0, 2.0], 95) == pytest.approx(1.95)
    assert comparison.percentile(range(101), 95) == pytest.approx(95.0)
    with pytest.raises(ValueError):
        comparison.percentile([1.0], 101)


def test_backend_stats_count_every_figure():
    rows = [
        _row("vertex", latency=2.0, raw=4000, final=400),
        _row("vertex", latency=4.0, raw=2000, final=200, retried=["timeout"], attempts=2),
        _row("vertex", latency=9.0, raw=3000, final=300, retried=["unavailable"], attempts=2),
        _row("vertex", "refused", outcome="image safety"),
        _row("vertex", "failed", retried=["timeout", "timeout"], outcome="timeout", attempts=3),
    ]
    s = comparison.backend_stats("vertex", "1K", rows)
    assert (s.jobs, s.uploaded, s.refused, s.failed, s.skipped) == (5, 3, 1, 1, 0)
    assert s.requests == 1 + 2 + 2 + 1 + 3
    assert s.latency_p50_s == pytest.approx(4.0)
    assert s.latency_p95_s == pytest.approx(4.0 + 0.9 * 5.0)
    assert s.bytes_raw_mean == pytest.approx(3000) and s.bytes_raw_median == 3000
    assert s.bytes_final_mean == pytest.approx(300) and s.bytes_final_median == 300
    assert s.timeouts == 4 and s.timeout_rate == pytest.approx(4 / 9)
    assert s.retries == 4 and s.retried_kinds == {"timeout": 3, "unavailable": 1}
    assert s.retry_rate == pytest.approx(3 / 5)
    assert s.refusal_rate == pytest.approx(0.2) and s.failure_rate == pytest.approx(0.2)
    assert s.usd_total == pytest.approx(3 * 0.134) and s.usd_per_image == pytest.approx(0.134)


def test_stats_are_grouped_per_backend_and_size_in_table_order():
    rows = [
        _row("vertex", size="2K"),
        _row("vertex"),
        _row("aistudio", size="2K"),
        _row("aistudio", "failed", outcome="unavailable"),
    ]
    got = [(s.backend, s.image_size, s.jobs) for s in comparison.compute_stats(rows)]
    assert got == [
        ("aistudio", "1K", 1),
        ("vertex", "1K", 1),
        ("aistudio", "2K", 1),
        ("vertex", "2K", 1),
    ]
    failed_only = comparison.compute_stats(rows)[0]
    assert failed_only.latency_p50_s is None and failed_only.usd_per_image is None


def test_comparison_jobs_pin_each_backend_with_its_own_id():
    job = ImageJob(
        job_id="base",
        spec_id="s",
        prompt="a kite",
        original_prompt="a kite",
        aspect_ratio="1:1",
        image_size="1K",
    )
    jobs = comparison.comparison_jobs([job, job], ["1K", "2K"])
    assert [(j.backend, j.image_size) for j in jobs] == [
        ("aistudio", "1K"),
        ("vertex", "1K"),
        ("aistudio", "2K"),
        ("vertex", "2K"),
    ]
    assert jobs[1].job_id == compute_job_id(
        prompt="a kite",
        aspect_ratio="1:1",
        image_size="1K",
        variant=0,
        backend="vertex",
        model=None,
    )
    assert len({j.job_id for j in jobs}) == 4


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (300, 300), colour).save(buf, "JPEG")
    return buf.getvalue()


def test_grid_puts_ai_studio_left_vertex_right_and_marks_a_failed_side():
    job = ImageJob(
        job_id="b",
        spec_id="s",
        prompt="p",
        original_prompt="p",
        aspect_ratio="1:1",
        image_size="1K",
    )
    jobs = comparison.comparison_jobs([job], ["1K"])
    ok = _row("aistudio").model_copy(update={"job_id": jobs[0].job_id, "uri": "mem://green"})
    bad = _row("vertex", "refused").model_copy(update={"job_id": jobs[1].job_id})
    found = comparison.pairs(jobs, [ok, bad])
    assert found[0].sides["vertex"].status == "refused"

    grid = Image.open(
        io.BytesIO(comparison.comparison_grid(found, {"mem://green": _jpeg((0, 200, 0))}.get))
    )
    assert grid.size == (512, 256)
    left, right = grid.getpixel((128, 110)), grid.getpixel((384, 110))
    assert left[1] > 150 and left[0] < 80  # the AI Studio image
    assert right[0] > 60 and right[1] < 30  # contact_sheet's red "unreadable" cell


def test_markdown_has_the_reference_table_per_size():
    rows = [_row("aistudio", raw=600_000), _row("vertex", raw=2_500_000)]
    report = ComparisonReport(
        run_id="compare-x",
        prompts=1,
        image_sizes=["1K"],
        stats=comparison.compute_stats(rows),
        pairs=[],
    )
    md = comparison.comparison_markdown(report)
    assert "| raw file (mean) | 600 KB | 2.50 MB | 0.5–1 MB / 2–4 MB |" in md
    assert "| request timeout rate | 0.0 % | 0.0 % | < 1 % / 3–8 % |" in md
    table = comparison.comparison_table(report)
    assert [t["platform"] for t in table] == ["AI Studio", "Vertex AI"]
    assert table[1]["bytes_raw_mean"] == 2_500_000


# --------------------------------------------------------------------------- the flow


@pytest.fixture
def compare_config(make_config) -> tuple[str, str]:
    return make_config(
        route={"fallback": ["vertex"]},  # compare must ignore it
        compress={"format": "webp", "quality": 80, "thumbnails": [128]},
    )


@pytest.mark.usefixtures("prefect_api")
def test_compare_measures_both_platforms_and_publishes_table_json_and_grid(emu, compare_config):
    config, out = compare_config
    prompts = ["a brass compass on a map", "a bowl of cherries"]
    emu.control.force("503", count=1, backend="vertex")  # one retried request to be counted

    report = asyncio.run(compare(CompareParameters(prompts=prompts, config=config)))

    assert emu.control.stats()["generation_requests"] == {"aistudio": 2, "vertex": 3}
    ai, vx = report.stat("aistudio", "1K"), report.stat("vertex", "1K")
    assert ai is not None and vx is not None
    assert (ai.uploaded, vx.uploaded) == (2, 2)
    assert (ai.requests, vx.requests) == (2, 3)
    assert vx.retried_kinds == {"unavailable": 1} and vx.retry_rate == pytest.approx(0.5)
    assert ai.retry_rate == 0 and ai.timeout_rate == 0
    assert vx.bytes_raw_mean > ai.bytes_raw_mean  # Vertex PNG masters vs AI Studio JPEG
    assert ai.usd_per_image == pytest.approx(0.134) and vx.usd_per_image == pytest.approx(0.134)
    assert ai.latency_p50_s and vx.latency_p95_s

    store = Store(out)
    rows = read_manifest(store, report.run_id)
    assert sorted(r.backend or "" for r in rows) == ["aistudio", "aistudio", "vertex", "vertex"]
    assert all(r.uri.startswith(f"{out}/runs/{report.run_id}/images/") for r in rows)

    saved = json.loads(store.read_text(f"runs/{report.run_id}/compare.json"))
    assert len(saved["stats"]) == 2
    for stats in saved["stats"]:
        assert set(stats) == set(BackendStats.model_fields)
    assert saved == report.model_dump(mode="json")
    md = store.read_text(f"runs/{report.run_id}/compare.md")
    assert "| raw file (mean) |" in md and "a bowl of cherries" in md

    grid = Image.open(io.BytesIO(store.get(f"runs/{report.run_id}/compare-grid.jpg")))
    grid.load()
    assert grid.format == "JPEG" and grid.size == (2 * 256, 2 * 256)

    table = latest_artifact("bananaflow-compare-table")["data"]
    assert {row["platform"] for row in json.loads(table)} == {"AI Studio", "Vertex AI"}
    assert str(latest_artifact("bananaflow-compare-grid")["data"]).startswith("data:image/jpeg")

    # Again, with Vertex down: every render is measured afresh (nothing reused), and a Vertex
    # failure stays a Vertex failure although the config has a fallback to AI Studio.
    emu.control.force("503", count=50, backend="vertex")
    again = asyncio.run(compare(CompareParameters(prompts=prompts, config=config)))
    assert again.run_id != report.run_id
    assert emu.control.stats()["generation_requests"] == {"aistudio": 4, "vertex": 3 + 2 * 3}
    down = again.stat("vertex", "1K")
    assert down is not None and (down.failed, down.failure_rate, down.requests) == (2, 1.0, 6)
    assert down.usd_per_image is None and down.latency_p50_s is None
    assert all(p.sides["vertex"].status == "failed" for p in again.pairs)
