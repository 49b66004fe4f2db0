"""Batch delivery leftovers on the in-process emulator: a create refused with 429 and asked
again (one batch in all), Vertex's QUEUED and CANCELLING states, and reference images carried
inside batch lines."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fixtures.emulator import emulator_test_settings
from fixtures.inprocess import KEY, STEPS, URL, Bar, opened

from bananaflow.batch.deliver import deliver
from bananaflow.config import Settings
from bananaflow.emulator.app import create_app
from bananaflow.emulator.faults import ForcedFault
from bananaflow.expand import ImageJob, PromptSpec, expand
from bananaflow.records import ManifestRow
from bananaflow.routing import route
from bananaflow.storage import Store


def aistudio_settings(**batch: Any) -> Settings:
    return Settings.model_validate(
        {
            "backends": {"aistudio": {"base_url": URL, "api_key": KEY}},
            "batch": {"poll_s": 0.001, "max_poll_s": 0.01, **batch},
            "generate": {"delivery": "batch"},
        }
    )


def deliver_on(
    app: Any, tmp: Path, settings: Settings, jobs: list[ImageJob], *, wait: bool = True
) -> list[ManifestRow]:
    """The jobs through batch delivery against the in-process emulator."""
    decisions = [route(j, settings.stage, settings.route) for j in jobs]

    async def go() -> list[ManifestRow]:
        async with opened(app, tmp, "r1", settings) as (ctx, api):
            return await deliver(
                ctx, jobs, decisions, STEPS, Bar(), wait=wait, providers=lambda _b: api
            )

    return asyncio.run(go())


def test_a_create_refused_with_429_is_asked_again_and_makes_one_batch(tmp_path: Path) -> None:
    app = create_app(emulator_test_settings(time_scale=0.0001))
    state = app.state.emulator
    state.faults.add(ForcedFault("batch_quota", 2))  # the first two creates are refused
    settings = aistudio_settings(
        create_retry={"initial_delay_s": 0.001, "max_delay_s": 0.01, "jitter": False}
    )
    jobs = expand(
        [PromptSpec(text=t) for t in ("queued one", "queued two")],
        settings.expand,
        settings.generate,
    )
    rows = deliver_on(app, tmp_path, settings, jobs)
    assert [r.status for r in rows] == ["uploaded", "uploaded"]
    creates = [e for e in state.requests() if e["operation"] == "batchGenerateContent"]
    assert [e["status"] for e in creates] == [429, 429, 200]
    assert state.stats()["batches_created"] == 1
    assert state.stats()["faults_pending"] == []
    assert state.stats()["generation_requests"]["aistudio"] == 0


def test_the_concurrent_batch_quota_refuses_until_a_batch_ends(tmp_path: Path) -> None:
    """With one batch unfinished and a quota of one, a create is refused (429) through every
    retry: the run fails with that error and its jobs' claims are released; once the first
    batch ended the same jobs go through."""
    import pytest

    from bananaflow.errors import QuotaExceeded

    app = create_app(
        emulator_test_settings(
            time_scale=0.0001,
            batch={"max_concurrent_batches": 1, "pending_s": 1e9},
        )
    )
    state = app.state.emulator
    settings = aistudio_settings(
        create_retry={"initial_delay_s": 0.001, "max_attempts": 2, "jitter": False}
    )

    def jobs_for(*texts: str) -> list[ImageJob]:
        return expand([PromptSpec(text=t) for t in texts], settings.expand, settings.generate)

    rows = deliver_on(app, tmp_path / "a", settings, jobs_for("first in"), wait=False)
    assert [r.status for r in rows] == ["pending_batch"]
    with pytest.raises(QuotaExceeded):
        deliver_on(app, tmp_path / "b", settings, jobs_for("second in"))
    state.settings.batch.pending_s = 0.0  # the first batch ends: the quota frees
    rows = deliver_on(app, tmp_path / "b", settings, jobs_for("second in"))
    assert [r.status for r in rows] == ["uploaded"]
    creates = [e["status"] for e in state.requests() if e["operation"] == "batchGenerateContent"]
    assert creates == [200, 429, 429, 200] and state.stats()["batches_created"] == 2


# ---------------------------------------------------------------------------- Vertex states


def _vertex(tmp_path: Path, emulator_factory: Any, **batch: Any) -> tuple[Any, Settings]:
    """A loopback emulator (the Vertex token path is real google-auth) and settings whose
    staging and store are ``file://`` folders the emulator reads and writes directly."""
    from bananaflow.emulator.credentials import write_service_account_file

    server = emulator_factory(time_scale=0.0001, batch=batch)
    sa = write_service_account_file(
        tmp_path / "sa.json", server.url + "/token", server.settings.project
    )
    settings = Settings.model_validate(
        {
            "stage": "prod",
            "backends": {
                "vertex": {
                    "base_url": server.url,
                    "project": server.settings.project,
                    "credentials_file": str(sa),
                }
            },
            "storage": {"url": f"file://{tmp_path}/out"},
            "batch": {
                "poll_s": 0.001,
                "max_poll_s": 0.01,
                "vertex_staging": f"file://{tmp_path}/staging",
                "create_retry": {"initial_delay_s": 0.001, "jitter": False},
            },
            "generate": {"delivery": "batch"},
        }
    )
    return server, settings


