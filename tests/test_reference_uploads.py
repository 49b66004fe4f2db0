"""Large references uploaded once and named by file (``fileData``), quality presets that name a
delivery, and Vertex's 7 MB inline limit on an edit chain's earlier images (issue #13).

Core level: jobs are planned with ``plan_jobs`` and rendered with the plain chain functions
against a loopback emulator; its request log and counters say what was uploaded and sent, and
the drawn images show the references arrived. No Prefect.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fixtures.inprocess import render_jobs
from PIL import Image

from bananaflow.backends import create_backend
from bananaflow.config import Settings, load_settings
from bananaflow.emulator import EmulatorControl
from bananaflow.emulator.credentials import write_service_account_file
from bananaflow.errors import InputError
from bananaflow.generation import EditTurn, ImageRequest, ModelTurn, ReferenceImage
from bananaflow.preflight import check_prices, plan_jobs
from bananaflow.promotion import candidates, select
from bananaflow.records import EditStep, ManifestRow
from bananaflow.storage import Store
from bananaflow.tiers import check_jobs

THRESHOLD = 4096  # bytes: the test photos are "large" above it, and small below


def photo(colour: tuple[int, int, int], size: int = 160, noisy: bool = True) -> bytes:
    """A PNG of one colour; ``noisy`` adds a speckled band so it is above ``THRESHOLD``."""
    img = Image.new("RGB", (size, size), colour)
    if noisy:  # incompressible rows at the bottom, below where the thumbnail is sampled
        band = random.Random(size).randbytes(size * 16 * 3)
        img.paste(Image.frombytes("RGB", (size, 16), band), (0, size - 16))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def thumbnail_colours(master: bytes, count: int) -> list[tuple[int, int, int]]:
    """The colours at the centre of the first ``count`` reference thumbnails (1K square)."""
    img = Image.open(io.BytesIO(master)).convert("RGB")
    margin, box = 1024 // 48, 1024 // 10  # imagegen._draw_badges at 1K
    y = 1024 - margin - box // 2
    return [img.getpixel((margin + i * (box + margin) + box // 2, y)) for i in range(count)]


def near(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return all(abs(x - y) < 40 for x, y in zip(a, b, strict=True))


def render(settings: Settings, batch: Path, run_id: str) -> list[ManifestRow]:
    jobs, decisions = plan_jobs(settings, [], str(batch))
    check_prices(settings, jobs, decisions)
    return render_jobs(settings, jobs, decisions, run_id)


def batch_file(tmp_path: Path, name: str, prompts: list[str], refs: list[str]) -> Path:
    path = tmp_path / name
    specs = [{"id": f"p{i}", "text": p, "references": refs} for i, p in enumerate(prompts)]
    path.write_text(yaml.safe_dump({"prompts": specs}))
    return path


def generations(emu: Any) -> list[dict[str, Any]]:
    return [e for e in emu.control.requests() if e["operation"] == "generateContent"]


# --------------------------------------------------------------------------- AI Studio


def test_a_large_reference_is_uploaded_once_reused_across_runs_and_again_when_gone(
    emu, make_config, tmp_path: Path
):
    (tmp_path / "big.png").write_bytes(photo((220, 30, 30)))
    (tmp_path / "small.png").write_bytes(photo((30, 30, 220), size=64, noisy=False))
    assert (tmp_path / "big.png").stat().st_size > THRESHOLD
    assert (tmp_path / "small.png").stat().st_size <= THRESHOLD
    path, out = make_config(references={"upload_above_bytes": THRESHOLD})
    settings = load_settings(path)
    refs = ["big.png", "small.png"]

    # Three jobs of one large photo: one upload, three requests naming it, the small one inline.
    rows = render(
        settings, batch_file(tmp_path, "a.yaml", ["a mug", "a cup", "a jug"], refs), "run-a"
    )
    assert [r.status for r in rows] == ["uploaded"] * 3, [r.error for r in rows]
    stats = emu.wait_idle()
    assert stats["files_uploaded"] == 1
    sent = generations(emu)
    assert len(sent) == 3
    [uri] = {u for e in sent for u in e["file_uris"]}
    assert all(e["file_uris"] == [uri] for e in sent)  # only the large one goes by file
    assert "/files/" in uri and emu.api_key not in uri
    # The model saw both references: the drawn thumbnails are the photos' colours, in order.
    for row in rows:
        got = thumbnail_colours(Store(out).get(row.master_path), 2)
        assert near(got[0], (220, 30, 30)) and near(got[1], (30, 30, 220)), got
    # Where the uri is kept: next to the ledger, without the key.
    [record] = [p for p in Store(out).list("ledger/uploads")]
    text = Store(out).read_text(record)
    assert json.loads(text)["uri"] == uri and emu.api_key not in text
    # The job id is the content's, whichever way it travels.
    inline_settings = load_settings(make_config()[0])
    inline_jobs, _ = plan_jobs(inline_settings, [], str(tmp_path / "a.yaml"))
    assert [j.job_id for j in inline_jobs] == [r.job_id for r in rows]

    # A second run (new jobs, same photo) uploads nothing and names the same file.
    emu.control.reset()
    rows = render(settings, batch_file(tmp_path, "b.yaml", ["a vase"], refs), "run-b")
    assert rows[0].status == "uploaded", rows[0].error
    assert emu.wait_idle()["files_uploaded"] == 0
    assert [e["file_uris"] for e in generations(emu)] == [[uri]]

    # Past its expirationTime (less an hour's margin) it is uploaded again, not named.
    stale = json.loads(text)
    stale["expires_at"] = stale["expires_at"] - 48 * 3600
    Store(out).write_text(record, json.dumps(stale))
    emu.control.reset()
    rows = render(settings, batch_file(tmp_path, "c.yaml", ["a bowl"], refs), "run-c")
    assert rows[0].status == "uploaded", rows[0].error
    assert emu.wait_idle()["files_uploaded"] == 1
    [[fresh]] = [e["file_uris"] for e in generations(emu)]
    assert fresh != uri

    # Gone at Google before its time (deleted: files.get answers 403): uploaded again.
    r = httpx.delete(
        f"{emu.url}/v1beta/{fresh.split('/v1beta/')[1]}", headers={"x-goog-api-key": emu.api_key}
    )
    assert r.status_code == 200
    emu.control.reset()
    rows = render(settings, batch_file(tmp_path, "d.yaml", ["a plate"], refs), "run-d")
    assert rows[0].status == "uploaded", rows[0].error
    assert emu.wait_idle()["files_uploaded"] == 1
    assert generations(emu)[0]["file_uris"] != [fresh]


def test_the_emulator_refuses_a_file_it_does_not_have_like_google(emu):
    body = {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {
                        "fileData": {
                            "mimeType": "image/png",
                            "fileUri": f"{emu.url}/v1beta/files/nope",
                        }
                    },
                    {"text": "a mug"},
                ],
            }
        ]
    }
    r = httpx.post(emu.aistudio_url(), json=body, headers={"x-goog-api-key": emu.api_key})
    assert r.status_code == 403
    assert "files/nope" in r.json()["error"]["message"]
    assert emu.control.stats()["images_rendered"] == 0


# --------------------------------------------------------------------------- Vertex


@pytest.fixture
def vertex_gcs(emulator_factory, gcs_server: str, gcs_bucket, tmp_path: Path):
    """A Vertex config against an emulator that reads gs:// from the GCS emulator; the store,
    the gs:// references and the staging prefix are all in one fresh bucket."""
    server = emulator_factory(batch={"gcs_endpoint": gcs_server})
    bucket, options = gcs_bucket
    key_file = write_service_account_file(
        tmp_path / "sa.json", f"{server.url}/token", server.settings.project
    )
    cfg = {
        "stage": "prod",
        "backends": {
            "vertex": {
                "base_url": server.url,
                "project": server.settings.project,
                "credentials_file": str(key_file),
                "reference_staging": f"{bucket}/staging",
            }
        },
        "generate": {"retry": {"initial_delay_s": 0.01, "max_delay_s": 0.05, "max_attempts": 3}},
        "compress": {"format": "jpeg", "quality": 80, "thumbnails": [128]},
        "storage": {"url": f"{bucket}/out", "options": options},
        "references": {"upload_above_bytes": THRESHOLD},
    }
    path = tmp_path / "vertex.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return load_settings(str(path)), server, bucket, options


