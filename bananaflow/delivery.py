"""How a job's image is bought (online, flex, priority or batch), why, and what was billed.

Delivery is decided per job like the backend (``bananaflow.routing``) and recorded with its
reason: the most specific intent wins (the job's own ``delivery``, then the run's override,
then its quality preset's ``delivery``, then ``generate.delivery``): an explicit run flag beats
the preset, as ``--size`` does. It never changes what is rendered, so it is no part of a job's id.

Google does not always sell what was asked: a priority call over its limit is served, and
billed, as standard (``x-gemini-service-tier: standard``), and a flex call may be shed. The
price follows the tier Google reports, and a shed flex call is bought online instead only when
``route.delivery_fallback`` allows it, with the reason in the manifest.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from bananaflow.config import RetrySettings, RouteSettings
from bananaflow.errors import QuotaExceeded, Unavailable
from bananaflow.expand import ImageJob
from bananaflow.generation import Delivery, SyncDelivery

# What Google reports, per platform, mapped to the delivery that prices it. AI Studio sends
# ``standard|flex|priority`` (``unspecified`` means standard); Vertex's traffic types name the
# pool. Provisioned Throughput is prepaid, off-peak has no published price: both are recorded
# as reported and priced as online, the list price, so an estimate is never too low.
_BILLED_AS: dict[str, SyncDelivery] = {
    "standard": "online",
    "unspecified": "online",
    "flex": "flex",
    "priority": "priority",
    "on_demand": "online",
    "on_demand_flex": "flex",
    "on_demand_priority": "priority",
    "on_demand_offpeak": "online",
    "provisioned_throughput": "online",
    "traffic_type_unspecified": "online",
}


class DeliveryDecision(BaseModel):
    """The delivery of one job, why it was chosen, and what a shed call falls back to."""

    model_config = ConfigDict(extra="forbid")

    delivery: Delivery = "online"
    reason: str = "default → online"
    fallback: SyncDelivery | None = None


def resolve_delivery(
    job: ImageJob,
    default: Delivery,
    settings: RouteSettings,
    override: Delivery | None = None,
) -> DeliveryDecision:
    """Job > run override > quality preset > ``generate.delivery`` (``default``), plus the
    configured fallback."""
    if job.delivery is not None:
        delivery, why = job.delivery, f"job → {job.delivery} (delivery in the prompt)"
    elif override is not None:
        delivery, why = override, f"run override → {override}"
    elif job.preset_delivery is not None:
        delivery = job.preset_delivery
        why = (
            f"quality {job.quality} → {delivery} (generate.quality_presets.{job.quality}.delivery)"
        )
    else:
        delivery, why = default, f"config → {default} (generate.delivery)"
    fallback = settings.delivery_fallback.get(delivery)
    if fallback is not None:
        why += f"; if shed → {fallback} (route.delivery_fallback.{delivery})"
    return DeliveryDecision(delivery=delivery, reason=why, fallback=fallback)


def is_shed(error: BaseException, delivery: Delivery, settings: RouteSettings) -> bool:
    """Whether ``error`` says Google shed a flex call (no capacity now), not a real failure.

    Only flex is sheddable. A per-day or billing quota is not shedding (``retryable`` false):
    buying online would hit the same wall.
    """
    return (
        delivery == "flex"
        and isinstance(error, QuotaExceeded | Unavailable)
        and bool(error.retryable)
        and error.status in settings.shed_statuses
    )


def billed_delivery(asked: SyncDelivery, reported: str | None) -> SyncDelivery:
    """The delivery that prices a call: what Google reports, else what was asked.

    A priority call downgraded to standard is billed at standard; a tier nobody knows is
    priced as asked, since guessing a cheaper one would hide spend.
    """
    if not reported:
        return asked
    return _BILLED_AS.get(reported.strip().lower(), asked)


def retry_policy(policy: RetrySettings, delivery: Delivery) -> RetrySettings:
    """The retry policy for one delivery: flex gets its longer overall deadline."""
    deadline = policy.delivery_deadline_s.get(delivery)
    if deadline is None:
        return policy
    return policy.model_copy(update={"deadline_s": deadline})
