"""Delivery as a routing choice: online, flex and priority on both backends.

Core-level on purpose: the chain's generate step runs against the emulator app in-process
(``httpx.ASGITransport``, ``time_scale`` 0), so a shed flex call, a downgraded priority call and
their prices are checked in milliseconds. One loopback test sends the tiers over a real socket.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import google.auth.credentials
import httpx
import pytest
from fixtures.emulator import EmulatorHandle, emulator_test_settings
from fixtures.pipeline import emulator_backends

from bananaflow.backends import create_backend
from bananaflow.backends.wire import build_generate_body, vertex_tier_headers
from bananaflow.chain import ChainContext, JobFailed, generate_master, reserve_budget
from bananaflow.chunking import split
from bananaflow.config import RouteSettings, Settings, load_settings
from bananaflow.delivery import billed_delivery, resolve_delivery
from bananaflow.emulator.app import create_app
from bananaflow.emulator.faults import ForcedFault
from bananaflow.errors import ConfigError, InputError
from bananaflow.expand import ImageJob, PromptSpec, expand, load_batch
from bananaflow.expand.identity import spec_hash
from bananaflow.generation import BackendName, ImageRequest
from bananaflow.ledger import Ledger
from bananaflow.manifest import ManifestWriter
from bananaflow.preflight import check_prices
from bananaflow.pricing import Budget
from bananaflow.routing import partition_by_delivery, route
from bananaflow.spool import Spool
from bananaflow.storage import Store

pytestmark = pytest.mark.anyio

PRO_1K = 0.134  # the shipped list price of gemini-3-pro-image at 1K


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def job(delivery: str | None = None, prompt: str = "a lighthouse at dusk") -> ImageJob:
    spec = PromptSpec(text=prompt, delivery=delivery)
    settings = Settings()
    return expand([spec], settings.expand, settings.generate)[0]


# --------------------------------------------------------------------------- resolution


def test_job_beats_run_override_beats_config() -> None:
    cfg = RouteSettings()
    mine = resolve_delivery(job("priority"), "online", cfg, override="flex")
    assert mine.delivery == "priority" and mine.reason.startswith("job → priority")
    run = resolve_delivery(job(), "online", cfg, override="flex")
    assert run.delivery == "flex" and run.reason.startswith("run override → flex")
    assert run.fallback == "online" and "route.delivery_fallback.flex" in run.reason
    config = resolve_delivery(job(), "priority", cfg)
    assert config.delivery == "priority" and config.fallback is None
    assert config.reason == "config → priority (generate.delivery)"
    off = resolve_delivery(job(), "flex", RouteSettings(delivery_fallback={}))
    assert off.fallback is None and "shed" not in off.reason


def test_route_records_the_delivery_beside_the_backend() -> None:
    decision = route(job(), "prod", RouteSettings(), delivery="flex")
    assert decision.backends == ["vertex"] and decision.delivery.delivery == "flex"
    forced = route(
        job("batch"), "dev", RouteSettings(), delivery="flex", delivery_override="online"
    )
    assert forced.delivery.delivery == "batch"


def test_delivery_changes_neither_the_job_id_nor_the_spec_hash() -> None:
    # Golden values from before delivery existed: a re-run must still find what was paid for.
    plain = PromptSpec(text="a lighthouse at dusk", image_sizes=["1K", "2K"], variants=2)
    assert spec_hash(plain) == "0bd676ec5034"
    ids = ["3dce9c72d4ae9046", "0fc3f7f1242aac3b", "fba96e96d0ffc435", "909fdce0eba39cea"]
    settings = Settings()
    assert [j.job_id for j in expand([plain], settings.expand, settings.generate)] == ids
    flex = plain.model_copy(update={"delivery": "flex"})
    assert spec_hash(flex) == spec_hash(plain)
    jobs = expand([flex], settings.expand, settings.generate)
    assert [j.job_id for j in jobs] == ids and {j.delivery for j in jobs} == {"flex"}


def test_partition_hands_batch_jobs_to_the_batch_delivery() -> None:
    jobs = [job("batch", "one"), job(None, "two"), job("flex", "three")]
    decisions = [route(j, "dev", RouteSettings()) for j in jobs]
    synchronous, batch = partition_by_delivery(jobs, decisions)
    assert [j.prompt for j, _ in synchronous] == ["two", "three"]
    assert [j.prompt for j, _ in batch] == ["one"]


def test_a_bad_delivery_is_one_line_naming_the_field(tmp_path: Path) -> None:
    from bananaflow.cli.app import _parameters

    with pytest.raises(Exception, match=r"^invalid --delivery: Input should be 'from config'"):
        _parameters({"delivery": "cheap"})
    batch = tmp_path / "b.yaml"
    batch.write_text("- text: a fox\n  delivery: cheap\n")
    with pytest.raises(InputError) as info:
        load_batch(batch)
    assert str(info.value).startswith("invalid delivery: 'cheap' is not allowed")
    assert "\n" not in str(info.value) and "'online'" in str(info.value)
    with pytest.raises(ConfigError) as cfg:
        load_settings("local", {"generate.delivery": "cheap"}, environ={})
    assert "generate.delivery" in str(cfg.value) and "\n" not in str(cfg.value)


def test_the_run_summary_shows_what_was_bought_instead() -> None:
    from bananaflow.cli.app import _delivery_cell
    from bananaflow.records import ManifestRow

    row = ManifestRow(run_id="r", job_id="j", output_key="k", status="uploaded", stage="dev")
    assert _delivery_cell(row.model_copy(update={"delivery": "flex"})) == "flex"
    shed = row.model_copy(update={"delivery": "flex", "billed_delivery": "online"})
    assert _delivery_cell(shed) == "flex → online"


# --------------------------------------------------------------------------- prices


def test_prices_follow_the_delivery_in_estimate_and_budget(tmp_path: Path) -> None:
    settings = Settings(budget={"max_usd": 1.0})
    jobs = [job("flex", "a"), job("priority", "b"), job(None, "c")]
    decisions = [route(j, "dev", settings.route) for j in jobs]
    (chunk,) = split(jobs, decisions, 10, settings)
    assert chunk.max_usd == pytest.approx(PRO_1K * (0.5 + 1.8 + 1.0))
    ctx = _bare_context(settings, tmp_path)
    for j, d in zip(jobs, decisions, strict=True):
        assert reserve_budget(ctx, j, d) is None
    assert ctx.reserved == pytest.approx(
        {jobs[0].job_id: PRO_1K * 0.5, jobs[1].job_id: PRO_1K * 1.8, jobs[2].job_id: PRO_1K}
    )
    unpriced = settings.model_copy(update={"delivery_prices": {"online": 1.0}})
    with pytest.raises(ConfigError, match=r"delivery_prices\.flex"):
        check_prices(unpriced, jobs[:1], decisions[:1])


def test_billed_delivery_follows_what_google_reports() -> None:
    assert billed_delivery("priority", "standard") == "online"  # downgraded: billed standard
    assert billed_delivery("flex", "ON_DEMAND_FLEX") == "flex"
    assert billed_delivery("priority", "ON_DEMAND") == "online"
    assert billed_delivery("priority", None) == "priority"
    assert billed_delivery("flex", "SOMETHING_NEW") == "flex"


# --------------------------------------------------------------------------- wire


def test_tier_fields_sit_where_the_sdk_puts_them() -> None:
    flex = ImageRequest(prompt="x", delivery="flex")
    assert build_generate_body(flex, vertex=False)["serviceTier"] == "flex"
    assert "serviceTier" not in build_generate_body(flex, vertex=False)["generationConfig"]
    assert "serviceTier" not in build_generate_body(flex, vertex=True)
    assert "serviceTier" not in build_generate_body(ImageRequest(prompt="x"), vertex=False)
    assert vertex_tier_headers("priority") == {
        "X-Vertex-AI-LLM-Request-Type": "shared",
        "X-Vertex-AI-LLM-Shared-Request-Type": "priority",
    }
    assert vertex_tier_headers("online") == {}


# --------------------------------------------------------------------------- the chain


class _Token(google.auth.credentials.Credentials):
    """A token the in-process emulator issued (google-auth cannot reach an ASGI app)."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def refresh(self, request: Any) -> None:  # pragma: no cover - the token stays valid
        pass


