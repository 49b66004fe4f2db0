"""``bananaflow setup`` against a real Prefect API, and what a run does when it was never run.

The command runs as a subprocess (as a user runs it) against the test run's Prefect server
(tests/fixtures/prefect.py), whose URL is handed to the subprocess.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from bananaflow.config import load_settings
from bananaflow.deployments.setup import limit_specs
from bananaflow.flows.generate import generate_images
from bananaflow.parameters import GenerateParameters

REPO = Path(__file__).resolve().parent.parent


def api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    assert url, "prefect_api fixture must be active"
    return url


def bananaflow(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bananaflow.cli.app", *args],
        cwd=REPO,
        env=env if env is not None else {**os.environ, "PREFECT_API_URL": api_url()},
        capture_output=True,
        text=True,
        timeout=120,
    )


def write_config(tmp_path: Path, **over: Any) -> tuple[str, str]:
    """A config with its own limit names, so tests never share (or reset) each other's limits."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    cfg: dict[str, Any] = {
        "backends": {
            "aistudio": {"requests_per_minute": 30, "concurrency": 2},
            "vertex": {"requests_per_minute": 300, "concurrency": 20},
        },
        "limits": {"mode": "global", "name_prefix": prefix},
    }
    for key, value in over.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    path = tmp_path / f"setup-{prefix}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path), prefix


def read_limit(name: str) -> Any:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(name)


@pytest.mark.parametrize(("rpm", "concurrency"), [(2, 1), (30, 2), (60, 5), (300, 20), (1000, 4)])
def test_rate_limit_never_admits_more_than_rpm_in_a_minute(rpm: int, concurrency: int) -> None:
    settings = load_settings(
        "local",
        {
            "backends.aistudio.requests_per_minute": rpm,
            "backends.aistudio.concurrency": concurrency,
        },
    )
    rate, conc = limit_specs(settings)[:2]
    assert rate.name.endswith("-aistudio-rpm") and conc.name.endswith("-aistudio-concurrency")
    assert rate.slot_decay_per_second > 0  # Prefect's rate_limit needs decay
    # A full burst, then decay for the rest of the minute: Google's count for that minute.
    assert rate.limit + rate.slot_decay_per_second * 60 <= rpm + 1e-9
    assert 1 <= rate.limit <= concurrency
    assert conc.limit == concurrency and conc.slot_decay_per_second == 0


def test_setup_without_a_server_is_one_line_naming_the_fix(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    proc = bananaflow("setup", "--config", "dev", env=env)
    assert proc.returncode == 2
    assert "PREFECT_API_URL" in proc.stderr and "prefect server start" in proc.stderr
    assert not (tmp_path / "prefect-home" / "prefect.db").exists()  # no ephemeral server


@pytest.mark.usefixtures("prefect_api")
def test_setup_twice_creates_then_reports_unchanged_and_matches_config(tmp_path: Path) -> None:
    config, prefix = write_config(tmp_path)
    pool = f"pool-{prefix}"

    first = bananaflow("setup", "--config", config, "--pool", pool)
    assert first.returncode == 0, first.stderr
    second = bananaflow("setup", "--config", config, "--pool", pool)
    assert second.returncode == 0, second.stderr

    first_lines, second_lines = first.stdout.splitlines(), second.stdout.splitlines()
    assert first_lines[0] == f"work pool {pool}: created (process)"
    assert len(first_lines) == 6 and all(": created (" in line for line in first_lines)
    assert len(second_lines) == 6 and all(": unchanged (" in line for line in second_lines)
    assert first_lines[-1].startswith(f"automation {prefix}-crash-dead-chunks: created")

    expected = {
        f"{prefix}-aistudio-rpm": (1, 29 / 60),  # 30 rpm: 1 burst + 29 over the minute
        f"{prefix}-aistudio-concurrency": (2, 0.0),
        f"{prefix}-vertex-rpm": (5, 295 / 60),  # 300 rpm: 5 burst (one second's worth)
        f"{prefix}-vertex-concurrency": (20, 0.0),
    }
    for name, (limit, decay) in expected.items():
        got = read_limit(name)
        assert got.active and got.limit == limit, name
        assert got.slot_decay_per_second == pytest.approx(decay, abs=1e-6), name
        assert got.slot_decay_per_second <= decay  # rounded down, never above the quota
    from prefect import get_client

    with get_client(sync_client=True) as client:
        assert client.read_work_pool(pool).type == "process"


@pytest.mark.usefixtures("prefect_api")
def test_setup_after_a_config_change_updates_only_what_changed(tmp_path: Path) -> None:
    config, prefix = write_config(tmp_path)
    pool = f"pool-{prefix}"
    assert bananaflow("setup", "--config", config, "--pool", pool).returncode == 0
    # Someone switches a limit off in the UI: runs would then ignore it.
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    with get_client(sync_client=True) as client:
        client.update_global_concurrency_limit(
            f"{prefix}-vertex-concurrency", GlobalConcurrencyLimitUpdate(active=False)
        )
    data = yaml.safe_load(Path(config).read_text())
    data["backends"]["aistudio"]["requests_per_minute"] = 6
    Path(config).write_text(yaml.safe_dump(data))

    proc = bananaflow("setup", "--config", config, "--pool", pool)
    assert proc.returncode == 0, proc.stderr
    verbs = {
        line.split(":")[0]: line.split(": ")[1].split(" ")[0] for line in proc.stdout.splitlines()
    }
    assert verbs == {
        f"work pool {pool}": "unchanged",
        f"limit {prefix}-aistudio-rpm": "updated",
        f"limit {prefix}-aistudio-concurrency": "unchanged",
        f"limit {prefix}-vertex-rpm": "unchanged",
        f"limit {prefix}-vertex-concurrency": "updated",
        f"automation {prefix}-crash-dead-chunks": "unchanged",
    }
    assert read_limit(f"{prefix}-aistudio-rpm").slot_decay_per_second == pytest.approx(
        5 / 60, abs=1e-6
    )
    assert read_limit(f"{prefix}-vertex-concurrency").active


@pytest.mark.usefixtures("prefect_api")
def test_global_mode_without_setup_fails_before_any_request(
    tmp_path: Path, emu, api_key: str
) -> None:
    config, prefix = write_config(
        tmp_path,
        backends={"aistudio": {"base_url": emu.url, "api_key": api_key}},
        storage={"url": f"file://{tmp_path}/out"},
        compress={"thumbnails": []},
    )
    summary = asyncio.run(
        generate_images(GenerateParameters(config=config, prompts=["a limit-less lemon"]))
    )
    row = summary.rows[0]
    assert row.status == "failed"
    assert "bananaflow setup" in (row.error or "") and prefix in (row.error or "")
    assert emu.control.stats()["generation_requests"]["aistudio"] == 0  # nothing was spent
