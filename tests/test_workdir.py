"""Scratch folders of killed runs are swept by the next run; live runs' folders are kept."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from bananaflow.workdir import QUIET_S, sweep_orphans


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_runs_folder_is_swept_and_a_live_ones_is_kept(tmp_path: Path) -> None:
    pid = _dead_pid()
    dead = tmp_path / f"bananaflow-20261130T000000Z-aaaaaaaa-p{pid}-x1y2"
    dead_but_busy = tmp_path / f"bananaflow-20261130T000000Z-dddddddd-p{pid}-x7y8"
    live = tmp_path / f"bananaflow-20261130T000000Z-bbbbbbbb-p{os.getpid()}-x3y4"
    old_style = tmp_path / "bananaflow-20261130T000000Z-cccccccc-x5y6"  # no owner: left alone
    other = tmp_path / "somebody-else-p1-zz"
    long_ago = time.time() - QUIET_S - 60
    for folder in (dead, dead_but_busy, live, old_style, other):
        folder.mkdir()
        (folder / "master.png").write_bytes(b"paid bytes, already in the spool")
        if folder is not dead_but_busy:  # just written: maybe a live run of another namespace
            os.utime(folder, (long_ago, long_ago))

    assert sweep_orphans(tmp_path) == [dead]

    assert not dead.exists()
    assert live.exists() and old_style.exists() and other.exists() and dead_but_busy.exists()
