"""read_dev_run / link_dev_rows: the promote flow's two storage steps."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import SecretStr

from bananaflow import promotion
from bananaflow.errors import BananaflowError
from bananaflow.manifest import manifest_path
from bananaflow.promotion import DevRun, SourceRef
from bananaflow.records import ManifestRow
from bananaflow.storage import Store


@task(name="read_dev_run", cache_policy=NO_CACHE)
def read_dev_run(
    ref: SourceRef,
    store_url: str,
    store_options: dict[str, Any],
    store_credentials: SecretStr | None = None,
) -> DevRun:
    store = Store(store_url, store_options, credentials=store_credentials)
    run_id = ref.run_id
    if ref.kind == "flow_run":
        assert ref.flow_run_id is not None
        run_id = promotion.find_run_for_flow_run(store, ref.flow_run_id)
    assert run_id is not None
    return DevRun(
        run_id=run_id,
        store_url=store.url,
        store_options=store_options,
        store_credentials=store_credentials,
        manifest_uri=store.uri(manifest_path(run_id)),
        rows=promotion.load_dev_rows(store, run_id),
    )


@task(name="link_dev_rows", cache_policy=NO_CACHE)
def link_dev_rows(dev: DevRun, plan: promotion.PromotionPlan, prod_rows: list[ManifestRow]) -> int:
    """Write the prod side of the lineage into the dev run's manifest."""
    try:
        return promotion.record_dev_lineage(dev.store(), dev.run_id, plan, prod_rows)
    except Exception as err:
        raise BananaflowError(
            f"prod images are done, but recording lineage in dev run {dev.run_id} failed "
            f"({type(err).__name__}: {err}); run promote again: it will not render again"
        ) from err