class World:
    """The in-process emulator, a store and a run context for the generate step."""

    def __init__(self, app: Any, ctx: ChainContext, sent: list[httpx.Request]) -> None:
        self.app = app
        self.ctx = ctx
        self.sent = sent

    @property
    def emulator(self) -> Any:
        return self.app.state.emulator

    def force(self, fault: str, **params: Any) -> None:
        self.emulator.faults.add(ForcedFault(fault, 1, params=params))

    async def master(self, j: ImageJob, backend: BackendName = "aistudio") -> Any:
        stage = "dev" if backend == "aistudio" else "prod"
        decision = route(j, stage, self.ctx.settings.route, delivery="online")
        assert reserve_budget(self.ctx, j, decision) is None
        return await generate_master(self.ctx, j, decision)


def _bare_context(settings: Settings, tmp_path: Path, backends: Any = None) -> ChainContext:
    store = Store(f"file://{tmp_path}/out")
    return ChainContext(
        settings=settings,
        run_id="r1",
        store=store,
        ledger=Ledger(store, "r1", claim_ttl_s=60),
        spool=Spool(store.url, tmp_path / "spool"),
        manifest=ManifestWriter(store, "r1"),
        budget=Budget(settings.budget.max_usd),
        backends=backends or {},
        work_dir=tmp_path,
    )


