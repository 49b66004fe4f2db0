"""``python -m benchmarks [--quick] [--out DIR] [--docs FILE] [--keep]``.

Full size writes ``benchmarks/results/latest.{json,md}`` and ``docs/benchmarks.md``; ``--quick``
(the smoke test's size) writes ``benchmarks/results/quick.{json,md}`` and leaves the docs page
alone unless ``--docs`` is given.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.procs import ROOT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the smoke test)")
    parser.add_argument("--out", type=Path, help="directory for the JSON and markdown results")
    parser.add_argument("--docs", type=Path, help="also write the results page here")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args(argv)

    from benchmarks import report
    from benchmarks.suite import FULL, QUICK, Suite, log

    sizes = QUICK if args.quick else FULL
    out = args.out or ROOT / "benchmarks" / "results"
    docs = args.docs or (None if args.quick else ROOT / "docs" / "benchmarks.md")
    stem = "quick" if args.quick else "latest"
    workdir = Path(tempfile.mkdtemp(prefix="bananaflow-bench-"))
    try:
        results = Suite(sizes, workdir).run()
    finally:
        if args.keep:
            log(f"scratch kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    for path in report.write(results, out, docs, stem):
        log(f"wrote {path}")
    missed = [t["key"] for t in results["targets"] if not t["met"] and t["target"] != "(report)"]
    log(f"{len(results['targets']) - len(missed)} targets met, missed: {missed or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
