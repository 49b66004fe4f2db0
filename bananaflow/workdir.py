"""A run's scratch folder in the temp dir, and those of killed runs swept away.

A run removes its folder when it ends (``ChainContext.aclose``), Ctrl-C included; a process
killed outright (SIGKILL, the OOM killer) cannot, and left its copies of masters and
derivatives in /tmp, one folder per killed run, for good. The owning process id is in the
name, so the next run on the machine removes folders whose process is gone and that nothing
has written to for ``QUIET_S`` (a /tmp shared across PID namespaces must not cost a live run
its folder).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path

PREFIX = "bananaflow-"
QUIET_S = 600.0
_OWNER = re.compile(rf"^{re.escape(PREFIX)}.+-p(\d+)-[^-]+$")


def new_work_dir(run_id: str) -> Path:
    sweep_orphans()
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{run_id}-p{os.getpid()}-"))


def sweep_orphans(root: Path | None = None) -> list[Path]:
    """Remove the scratch folders of processes that no longer exist; return them."""
    removed = []
    quiet_since = time.time() - QUIET_S
    for path in Path(root or tempfile.gettempdir()).glob(f"{PREFIX}*"):
        match = _OWNER.match(path.name)
        if not match or _alive(int(match[1])):
            continue
        try:
            if path.stat().st_mtime < quiet_since and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        except OSError:  # swept by another run meanwhile
            continue
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True
