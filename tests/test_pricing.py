"""Price lookups and the run budget: exact boundaries, arithmetic, and concurrent reservations."""

from __future__ import annotations

import asyncio
import threading

import pytest

from bananaflow.config import Settings
from bananaflow.errors import ConfigError
from bananaflow.pricing import Budget, price_per_image

PRICES = Settings().prices


@pytest.mark.parametrize(("size", "usd"), [("1K", 0.134), ("2K", 0.134), ("4K", 0.24)])
def test_default_price_table(size: str, usd: float) -> None:
    assert price_per_image("gemini-3-pro-image", size, PRICES) == pytest.approx(usd)  # type: ignore[arg-type]
    assert price_per_image("gemini-3-pro-image-preview", size, PRICES) == pytest.approx(usd)  # type: ignore[arg-type]


def test_resource_style_model_ids_resolve() -> None:
    assert price_per_image("models/gemini-3-pro-image", "4K", PRICES) == pytest.approx(0.24)
    name = "publishers/google/models/gemini-3-pro-image"
    assert price_per_image(name, "1K", PRICES) == pytest.approx(0.134)


def test_unknown_model_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        price_per_image("gemini-9-ultra-image", "1K", PRICES)
    assert info.value.field == "prices"
    assert "gemini-9-ultra-image" in str(info.value)
    assert info.value.fix == "add prices.gemini-9-ultra-image to the config"


def test_missing_size_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="4K"):
        price_per_image("cheap", "4K", {"cheap": {"1K": 0.01}})


def test_zero_budget_spends_nothing() -> None:
    budget = Budget(0)
    assert budget.try_reserve(0.134) is False
    assert budget.try_reserve(0.000001) is False
    assert budget.reserved == 0 and budget.spent == 0 and budget.remaining == 0


def test_unlimited_budget() -> None:
    budget = Budget(None)
    for _ in range(1000):
        assert budget.try_reserve(0.24)
        budget.commit(0.24)
    assert budget.spent == pytest.approx(240.0)
    assert budget.max_usd is None and budget.remaining is None


@pytest.mark.parametrize(("max_usd", "price", "fits"), [(0.268, 0.134, 2), (2.4, 0.24, 10)])
def test_exact_boundary(max_usd: float, price: float, fits: int) -> None:
    budget = Budget(max_usd)
    assert [budget.try_reserve(price) for _ in range(fits + 1)] == [True] * fits + [False]
    assert budget.reserved == pytest.approx(max_usd)
    assert budget.remaining == 0


def test_reserve_commit_release_arithmetic() -> None:
    budget = Budget(0.5)
    assert budget.try_reserve(0.134) and budget.try_reserve(0.24)
    assert not budget.try_reserve(0.134)  # 0.508 > 0.5
    budget.commit(0.134)
    assert budget.spent == pytest.approx(0.134) and budget.reserved == pytest.approx(0.24)
    budget.release(0.24)  # e.g. a refusal: not billed
    assert budget.reserved == 0 and budget.spent == pytest.approx(0.134)
    assert budget.remaining == pytest.approx(0.366)
    assert budget.try_reserve(0.24)  # released money is available again
    budget.commit(0.24, actual=0.2)  # billed cost differs from the estimate
    assert budget.spent == pytest.approx(0.334) and budget.reserved == 0


def test_misuse_fails_loudly() -> None:
    budget = Budget(1.0)
    with pytest.raises(ValueError):
        budget.release(0.1)  # nothing reserved: would silently raise the ceiling
    assert budget.try_reserve(0.1)
    with pytest.raises(ValueError):
        budget.commit(0.2)
    with pytest.raises(ValueError):
        budget.try_reserve(-0.1)
    with pytest.raises(ValueError):
        Budget(-1)


def test_concurrent_threads_never_exceed_the_max() -> None:
    # Under CPython's GIL this check-then-add rarely interleaves even without the lock; the test
    # pins the invariant (never more than max) for free-threaded builds and future refactors.
    budget = Budget(1.34)  # room for exactly ten $0.134 images
    start = threading.Barrier(32)
    granted: list[int] = []
    granted_lock = threading.Lock()

    def worker() -> None:
        start.wait()
        mine = 0
        for _ in range(200):
            if budget.try_reserve(0.134):
                mine += 1
        with granted_lock:
            granted.append(mine)

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == 10
    assert budget.reserved == pytest.approx(1.34)


def test_concurrent_commit_and_release_keep_the_books() -> None:
    budget = Budget(5.0)
    start = threading.Barrier(16)

    def worker(n: int) -> None:
        start.wait()
        for i in range(200):
            if budget.try_reserve(0.24):
                if (i + n) % 3 == 0:
                    budget.release(0.24)
                else:
                    budget.commit(0.24)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert budget.reserved == 0
    assert budget.spent <= 5.0
    assert budget.spent == pytest.approx(0.24 * 20)  # 20 images of $0.24 fit in $5


def test_asyncio_tasks_share_one_budget() -> None:
    budget = Budget(0.67)  # five $0.134 images

    async def job() -> bool:
        if not budget.try_reserve(0.134):
            return False
        await asyncio.sleep(0)
        budget.commit(0.134)
        return True

    async def run() -> list[bool]:
        return await asyncio.gather(*(job() for _ in range(20)))

    assert sum(asyncio.run(run())) == 5
    assert budget.spent == pytest.approx(0.67) and budget.reserved == 0


def test_delivery_multiplies_the_online_price() -> None:
    halves = {"online": 1.0, "batch": 0.5}
    assert price_per_image("gemini-3-pro-image", "1K", PRICES, "batch", halves) == pytest.approx(
        0.067
    )
    with pytest.raises(ConfigError, match=r"delivery_prices\.flex"):
        price_per_image("gemini-3-pro-image", "1K", PRICES, "flex", halves)
