"""Bad input through the real CLI: one readable line, non-zero exit, no traceback, 0 requests.

The cases (configs, credentials, service-account files, prompts, batch files, templates, sizes,
storage URLs, names escaping the prefix, budget 0) live in ``reliability.bad_input`` so that
``python -m reliability`` prints the same table in docs/reliability.md.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# `reliability` lives at the repo root next to `tests/` (not an installed package).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reliability.bad_input import CASES, Case, run_case
from reliability.harness import Emulator, emulator_settings


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(emulator_settings()) as emu:
        yield emu


def _param(case: Case) -> object:
    return pytest.param(case, id=case.name)


def test_there_are_at_least_30_cases() -> None:
    assert len(CASES) >= 30


@pytest.mark.usefixtures("prefect_api")
@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input_case(case: Case, emulator: Emulator, tmp_path: Path) -> None:
    r = run_case(case, emulator, workdir=tmp_path)
    assert r.generation_requests == 0, r
    assert r.exit_code == case.exit_code, r
    assert not r.traceback, r
    assert r.ok, r