def test_vertex_queued_then_cancelling_are_waited_through(
    tmp_path: Path, emulator_factory: Any
) -> None:
    """A QUEUED job is pending to the client (jobs wait, nothing ends); a cancelled job is
    CANCELLING for a while, and its jobs end only when it is CANCELLED."""
    from bananaflow.batch.book import BatchBook
    from bananaflow.batch.collect import look
    from bananaflow.batch.deliver import finish
    from bananaflow.batch.provider import ProviderPool
    from bananaflow.chain import open_context

    server, settings = _vertex(
        tmp_path, emulator_factory, vertex_queued_s=1e9, vertex_cancelling_s=1e9
    )
    clock = server.settings.batch
    jobs = expand(
        [PromptSpec(text=t) for t in ("v queued", "v cancelled")],
        settings.expand,
        settings.generate,
    )
    decisions = [route(j, "prod", settings.route) for j in jobs]

    async def go() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        pool = ProviderPool(settings)
        ctx = open_context(settings, "rq", {"vertex"})
        try:
            api = pool("vertex")
            rows = await deliver(
                ctx, jobs[:1], decisions[:1], STEPS, Bar(), wait=False, providers=pool
            )
            seen["submitted"] = [r.status for r in rows]
            (queued,) = BatchBook(ctx.store).pending()
            seen["queued"] = (await look(ctx, api, queued))[0].state
            seen["queued_finish"] = await finish(ctx, api, queued, STEPS, Bar())
            clock.vertex_queued_s, clock.pending_s, clock.running_s = 0.0, 0.0, 0.0
            done = await finish(ctx, api, queued, STEPS, Bar())
            seen["queued_done"] = [r.status for r in done or []]

            clock.pending_s = 1e9
            await deliver(ctx, jobs[1:], decisions[1:], STEPS, Bar(), wait=False, providers=pool)
            (held,) = BatchBook(ctx.store).pending()
            await api.cancel(held.name)
            seen["cancelling"] = (await look(ctx, api, held))[0].state
            seen["cancelling_finish"] = await finish(ctx, api, held, STEPS, Bar())
            clock.vertex_cancelling_s = 0.0
            ended = await finish(ctx, api, held, STEPS, Bar())
            seen["cancelled"] = [(r.status, r.error_kind) for r in ended or []]
        finally:
            await ctx.aclose()
            await pool.aclose()
        return seen

    seen = asyncio.run(go())
    assert seen["submitted"] == ["pending_batch"]
    assert seen["queued"] == "queued" and seen["queued_finish"] is None
    assert seen["queued_done"] == ["uploaded"]
    assert seen["cancelling"] == "cancelling" and seen["cancelling_finish"] is None
    assert seen["cancelled"] == [("failed", "BatchCancelled")]


