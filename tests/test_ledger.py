"""The job ledger: claimed before paid, paid once across overlapping runs, trusted only after
looking in the store. Claims are exercised on ``file://`` and on ``gs://`` (fake-gcs-server)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_flow import run

from bananaflow.ledger import HOST, ClaimRecord, Ledger
from bananaflow.manifest import read_manifest
from bananaflow.records import MasterRef
from bananaflow.storage import Store

BIN = Path(sys.executable).parent


@pytest.fixture(params=["file", "gs"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "file":
        return Store(f"file://{tmp_path}/store")
    url, options = request.getfixturevalue("gcs_bucket")
    return Store(url, options)


def _master(store: Store, data: bytes = b"x" * 10) -> MasterRef:
    path = "masters/ab/m.png"
    store.put(path, data, content_type="image/png")
    return MasterRef(
        uri=store.uri(path),
        path=path,
        sha256="ab" * 32,
        mime_type="image/png",
        width=1,
        height=1,
        bytes=len(data),
        backend="aistudio",
        model="gemini-3-pro-image",
    )


def test_a_live_claim_holds_off_every_other_run_until_released(store: Store) -> None:
    first, second = Ledger(store, "run-a", claim_ttl_s=60), Ledger(store, "run-b", claim_ttl_s=60)
    mine = first.try_claim("k1")
    assert mine.state == "claimed" and mine.claim is not None
    held = second.try_claim("k1")
    assert held.state == "held" and held.holder is not None and held.holder.run_id == "run-a"
    first.release(mine.claim)
    taken = second.try_claim("k1")
    assert taken.state == "claimed" and taken.claim is not None and taken.claim.number == 2


def test_what_one_run_paid_another_reuses_but_only_while_the_bytes_exist(store: Store) -> None:
    first, second = Ledger(store, "run-a", claim_ttl_s=60), Ledger(store, "run-b", claim_ttl_s=60)
    claim = first.try_claim("k1").claim
    assert claim is not None
    ref = _master(store)
    first.record_paid(claim, ref)
    verdict = second.try_claim("k1")
    assert verdict.state == "paid" and verdict.master is not None
    assert verdict.master.path == ref.path
    store.delete(ref.path)  # deleted behind the ledger's back
    assert second.paid("k1") is None
    assert second.try_claim("k1").state == "held"  # run-a's claim is still live: no paying


def test_exactly_one_of_two_contenders_wins_a_claim(store: Store) -> None:
    ledgers = [Ledger(store, f"run-{i}", claim_ttl_s=60) for i in range(2)]
    verdicts = [ledger.try_claim("k1") for ledger in ledgers]
    assert sorted(v.state for v in verdicts) == ["claimed", "held"]


def test_an_expired_or_dead_holder_is_taken_over(tmp_path: Path) -> None:
    store = Store(f"file://{tmp_path}/store")
    stale = ClaimRecord(run_id="gone", host="elsewhere", pid=1, expires_at=time.time() - 1)
    assert store.create("ledger/jobs/k1/claim-000001.json", stale.model_dump_json().encode())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid on this host that no longer runs: a SIGKILLed run
    killed = ClaimRecord(run_id="killed", host=HOST, pid=dead.pid, expires_at=time.time() + 999)
    assert store.create("ledger/jobs/k2/claim-000001.json", killed.model_dump_json().encode())
    ledger = Ledger(store, "run-new", claim_ttl_s=60)
    for key in ("k1", "k2"):
        verdict = ledger.try_claim(key)
        assert verdict.state == "claimed" and verdict.claim is not None, key
        assert verdict.claim.number == 2


# ------------------------------------------------------------------------ whole runs


def _batch(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "batch.yaml"
    path.write_text(yaml.safe_dump([{"text": f"overlap item {i}"} for i in range(n)]))
    return path


def _cli(config: str, batch: Path, cwd: Path) -> subprocess.Popen[str]:
    env = dict(os.environ)
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [BIN / "bananaflow", "generate", "--batch", str(batch), "--config", config],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.usefixtures("prefect_api")  # the CLI subprocesses use the run's Prefect server
@pytest.mark.parametrize("where", ["file", "gs"])
def test_two_overlapping_runs_of_one_batch_pay_for_each_image_once(
    where: str, emu, make_config, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The nightly schedule overlapping a run started from the UI, into one store."""
    over: dict[str, Any] = {"generate": {"concurrency": 4}}
    if where == "gs":
        url, options = request.getfixturevalue("gcs_bucket")
        over["storage"] = {"url": url, "options": options}
    config, out = make_config(**over)
    batch = _batch(tmp_path, 20)
    procs = [_cli(config, batch, tmp_path / f"run-{i}") for i in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    for proc, (_stdout, stderr) in zip(procs, results, strict=True):
        assert proc.returncode == 0, (_stdout[-3000:], stderr[-3000:])
    assert sum(emu.control.stats()["generation_requests"].values()) == 20
    store = Store(out, over.get("storage", {}).get("options"))
    runs = [r for r in store.list("runs") if r.endswith("manifest.jsonl")]
    assert len(runs) == 2
    paid = 0.0
    for manifest in runs:
        rows = read_manifest(store, manifest.split("/")[1])
        assert len(rows) == 20 and all(r.status == "uploaded" for r in rows)
        paid += sum(r.estimated_usd for r in rows)
        for row in rows:
            assert store.exists(row.path)
    assert paid == pytest.approx(20 * 0.134)  # the two summaries together: each image once


def test_a_deleted_image_is_republished_without_paying_and_a_moved_store_resolves(
    emu, make_config, tmp_path: Path
) -> None:
    config, out = make_config()
    first = run(config, ["a deleted pear", "a kept plum"])
    assert first.counts == {"uploaded": 2}
    store = Store(out)
    gone = next(r for r in first.rows if r.prompt == "a deleted pear")
    store.delete(gone.path)
    before = sum(emu.control.stats()["generation_requests"].values())
    second = run(config, ["a deleted pear", "a kept plum"])
    assert sum(emu.control.stats()["generation_requests"].values()) == before  # master reused
    redone = next(r for r in second.rows if r.prompt == "a deleted pear")
    assert redone.status == "uploaded" and redone.reused_from_run is None
    assert store.exists(gone.path)

    moved = tmp_path / "moved"
    shutil.move(out.removeprefix("file://"), moved)
    cfg = yaml.safe_load(Path(config).read_text())
    cfg["storage"]["url"] = f"file://{moved}"
    Path(config).write_text(yaml.safe_dump(cfg))
    third = run(config, ["a deleted pear", "a kept plum"])
    assert sum(emu.control.stats()["generation_requests"].values()) == before
    for row in third.rows:
        assert row.status == "uploaded" and row.uri.startswith(f"file://{moved}/")
        assert Path(row.uri.removeprefix("file://")).is_file()
        assert all(Path(t.removeprefix("file://")).is_file() for t in row.thumbnail_uris)


def test_a_budget_skip_is_a_row_not_a_failed_task(emu, make_config, caplog) -> None:
    config, _ = make_config(budget={"max_usd": 0})
    summary = run(config, ["a free lunch"])
    assert summary.counts == {"skipped_budget": 1}
    # Errors about the run: bananaflow's own, and Prefect's task and flow run loggers (where a
    # failed task is reported). Prefect's event shipping may log its own transport errors.
    about_the_run = ("bananaflow", "prefect.task_runs", "prefect.flow_runs")
    assert not [
        r for r in caplog.records if r.levelname == "ERROR" and r.name.startswith(about_the_run)
    ]
    assert json.dumps(summary.rows[0].error).count("budget.max_usd is 0") == 1
