"""``python -m reliability``: the fault matrix, crash-resume, bad input and the secrets scan at
full size, then ``docs/reliability.md``.

Options: ``--jobs N`` (matrix size, default 500), ``--crash-jobs N`` (default 24),
``--out PATH`` (default docs/reliability.md), ``--json PATH`` (raw figures as well).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from reliability.bad_input import run_bad_inputs
from reliability.crash import run_crash_scenario
from reliability.harness import REPO, Emulator, emulator_settings, prefect_api, quiet_prefect
from reliability.ledger import run_ledger_cases
from reliability.matrix import run_fault_matrix
from reliability.report import Results, write
from reliability.secret_scan import check_loopback, run_secret_scan

SCENARIOS = ("sigkill", "emulator-down", "emulator-down-waits", "storage-down")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reliability", description=__doc__)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--crash-jobs", type=int, default=24)
    parser.add_argument("--secret-jobs", type=int, default=8)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "reliability.md")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    quiet_prefect()
    started = time.monotonic()
    with prefect_api() as api_url:
        print(f"fault matrix: {args.jobs} jobs …", flush=True)
        matrix = run_fault_matrix(args.jobs)
        print(f"  {matrix.counts}, {matrix.duration_s} s", flush=True)
        crashes = []
        for scenario in SCENARIOS:
            print(f"crash/resume: {scenario} …", flush=True)
            crashes.append(run_crash_scenario(scenario, args.crash_jobs, api_url=api_url))
        print("ledger: overlapping runs, Ctrl-C, disk full, deleted and moved store …", flush=True)
        ledger = run_ledger_cases(api_url)
        print("bad input …", flush=True)
        with Emulator(emulator_settings()) as emu:
            bad = run_bad_inputs(emu)
        print("secrets …", flush=True)
        secrets = run_secret_scan(args.secret_jobs)
        secrets.loopback = check_loopback(api_url)
    results = Results(
        matrix=matrix,
        crashes=crashes,
        ledger=ledger,
        bad_inputs=bad,
        secrets=secrets,
        duration_s=round(time.monotonic() - started, 1),
    )
    sizes = {"crash jobs": args.crash_jobs, "secret-scan jobs": args.secret_jobs}
    path = write(results, sizes, args.out)
    if args.json:
        args.json.write_text(results.model_dump_json(indent=1))
    print(f"wrote {path} in {results.duration_s:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
