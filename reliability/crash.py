"""Crash and resume: kill ``bananaflow generate`` mid-batch, or take its emulator or its storage
away mid-run, then run the same command again.

Each scenario runs the real CLI in a subprocess (its own process group, so SIGKILL takes the
whole run down at once) against an emulator in this process on loopback. "Finished before" is
what the first run proved it had paid for: a row ``uploaded`` in its manifest, or a master in the
completion index. The second run must finish the batch and make **zero** generation requests
for those jobs; it may pay again only for a request that was in flight when the first run died.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from bananaflow.chain import master_key, model_for
from bananaflow.config import load_settings
from bananaflow.manifest import read_manifest, run_ids
from bananaflow.preflight import plan_jobs
from bananaflow.records import ManifestRow
from bananaflow.storage import Store
from reliability.harness import (
    Emulator,
    GcsServer,
    cli_command,
    current_api_url,
    emulator_settings,
    generation_requests_by_prompt,
    quiet_prefect,
    service_account,
    subprocess_env,
    write_batch,
    write_config,
)

Scenario = Literal["sigkill", "emulator-down", "emulator-down-waits", "storage-down"]
RUN_TIMEOUT_S = 300.0


class CrashResult(BaseModel):
    scenario: str
    jobs: int
    command: str
    first_exit: int
    disruption: str
    first_rows: int
    first_uploaded: int
    first_failed_reasons: dict[str, int]
    masters_indexed: int
    finished_before: int
    second_exit: int
    second_counts: dict[str, int]
    second_accounted: int
    second_generation_requests: int
    second_requests_for_finished: int
    stderr_tail: str = ""


def _rows(store: Store, run_id: str) -> list[ManifestRow]:
    return read_manifest(store, run_id)


def _wait_for(
    proc: subprocess.Popen[str], ready: Callable[[], bool], timeout: float = RUN_TIMEOUT_S
) -> bool:
    """Poll until ``ready()`` (True) or the process ended (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    return False


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    return proc.returncode, err or ""


def _reason(row: ManifestRow) -> str:
    return f"{row.status}: {(row.error or '')[:90]}"


def run_crash_scenario(
    scenario: Scenario,
    jobs: int = 12,
    *,
    time_scale: float = 0.05,
    outage_s: float = 2.0,
    workdir: Path | None = None,
    api_url: str | None = None,
) -> CrashResult:
    """One scenario end to end; needs a Prefect API (``api_url`` or this process's)."""
    quiet_prefect()
    tmp = Path(workdir or tempfile.mkdtemp(prefix=f"bf-{scenario}-"))
    api = api_url or current_api_url()
    gcs = GcsServer(tmp / "gcs") if scenario == "storage-down" else None
    emu = Emulator(emulator_settings(time_scale=time_scale, seed=5))
    try:
        if gcs is not None:
            storage_url, options = gcs.new_bucket() + "/crash", gcs.options
        else:
            storage_url, options = f"file://{tmp}/out", {}
        retry: dict[str, Any] = {"initial_delay_s": 0.05, "max_delay_s": 0.2, "max_attempts": 3}
        if scenario == "emulator-down-waits":  # a retry budget longer than the outage
            retry = {"initial_delay_s": 0.2, "max_delay_s": 1.0, "max_attempts": 12}
        config = write_config(
            tmp / "config.yaml",
            emu.url,
            api_key=emu.settings.api_keys[0],
            service_account=service_account(tmp / "sa.json", emu),
            project=emu.settings.project,
            storage_url=storage_url,
            storage_options=options,
            generate={"concurrency": 2, "retry": retry},
        )
        batch = write_batch(
            tmp / "batch.yaml",
            [
                {
                    "text": f"{scenario} job {i:03d}: a paper boat on a pond",
                    "backend": "vertex" if i % 3 == 0 else "aistudio",
                }
                for i in range(jobs)
            ],
        )
        store = Store(storage_url, options)
        settings = load_settings(config)
        planned, decisions = plan_jobs(settings, [], str(batch))
        keys = {
            job.prompt: master_key(job, d.backends[0], model_for(job, d.backends[0], settings))
            for job, d in zip(planned, decisions, strict=True)
        }
        argv = ["generate", "--batch", str(batch), "--config", str(config)]
        env = subprocess_env(api, PREFECT_HOME=str(tmp / "prefect-home"))

        def start() -> subprocess.Popen[str]:
            return subprocess.Popen(
                cli_command(*argv),
                env=env,
                cwd=tmp,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,  # its own process group: SIGKILL reaches all of it
            )

        # ---- first run, disrupted
        third = max(2, jobs // 3)
        proc = start()
        if scenario == "sigkill":

            def some_rows() -> bool:
                ids = run_ids(store)
                return bool(ids) and len(_rows(store, ids[-1])) >= third

            hit = _wait_for(proc, some_rows)
            os.killpg(proc.pid, signal.SIGKILL)
            disruption = f"SIGKILL after {third} manifest rows" if hit else "run ended first"
        else:
            hit = _wait_for(proc, lambda: emu.generation_requests() >= third)
            if hit:
                target: Any = gcs if scenario == "storage-down" else emu
                target.stop()
                time.sleep(outage_s)
                target.start()
            what = "storage" if scenario == "storage-down" else "emulator"
            disruption = (
                f"{what} stopped for {outage_s:.1f} s after {third} generation requests, "
                "restarted on the same port"
                if hit
                else "run ended first"
            )
        first_exit, first_err = _finish(proc)
        ids = run_ids(store)
        first = _rows(store, ids[-1]) if ids else []
        indexed = {p for p, k in keys.items() if store.exists(f"ledger/jobs/{k}/paid.json")}
        finished = {r.prompt for r in first if r.status == "uploaded"} | indexed

        # ---- second run, undisturbed
        seen = len(emu.requests())
        proc = start()
        second_exit, second_err = _finish(proc)
        ids = run_ids(store)
        second = _rows(store, ids[-1]) if ids else []
        by_prompt = generation_requests_by_prompt(emu.requests()[seen:])
        return CrashResult(
            scenario=scenario,
            jobs=jobs,
            command="bananaflow " + " ".join(argv),
            first_exit=first_exit,
            disruption=disruption,
            first_rows=len(first),
            first_uploaded=sum(1 for r in first if r.status == "uploaded"),
            first_failed_reasons=dict(Counter(_reason(r) for r in first if r.status != "uploaded")),
            masters_indexed=len(indexed),
            finished_before=len(finished),
            second_exit=second_exit,
            second_counts=dict(Counter(r.status for r in second)),
            second_accounted=len(second),
            second_generation_requests=sum(by_prompt.values()),
            second_requests_for_finished=sum(n for p, n in by_prompt.items() if p in finished),
            stderr_tail=(second_err or first_err)[-1500:] if second_exit not in (0,) else "",
        )
    finally:
        emu.close()
        if gcs is not None:
            gcs.close()
