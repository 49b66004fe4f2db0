"""Faults at random rates: the emulator injects every class, and the chain loses and repays nothing.

The emulator half checks that each ``fault_rates`` class really fires (and a misspelt one is
refused). The chain half is ``reliability.matrix`` at CI size: one batch through the real flow,
every fault class drawn at random, the GCS emulator stopped and restarted mid-run, objects
already present under the run's names; then the next run on a clean emulator.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

# `reliability` lives at the repo root next to `tests/` (not an installed package).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fixtures.emulator import fake_jwt

from bananaflow.backends import create_backend, generate_with_retries
from bananaflow.config import EmulatorSettings, RetrySettings, load_settings
from bananaflow.emulator.credentials import write_service_account_file
from bananaflow.emulator.faults import ForcedFault
from bananaflow.emulator.pipeline import RANDOM_IMAGE_FAULTS
from bananaflow.emulator.server import EmulatorServer
from bananaflow.errors import BananaflowError
from bananaflow.generation import ImageRequest
from bananaflow.manifest import ManifestWriter, read_manifest
from bananaflow.records import ManifestRow
from bananaflow.storage import Store, is_transient_storage_error, retry_transient
from reliability.harness import emulator_settings, write_config
from reliability.matrix import run_fault_matrix

# ----------------------------------------------------------------------------- emulator


def _body(prompt: str) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": prompt}]}]}


def _studio(server: EmulatorServer, prompt: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1beta/models/gemini-3-pro-image:generateContent",
        json=_body(prompt),
        headers={"x-goog-api-key": server.settings.api_keys[0]},
        timeout=10,
    )


@pytest.mark.parametrize("fault", sorted(set(RANDOM_IMAGE_FAULTS) - {"hang", "reset"}))
def test_every_image_fault_class_fires_at_rate_one(fault: str) -> None:
    settings = emulator_settings(fault_rates={"aistudio": {fault: 1.0}})
    with EmulatorServer(settings) as server:
        answer = _studio(server, f"a {fault} pear")
        log = server.state.requests()
    assert [e["fault"] for e in log] == [f"random:{fault}"]
    if fault[0].isdigit() or fault.startswith("quota"):
        assert answer.status_code == (429 if fault.startswith("quota") else int(fault))
    else:
        assert answer.status_code == 200  # body faults and refusals arrive as HTTP 200
    if fault == "image_safety":
        assert answer.json()["candidates"][0]["finishReason"] == "IMAGE_SAFETY"


def test_random_hang_and_reset_fire_too() -> None:
    settings = emulator_settings(
        fault_rates={"aistudio": {"hang": 1.0}}, profiles={"aistudio": {"hang_s": 1.0}}
    )
    with EmulatorServer(settings) as server:
        assert _studio(server, "a hanging pear").status_code == 504
    with EmulatorServer(emulator_settings(fault_rates={"aistudio": {"reset": 1.0}})) as server:
        with pytest.raises(httpx.RemoteProtocolError):
            _studio(server, "a reset pear")
        assert server.state.requests()[0]["fault"] == "random:reset"


def _vertex_call(server: EmulatorServer, token: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/projects/{server.settings.project}/locations/global/publishers/google"
        "/models/gemini-3-pro-image:generateContent",
        json=_body("a vertex pear"),
        headers={"authorization": f"Bearer {token}"},
        timeout=10,
    )


def _grant(server: EmulatorServer) -> httpx.Response:
    grant = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": fake_jwt()}
    return httpx.post(server.url + "/token", data=grant, timeout=10)


def test_random_token_faults_come_from_the_vertex_profile() -> None:
    settings = emulator_settings(fault_rates={"vertex": {"token_error": 1.0}})
    with EmulatorServer(settings) as server:
        assert _grant(server).status_code == 500
        assert server.state.requests()[0]["fault"] == "random:token_error"
    # Unscaled time: a token is "young" for a minute.
    settings = emulator_settings(time_scale=1.0, fault_rates={"vertex": {"token_expired": 1.0}})
    with EmulatorServer(settings) as server:
        token = _grant(server).json()["access_token"]
        # A fresh token is never struck (a refresh-and-replay must not meet a second 401) ...
        assert _vertex_call(server, token).status_code == 200
        server.state.tokens._tokens[token].expires_at -= 120  # two minutes older, no sleeping
        # ... an older one can expire at any time.
        assert _vertex_call(server, token).status_code == 401
        assert server.state.requests()[-1]["fault"] == "random:token_expired"


def test_unknown_fault_name_is_refused() -> None:
    with pytest.raises(ValueError, match="fault_rates: unknown fault"):
        EmulatorServer(emulator_settings(fault_rates={"aistudio": {"quota_dayly": 0.5}}))


def test_fault_draws_are_reproducible_for_a_seed() -> None:
    def faults(seed: int) -> list[str | None]:
        settings = emulator_settings(seed=seed, fault_rates={"aistudio": {"503": 0.5}})
        with EmulatorServer(settings) as server:
            for i in range(12):
                _studio(server, f"seeded pear {i}")
            return [e["fault"] for e in server.state.requests()]

    first = faults(3)
    assert first == faults(3)
    assert "random:503" in first and None in first


def test_default_profiles_draw_no_extra_faults() -> None:
    assert all(not p.fault_rates for p in EmulatorSettings().profiles.values())


# ----------------------------------------------------------------------------- client side


def test_token_endpoint_outage_is_retried_not_an_auth_failure(tmp_path: Path) -> None:
    asyncio.run(_token_outage(tmp_path))


async def _token_outage(tmp_path: Path) -> None:
    with EmulatorServer(emulator_settings()) as server:
        sa = write_service_account_file(
            tmp_path / "sa.json", server.url + "/token", server.settings.project
        )
        config = write_config(
            tmp_path / "c.yaml",
            server.url,
            api_key=server.settings.api_keys[0],
            service_account=sa,
            project=server.settings.project,
            storage_url=f"file://{tmp_path}/out",
        )
        # google-auth tries /token 3 times per refresh: fail exactly one refresh.
        server.state.faults.add(ForcedFault("token_error", 3))
        backend = create_backend("vertex", load_settings(config))
        try:
            image = await generate_with_retries(
                backend,
                ImageRequest(prompt="a pear after a token outage"),
                RetrySettings(initial_delay_s=0.01, max_delay_s=0.02, max_attempts=3),
            )
        finally:
            await backend.aclose()
    assert image.attempts == 2 and image.data  # was: AuthError after one attempt


# ----------------------------------------------------------------------------- storage


class _FlakyStore(Store):
    """A real local store whose next ``failures`` writes raise ConnectionError.

    Stands in for a remote store during an outage: the real one (gcsfs against a stopped
    fake-gcs-server) takes ~33 s per failed call, too slow for a unit test; the matrix below
    stops the real one.
    """

    def __init__(self, url: str, failures: int):
        super().__init__(url)
        self.failures = failures

    def append(self, path: str, data: bytes, *, sync: bool = True) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("storage down")
        super().append(path, data, sync=sync)


def _row(job: str, status: str = "uploaded") -> ManifestRow:
    return ManifestRow(run_id="r1", job_id=job, output_key=f"key-{job}", status=status, stage="dev")


def test_a_manifest_row_that_cannot_be_written_is_kept_and_written_later(tmp_path: Path) -> None:
    store = _FlakyStore(str(tmp_path), failures=2)
    writer = ManifestWriter(store, "r1")
    writer.append(_row("a"))  # storage down: kept, the batch goes on
    writer.append(_row("b"))  # still down
    assert writer.pending == 2
    writer.append(_row("c"))  # back: a and b are written first, in order
    assert writer.pending == 0
    writer.close()
    assert [r.job_id for r in read_manifest(store, "r1")] == ["a", "b", "c"]


def test_close_fails_loudly_when_rows_still_cannot_be_written(tmp_path: Path) -> None:
    writer = ManifestWriter(_FlakyStore(str(tmp_path), failures=99), "r1")
    writer.append(_row("a"))
    with pytest.raises(BananaflowError, match="1 row"):
        writer.close()


def test_transient_storage_errors_are_retried_final_answers_are_not() -> None:
    assert is_transient_storage_error(ConnectionRefusedError())
    assert is_transient_storage_error(TimeoutError())
    assert not is_transient_storage_error(FileNotFoundError())
    assert not is_transient_storage_error(FileExistsError())
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("peer reset")
        return "ok"

    assert retry_transient(flaky, "test", sleep=lambda _s: None) == "ok" and len(calls) == 3
    with pytest.raises(FileNotFoundError):
        retry_transient(lambda: (_ for _ in ()).throw(FileNotFoundError()), "t", sleep=print)


# ----------------------------------------------------------------------------- the matrix


@pytest.mark.usefixtures("prefect_api")
def test_fault_matrix_loses_nothing_and_pays_nothing_twice(tmp_path: Path) -> None:
    m = run_fault_matrix(60, outage_s=2.0, workdir=tmp_path)

    assert m.rows == m.jobs and m.lost == 0 and m.accounted_pct == 100.0
    assert m.failed_without_reason == 0
    assert m.jobs_paid_twice == 0 and m.usable_answers_max_per_job == 1
    assert m.jobs_with_duplicate_derivatives == 0 and m.jobs_with_duplicate_masters == 0
    assert m.uploaded_rows_without_object == 0
    assert m.auth_failures == 0
    assert m.storage_outage.happened
    assert len(m.outcomes) >= 4  # the draws hit several classes even at this size
    assert all(o.lost == 0 for o in m.outcomes)
    # Which job draws which fault depends on scheduling, so per-job endings vary run to run (a
    # job hit by a 503 may then meet a billing 429 and end on that); what holds every time: a
    # transient fault never ends a job with attempts left, and refusals are never retried.
    assert m.given_up_early == 0
    for o in m.outcomes:
        if o.fault in ("image_safety", "no_image", "no_image_refusal"):
            assert o.uploaded == 0 and o.refused + sum(o.failed.values()) == o.jobs_hit
    assert set(m.identical_existing_jobs.values()) == {"uploaded"}
    assert all("storage conflict" in e for e in m.conflicting_existing_jobs.values())
    # The next run: nothing finished is paid again; everything but the conflicts finishes.
    assert m.resume.requests_for_jobs_finished_before == 0
    assert m.resume.accounted == m.jobs
    assert m.resume.counts == {"uploaded": m.jobs - 2, "failed": 2}