def test_vertex_jobs_past_the_running_limit_stay_queued_until_one_ends(
    tmp_path: Path, emulator_factory: Any
) -> None:
    """With ``vertex_max_running_jobs`` 1, a second job is QUEUED while the first runs (not
    for a time: the first runs for 1e9 s until the test lets it end); then both finish and
    every job is uploaded, through the client's ordinary QUEUED handling."""
    from bananaflow.batch.book import BatchBook
    from bananaflow.batch.collect import look
    from bananaflow.batch.deliver import finish
    from bananaflow.batch.provider import ProviderPool
    from bananaflow.chain import open_context

    server, settings = _vertex(
        tmp_path, emulator_factory, vertex_max_running_jobs=1, pending_s=0.0, running_s=1e9
    )
    clock = server.settings.batch
    jobs = expand(
        [PromptSpec(text=t) for t in ("v first", "v second")], settings.expand, settings.generate
    )
    decisions = [route(j, "prod", settings.route) for j in jobs]

    async def go() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        pool = ProviderPool(settings)
        ctx = open_context(settings, "rl", {"vertex"})
        try:
            api = pool("vertex")
            names: list[str] = []
            for i in (0, 1):
                await deliver(
                    ctx,
                    jobs[i : i + 1],
                    decisions[i : i + 1],
                    STEPS,
                    Bar(),
                    wait=False,
                    providers=pool,
                )
                names += [r.name for r in BatchBook(ctx.store).pending() if r.name not in names]
            records = {r.name: r for r in BatchBook(ctx.store).pending()}
            first, second = (records[n] for n in names)
            seen["states"] = [(await look(ctx, api, r))[0].state for r in (first, second)]
            seen["second_finish"] = await finish(ctx, api, second, STEPS, Bar())
            clock.running_s = 0.0  # the first job ends; its slot goes to the second
            rows = [await finish(ctx, api, r, STEPS, Bar()) for r in (second, first)]
            seen["done"] = sorted(row.status for done in rows for row in done or [])
        finally:
            await ctx.aclose()
            await pool.aclose()
        return seen

    seen = asyncio.run(go())
    assert seen["states"] == ["running", "queued"] and seen["second_finish"] is None
    assert seen["done"] == ["uploaded", "uploaded"]
    assert server.state.stats()["batches_created"] == 2
    assert {b.state for b in server.state.asyncs.batches.values()} == {"SUCCEEDED"}


def test_wait_for_polls_a_cancel_through_cancelling(tmp_path: Path, emulator_factory: Any) -> None:
    """Vertex's bare 429 on create is asked again (one job made); past batch.max_wait_s the
    client cancels and keeps polling through CANCELLING: the job ends cancelled in this run
    instead of being left pending."""
    server, settings = _vertex(tmp_path, emulator_factory, pending_s=1e9, vertex_cancelling_s=20)
    server.state.faults.add(ForcedFault("batch_quota", 1, backend="vertex"))
    settings = settings.model_copy(
        update={"batch": settings.batch.model_copy(update={"max_wait_s": 0.001})}
    )
    from bananaflow.chain import open_context

    jobs = expand([PromptSpec(text="v too slow")], settings.expand, settings.generate)
    decisions = [route(j, "prod", settings.route) for j in jobs]

    async def go() -> list[ManifestRow]:
        ctx = open_context(settings, "rw", {"vertex"})
        try:
            return await deliver(ctx, jobs, decisions, STEPS, Bar(), wait=True)
        finally:
            await ctx.aclose()

    (row,) = asyncio.run(go())
    assert row.status == "failed" and row.error_kind == "BatchCancelled"
    (batch,) = server.state.asyncs.batches.values()
    assert batch.state == "CANCELLED" and batch.cancel_wall is not None
    log = server.state.requests()
    assert [e["status"] for e in log if e["operation"] == "batchPredictionJobs"] == [429, 200]


