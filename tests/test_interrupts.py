"""Ctrl-C and a full disk, as a user meets them: nothing paid is lost, nothing is paid twice.

The CLI runs as a subprocess in its own session and is interrupted the way a terminal does it
(SIGINT to the whole process group). The full disk is a real 3 MiB tmpfs mounted as the store.
Synchronisation is on conditions (requests counted at the emulator), never on sleeps.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.prefect import server as prefect_server

from bananaflow.emulator.control import EmulatorControl

# The CLI subprocesses use the test run's Prefect server from the environment.
pytestmark = pytest.mark.usefixtures("prefect_api")

BIN = Path(sys.executable).parent
HANG_GUARD_S = 600  # a guard against a hung test, not a timing assertion


def _config(tmp_path: Path, url: str, api_key: str, out: str, **extra: Any) -> Path:
    cfg = {
        "stage": "dev",
        "backends": {"aistudio": {"base_url": url, "api_key": api_key}},
        "generate": {"concurrency": 2, "retry": {"initial_delay_s": 0.01, "max_delay_s": 0.05}},
        "compress": {"format": "jpeg", "quality": 80, "thumbnails": [128]},
        "storage": {"url": out},
        **extra,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _batch(tmp_path: Path, n: int, what: str) -> Path:
    path = tmp_path / "batch.yaml"
    path.write_text(yaml.safe_dump([{"text": f"{what} {i}"} for i in range(n)]))
    return path


def _start(config: Path, batch: Path, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cwd / "cache")}
    return subprocess.Popen(
        [BIN / "bananaflow", "generate", "--batch", str(batch), "--config", str(config)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, like a terminal's foreground job
    )


def _generations(control: EmulatorControl) -> int:
    return sum(control.stats()["generation_requests"].values())


def _wait_for(condition: Any, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while not condition():
        assert proc.poll() is None, "the run ended before the condition was met"
        assert time.monotonic() < deadline, "hang guard"
        time.sleep(0.05)


def test_ctrl_c_saves_what_is_in_flight_and_the_rerun_pays_only_for_the_rest(
    emulator_factory, tmp_path: Path
) -> None:
    server = emulator_factory(time_scale=0.5)  # AI Studio ~1-2 s an image: time to interrupt
    control = EmulatorControl(server.url)
    config = _config(tmp_path, server.url, server.settings.api_keys[0], f"file://{tmp_path}/out")
    batch = _batch(tmp_path, 12, "an interrupted teapot")
    proc = _start(config, batch, tmp_path)
    _wait_for(lambda: _generations(control) >= 2, proc)
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=HANG_GUARD_S)
    assert proc.returncode == 1, stderr[-3000:]
    assert "stopping: no new requests" in stderr
    assert "Traceback" not in stderr
    assert "interrupted" in stdout  # the summary table was printed
    first = _generations(control)
    assert first < 12  # it really stopped early

    again = _start(config, batch, tmp_path)
    stdout, stderr = again.communicate(timeout=HANG_GUARD_S)
    assert again.returncode == 0, stderr[-3000:]
    assert _generations(control) == 12  # every image paid exactly once over both runs


@contextlib.contextmanager
def _tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
    )
    if mounted.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs in CI: {mounted.stderr!r}")
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr!r}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_full_disk_loses_no_paid_image_and_the_rerun_pays_for_none_again(
    grainy_emu, api_key: str, tmp_path: Path
) -> None:
    emu = grainy_emu  # images as large as Google's: 12 of them overfill a 3 MiB disk
    with _tmpfs(tmp_path / "disk", "3m") as disk:
        config = _config(tmp_path, emu.url, api_key, f"file://{disk}")
        batch = _batch(tmp_path, 12, "a disk-filling pear")  # ~9 MB of images: 3 MiB fills
        first = _start(config, batch, tmp_path)
        stdout, stderr = first.communicate(timeout=HANG_GUARD_S)
        assert first.returncode == 1, stderr[-3000:]
        assert "Traceback" not in stderr
        assert "cannot take more (No space left on device)" in stdout + stderr
        assert "uploaded" in stdout and "estimated $" in stdout  # a summary, not a crash
        assert _generations(emu.control) == 12  # every job was paid for once

        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        second = _start(config, batch, tmp_path)
        stdout, stderr = second.communicate(timeout=HANG_GUARD_S)
        assert second.returncode == 0, stderr[-3000:]
        assert _generations(emu.control) == 12  # freed space: nothing paid again


def test_sigkill_then_rerun_pays_only_for_what_the_kill_destroyed(
    emulator_factory, tmp_path: Path
) -> None:
    """A killed run's claims die with its process: the re-run takes them over at once and
    reuses every master that was saved. Only the answers the kill caught on the wire (at most
    one per job in flight) can be paid for again."""
    server = emulator_factory(time_scale=0.5)
    control = EmulatorControl(server.url)
    config = _config(tmp_path, server.url, server.settings.api_keys[0], f"file://{tmp_path}/out")
    batch = _batch(tmp_path, 8, "a killed kettle")
    proc = _start(config, batch, tmp_path)
    _wait_for(lambda: _generations(control) >= 3, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=HANG_GUARD_S)
    killed_at = _generations(control)
    saved = len(list((tmp_path / "out" / "ledger" / "jobs").glob("*/paid.json")))

    again = _start(config, batch, tmp_path)
    _stdout, stderr = again.communicate(timeout=HANG_GUARD_S)
    assert again.returncode == 0, stderr[-3000:]
    total = _generations(control)
    in_flight_at_kill = killed_at - saved
    assert in_flight_at_kill <= 2  # generate.concurrency
    assert total == 8 + in_flight_at_kill  # every saved master reused, nothing else repaid


def test_losing_the_prefect_api_mid_run_still_stores_everything_and_says_so(
    emulator_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = emulator_factory(time_scale=0.2)
    control = EmulatorControl(server.url)
    config = _config(tmp_path, server.url, server.settings.api_keys[0], f"file://{tmp_path}/out")
    batch = _batch(tmp_path, 8, "an orphaned lemon")
    with prefect_server(tmp_path / "prefect-server") as (url, prefect):
        monkeypatch.setenv("PREFECT_API_URL", url)
        # Prefect's client retries a dead API for 2+4+8+16+32 s per call by default; what is
        # tested here (everything stored, and said so) does not depend on how long it tries, so
        # it does not retry (one retry made the run wait about 12 s longer).
        monkeypatch.setenv("PREFECT_CLIENT_MAX_RETRIES", "0")
        proc = _start(config, batch, tmp_path)
        _wait_for(lambda: _generations(control) >= 2, proc)
        os.killpg(prefect.pid, signal.SIGKILL)  # the shared server goes away
        stdout, stderr = proc.communicate(timeout=HANG_GUARD_S)
    assert proc.returncode == 0, stderr[-3000:]
    assert "stopped answering during the run" in stderr
    assert "Traceback" not in stderr.split("stopped answering")[-1]
    assert "uploaded 8" in stdout  # the summary
    manifests = list((tmp_path / "out" / "runs").glob("*/manifest.jsonl"))
    assert len(manifests) == 1 and len(manifests[0].read_text().splitlines()) == 8
    assert _generations(control) == 8
