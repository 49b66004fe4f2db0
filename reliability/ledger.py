"""The job ledger under ordinary accidents: overlapping runs, a full disk, Ctrl-C, a deleted
image and a moved store. Every figure is counted at the emulator (billable answers) or read
back from the store; the CLI runs as a subprocess in its own process group, as in a terminal.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bananaflow.manifest import read_manifest, run_ids
from bananaflow.storage import Store
from reliability.harness import (
    Emulator,
    GcsServer,
    cli_command,
    emulator_settings,
    service_account,
    subprocess_env,
    write_batch,
    write_config,
)

HANG_GUARD_S = 600.0


class LedgerCase(BaseModel):
    """One accident: what happened, and what the ledger made of it."""

    name: str
    jobs: int
    billable: int  # generation requests the emulator answered, over every run of the case
    runs: list[int]  # exit codes, in order
    accounted: int  # jobs the last run's manifest answers for
    missing_objects: int = 0  # uploaded rows pointing at nothing
    note: str = ""

    @property
    def paid_once(self) -> bool:
        return self.billable <= self.jobs


def _generations(emu: Emulator) -> int:
    return sum(emu.control.stats()["generation_requests"].values())


def _start(cfg: Path, batch: Path, cwd: Path, api_url: str) -> subprocess.Popen[str]:
    env = subprocess_env(api_url, XDG_CACHE_HOME=str(cwd / "cache"))
    return subprocess.Popen(
        cli_command("generate", "--batch", str(batch), "--config", str(cfg)),
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _finish(proc: subprocess.Popen[str]) -> int:
    proc.communicate(timeout=HANG_GUARD_S)
    return int(proc.returncode)


def _last_run(store: Store) -> tuple[int, int]:
    """(jobs accounted, uploaded rows whose object is missing) of the newest run."""
    ids = run_ids(store)
    rows = read_manifest(store, ids[-1]) if ids else []
    missing = sum(1 for r in rows if r.status == "uploaded" and not store.exists(r.path))
    return len(rows), missing


def _setup(
    work: Path,
    emu: Emulator,
    n: int,
    what: str,
    storage: str,
    options: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    cfg = write_config(
        work / "config.yaml",
        emu.url,
        api_key=emu.settings.api_keys[0],
        service_account=service_account(work / "sa.json", emu),
        project=emu.settings.project,
        storage_url=storage,
        storage_options=options,
        generate={"concurrency": 4},
    )
    batch = write_batch(work / "batch.yaml", [{"text": f"{what} {i}"} for i in range(n)])
    return cfg, batch


def overlapping_runs(api_url: str, where: str, n: int = 20) -> LedgerCase:
    """Two runs of one batch into one store, started together."""
    with (
        tempfile.TemporaryDirectory(prefix="bf-ledger-") as tmp,
        Emulator(emulator_settings()) as emu,
    ):
        work = Path(tmp)
        gcs = GcsServer() if where == "gs" else None
        try:
            if gcs is not None:
                url, options = gcs.new_bucket() + "/overlap", gcs.options
            else:
                url, options = f"file://{work}/store", None
            cfg, batch = _setup(work, emu, n, f"overlap {where}", url, options)
            procs = [_start(cfg, batch, _mkdir(work / f"r{i}"), api_url) for i in range(2)]
            codes = [_finish(p) for p in procs]
            store = Store(url, options)
            accounted, missing = _last_run(store)
            return LedgerCase(
                name=f"two overlapping runs, {where}://",
                jobs=n,
                billable=_generations(emu),
                runs=codes,
                accounted=accounted,
                missing_objects=missing,
            )
        finally:
            if gcs is not None:
                gcs.close()


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def ctrl_c(api_url: str, n: int = 12) -> LedgerCase:
    """SIGINT to the run's process group after the first answers, then the same command again."""
    with (
        tempfile.TemporaryDirectory(prefix="bf-ledger-") as tmp,
        Emulator(emulator_settings(time_scale=0.5)) as emu,
    ):
        work = Path(tmp)
        cfg, batch = _setup(work, emu, n, "interrupted", f"file://{work}/store")
        proc = _start(cfg, batch, work, api_url)
        deadline = time.monotonic() + HANG_GUARD_S
        while _generations(emu) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        first = _finish(proc)
        stopped_at = _generations(emu)
        second = _finish(_start(cfg, batch, work, api_url))
        accounted, missing = _last_run(Store(f"file://{work}/store"))
        return LedgerCase(
            name="Ctrl-C, then the same command",
            jobs=n,
            billable=_generations(emu),
            runs=[first, second],
            accounted=accounted,
            missing_objects=missing,
            note=f"{stopped_at} answers paid before the stop, all of them saved",
        )


def disk_full(api_url: str, n: int = 12) -> LedgerCase:
    """A 3 MiB tmpfs as the store; then the space is freed and the same command runs again."""
    with (
        tempfile.TemporaryDirectory(prefix="bf-ledger-") as tmp,
        Emulator(emulator_settings()) as emu,
    ):
        work = Path(tmp)
        disk = _mkdir(work / "disk")
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)]).returncode:
            return LedgerCase(
                name="disk full", jobs=n, billable=0, runs=[], accounted=0, note="no tmpfs (root)"
            )
        try:
            cfg, batch = _setup(work, emu, n, "a disk-filling pear", f"file://{disk}")
            first = _finish(_start(cfg, batch, work, api_url))
            spooled = len(list((work / "cache").rglob("*.bin")))
            subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
            second = _finish(_start(cfg, batch, work, api_url))
            accounted, missing = _last_run(Store(f"file://{disk}"))
            return LedgerCase(
                name="disk full (3 MiB), then freed",
                jobs=n,
                billable=_generations(emu),
                runs=[first, second],
                accounted=accounted,
                missing_objects=missing,
                note=f"{spooled} paid masters kept in the local spool while the disk was full",
            )
        finally:
            subprocess.run(["umount", "-l", str(disk)], check=False)


def deleted_and_moved(api_url: str, n: int = 4) -> LedgerCase:
    """Delete one published image, re-run; move the whole store, re-run from its new place."""
    with (
        tempfile.TemporaryDirectory(prefix="bf-ledger-") as tmp,
        Emulator(emulator_settings()) as emu,
    ):
        work = Path(tmp)
        cfg, batch = _setup(work, emu, n, "a moved plum", f"file://{work}/store")
        codes = [_finish(_start(cfg, batch, work, api_url))]
        store = Store(f"file://{work}/store")
        first = read_manifest(store, run_ids(store)[-1])
        store.delete(first[0].path)
        codes.append(_finish(_start(cfg, batch, work, api_url)))
        shutil.move(str(work / "store"), str(work / "moved"))
        cfg.write_text(cfg.read_text().replace(f"file://{work}/store", f"file://{work}/moved"))
        codes.append(_finish(_start(cfg, batch, work, api_url)))
        accounted, missing = _last_run(Store(f"file://{work}/moved"))
        return LedgerCase(
            name="a deleted image, then a moved store",
            jobs=n,
            billable=_generations(emu),
            runs=codes,
            accounted=accounted,
            missing_objects=missing,
            note="the deleted image republished from its paid master; the moved store resolved",
        )


def run_ledger_cases(api_url: str) -> list[LedgerCase]:
    return [
        overlapping_runs(api_url, "file"),
        overlapping_runs(api_url, "gs"),
        ctrl_c(api_url),
        disk_full(api_url),
        deleted_and_moved(api_url),
    ]