# ---------------------------------------------------------------------------- references


def _png(colour: tuple[int, int, int]) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buf, "PNG")
    return buf.getvalue()


def test_a_batch_job_with_a_reference_carries_it_inline(tmp_path: Path) -> None:
    """The JSONL line holds the reference as inlineData, and the emulator's drawing of the
    answer shows it arrived (its thumbnail strip, bottom left, in the reference's colour)."""
    import io
    import json

    from PIL import Image

    from bananaflow.expand import ReferenceResolver
    from bananaflow.imagetype import identify

    red = (230, 20, 20)
    (tmp_path / "red.png").write_bytes(_png(red))
    app = create_app(emulator_test_settings(time_scale=0.0001))
    settings = aistudio_settings()
    specs = [
        PromptSpec(text="the red product", references=[str(tmp_path / "red.png")]),
        PromptSpec(text="no reference"),
    ]
    jobs = expand(specs, settings.expand, settings.generate, ReferenceResolver(settings.storage))
    assert len(jobs[0].references) == 1
    rows = {r.job_id: r for r in deliver_on(app, tmp_path / "out", settings, jobs)}
    assert [rows[j.job_id].status for j in jobs] == ["uploaded", "uploaded"]
    state = app.state.emulator
    assert state.stats()["generation_requests"]["aistudio"] == 0  # bought in the batch

    (batch,) = state.asyncs.batches.values()
    sent = {ln.key: ln.request for ln in batch.lines}
    parts = sent[jobs[0].job_id]["contents"][0]["parts"]
    assert parts[0]["inlineData"]["mimeType"] == "image/png" and parts[-1]["text"]
    assert all("inlineData" not in p for p in sent[jobs[1].job_id]["contents"][0]["parts"])
    json.dumps(sent)

    store = Store(f"file://{tmp_path}/out")
    for job, expect_red in ((jobs[0], True), (jobs[1], False)):
        data = store.get(rows[job.job_id].master_path)
        image = Image.open(io.BytesIO(data)).convert("RGB")
        width = identify(data).width
        margin, box = width // 48, width // 10  # the strip's geometry (imagegen._draw_badges)
        pixel = image.getpixel((margin + box // 2, image.height - margin - box // 2))
        near = all(abs(a - b) < 40 for a, b in zip(pixel, red, strict=True))
        assert near is expect_red, (job.prompt, pixel)


def test_vertex_batch_lines_ask_for_the_published_jpeg_like_online() -> None:
    """The line builder is the online one: Vertex lines carry imageOutputOptions (JPEG at the
    compress quality), AI Studio lines do not, and neither carries a service tier."""
    from bananaflow.batch.lines import request_line
    from bananaflow.chain.request import image_request, provider_encoding

    settings = Settings.model_validate({"compress": {"format": "jpeg", "quality": 77}})
    (job,) = expand([PromptSpec(text="a jug")], settings.expand, settings.generate)
    vertex = request_line(job, "gemini-3-pro-image", "vertex", settings)["request"]
    assert vertex["generationConfig"]["imageConfig"]["imageOutputOptions"] == {
        "mimeType": "image/jpeg",
        "compressionQuality": 77,
    }
    studio = request_line(job, "gemini-3-pro-image", "aistudio", settings)
    assert "imageOutputOptions" not in studio["request"]["generationConfig"]["imageConfig"]
    assert "serviceTier" not in studio["request"] and studio["key"] == job.job_id
    online = image_request(
        job, "gemini-3-pro-image", [], "online", provider_encoding("vertex", settings)
    )
    from bananaflow.backends.wire import build_generate_body

    expected = build_generate_body(online, vertex=True)
    assert {k: v for k, v in vertex.items() if k != "labels"} == expected
