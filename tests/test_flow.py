"""The whole chain under a real Prefect, against the emulator over loopback HTTP.

Each test writes a config file pointing the backends at the emulator — the same change a user
makes to point bananaflow at Google — and runs the ``generate_images`` flow.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from fixtures.prefect import run_artifact

from bananaflow.flows.generate import generate_images
from bananaflow.imaging import read_digital_source_type
from bananaflow.manifest import read_manifest
from bananaflow.parameters import GenerateParameters
from bananaflow.records import RunSummary
from bananaflow.storage import Store

pytestmark = pytest.mark.usefixtures("prefect_api")


def run(config: str, prompts: list[str], **kw: Any) -> RunSummary:
    params = GenerateParameters(config=config, prompts=prompts, **kw)
    return asyncio.run(generate_images(params))


def generation_requests(emu) -> dict[str, int]:
    return emu.control.stats()["generation_requests"]


def test_dev_chain_lands_images_masters_manifest_and_sheet(emu, make_config, tmp_path: Path):
    config, out = make_config()
    summary = run(config, ["a red apple on a table", "a blue mug"])

    assert summary.counts == {"uploaded": 2}
    assert generation_requests(emu) == {"aistudio": 2, "vertex": 0}
    store = Store(out)
    rows = read_manifest(store, summary.run_id)
    assert {r.status for r in rows} == {"uploaded"} and len(rows) == 2
    for row in rows:
        assert row.backend == "aistudio" and row.routes[0].backend == "aistudio"
        assert "stage dev" in row.routes[0].reason
        assert row.estimated_usd == pytest.approx(0.134)
        assert row.bytes_raw > 0 and row.bytes_final > 0
        published = Path(row.uri.removeprefix("file://")).read_bytes()
        assert published[:3] == b"\xff\xd8\xff"  # JPEG as configured
        assert read_digital_source_type(published).endswith("trainedAlgorithmicMedia")
        assert Path(row.master_uri.removeprefix("file://")).exists()
        assert len(row.thumbnail_uris) == 1
    assert (
        summary.contact_sheet_uri
        and Path(summary.contact_sheet_uri.removeprefix("file://")).exists()
    )
    manifest = Path(summary.manifest_uri.removeprefix("file://"))
    assert len(manifest.read_text().splitlines()) == 2
    assert summary.estimated_usd == pytest.approx(0.268)


def test_rerun_makes_zero_generation_requests(emu, make_config):
    config, _ = make_config()
    first = run(config, ["a lighthouse at dusk", "a lemon"])
    assert first.counts == {"uploaded": 2}
    before = generation_requests(emu)["aistudio"]

    second = run(config, ["a lighthouse at dusk", "a lemon"])
    assert second.counts == {"uploaded": 2}
    assert generation_requests(emu)["aistudio"] == before  # nothing paid twice
    assert all(r.reused_from_run == first.run_id for r in second.rows)
    assert second.estimated_usd == 0
    assert {r.uri for r in second.rows} == {r.uri for r in first.rows}


def test_changed_output_settings_reuse_the_master_without_paying(emu, make_config):
    config, _ = make_config()
    run(config, ["a teapot"])
    before = generation_requests(emu)["aistudio"]
    config2, _ = make_config(compress={"format": "webp", "quality": 60, "thumbnails": []})
    again = run(config2, ["a teapot"])
    assert again.counts == {"uploaded": 1}
    assert generation_requests(emu)["aistudio"] == before
    assert again.rows[0].uri.endswith(".webp")


def test_refusal_and_hard_failure_leave_the_others_uploaded(emu, make_config):
    config, out = make_config(generate={"concurrency": 1})
    emu.control.force("quota_daily", count=1, backend="aistudio")
    summary = run(config, ["first job hits a daily quota", "a forbidden scene", "a fine pear"])

    by_prompt = {r.prompt: r for r in summary.rows}
    daily = by_prompt["first job hits a daily quota"]
    assert daily.status == "failed" and "quota" in (daily.error or "")
    assert daily.attempts == 1  # a per-day quota is not retried
    refused = by_prompt["a forbidden scene"]
    assert refused.status == "refused" and "IMAGE_SAFETY" in (refused.error or "")
    assert by_prompt["a fine pear"].status == "uploaded"
    assert summary.estimated_usd == pytest.approx(0.134)  # refusals and failures cost nothing
    rows = read_manifest(Store(out), summary.run_id)
    assert {r.status for r in rows} == {"failed", "refused", "uploaded"}


def test_rerun_retries_only_what_failed(emu, make_config):
    config, _ = make_config(generate={"concurrency": 1})
    emu.control.force("500", count=3, backend="aistudio")  # = max_attempts
    first = run(config, ["broken then fixed", "later fine"])
    assert first.counts.get("failed", 0) >= 1
    before = generation_requests(emu)["aistudio"]
    second = run(config, ["broken then fixed", "later fine"])
    assert second.counts == {"uploaded": 2}
    fresh = [r for r in second.rows if r.reused_from_run is None]
    assert generation_requests(emu)["aistudio"] - before == len(fresh) >= 1


def test_budget_cap_stops_spending(emu, make_config):
    config, _ = make_config(generate={"concurrency": 1}, budget={"max_usd": 0.3})
    summary = run(config, ["one", "two", "three", "four"])
    assert summary.counts == {"uploaded": 2, "skipped_budget": 2}
    assert generation_requests(emu)["aistudio"] == 2
    assert summary.estimated_usd == pytest.approx(0.268)


def test_byte_budget_is_met(emu, make_config):
    config, _ = make_config(compress={"format": "jpeg", "max_bytes": 40_000, "thumbnails": []})
    summary = run(config, ["a very detailed forest with many leaves"])
    row = summary.rows[0]
    assert row.status == "uploaded"
    assert row.bytes_final <= 40_000 < row.bytes_raw
    assert Path(row.uri.removeprefix("file://")).stat().st_size == row.bytes_final


def test_prod_routes_to_vertex_with_a_google_auth_token(emu, make_config):
    config, _ = make_config(stage="prod")
    summary = run(config, ["a product shot of a shoe"])
    assert summary.counts == {"uploaded": 1}
    assert summary.rows[0].backend == "vertex"
    assert "stage prod" in summary.rows[0].routes[0].reason
    stats = emu.control.stats()
    assert stats["generation_requests"] == {"aistudio": 0, "vertex": 1}
    assert stats["tokens_issued"] >= 1


def test_fallback_is_used_and_recorded(emu, make_config):
    config, _ = make_config(stage="prod", route={"fallback": ["aistudio"]})
    emu.control.force("503", count=50, backend="vertex")
    summary = run(config, ["a fallback kite"])
    row = summary.rows[0]
    assert row.status == "uploaded" and row.backend == "aistudio"
    assert [r.backend for r in row.routes] == ["vertex", "aistudio"]
    assert row.routes[0].outcome == "unavailable" and row.routes[0].attempts == 3
    assert "fallback" in row.routes[1].reason


def test_gcs_upload_carries_metadata_and_cache_control(emu, make_config, gcs_bucket):
    url, options = gcs_bucket
    config, _ = make_config(storage={"url": url, "options": options})
    summary = run(config, ["a gcs parrot"])
    row = summary.rows[0]
    assert row.status == "uploaded" and row.uri.startswith(url)
    store = Store(url, options)
    info = store.info(row.uri.removeprefix(url).lstrip("/"))
    assert info["contentType"] == "image/jpeg"
    assert info["cacheControl"] == "public, max-age=31536000, immutable"
    assert info["metadata"]["job-id"] == row.job_id
    assert info["metadata"]["backend"] == "aistudio"
    assert len(read_manifest(store, summary.run_id)) == 1


def test_upscale_local_fallback_on_ai_studio(emu, make_config):
    config, _ = make_config(
        upscale={"enabled": True, "factor": 2, "method": "local"},
        compress={"format": "png", "thumbnails": []},
    )
    row = run(config, ["a tiny robot"]).rows[0]
    assert row.status == "uploaded" and row.upscale_method == "local-lanczos"
    assert (row.width, row.height) == (2048, 2048)


def test_manifest_rows_are_json_lines_with_every_job(emu, make_config, tmp_path):
    config, _ = make_config()
    summary = run(config, ["x one", "x two", "x three"])
    lines = Path(summary.manifest_uri.removeprefix("file://")).read_text().splitlines()
    ids = {json.loads(line)["job_id"] for line in lines}
    assert ids == {r.job_id for r in summary.rows} and len(ids) == 3


def test_artifacts_are_published_to_prefect(emu, make_config):
    config, _ = make_config()
    summary = run(config, ["an artifact owl", "an artifact fox"])

    run_id = summary.run_id
    assert "uploaded: 2" in run_artifact("bananaflow-summary", run_id)["data"]
    assert summary.rows[0].job_id in str(run_artifact("bananaflow-results", run_id)["data"])
    assert float(run_artifact("bananaflow-progress", run_id)["data"]) == pytest.approx(100.0)
    sheet = run_artifact("bananaflow-contact-sheet", run_id)
    assert str(sheet["data"]).startswith("data:image/jpeg;base64,")
    assert sheet["type"] == "image"


def test_variants_are_different_images_and_a_fresh_rerender_reproduces_them(
    emu, make_config, tmp_path: Path
):
    batch = tmp_path / "variants.yaml"
    batch.write_text("- text: a balloon over hills\n  variants: 3\n")
    shas = []
    for _ in range(2):
        config, _ = make_config(storage={"url": f"file://{tmp_path}/fresh-{len(shas)}"})
        params = GenerateParameters(config=config, batch_file=str(batch))
        summary = asyncio.run(generate_images(params))
        assert summary.counts == {"uploaded": 3}
        rows = sorted(summary.rows, key=lambda r: r.variant)
        assert len({r.seed for r in rows}) == 3
        shas.append([r.sha256 for r in rows])
    assert len(set(shas[0])) == 3  # three seeds, three images
    assert shas[0] == shas[1]  # a fresh store, the same seeds: the same images
