"""One run in a fresh process, for what must be measured per process: peak memory.

``python -m benchmarks.child SPEC.json`` runs either the ``generate_images`` flow (``"peer":
"bananaflow"``, its embedded emulator attached to the one named in the spec, so no emulator lives
in this process) or the hand-written SDK script (``"peer": "sdk_script"``) and prints one JSON
line: wall time, CPU, this process's RSS once everything is imported and its peak RSS (both from
``/proc/self/status``), and what was delivered. The Prefect API comes from ``PREFECT_API_URL``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.procs import EmulatorProcess, peak_rss_mb, rss_mb, self_cpu
from benchmarks.workload import Profile


def main(spec_file: str) -> None:
    spec = json.loads(Path(spec_file).read_text())
    from bananaflow.cli.embedded import attached
    from bananaflow.config import EmulatorSettings
    from bananaflow.flows.generate import generate_images
    from bananaflow.parameters import GenerateParameters
    from benchmarks import peers

    settings = EmulatorSettings.model_validate(spec["emulator"])
    rss_before = rss_mb()
    t0, c0 = time.perf_counter(), self_cpu()
    counts: dict[str, Any]
    if spec.get("peer") == "sdk_script":
        emu = EmulatorProcess("attached", settings, url=spec["url"])
        run = peers.run_sdk_script(
            emu, Profile(**spec["profile"]), spec["prompts"], Path(spec["out"]), spec["size"]
        )
        counts = {"uploaded": run.images - run.failed, "failed": run.failed}
    else:
        params = GenerateParameters(
            config=spec["config"], prompts=spec["prompts"], batch_file=spec.get("batch_file")
        )
        with attached(spec["url"], settings):
            summary = asyncio.run(generate_images(params))
        counts = dict(summary.counts)
    result = {
        "wall_s": time.perf_counter() - t0,
        "cpu_s": self_cpu() - c0,
        "rss_before_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
        "counts": counts,
    }
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
