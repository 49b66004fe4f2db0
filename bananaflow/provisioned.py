"""Vertex Provisioned Throughput (PT): which pool a call asks for, and what PT-served images cost.

PT is a Vertex purchase, not a way of buying one image, so it is a Vertex setting
(``backends.vertex.provisioned_throughput``) beside the delivery rather than a fifth delivery:
a delivery exists on both platforms and prices every image, while PT only picks the pool a
Vertex online call is served from (batch-and-model-tiers.md §5.2). ``spillover`` sends no
header (PT while the order lasts, then standard PayGo: Google's default); ``dedicated`` is PT
only, and over the order Vertex answers 429 "Exceeded the Provisioned Throughput"; ``shared``
skips PT. The answer says which pool billed it (``usageMetadata.trafficType``): a PT-served
image is priced at ``provisioned_throughput_price`` times the list price, since PT is prepaid.
"""

from __future__ import annotations

from bananaflow.config import Settings
from bananaflow.errors import ConfigError, QuotaExceeded
from bananaflow.generation import BackendName, ImageSize, ProvisionedThroughput, SyncDelivery
from bananaflow.pricing import price_for
from bananaflow.routing import RouteDecision

PT_FIELD = "backends.vertex.provisioned_throughput"
SERVED_FROM_PT = "provisioned_throughput"  # usageMetadata.trafficType, lower-cased


def pool_for(backend: BackendName, settings: Settings) -> ProvisionedThroughput | None:
    """The pool a call to ``backend`` asks for: None sends no header (AI Studio has no PT)."""
    if backend != "vertex":
        return None
    choice = settings.backends.vertex.provisioned_throughput
    return None if choice == "spillover" else choice


def over_order(error: BaseException, pool: ProvisionedThroughput | None) -> bool:
    """Whether ``error`` is a PT-only call over the order: a 429 to ``dedicated`` (PayGo was
    never asked, so no shared-pool 429 can be the cause)."""
    return pool == "dedicated" and isinstance(error, QuotaExceeded) and error.status == 429


def pool_fallback(settings: Settings, pool: ProvisionedThroughput | None) -> str | None:
    """Where a PT-only call over the order goes at once (``shared`` PayGo), or None to retry
    it on PT under the retry policy and end the job with the reason."""
    fallback = settings.backends.vertex.provisioned_throughput_fallback
    return "shared" if pool == "dedicated" and fallback == "shared" else None


def served_from_order(reported: str | None) -> bool:
    return (reported or "").strip().lower() == SERVED_FROM_PT


def billed_price(
    settings: Settings,
    model: str,
    size: ImageSize,
    billed: SyncDelivery,
    reported: str | None,
) -> float:
    """The price of one image as Google reported serving it: PT at its configured share of
    the list price, anything else at the billed delivery's price."""
    if served_from_order(reported):
        share = settings.backends.vertex.provisioned_throughput_price
        return price_for(settings, model, size, "online") * share
    return price_for(settings, model, size, billed)


def check_routes(settings: Settings, decisions: list[RouteDecision]) -> None:
    """``dedicated`` (PT only) with a job that may be bought on AI Studio, which has no PT,
    would pay PayGo for what the user said must come from PT: refused before any request."""
    if settings.backends.vertex.provisioned_throughput != "dedicated":
        return
    for decision in decisions:
        if "aistudio" in decision.backends and decision.delivery.delivery != "batch":
            raise ConfigError(
                PT_FIELD,
                f"dedicated (Provisioned Throughput only), but job {decision.job_id} may be "
                f"bought on aistudio ({decision.reason}), which has no Provisioned Throughput",
                fix="route these jobs to vertex (--stage prod, or drop aistudio from "
                "route.fallback), or set it to spillover or shared",
            )