def test_vertex_names_gs_references_and_stages_large_local_ones_once(vertex_gcs, tmp_path: Path):
    settings, server, bucket, options = vertex_gcs
    Store(bucket, options).put(
        "photos/green.png", photo((30, 200, 40), size=64, noisy=False), content_type="image/png"
    )
    (tmp_path / "big.png").write_bytes(photo((220, 30, 30)))
    refs = [f"{bucket}/photos/green.png", "big.png"]
    rows = render(
        settings, batch_file(tmp_path, "v.yaml", ["a mug", "a cup"], refs), "20261130T000000Z-v1"
    )
    assert [r.status for r in rows] == ["uploaded"] * 2, [r.error for r in rows]
    control = EmulatorControl(server.url)
    try:
        sent = [e for e in control.requests() if e["operation"] == "generateContent"]
    finally:
        control.close()
    staged = Store(f"{bucket}/staging", options).list()
    assert len(staged) == 1 and staged[0].endswith(".png")
    # The gs:// photo goes as it is (small as it is); the large local one from its staged copy.
    assert [e["file_uris"] for e in sent] == [[refs[0], f"{bucket}/staging/{staged[0]}"]] * 2
    store = Store(settings.storage.url, options)
    for row in rows:
        got = thumbnail_colours(store.get(row.master_path), 2)
        assert near(got[0], (30, 200, 40)) and near(got[1], (220, 30, 30)), got


