"""Edit chains (issue #13 item 5): a start image edited turn by turn, each step a paid job.

Core level: jobs are planned with ``preflight``/``plan_jobs`` and rendered with ``render_all``
over the plain chain functions against the loopback emulator. Its request log says which turns
(roles) and thought signatures each request carried; its counters say what was paid. The
crash test fails step 3 hard through the emulator's fault queue (``after=2``: the first two
steps are answered), then re-runs the chain as a new run.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.inprocess import render_jobs

from bananaflow.backends import create_backend
from bananaflow.chain.keys import job_master_key
from bananaflow.config import Settings, load_settings
from bananaflow.configfiles import shipped_dir
from bananaflow.errors import BackendError, InputError
from bananaflow.generation import EditTurn, ImageRequest, ModelTurn, ReferenceImage
from bananaflow.ledger import Ledger
from bananaflow.manifest import read_manifest
from bananaflow.preflight import check_prices, plan_jobs, preflight
from bananaflow.records import ManifestRow
from bananaflow.storage import Store

# --------------------------------------------------------------------------- helpers


def render(settings: Settings, batch: Path, run_id: str) -> list[ManifestRow]:
    """What the generate flow does, minus Prefect: plan, check, render, close the manifest."""
    jobs, decisions = plan_jobs(settings, [], str(batch))
    check_prices(settings, jobs, decisions)

    return render_jobs(settings, jobs, decisions, run_id)


def gen_requests(emu) -> list[dict[str, Any]]:
    return [e for e in emu.control.requests() if e["operation"] == "generateContent"]


def paid_requests(emu) -> int:
    return sum(1 for e in gen_requests(emu) if e["status"] == 200)


def _write(tmp_path: Path, *specs: dict[str, Any]) -> Path:
    path = tmp_path / f"batch-{len(list(tmp_path.glob('batch-*')))}.yaml"
    path.write_text(yaml.safe_dump({"prompts": list(specs)}))
    return path


@pytest.fixture
def settings_for(make_config):
    def make(**over: Any) -> Settings:
        path, _ = make_config(**over)
        return load_settings(path)

    return make


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    """The shipped demo chain and its photo, copied where the test may write next to them."""
    for name in ("demo-edits.yaml", "demo-product.jpg"):
        shutil.copy(shipped_dir() / name, tmp_path / name)
    return tmp_path / "demo-edits.yaml"


# --------------------------------------------------------------------------- the must-show


def test_a_chain_rerun_after_a_crash_between_steps_2_and_3_pays_only_for_step_3(
    emu, settings_for, demo: Path
):
    settings = settings_for()
    tries = settings.generate.retry.max_attempts
    # Steps 1 and 2 are answered; every attempt at step 3 fails with a 500: the run ends there.
    emu.control.force("500", count=tries, backend="aistudio", operation="generateContent", after=2)
    first = render(settings, demo, "20261129T000000Z-edits001")
    assert [(r.edit.step if r.edit else 0, r.status) for r in first] == [
        (1, "uploaded"),
        (2, "uploaded"),
        (3, "failed"),
    ]
    assert paid_requests(emu) == 2 and len(gen_requests(emu)) == 2 + tries

    before = len(gen_requests(emu))
    rows = render(settings, demo, "20261129T000100Z-edits002")
    assert [r.status for r in rows] == ["uploaded"] * 3, [r.error for r in rows]
    new = gen_requests(emu)[before:]
    assert len(new) == 1 and new[0]["status"] == 200  # exactly one paid request: step 3
    assert [r.reused_from_run for r in rows] == [first[0].run_id, first[1].run_id, None]
    assert [r.estimated_usd > 0 for r in rows] == [False, False, True]

    # Step 3's request was the whole conversation, every turn with a role, and the images the
    # model made at steps 1 and 2 went back with the signatures persisted when they were paid.
    step3 = new[0]
    assert step3["roles"] == ["user", "model", "user", "model", "user"]
    assert step3["prompt"] == "Crop to a 4:5 portrait framing with the mug centred"
    store = Store(settings.storage.url)
    ledger = Ledger(store, "reader", claim_ttl_s=60)
    answers = [
        ledger.paid(job_master_key(r.job_id, "aistudio", "gemini-3-pro-image")) for r in rows[:2]
    ]
    signatures = [a.answer.image_signature for a in answers if a and a.answer]
    assert len(signatures) == 2 and step3["signatures"] == signatures

    # The manifest: the chain, each step, its instruction and its parent step.
    manifest = {r.job_id: r for r in read_manifest(store, rows[0].run_id)}
    edits = [manifest[r.job_id].edit for r in rows]
    assert all(e is not None for e in edits)
    chain = {e.chain_id for e in edits if e}
    assert chain == {rows[2].job_id}
    assert [(e.step, e.steps, e.parent_job_id) for e in edits if e] == [
        (1, 3, None),
        (2, 3, rows[0].job_id),
        (3, 3, rows[1].job_id),
    ]
    assert [e.instruction for e in edits if e] == [
        "Make the background pure white",
        "Add a soft shadow under the mug",
        "Crop to a 4:5 portrait framing with the mug centred",
    ]
    assert all(r.references[0].source.endswith("demo-product.jpg") for r in rows)


def test_steps_are_jobs_whose_ids_hash_the_chain_up_to_them(settings_for, demo: Path):
    settings = settings_for()
    jobs, _ = plan_jobs(settings, [], str(demo))
    longer = yaml.safe_load(demo.read_text())
    longer["prompts"][0]["edits"].append("Warm up the colours")
    longer["prompts"].append({**longer["prompts"][0], "id": "other", "edits": ["Make it red"]})
    demo.write_text(yaml.safe_dump(longer))
    more, _ = plan_jobs(settings, [], str(demo))
    # A chain extended by a step keeps its first steps (their images are reused), and a chain
    # with another first instruction shares nothing but the start image.
    assert [j.job_id for j in more[:3]] == [j.job_id for j in jobs]
    assert len(more) == 5 and more[4].job_id not in {j.job_id for j in more[:4]}
    assert [j.edit.earlier_jobs for j in more[:4] if j.edit] == [
        [],
        [more[0].job_id],
        [more[0].job_id, more[1].job_id],
        [more[0].job_id, more[1].job_id, more[2].job_id],
    ]
    assert all(j.references == jobs[0].references for j in more)


# --------------------------------------------------------------------------- validation

CHAIN = {"id": "chain", "start_image": "photo.jpg", "edits": ["make it white"]}


@pytest.mark.parametrize(
    ("spec", "config", "expected"),
    [
        ({"edits": ["make it white", "  "]}, {}, "invalid edits: instruction 2 is blank"),
        ({"edits": []}, {}, "needs at least one instruction"),
        ({"edits": [f"step {i}" for i in range(9)]}, {}, "has 9 steps, over the 8"),
        ({"start_image": None}, {}, "invalid start_image: start_image missing"),
        ({"text": "a mug"}, {}, "an edit chain's prompts are its edits"),
        ({"start_image": "nowhere.jpg"}, {}, "nowhere.jpg' does not exist"),
        (
            {},
            {"models": {"gemini-3-pro-image": {"edits": False}}},
            "gemini-3-pro-image does not take multi-turn edits",
        ),
        ({"delivery": "batch"}, {}, "cannot be bought by batch"),
        (
            {"edits": ["a", "b", "c"]},
            {"models": {"gemini-3-pro-image": {"max_reference_images": 2}}},
            "2 earlier edit steps' images, gemini-3-pro-image takes at most 2",
        ),
    ],
)
def test_a_bad_chain_is_one_line_before_any_request(
    emu, settings_for, tmp_path: Path, spec: dict[str, Any], config: dict[str, Any], expected: str
):
    shutil.copy(shipped_dir() / "demo-product.jpg", tmp_path / "photo.jpg")
    settings = settings_for(**config)
    raw = {k: v for k, v in {**CHAIN, **spec}.items() if v is not None}
    with pytest.raises(InputError) as info:
        preflight(settings, [], str(_write(tmp_path, raw)))
    message = str(info.value)
    assert expected in message and "\n" not in message and "Fix:" in message, message
    assert emu.control.stats()["generation_requests"] == {"aistudio": 0, "vertex": 0}


def test_the_cli_refuses_a_bad_chain_with_exit_2(emu, make_config, tmp_path: Path):
    from typer.testing import CliRunner

    from bananaflow.cli.app import app

    cfg, _ = make_config()
    batch = _write(tmp_path, {"start_image": "photo.jpg", "edits": ["ok", ""]})
    result = CliRunner().invoke(app, ["generate", "--config", cfg, "--batch", str(batch)])
    assert result.exit_code == 2, result.output
    assert "edits" in result.output and "Traceback" not in result.output
    assert emu.control.stats()["generation_requests"] == {"aistudio": 0, "vertex": 0}


# --------------------------------------------------------------------------- Vertex


def test_a_chain_on_vertex_sends_a_role_on_every_turn(emu, settings_for, tmp_path: Path):
    shutil.copy(shipped_dir() / "demo-product.jpg", tmp_path / "photo.jpg")
    settings = settings_for()
    batch = _write(
        tmp_path, {**CHAIN, "backend": "vertex", "edits": ["make it white", "add a shadow"]}
    )
    rows = render(settings, batch, "20261129T000200Z-vertex01")
    assert [r.status for r in rows] == ["uploaded", "uploaded"], [r.error for r in rows]
    assert {r.backend for r in rows} == {"vertex"}
    first, second = gen_requests(emu)
    assert "roles" not in first  # step 1 is one user turn: the photo and the instruction
    assert second["roles"] == ["user", "model", "user"] and all(second["signatures"])


def test_an_image_sent_back_without_its_signature_is_googles_400(emu, settings_for):
    """The emulator validates signatures as Gemini 3 does, so a chain that lost them fails."""
    settings = settings_for()
    photo = (shipped_dir() / "demo-product.jpg").read_bytes()
    image = ReferenceImage(mime_type="image/jpeg", data=photo)
    unsigned = EditTurn(instruction="make it white", image=image, answer=ModelTurn(text="Here."))
    request = ImageRequest(prompt="add a shadow", reference_images=[image], history=[unsigned])

    async def go() -> None:
        backend = create_backend("vertex", settings)
        try:
            await backend.generate(request)
        finally:
            await backend.aclose()

    with pytest.raises(BackendError) as info:
        asyncio.run(go())
    assert info.value.status == 400
    assert "Image part is missing a thought_signature in content position 2, part position 2" in (
        str(info.value)
    )