@pytest.fixture
async def world(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[World]:
    over = getattr(request, "param", {})
    fast = {"image_format": "jpeg"}  # PNG only costs time here
    profiles = {b: {**fast, **over.get("profiles", {}).get(b, {})} for b in ("aistudio", "vertex")}
    emu = emulator_test_settings(time_scale=0.0, profiles=profiles)
    app = create_app(emu)
    sent: list[httpx.Request] = []

    async def keep(req: httpx.Request) -> None:
        sent.append(req)

    data: dict[str, Any] = {
        "backends": {
            "aistudio": {"base_url": "http://emulator.local", "api_key": emu.api_keys[0]},
            "vertex": {"base_url": "http://emulator.local", "project": emu.project},
        },
        "generate": {"retry": {"initial_delay_s": 0.01, "max_delay_s": 0.02, "jitter": False}},
        "compress": {"format": "jpeg"},
        **over.get("settings", {}),
    }
    settings = Settings.model_validate(data)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, event_hooks={"request": [keep]}) as client:
        creds = _Token(app.state.emulator.tokens.issue())
        backends = {
            "aistudio": create_backend("aistudio", settings, client=client),
            "vertex": create_backend("vertex", settings, client=client, credentials=creds),
        }
        yield World(app, _bare_context(settings, tmp_path, backends), sent)


def _body(req: httpx.Request) -> dict[str, Any]:
    return json.loads(req.content)


async def test_flex_on_aistudio_is_sent_echoed_and_priced_at_half(world: World) -> None:
    master = await world.master(job("flex"))
    (req,) = world.sent
    assert _body(req)["serviceTier"] == "flex"
    assert master.service_tier == "flex" and master.billed_delivery == "flex"
    assert master.estimated_usd == pytest.approx(PRO_1K * 0.5)
    assert world.ctx.budget.spent == pytest.approx(PRO_1K * 0.5)
    assert [(r.delivery, r.outcome) for r in master.routes] == [("flex", "ok")]


async def test_priority_on_vertex_sends_the_headers_and_reads_the_traffic_type(
    world: World,
) -> None:
    master = await world.master(job("priority"), "vertex")
    (req,) = world.sent
    assert req.headers["x-vertex-ai-llm-request-type"] == "shared"
    assert req.headers["x-vertex-ai-llm-shared-request-type"] == "priority"
    assert "serviceTier" not in _body(req)
    assert master.service_tier == "ON_DEMAND_PRIORITY" and master.billed_delivery == "priority"
    assert master.estimated_usd == pytest.approx(PRO_1K * 1.8)


@pytest.mark.parametrize("backend", ["aistudio", "vertex"])
async def test_a_downgraded_priority_call_is_billed_at_standard(
    world: World, backend: BackendName
) -> None:
    world.force("priority_downgrade")
    master = await world.master(job("priority"), backend)
    assert master.billed_delivery == "online"
    assert master.service_tier == ("standard" if backend == "aistudio" else "ON_DEMAND")
    assert master.estimated_usd == pytest.approx(PRO_1K)
    assert world.ctx.budget.spent == pytest.approx(PRO_1K)  # not the 1.8x that was held
    assert world.ctx.budget.reserved == 0
    assert "billed as online" in (master.delivery_fallback or "")


@pytest.mark.parametrize("status", [429, 503])
async def test_a_shed_flex_call_falls_back_online_and_says_why(world: World, status: int) -> None:
    world.force("flex_shed", status=status)
    master = await world.master(job("flex"))
    assert [(r.delivery, r.outcome) for r in master.routes] == [("flex", "shed"), ("online", "ok")]
    assert [_body(r).get("serviceTier") for r in world.sent] == ["flex", None]
    assert master.delivery_fallback == (
        f"flex shed by aistudio (HTTP {status}) → online (route.delivery_fallback.flex)"
    )
    assert master.billed_delivery == "online" and master.estimated_usd == pytest.approx(PRO_1K)
    assert world.ctx.budget.spent == pytest.approx(PRO_1K) and world.ctx.budget.reserved == 0
    assert world.emulator.stats()["faults_applied"] == {"flex_shed": 1}


@pytest.mark.parametrize(
    "world", [{"settings": {"route": {"delivery_fallback": {}}}}], indirect=True
)
async def test_without_a_fallback_a_shed_flex_call_is_retried_as_flex(world: World) -> None:
    world.force("flex_shed", status=503)
    master = await world.master(job("flex"))
    assert [_body(r).get("serviceTier") for r in world.sent] == ["flex", "flex"]
    assert master.billed_delivery == "flex" and master.delivery_fallback is None
    assert master.routes[0].retried == ["unavailable"]


