"""Cost estimates and the run budget: a run must know what it will spend before it spends it.

Prices come from the config (``Settings.prices``), not from code, because Google changes them and
model ids churn; an unknown model is a configuration error rather than a silent $0 estimate.

The budget counts in integer micro-dollars so that the boundary is exact: with ``max_usd: 2.4``
ten $0.24 (4K) images fit, which repeated float addition (2.4000000000000004) would refuse.
"""

from __future__ import annotations

import threading

from bananaflow.config import Settings
from bananaflow.errors import ConfigError
from bananaflow.generation import Delivery, ImageSize

_MICRO = 1_000_000


def price_per_image(
    model: str,
    image_size: ImageSize,
    prices: dict[str, dict[ImageSize, float]],
    delivery: Delivery = "online",
    delivery_prices: dict[Delivery, float] | None = None,
) -> float:
    """USD for one image of ``model`` at ``image_size`` bought by ``delivery``.

    Refuses to guess when the model, size or delivery has no price.

    Accepts resource-style ids (``models/x``, ``publishers/google/models/x``) because both
    backends report models that way.
    """
    table = prices.get(model)
    if table is None:
        table = prices.get(model.rsplit("/", 1)[-1])
    if table is None:
        raise ConfigError(
            "prices", f"no price for model {model}", fix=f"add prices.{model} to the config"
        )
    price = table.get(image_size)
    if price is None:
        raise ConfigError(
            "prices",
            f"no {image_size} price for model {model}",
            fix=f"add prices.{model}.{image_size} to the config",
        )
    if delivery == "online":
        return float(price)
    factor = (delivery_prices or {}).get(delivery)
    if factor is None:
        raise ConfigError(
            "delivery_prices",
            f"no multiplier for delivery {delivery}",
            fix=f"add delivery_prices.{delivery} to the config",
        )
    return float(price) * factor


def price_for(settings: Settings, model: str, image_size: ImageSize, delivery: Delivery) -> float:
    """:func:`price_per_image` with the config's tables: what estimates and budgets charge."""
    return price_per_image(model, image_size, settings.prices, delivery, settings.delivery_prices)


def _to_micro(usd: float) -> int:
    if usd < 0:
        raise ValueError(f"amount must not be negative, got {usd}")
    return round(usd * _MICRO)


class Budget:
    """Run budget: jobs past max_usd are not started (status skipped_budget).

    Thread- and asyncio-safe (threading.Lock). A generation reserves its estimate *before* it
    starts, so concurrent jobs cannot all pass the check and overspend together; the reservation
    then becomes spend (``commit``) or is given back (``release``, e.g. a refusal, which Google
    does not bill). The lock is never held across I/O, so using it from the event loop is fine.
    """

    def __init__(self, max_usd: float | None) -> None:
        """``None`` = unlimited; ``0`` = nothing may be spent."""
        if max_usd is not None and max_usd < 0:
            raise ValueError(f"max_usd must not be negative, got {max_usd}")
        self._lock = threading.Lock()
        self._max: int | None = None if max_usd is None else _to_micro(max_usd)
        self._max_usd = max_usd
        self._reserved = 0
        self._spent = 0

    @property
    def max_usd(self) -> float | None:
        return self._max_usd

    @property
    def spent(self) -> float:
        with self._lock:
            return self._spent / _MICRO

    @property
    def reserved(self) -> float:
        with self._lock:
            return self._reserved / _MICRO

    @property
    def remaining(self) -> float | None:
        """What may still be reserved; ``None`` when unlimited."""
        if self._max is None:
            return None
        with self._lock:
            return max(0, self._max - self._reserved - self._spent) / _MICRO

    def try_reserve(self, usd: float) -> bool:
        """Reserve before a generation starts; False means the job must not start."""
        amount = _to_micro(usd)
        with self._lock:
            if self._max is not None and self._reserved + self._spent + amount > self._max:
                return False
            self._reserved += amount
            return True

    def commit(self, usd: float, actual: float | None = None) -> None:
        """A reserved amount became a real (billed) cost.

        ``actual`` records a billed cost that differs from the reservation (e.g. computed from
        the response's token usage); the whole reservation is still released.
        """
        amount = _to_micro(usd)
        billed = amount if actual is None else _to_micro(actual)
        with self._lock:
            self._take_back(amount)
            self._spent += billed

    def release(self, usd: float) -> None:
        """Reserved but not billed (refusal, failure before a successful response)."""
        amount = _to_micro(usd)
        with self._lock:
            self._take_back(amount)

    def _take_back(self, amount: int) -> None:
        # Giving back more than was reserved is a caller bug that would silently raise the
        # ceiling for every later job, so it fails loudly instead.
        if amount > self._reserved:
            raise ValueError(
                f"cannot give back ${amount / _MICRO:.6f}: only "
                f"${self._reserved / _MICRO:.6f} is reserved"
            )
        self._reserved -= amount

    def __repr__(self) -> str:
        limit = "unlimited" if self._max_usd is None else f"${self._max_usd}"
        return f"Budget({limit}, spent=${self.spent:.4f}, reserved=${self.reserved:.4f})"
