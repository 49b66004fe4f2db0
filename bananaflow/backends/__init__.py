"""AI Studio and Vertex AI clients behind one interface, plus the retried generate call.

``create_backend`` validates credentials before returning, so a missing key or project fails at
start-up with the setting to fix, not on the first image of a long run. Each backend owns one
pooled ``httpx.AsyncClient`` (connections sized from its concurrency) unless the caller passes
one, e.g. an ``httpx.ASGITransport`` client onto the in-process emulator.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import google.auth.credentials
import httpx

from bananaflow.backends.aistudio import AIStudioBackend
from bananaflow.backends.auth import TokenSource, load_credentials
from bananaflow.backends.base import ImageBackend
from bananaflow.backends.vertex import VertexBackend
from bananaflow.config import RetrySettings, Settings
from bananaflow.errors import BackendError, ConfigError, InputError, Shed
from bananaflow.generation import BackendName, GeneratedImage, ImageRequest
from bananaflow.retry import SleepFn, retry_async
from bananaflow.tls import tls_context

__all__ = [
    "AIStudioBackend",
    "ImageBackend",
    "VertexBackend",
    "create_backend",
    "generate_with_retries",
    "make_client",
]


def make_client(settings: Settings, concurrency: int) -> httpx.AsyncClient:
    """A pooled client: as many connections as requests this backend may have in flight.

    Per-request timeouts override the defaults here; these only bound stray calls.
    """
    t = settings.generate.timeouts
    size = max(concurrency, settings.generate.concurrency or 0)
    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
        timeout=httpx.Timeout(connect=t.connect_s, read=t.text_s, write=t.text_s, pool=t.text_s),
        headers={"user-agent": "bananaflow/0.1 (httpx)"},
        verify=tls_context(),
    )


def create_backend(
    name: BackendName,
    settings: Settings,
    *,
    client: httpx.AsyncClient | None = None,
    credentials: google.auth.credentials.Credentials | None = None,
) -> ImageBackend:
    """Build a backend after checking its credentials (raises :class:`ConfigError`)."""
    if name == "aistudio":
        cfg = settings.backends.aistudio
        key = cfg.api_key
        if key is None or not key.get_secret_value().strip():
            raise ConfigError(
                "backends.aistudio.api_key",
                "no API key",
                fix="export GEMINI_API_KEY=... (or GOOGLE_API_KEY)",
            )
        owns = client is None
        return AIStudioBackend(
            settings,
            client or make_client(settings, cfg.concurrency),
            api_key=key,
            owns_client=owns,
        )
    if name == "vertex":
        vcfg = settings.backends.vertex
        if not vcfg.project:
            raise ConfigError(
                "backends.vertex.project",
                "no Google Cloud project",
                fix="set GOOGLE_CLOUD_PROJECT or backends.vertex.project",
            )
        creds = load_credentials(vcfg, credentials)
        owns = client is None
        return VertexBackend(
            settings,
            client or make_client(settings, vcfg.concurrency),
            tokens=TokenSource(creds, backend="vertex"),
            owns_client=owns,
        )
    raise ConfigError("backend", f"unknown backend {name!r}", fix="use aistudio or vertex")


async def generate_with_retries(
    backend: ImageBackend,
    request: ImageRequest,
    policy: RetrySettings,
    *,
    sleep: SleepFn = asyncio.sleep,
    on_retry: Callable[[BackendError, int, float], None] | None = None,
    shed: Callable[[BackendError], bool] | None = None,
) -> GeneratedImage:
    """``backend.generate`` under the retry policy.

    The returned image carries the attempt count and the total latency (waits included), which
    is what the manifest reports. On final failure the last typed error is raised with
    ``attempts`` (and ``latency_s``) set on it. Input errors are raised before any attempt
    (``attempts`` 0). An error ``shed`` recognises ends the retries at once as :class:`Shed`:
    the caller has another delivery to buy the image by.
    """
    try:
        backend.check_request(request)
    except InputError as exc:
        exc.attempts = 0  # type: ignore[attr-defined]
        raise

    async def attempt() -> GeneratedImage:
        try:
            return await backend.generate(request)
        except BackendError as err:
            if shed is not None and shed(err):
                raise Shed(err) from err
            raise

    started = time.perf_counter()
    try:
        image, attempts = await retry_async(attempt, policy, sleep=sleep, on_retry=on_retry)
    except BackendError as exc:
        exc.latency_s = time.perf_counter() - started  # type: ignore[attr-defined]
        raise
    image.attempts = attempts
    image.latency_s = time.perf_counter() - started
    return image