@pytest.mark.parametrize("world", [{"settings": {"budget": {"max_usd": 0.1}}}], indirect=True)
async def test_a_fallback_the_budget_cannot_pay_for_is_not_bought(world: World) -> None:
    world.force("flex_shed", status=503)
    with pytest.raises(JobFailed) as info:
        await world.master(job("flex"))
    assert info.value.status == "skipped_budget" and "budget.max_usd 0.1" in str(info.value)
    assert len(world.sent) == 1 and world.ctx.budget.reserved == 0
    assert world.ctx.budget.spent == 0


async def test_a_batch_job_is_refused_not_bought_online(world: World) -> None:
    with pytest.raises(JobFailed) as info:
        await world.master(job("batch"))
    assert info.value.kind == "WrongDelivery" and "Batch API" in str(info.value)
    assert world.sent == [] and world.ctx.budget.reserved == 0


@pytest.mark.parametrize(
    "world",
    [{"profiles": {"aistudio": {"flex_shed_rate": 0.5}}}],
    indirect=True,
)
async def test_emulated_shedding_is_seeded_and_only_hits_flex(world: World) -> None:
    backend = world.ctx.backends["aistudio"]
    outcomes = []
    for i in range(8):
        try:
            await backend.generate(ImageRequest(prompt=f"shed {i}", delivery="flex"))
            outcomes.append("ok")
        except Exception as err:
            outcomes.append(type(err).__name__)
    assert set(outcomes) == {"ok", "Unavailable"}  # some shed, some served (seed fixed)
    for i in range(2):
        await backend.generate(ImageRequest(prompt=f"standard {i}"))  # never shed
    assert world.emulator.stats()["faults_applied"]["random:flex_shed"] == outcomes.count(
        "Unavailable"
    )


# --------------------------------------------------------------------------- loopback


async def test_tiers_travel_over_a_real_socket(
    emu: EmulatorHandle, api_key: str, service_account_file: Path
) -> None:
    settings = Settings.model_validate(
        {"backends": emulator_backends(emu, api_key, service_account_file)}
    )
    for name, delivery, reported in (
        ("aistudio", "priority", "priority"),
        ("vertex", "flex", "ON_DEMAND_FLEX"),
    ):
        backend = create_backend(name, settings)  # type: ignore[arg-type]
        try:
            image = await backend.generate(
                ImageRequest(prompt=f"{name} {delivery}", delivery=delivery)  # type: ignore[arg-type]
            )
        finally:
            await backend.aclose()
        assert image.service_tier == reported
    served = [
        e.get("service_tier") for e in emu.control.requests() if e["operation"] == "generateContent"
    ]
    assert served == ["priority", "flex"]


# --------------------------------------------------------------------------- the flow


@pytest.mark.usefixtures("prefect_api")
def test_the_flow_buys_each_job_by_its_delivery(
    emu: EmulatorHandle, make_config: Any, tmp_path: Path
) -> None:
    from bananaflow.flows.generate import generate_images
    from bananaflow.manifest import read_manifest
    from bananaflow.parameters import GenerateParameters

    batch = tmp_path / "tiers.yaml"
    batch.write_text(
        "- {id: run, text: a flex fox}\n"
        "- {id: mine, text: a priority owl, delivery: priority}\n"
        "- {id: later, text: a batch bear, delivery: batch}\n"
    )
    config, out = make_config()
    emu.control.force("flex_shed", 1, backend="aistudio", status=503)
    params = GenerateParameters(config=config, batch_file=str(batch), delivery="flex")
    summary = asyncio.run(generate_images(params))

    rows = {r.spec_id: r for r in read_manifest(Store(out), summary.run_id)}
    assert {k: (r.status, r.delivery, r.billed_delivery) for k, r in rows.items()} == {
        "run": ("uploaded", "flex", "online"),
        "mine": ("uploaded", "priority", "priority"),
        "later": ("uploaded", "batch", "batch"),  # bought through the Batch API
    }
    assert rows["run"].delivery_reason.startswith("run override → flex")
    assert "flex shed by aistudio (HTTP 503) → online" in (rows["run"].delivery_fallback or "")
    assert rows["mine"].delivery_reason.startswith("job → priority")
    assert rows["later"].batch  # the provider batch that bought it
    assert summary.estimated_usd == pytest.approx(PRO_1K * (1.0 + 1.8 + 0.5))
    calls = [e for e in emu.control.requests() if e.get("operation") == "generateContent"]
    served = [e.get("service_tier") for e in calls if e.get("service_tier")]
    assert sorted(served) == ["priority", "standard"]  # the shed call never got a tier
