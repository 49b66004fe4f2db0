"""Model tiers, quality presets, model fallback and reference images (issue #13).

Core level: jobs are planned with ``preflight``/``plan_jobs`` and rendered with ``render_all``
over the plain chain functions against the loopback emulator; its request log and counters say
what was asked of which model, and the drawn images show which references arrived. One
end-to-end test runs the shipped demo through the real generate and promote flows.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.inprocess import render_jobs
from PIL import Image

from bananaflow.config import Settings, load_settings
from bananaflow.configfiles import shipped_dir
from bananaflow.errors import ConfigError, InputError
from bananaflow.generation import pixel_size, size_problem
from bananaflow.manifest import read_manifest
from bananaflow.preflight import check_prices, plan_jobs, preflight
from bananaflow.records import ManifestRow
from bananaflow.storage import Store

# --------------------------------------------------------------------------- helpers


def render(
    settings: Settings,
    prompts: list[str] | None = None,
    batch: Path | None = None,
    references: list[str] | None = None,
    run_id: str = "20261129T000000Z-run00001",
) -> list[ManifestRow]:
    """What the generate flow does, minus Prefect: plan, check, render, close the manifest."""
    jobs, decisions = plan_jobs(
        settings, prompts or [], str(batch) if batch else None, references=references
    )
    check_prices(settings, jobs, decisions)
    return render_jobs(settings, jobs, decisions, run_id)


def png(colour: tuple[int, int, int], size: int = 64) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(out, "PNG")
    return out.getvalue()


def gen_requests(emu) -> list[dict[str, Any]]:
    return [e for e in emu.control.requests() if e["operation"] == "generateContent"]


@pytest.fixture
def settings_for(make_config):
    def make(**over: Any) -> Settings:
        path, _ = make_config(**over)
        return load_settings(path)

    return make


# --------------------------------------------------------------------------- vocabulary


def test_nano_banana_2_sizes_and_extreme_ratios_have_pixels_and_checks():
    assert pixel_size("1:1", "512") == (512, 512)
    assert pixel_size("16:9", "2K") == (2752, 1536)  # the published Pro table, unchanged
    w, h = pixel_size("1:8", "1K")
    assert (w / h, w % 16, h % 16) == (1 / 8, 0, 0)
    assert size_problem("gemini-3.1-flash-image", "8:1", "512", *pixel_size("8:1", "512")) is None
    assert size_problem("gemini-3.1-flash-image", "1:8", "1K", 1024, 1024) is not None
    assert size_problem("gemini-3-pro-image", "1:1", "2K", 1024, 1024) is not None


def test_shipped_tiers_prices_and_presets():
    s = load_settings("dev", environ={})
    assert s.models["gemini-3.1-flash-lite-image"].sizes == ["1K"]
    assert "1:8" in s.models["gemini-3.1-flash-image"].aspect_ratios
    assert "1:8" not in s.models["gemini-3-pro-image"].aspect_ratios
    assert s.prices["gemini-3.1-flash-image"] == {
        "512": 0.045,
        "1K": 0.067,
        "2K": 0.101,
        "4K": 0.151,
    }
    assert s.prices["gemini-3.1-flash-lite-image"] == {"1K": 0.0336}
    final = s.generate.quality_presets["final"]
    assert (final.model, final.image_size, final.backend) == ("gemini-3-pro-image", "2K", "vertex")


def test_a_typo_in_a_fallback_or_a_default_quality_is_a_config_error(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "models": {
                    "gemini-3-pro-image": {
                        "sizes": ["1K"],
                        "aspect_ratios": ["1:1"],
                        "fallback": ["gemini-3.1-flash-imag"],
                    }
                }
            }
        )
    )
    with pytest.raises(ConfigError, match=re.escape("gemini-3.1-flash-imag")):
        load_settings(str(bad), environ={})
    bad.write_text(yaml.safe_dump({"generate": {"quality": "finall"}}))
    with pytest.raises(ConfigError, match="finall"):
        load_settings(str(bad), environ={})


# --------------------------------------------------------------------------- presets


def test_quality_precedence_spec_over_run_over_config(tmp_path: Path):
    batch = tmp_path / "b.yaml"
    batch.write_text(
        yaml.safe_dump(
            {
                "prompts": [
                    {"id": "own", "text": "a kite", "quality": "final"},
                    {"id": "sized", "text": "a kite", "quality": "draft", "image_sizes": ["512"]},
                    {"id": "plain", "text": "a kite"},
                ]
            }
        )
    )
    s = load_settings("local", {"generate.quality": "standard"}, environ={})
    jobs, decisions = plan_jobs(s, [], str(batch))
    by_spec = {j.spec_id: j for j in jobs}
    assert (by_spec["own"].quality, by_spec["own"].model, by_spec["own"].image_size) == (
        "final",
        "gemini-3-pro-image",
        "2K",
    )
    assert by_spec["own"].backend == "vertex"
    assert decisions[jobs.index(by_spec["own"])].primary == "vertex"
    # The spec's own size wins over its preset's.
    assert (by_spec["sized"].model, by_spec["sized"].image_size) == (
        "gemini-3.1-flash-image",
        "512",
    )
    # No quality of its own: the run's (here given like --quality) wins over the plain config.
    assert (by_spec["plain"].quality, by_spec["plain"].image_size) == ("standard", "2K")
    ultra = _write(tmp_path, {"text": "x", "quality": "ultra"})
    with pytest.raises(InputError, match=r"unknown quality 'ultra'.*draft, standard, final"):
        plan_jobs(s, [], ultra)


def _write(tmp_path: Path, *specs: dict[str, Any]) -> str:
    path = tmp_path / f"batch-{len(list(tmp_path.glob('batch-*')))}.yaml"
    path.write_text(yaml.safe_dump({"prompts": list(specs)}))
    return str(path)


def test_jobs_without_quality_or_references_keep_their_ids():
    old_payload = {
        "prompt": "a kite",
        "aspect_ratio": "1:1",
        "image_size": "1K",
        "variant": 0,
        "backend": None,
        "model": None,
    }
    old_id = hashlib.sha256(
        json.dumps(old_payload, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()[:16]
    [job], _ = plan_jobs(load_settings("local", environ={}), ["a kite"], None)
    assert job.job_id == old_id and job.references == [] and job.quality is None


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            {"model": "gemini-3.1-flash-lite-image", "image_sizes": ["4K"]},
            "gemini-3.1-flash-lite-image does not render 4K. Fix: use a size it renders (1K)",
        ),
        (
            {"aspect_ratios": ["1:8"]},
            "gemini-3-pro-image does not render 1:8. Fix: use a ratio it renders (1:1, 2:3",
        ),
        ({"quality": "final", "image_sizes": ["512"]}, "gemini-3-pro-image does not render 512"),
        ({"model": "gemini-9-image"}, "gemini-9-image is not in the model catalogue"),
    ],
)
def test_an_impossible_tier_job_is_one_line_before_any_request(
    emu, settings_for, tmp_path: Path, spec: dict[str, Any], expected: str
):
    settings = settings_for()
    batch = _write(tmp_path, {"id": "bad", "text": "a kite", **spec})
    with pytest.raises(InputError) as info:
        preflight(settings, [], batch)
    message = str(info.value)
    assert "\n" not in message and "job " in message and "(bad" in message
    assert expected in message
    assert emu.control.stats()["generation_requests"] == {"aistudio": 0, "vertex": 0}


def test_reference_limits_are_checked_per_model_before_spending(emu, settings_for, tmp_path):
    (tmp_path / "a.png").write_bytes(png((200, 0, 0)))
    (tmp_path / "b.png").write_bytes(png((0, 200, 0)))
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, "GIF")
    (tmp_path / "c.gif").write_bytes(gif.getvalue())
    (tmp_path / "notes.png").write_text("not an image")
    tiers = {
        "gemini-3-pro-image": {"sizes": ["1K"], "aspect_ratios": ["1:1"], "max_reference_images": 1}
    }
    settings = settings_for(models=tiers)
    cases = [
        (["a.png", "b.png"], "2 reference images, gemini-3-pro-image takes at most 1"),
        (["c.gif"], "is image/gif, which gemini-3-pro-image does not take"),
        (["notes.png"], "is not a readable image"),
        (["missing.png"], "missing.png' does not exist"),
    ]
    for refs, expected in cases:
        batch = _write(tmp_path, {"text": "the product", "references": refs})
        with pytest.raises(InputError, match=r"references|model") as info:
            preflight(settings, [], batch)
        assert expected in str(info.value) and "\n" not in str(info.value)
    small = settings_for(
        models={
            "gemini-3-pro-image": {
                "sizes": ["1K"],
                "aspect_ratios": ["1:1"],
                "max_reference_mb": 0.0001,
            }
        }
    )
    too_big = re.escape("MB, over gemini-3-pro-image's 0.0001 MB per image")
    with pytest.raises(InputError, match=too_big):
        preflight(small, [], _write(tmp_path, {"text": "x", "references": ["a.png"]}))
    assert emu.control.stats()["generation_requests"] == {"aistudio": 0, "vertex": 0}


# --------------------------------------------------------------------------- references


def test_references_are_part_of_the_job_id_by_content(tmp_path: Path):
    red, blue = png((220, 20, 20)), png((20, 20, 220))
    (tmp_path / "red.png").write_bytes(red)
    (tmp_path / "copy-of-red.png").write_bytes(red)
    (tmp_path / "blue.png").write_bytes(blue)
    s = load_settings("local", environ={})
    batch = _write(
        tmp_path,
        {"id": "none", "text": "the product"},
        {"id": "red", "text": "the product", "references": "red.png"},
        {
            "id": "red-again",
            "text": "the product",
            "references": [f"file://{tmp_path}/copy-of-red.png"],
        },
        {"id": "blue", "text": "the product", "references": ["blue.png"]},
    )
    jobs, _ = plan_jobs(s, [], batch)
    ids = {j.spec_id: j.job_id for j in jobs}
    assert set(ids) == {"none", "red", "blue"}  # red-again is red: the same image, not paid twice
    assert len(set(ids.values())) == 3
    red_job = next(j for j in jobs if j.spec_id == "red")
    [ref] = red_job.references
    assert (ref.sha256, ref.mime_type, ref.width) == (
        hashlib.sha256(red).hexdigest(),
        "image/png",
        64,
    )
    assert ref.source == str(tmp_path / "red.png")  # relative to the batch file, made absolute


def test_references_reach_the_model_and_the_manifest(emu, settings_for, tmp_path, monkeypatch):
    colours = [(230, 20, 20), (20, 200, 40)]
    for i, c in enumerate(colours):
        (tmp_path / f"ref{i}.png").write_bytes(png(c))
    monkeypatch.chdir(tmp_path)  # --reference paths are relative to where the command runs
    settings = settings_for()
    [row] = render(settings, ["combine these"], references=["ref0.png", "ref1.png"])
    assert row.status == "uploaded", row.error
    assert [r.source for r in row.references] == [
        str(tmp_path / "ref0.png"),
        str(tmp_path / "ref1.png"),
    ]
    assert [r.sha256 for r in row.references] == [
        hashlib.sha256(png(c)).hexdigest() for c in colours
    ]
    # The emulator draws what it received: "refs: N" over a strip of their thumbnails.
    master = Image.open(io.BytesIO(Store(settings.storage.url).get(row.master_path))).convert("RGB")
    margin, box = 1024 // 48, 1024 // 10  # imagegen._draw_badges at 1K
    y = 1024 - margin - box // 2
    for i, colour in enumerate(colours):
        got = master.getpixel((margin + i * (box + margin) + box // 2, y))
        assert all(abs(a - b) < 40 for a, b in zip(got, colour, strict=True)), (i, got)
    # A reference changed between planning and paying fails that job, with no request.
    jobs, decisions = plan_jobs(settings, ["combine again"], None, references=["ref0.png"])
    (tmp_path / "ref0.png").write_bytes(png((1, 2, 3)))
    sent = len(gen_requests(emu))
    [changed] = render_jobs(settings, jobs, decisions, "20261129T000001Z-run00002")
    assert changed.status == "failed" and "changed since the job was planned" in (
        changed.error or ""
    )
    assert len(gen_requests(emu)) == sent


def test_the_output_of_a_job_of_an_earlier_run_is_a_reference(emu, settings_for, tmp_path):
    settings = settings_for()
    [first] = render(settings, ["a red mug"], run_id="20261129T000000Z-first001")
    batch = _write(
        tmp_path,
        {
            "text": "the mug on a beach",
            "references": [{"run": first.run_id, "job": first.job_id[:8]}],
        },
    )
    [second] = render(settings, batch=Path(batch), run_id="20261129T000100Z-second01")
    assert second.status == "uploaded", second.error
    [ref] = second.references
    assert (
        ref.uri == first.master_uri and ref.source == f"run {first.run_id} job {first.job_id[:8]}"
    )
    assert (
        ref.sha256 == hashlib.sha256(Store(settings.storage.url).get(first.master_path)).hexdigest()
    )
    bad = _write(tmp_path, {"text": "x", "references": [{"run": first.run_id, "job": "ffffffff"}]})
    with pytest.raises(InputError, match=r"no job of run .* matches 'ffffffff'"):
        plan_jobs(settings, [], bad)


# --------------------------------------------------------------------------- model fallback


def _overloaded_pro(emu, settings: Settings) -> None:
    """Every attempt on Pro fails with 503 (the retries included), the next request succeeds."""
    emu.control.force("503", count=settings.generate.retry.max_attempts, backend="aistudio")


def test_model_fallback_is_configured_per_model_and_recorded(emu, settings_for):
    tiers = {
        "gemini-3-pro-image": {
            "sizes": ["1K", "2K", "4K"],
            "aspect_ratios": ["1:1"],
            "fallback": ["gemini-3.1-flash-image"],
        },
        "gemini-3.1-flash-image": {"sizes": ["1K"], "aspect_ratios": ["1:1"]},
    }
    settings = settings_for(models=tiers)
    _overloaded_pro(emu, settings)
    [row] = render(settings, ["a kite"])
    assert row.status == "uploaded", row.error
    assert row.model == "gemini-3.1-flash-image"
    assert row.model_fallback is not None and "gemini-3-pro-image → gemini-3.1-flash-image" in (
        row.model_fallback
    )
    assert "models.gemini-3-pro-image.fallback" in row.model_fallback
    assert [(r.model, r.outcome) for r in row.routes] == [
        ("gemini-3-pro-image", "unavailable"),
        ("gemini-3.1-flash-image", "ok"),
    ]
    assert row.estimated_usd == pytest.approx(0.067)  # billed at the model that answered
    asked = [e["model"] for e in gen_requests(emu)]
    assert asked[-1] == "gemini-3.1-flash-image" and set(asked[:-1]) == {"gemini-3-pro-image"}


def test_no_model_fallback_unless_configured_or_when_it_cannot_render_the_job(emu, settings_for):
    settings = settings_for()  # shipped catalogue: no fallback
    _overloaded_pro(emu, settings)
    [row] = render(settings, ["a kite"])
    assert row.status == "failed" and row.model_fallback is None
    assert {e["model"] for e in gen_requests(emu)} == {"gemini-3-pro-image"}

    emu.control.reset()
    lite_only = {
        "gemini-3-pro-image": {
            "sizes": ["2K"],
            "aspect_ratios": ["1:1"],
            "fallback": ["gemini-3.1-flash-lite-image"],
        },
        "gemini-3.1-flash-lite-image": {"sizes": ["1K"], "aspect_ratios": ["1:1"]},
    }
    settings = settings_for(models=lite_only, generate={"image_size": "2K"})
    _overloaded_pro(emu, settings)
    [row] = render(settings, ["a kite"], run_id="20261129T000001Z-run00002")
    assert row.status == "failed"  # Lite cannot render 2K: never a silent downgrade
    assert {e["model"] for e in gen_requests(emu)} == {"gemini-3-pro-image"}


# --------------------------------------------------------------------------- shipped demo


@pytest.mark.usefixtures("prefect_api")
def test_shipped_demo_drafts_on_nano_banana_2_then_finals_on_pro(emu, make_config, tmp_path):
    from bananaflow.flows.generate import generate_images
    from bananaflow.flows.promote import PromoteParameters, promote
    from bananaflow.parameters import GenerateParameters

    dev_cfg, dev_out = make_config(storage={"url": f"file://{tmp_path}/dev"})
    prod_cfg, prod_out = make_config(stage="prod", storage={"url": f"file://{tmp_path}/prod"})
    demo = tmp_path / "demo"  # the shipped files, as `bananaflow init` users would have them
    demo.mkdir()
    for name in ("demo-references.yaml", "demo-product.jpg"):
        shutil.copy(shipped_dir() / name, demo / name)
    photo = hashlib.sha256((demo / "demo-product.jpg").read_bytes()).hexdigest()

    dev = asyncio.run(
        generate_images(
            GenerateParameters(config=dev_cfg, batch_file=str(demo / "demo-references.yaml"))
        )
    )
    assert dev.counts == {"uploaded": 3}
    for row in dev.rows:
        assert (row.backend, row.model, row.quality_preset, row.image_size) == (
            "aistudio",
            "gemini-3.1-flash-image",
            "draft",
            "1K",
        )
        assert row.estimated_usd == pytest.approx(0.067)
        assert [r.sha256 for r in row.references] == [photo]
    assert dev.estimated_usd == pytest.approx(3 * 0.067)

    chosen = sorted(dev.rows, key=lambda r: r.spec_id)[:2]
    final = asyncio.run(
        promote(
            PromoteParameters(
                source_run=dev.run_id,
                source_config=dev_cfg,
                config=prod_cfg,
                quality="final",
                approve="list",
                job_ids=[r.job_id for r in chosen],
            )
        )
    )
    assert final.rendered == 2 and final.estimated_usd == pytest.approx(2 * 0.134)
    # Drafts asked Nano Banana 2 on AI Studio, finals Pro on Vertex, and nothing else was asked
    # (counts are the manifest's: a retry on a loaded machine is a request, not an image).
    asked = {(e["backend"], e["model"]) for e in gen_requests(emu)}
    assert asked == {("aistudio", "gemini-3.1-flash-image"), ("vertex", "gemini-3-pro-image")}
    prod_rows = read_manifest(Store(prod_out), final.prod_run or "")
    assert {p.lineage["dev_job"] for p in prod_rows} == {r.job_id for r in chosen}
    for p in prod_rows:
        assert (p.backend, p.model, p.quality_preset, p.image_size, p.width) == (
            "vertex",
            "gemini-3-pro-image",
            "final",
            "2K",
            2048,
        )
        assert p.estimated_usd == pytest.approx(0.134)
        assert [r.sha256 for r in p.references] == [photo]  # finals see the same photo
    dev_rows = {r.job_id: r for r in read_manifest(Store(dev_out), dev.run_id)}
    assert {dev_rows[r.job_id].lineage["prod_job"] for r in chosen} == {p.job_id for p in prod_rows}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--quality", "final", "--aspect-ratio", "1:8"], "gemini-3-pro-image does not render 1:8"),
        (["--quality", "ultra"], "invalid --quality"),
        (["--reference", "no-such-photo.png"], "no-such-photo.png' does not exist"),
    ],
)
def test_cli_tier_and_reference_mistakes_exit_2_with_one_line(
    emu, make_config, args: list[str], expected: str
):
    from typer.testing import CliRunner

    from bananaflow.cli.app import app

    cfg, _ = make_config()
    result = CliRunner().invoke(app, ["generate", "a kite", "--config", cfg, *args])
    assert result.exit_code == 2, result.output
    assert expected in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 2
    assert emu.control.stats()["generation_requests"] == {"aistudio": 0, "vertex": 0}


def test_run_size_beats_the_run_quality_preset():
    from bananaflow.parameters import GenerateParameters

    params = GenerateParameters(prompts=["a kite"], quality="final", image_size="4K")
    settings = load_settings("local", params.overrides(), environ={})
    [job], _ = plan_jobs(settings, params.prompts, None)
    assert (job.quality, job.model, job.image_size) == ("final", "gemini-3-pro-image", "4K")


def test_a_malformed_reference_names_its_line_and_the_accepted_forms(tmp_path: Path):
    from bananaflow.expand import load_batch

    batch = tmp_path / "b.yaml"
    batch.write_text("prompts:\n  - text: a mug\n    references: [{run: 20261129T000000Z-x}]\n")
    with pytest.raises(InputError) as info:
        load_batch(batch)
    assert str(info.value) == (
        "invalid references[0]: {'run': '20261129T000000Z-x'} is not a reference "
        f"(in {batch} line 3, prompt 1). Fix: write a path, a file:// or gs:// URL, or "
        "{run: <run id>, job: <job id>}"
    )


def test_config_entries_change_shipped_tiers_and_presets_field_by_field(tmp_path: Path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "models": {"gemini-3-pro-image": {"fallback": ["gemini-3.1-flash-image"]}},
                "generate": {"quality_presets": {"final": {"image_size": "4K"}}},
            }
        )
    )
    s = load_settings(str(cfg), environ={})
    pro = s.models["gemini-3-pro-image"]
    assert (pro.sizes, pro.fallback) == (["1K", "2K", "4K"], ["gemini-3.1-flash-image"])
    assert set(s.models) == {
        "gemini-3-pro-image",
        "gemini-3.1-flash-image",
        "gemini-3.1-flash-lite-image",
    }
    final = s.generate.quality_presets["final"]
    assert (final.model, final.image_size, final.backend) == ("gemini-3-pro-image", "4K", "vertex")
    assert set(s.generate.quality_presets) == {"draft", "standard", "final"}