def test_vertex_refuses_an_earlier_edit_image_over_7_mb_before_sending(emu, make_config):
    settings = load_settings(make_config()[0])
    big = photo((1, 2, 3), size=8, noisy=False) + b"\0" * (7 * 1024 * 1024 + 1)
    turn = EditTurn(
        instruction="make it blue",
        image=ReferenceImage(mime_type="image/png", data=big),
        answer=ModelTurn(text="done"),
    )

    async def ask() -> None:
        backend = create_backend("vertex", settings)
        try:
            await backend.generate(ImageRequest(prompt="now red", history=[turn]))
        finally:
            await backend.aclose()

    with pytest.raises(InputError) as info:
        asyncio.run(ask())
    assert info.value.field == "history[0].image"
    assert "edit step 1's image" in str(info.value) and "7 MB" in str(info.value)
    assert len(str(info.value).splitlines()) == 1
    assert emu.control.requests() == []


# --------------------------------------------------------------------------- presets' delivery


def _presets_settings(**generate: Any) -> Settings:
    over = {
        "generate.quality_presets.draft.delivery": "flex",
        **{f"generate.{k}": v for k, v in generate.items()},
    }
    return load_settings("local", over, environ={})


def test_a_quality_preset_names_a_delivery_below_the_prompt_and_the_run_flag(tmp_path: Path):
    batch = tmp_path / "b.yaml"
    batch.write_text(
        yaml.safe_dump(
            {
                "prompts": [
                    {"id": "preset", "text": "a kite", "quality": "draft"},
                    {"id": "own", "text": "a boat", "quality": "draft", "delivery": "priority"},
                    {"id": "plain", "text": "a kite", "quality": "standard"},
                ]
            }
        )
    )
    settings = _presets_settings(delivery="online")
    jobs, decisions = plan_jobs(settings, [], str(batch))
    got = {j.spec_id: d.delivery for j, d in zip(jobs, decisions, strict=True)}
    assert got["preset"].delivery == "flex"
    assert "generate.quality_presets.draft.delivery" in got["preset"].reason
    assert got["own"].delivery == "priority"  # the prompt's own wins
    assert got["plain"].delivery == "online"  # no preset delivery: generate.delivery
    # The run's --delivery beats the preset (as --size does), not the prompt's own.
    jobs, decisions = plan_jobs(settings, [], str(batch), delivery_override="batch")
    got = {j.spec_id: d.delivery.delivery for j, d in zip(jobs, decisions, strict=True)}
    assert got == {"preset": "batch", "own": "priority", "plain": "batch"}
    # Not part of what the image is: the same job id with or without the preset's delivery.
    plain_jobs, _ = plan_jobs(load_settings("local", environ={}), [], str(batch))
    assert [j.job_id for j in plain_jobs] == [j.job_id for j in jobs]


def test_a_preset_naming_batch_for_an_edit_chain_is_one_line(tmp_path: Path):
    (tmp_path / "mug.png").write_bytes(photo((200, 200, 200), size=64, noisy=False))
    batch = tmp_path / "e.yaml"
    batch.write_text(
        yaml.safe_dump(
            {
                "prompts": [
                    {
                        "id": "chain",
                        "start_image": "mug.png",
                        "edits": ["make it blue", "add a handle"],
                        "quality": "draft",
                    }
                ]
            }
        )
    )
    settings = load_settings(
        "local", {"generate.quality_presets.draft.delivery": "batch"}, environ={}
    )
    jobs, decisions = plan_jobs(settings, [], str(batch))
    with pytest.raises(InputError) as info:
        check_jobs(settings, jobs, decisions)
    text = str(info.value)
    assert "cannot be bought by batch" in text and "quality_presets.draft.delivery" in text
    assert len(text.splitlines()) == 1
    # A run flag naming a sync delivery makes the same chain fine.
    jobs, decisions = plan_jobs(settings, [], str(batch), delivery_override="online")
    check_jobs(settings, jobs, decisions)


# --------------------------------------------------------------------------- promotion of edits


def test_an_edit_step_is_refused_for_promotion_in_one_line():
    def row(job_id: str, edit: EditStep | None = None) -> ManifestRow:
        return ManifestRow(
            run_id="20261130T000000Z-dev", job_id=job_id, output_key=job_id, status="uploaded",
            stage="dev", edit=edit,
        )  # fmt: skip

    plain = row("aaaaaaaa11111111")
    step = row(
        "bbbbbbbb22222222",
        EditStep(chain_id="cccc", step=2, steps=3, instructions=["a", "b"], earlier_jobs=["x"]),
    )
    assert candidates([plain, step]) == [plain]  # neither in the form nor in all-uploaded
    assert select([plain, step], "all-uploaded", []) == [plain]
    with pytest.raises(InputError) as info:
        select([plain, step], "list", [plain.job_id, step.job_id])
    text = str(info.value)
    assert "bbbbbbbb22222222 (step 2 of edit chain cccc)" in text and "--config prod" in text
    assert len(text.splitlines()) == 1
