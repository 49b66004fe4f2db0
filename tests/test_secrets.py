"""Secrets never show up in logs, manifests, artifacts, exceptions, metadata or URLs.

``reliability.secret_scan`` runs the real flow with a canary API key, canary bearer tokens and
the service-account file's private key, provokes failures, and reads back every place a secret
could end up (our logs, Prefect's logs/task runs/artifacts from its API, manifests, GCS object
metadata, the emulator's request log). Positive controls prove the matcher would see a leak.
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

# `reliability` lives at the repo root next to `tests/` (not an installed package).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bananaflow.config import EmulatorSettings
from reliability.harness import current_api_url, emulator_settings
from reliability.secret_scan import check_loopback, run_secret_scan


@pytest.mark.usefixtures("prefect_api")
def test_no_canary_anywhere_after_a_full_run(tmp_path: Path) -> None:
    r = run_secret_scan(4, workdir=tmp_path)

    assert r.findings == []
    assert all(r.controls_found.values()), r.controls_found  # the scan can see a leak
    assert r.counts.get("uploaded", 0) >= 2 and r.tokens_issued >= 2
    for place in (
        "our process logs",
        "prefect logs",
        "prefect artifacts",
        "prefect task runs",
        "manifests and index",
        "object metadata (GCS)",
        "URLs seen by the emulator",
    ):
        assert r.scanned[place] > 0, place  # each place was really read back
    errors = r.exception_texts
    assert "API key not valid" in errors["rejected API key"]
    assert "auth error" in errors["token rejected twice"]
    assert "token endpoint" in errors["token endpoint down"]
    assert "unusable private key" in errors["broken key file"]


@pytest.mark.usefixtures("prefect_api")
def test_the_emulator_binds_loopback_unless_told_otherwise() -> None:
    assert EmulatorSettings().host == "127.0.0.1"
    bound = check_loopback(current_api_url())
    assert set(bound.values()) == {"127.0.0.1"}, bound


def test_token_prefix_control_sets_the_canary_and_refuses_junk() -> None:
    from fixtures.emulator import fake_jwt

    from bananaflow.emulator.control import EmulatorControl
    from bananaflow.emulator.server import EmulatorServer

    with EmulatorServer(emulator_settings()) as server, EmulatorControl(server.url) as control:
        control.set_token_prefix("ya29.CANARYTOKEN-")
        grant = {
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "assertion": fake_jwt(),
        }
        token = httpx.post(server.url + "/token", data=grant, timeout=10).json()["access_token"]
        assert token.startswith("ya29.CANARYTOKEN-")
        with pytest.raises(ValueError, match="prefix"):
            control.set_token_prefix("bad prefix with spaces")
        assert "CANARYTOKEN" not in httpx.get(server.url + "/_emulator/stats").text
