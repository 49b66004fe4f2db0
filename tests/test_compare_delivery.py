"""Compare by delivery (online, flex, batch) on the in-process emulator, the figures checked
against what the emulator counted; and once through the CLI and the Prefect flow."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from fixtures.emulator import emulator_test_settings
from fixtures.inprocess import KEY, STEPS, URL, Bar, opened

from bananaflow import comparison_delivery as cd
from bananaflow.config import Settings
from bananaflow.emulator.app import create_app
from bananaflow.emulator.faults import ForcedFault
from bananaflow.expand import PromptSpec, expand
from bananaflow.records import ManifestRow
from bananaflow.routing import route
from bananaflow.storage import Store


def test_delivery_jobs_are_pinned_and_own_their_ids() -> None:
    settings = Settings()
    base = expand([PromptSpec(text="a kite")], settings.expand, settings.generate)
    jobs = cd.delivery_jobs(base, ["1K", "2K"], ["online", "batch"], "cmp-a")
    assert [(j.image_size, j.delivery) for j in jobs] == [
        ("1K", "online"),
        ("1K", "batch"),
        ("2K", "online"),
        ("2K", "batch"),
    ]
    assert len({j.job_id for j in jobs}) == 4
    again = cd.delivery_jobs(base, ["1K"], ["online"], "cmp-b")
    assert again[0].job_id != jobs[0].job_id  # another comparison renders afresh


def test_online_flex_batch_figures_match_what_the_emulator_counted(tmp_path: Path) -> None:
    """Cost at the tier that billed, flex sheds as the emulator shed them (seeded), batch at
    half the online price through the real batch path, a failed batch line counted."""
    app = create_app(
        emulator_test_settings(
            time_scale=0.0001,
            profiles={
                "aistudio": {
                    "flex_shed_rate": 0.5,
                    # No client-side limiter here: the emulator's quota must not be the story.
                    "requests_per_minute": 10_000,
                    "concurrency": 100,
                }
            },
        )
    )
    emulator = app.state.emulator
    emulator.faults.add(ForcedFault("batch_line_error", 1, params={"lines": 1}))
    settings = Settings.model_validate(
        {
            "backends": {"aistudio": {"base_url": URL, "api_key": KEY}},
            "batch": {"poll_s": 0.001, "max_poll_s": 0.01},
            "route": {"fallback": []},
        }
    )
    prompts = ["red kite", "blue kite", "green kite", "gold kite", "grey kite", "pink kite"]
    base = expand([PromptSpec(text=t) for t in prompts], settings.expand, settings.generate)
    jobs = cd.delivery_jobs(base, ["1K"], ["online", "flex", "batch"], "cmp-1")
    decisions = [route(j, "dev", settings.route) for j in jobs]
    store = Store(f"file://{tmp_path}")

    async def go() -> list[ManifestRow]:
        async with opened(app, tmp_path, "cmp-1", settings, reuse=False) as (ctx, api):
            return await cd.render_deliveries(
                ctx, jobs, decisions, STEPS, Bar(), providers=lambda _b: api
            )

    rows = asyncio.run(go())
    submitted = cd.batch_submissions(store, "cmp-1")
    report = cd.DeliveryReport(
        run_id="cmp-1",
        prompts=len(base),
        image_sizes=["1K"],
        deliveries=["online", "flex", "batch"],
        backend="aistudio",
        stats=cd.compute_delivery_stats(rows, submitted),
    )
    online, flex, batch = (report.stat(d, "1K") for d in ("online", "flex", "batch"))
    assert online is not None and flex is not None and batch is not None
    stats = emulator.stats()
    shed = stats["faults_applied"].get("random:flex_shed", 0)
    n = len(prompts)

    assert online.usd_per_image == pytest.approx(0.134) and online.billed == {"online": n}
    assert (online.shed, online.fell_back, online.failure_rate) == (0, 0, 0.0)

    assert 0 < shed < n  # seeded: some flex calls shed, not all
    assert flex.shed == shed and flex.fell_back == shed  # each shed call bought online
    assert flex.fallback_rate == pytest.approx(shed / n)
    assert flex.billed == {"flex": n - shed, "online": shed}
    assert flex.usd_total == pytest.approx((n - shed) * 0.067 + shed * 0.134)

    assert stats["batches_created"] == 1 and set(submitted) == {
        j.job_id for j in jobs if j.delivery == "batch"
    }
    assert batch.usd_per_image == pytest.approx(0.5 * online.usd_per_image)
    assert (batch.uploaded, batch.lines_lost, batch.failure_rate) == (n - 1, 1, 1 / n)
    assert batch.billed == {"batch": n - 1}
    # The batch rows' turnaround runs from the batch's creation, so it spans the batch wait.
    for row in (r for r in rows if r.delivery == "batch" and r.status == "uploaded"):
        assert cd.turnaround_s(row, submitted) >= cd._seconds_between(
            submitted[row.job_id], row.started_at
        )
    # Online + flex calls (shed ones and their online purchase), not one for the batch jobs.
    assert stats["generation_requests"]["aistudio"] == 2 * n + shed

    md = cd.delivery_markdown(report)
    assert "| batch | 1K | 5 / 6 | $0.0670 | batch 5 |" in md
    table = cd.delivery_table(report)
    assert [t["delivery"] for t in table] == ["online", "flex", "batch"]
    json.dumps(table)


def test_bad_delivery_is_one_line_naming_the_flag() -> None:
    from typer.testing import CliRunner

    from bananaflow.cli.app import app

    result = CliRunner().invoke(app, ["compare", "a kite", "--deliveries", "online,fax"])
    assert result.exit_code == 2 and "invalid --deliveries" in result.output


@pytest.mark.usefixtures("prefect_api")
def test_cli_compare_deliveries_runs_the_flow_and_prints_the_table(emu, make_config) -> None:
    """``bananaflow compare --deliveries online,batch``: the flow buys both ways (one real
    provider batch), prints the table and stores compare.json / compare.md beside the
    manifest."""
    from typer.testing import CliRunner

    from bananaflow.cli.app import app

    config, out = make_config(batch={"poll_s": 0.01, "max_poll_s": 0.05})
    before = emu.control.stats()
    result = CliRunner().invoke(
        app, ["compare", "a kite", "a boat", "--deliveries", "online,batch", "--config", config]
    )
    assert result.exit_code == 0, result.output
    after = emu.control.stats()
    assert after["batches_created"] - before["batches_created"] == 1
    assert after["generation_requests"]["aistudio"] - before["generation_requests"]["aistudio"] == 2
    lines = result.output.splitlines()
    assert any(" batch " in ln and "$0.0670" in ln and "2 / 2" in ln for ln in lines)
    assert any(" online " in ln and "$0.1340" in ln for ln in lines)
    (saved,) = [p for p in Store(out).list("runs") if p.endswith("compare.json")]
    report = cd.DeliveryReport.model_validate_json(Store(out).get(saved))
    assert [(s.delivery, s.uploaded) for s in report.stats] == [("online", 2), ("batch", 2)]
    assert report.backend == "aistudio" and report.markdown_uri.endswith("compare.md")
