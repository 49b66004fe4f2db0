"""Vertex Provisioned Throughput: spillover, dedicated (and its fallback) and shared.

Core-level: the chain's generate step against the in-process emulator (``time_scale`` 0, so the
emulator's PT order is a fixed number of images and nothing here depends on the clock), reusing
``test_delivery``'s world. One loopback test checks the header on a real socket, and only to
Vertex.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fixtures.emulator import EmulatorHandle
from fixtures.inprocess import KEY, URL
from fixtures.pipeline import emulator_backends
from test_delivery import PRO_1K, World, job, world  # noqa: F401  (world: the fixture)

from bananaflow.backends import create_backend
from bananaflow.chain import JobFailed
from bananaflow.config import Settings, load_settings
from bananaflow.errors import ConfigError, InputError, QuotaExceeded
from bananaflow.generation import ImageRequest
from bananaflow.preflight import check_prices
from bananaflow.provisioned import pool_for
from bananaflow.routing import route

pytestmark = pytest.mark.anyio

PT = "x-vertex-ai-llm-request-type"


def _with(order: int, **vertex: Any) -> dict[str, Any]:
    """A world whose emulated project bought ``order`` PT images, with these Vertex settings
    (the backends block is replaced whole, so both addresses are repeated here)."""
    return {
        "profiles": {"vertex": {"provisioned_images_per_min": order}},
        "settings": {
            "backends": {
                "aistudio": {"base_url": URL, "api_key": KEY},
                "vertex": {"base_url": URL, "project": "emulator-project", **vertex},
            },
            "generate": {
                "retry": {
                    "initial_delay_s": 0.001,
                    "max_delay_s": 0.002,
                    "max_attempts": 2,
                    "jitter": False,
                }
            },
        },
    }


@pytest.mark.parametrize(
    "world", [_with(2, **dict(provisioned_throughput_price=0.25))], indirect=True
)
async def test_spillover_is_served_from_the_order_then_on_demand(world: World) -> None:  # noqa: F811
    masters = [await world.master(job(prompt=f"pt {i}"), "vertex") for i in range(3)]
    assert [m.service_tier for m in masters] == [
        "PROVISIONED_THROUGHPUT",
        "PROVISIONED_THROUGHPUT",
        "ON_DEMAND",
    ]
    assert all(PT not in r.headers for r in world.sent)  # spillover: no header at all
    assert [m.billed_delivery for m in masters] == ["online"] * 3
    assert [m.estimated_usd for m in masters] == pytest.approx([PRO_1K * 0.25] * 2 + [PRO_1K])
    assert world.ctx.budget.spent == pytest.approx(PRO_1K * 1.5)
    assert world.emulator.stats()["traffic_types"] == {
        "PROVISIONED_THROUGHPUT": 2,
        "ON_DEMAND": 1,
    }


@pytest.mark.parametrize(
    "world", [_with(5, **dict(provisioned_throughput="shared"))], indirect=True
)
async def test_shared_skips_the_order(world: World) -> None:  # noqa: F811
    master = await world.master(job(), "vertex")
    (req,) = world.sent
    assert req.headers[PT] == "shared"
    assert master.service_tier == "ON_DEMAND" and master.estimated_usd == pytest.approx(PRO_1K)
    assert world.emulator.stats()["traffic_types"] == {"ON_DEMAND": 1}


@pytest.mark.parametrize(
    "world",
    [
        _with(
            1,
            **dict(
                provisioned_throughput="dedicated",
                provisioned_throughput_fallback="shared",
                provisioned_throughput_price=0.0,
            ),
        )
    ],
    indirect=True,
)
async def test_dedicated_over_the_order_falls_back_to_shared_and_says_why(
    world: World,  # noqa: F811
) -> None:
    first = await world.master(job(prompt="inside the order"), "vertex")
    second = await world.master(job(prompt="over the order"), "vertex")
    assert [r.headers[PT] for r in world.sent] == ["dedicated", "dedicated", "shared"]
    assert first.service_tier == "PROVISIONED_THROUGHPUT" and first.estimated_usd == 0.0
    assert [(r.delivery, r.outcome) for r in second.routes] == [
        ("online", "shed"),
        ("online", "ok"),
    ]
    why = (
        "Provisioned Throughput order used up on vertex (HTTP 429) → shared PayGo "
        "(backends.vertex.provisioned_throughput_fallback)"
    )
    assert second.delivery_fallback == why and second.routes[1].reason == why
    assert second.service_tier == "ON_DEMAND" and second.estimated_usd == pytest.approx(PRO_1K)
    assert world.ctx.budget.spent == pytest.approx(PRO_1K) and world.ctx.budget.reserved == 0
    stats = world.emulator.stats()
    assert stats["traffic_types"] == {"PROVISIONED_THROUGHPUT": 1, "ON_DEMAND": 1}
    assert stats["by_route"]["vertex:generateContent"] == {"ok": 2, "429": 1}


@pytest.mark.parametrize(
    "world", [_with(0, **dict(provisioned_throughput="dedicated"))], indirect=True
)
async def test_dedicated_without_a_fallback_ends_the_job_with_the_reason(
    world: World,  # noqa: F811
) -> None:
    with pytest.raises(JobFailed) as info:
        await world.master(job(), "vertex")
    assert info.value.status == "failed"
    assert "Exceeded the Provisioned Throughput" in str(info.value)
    assert [r.headers[PT] for r in world.sent] == ["dedicated", "dedicated"]  # 2 attempts
    assert world.ctx.budget.spent == 0 and world.ctx.budget.reserved == 0
    assert world.emulator.stats()["traffic_types"] == {}


def test_pt_is_refused_where_a_job_would_be_bought_on_aistudio() -> None:
    settings = load_settings(
        "local", {"backends.vertex.provisioned_throughput": "dedicated"}, environ={}
    )
    jobs = [job()]
    dev = [route(j, "dev", settings.route) for j in jobs]
    with pytest.raises(ConfigError) as info:
        check_prices(settings, jobs, dev)
    message = str(info.value)
    assert message.startswith("config error: backends.vertex.provisioned_throughput: dedicated")
    assert "has no Provisioned Throughput" in message and "\n" not in message
    check_prices(settings, jobs, [route(j, "prod", settings.route) for j in jobs])  # fine
    with pytest.raises(ConfigError, match=r"backends\.aistudio\.provisioned_throughput.*Fix: AI"):
        load_settings("local", {"backends.aistudio.provisioned_throughput": "shared"}, environ={})
    assert pool_for("aistudio", settings) is None and pool_for("vertex", settings) == "dedicated"


async def test_the_aistudio_client_refuses_a_pool_before_sending() -> None:
    sent: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(500))
    async with httpx.AsyncClient(transport=transport) as client:
        settings = Settings.model_validate({"backends": {"aistudio": {"api_key": "k"}}})
        backend = create_backend("aistudio", settings, client=client)
        with pytest.raises(InputError, match="provisioned_throughput"):
            await backend.generate(ImageRequest(prompt="x", provisioned_throughput="dedicated"))
    assert sent == []


# --------------------------------------------------------------------------- loopback


async def test_the_pt_header_goes_on_the_wire_only_to_vertex(
    emu: EmulatorHandle, api_key: str, service_account_file: Path
) -> None:
    """The shared emulator bought no PT: a dedicated call to Vertex is the PT 429 (so the
    header arrived), while the same settings send AI Studio no header at all."""
    backends = emulator_backends(
        emu, api_key, service_account_file, provisioned_throughput="dedicated"
    )
    settings = Settings.model_validate({"backends": backends})
    seen: dict[str, httpx.Headers] = {}

    async def keep(req: httpx.Request) -> None:
        if ":generateContent" in req.url.path:
            seen["vertex" if "/projects/" in req.url.path else "aistudio"] = req.headers

    async with httpx.AsyncClient(event_hooks={"request": [keep]}) as client:
        for name in ("aistudio", "vertex"):
            backend = create_backend(name, settings, client=client)  # type: ignore[arg-type]
            request = ImageRequest(
                prompt=f"pt {name}", provisioned_throughput=pool_for(name, settings)
            )  # type: ignore[arg-type]
            if name == "vertex":
                with pytest.raises(QuotaExceeded, match="Exceeded the Provisioned Throughput"):
                    await backend.generate(request)
            else:
                await backend.generate(request)
            await backend.aclose()
    assert seen["vertex"][PT] == "dedicated"
    assert PT not in seen["aistudio"]
