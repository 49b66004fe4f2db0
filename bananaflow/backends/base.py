"""The backend interface and the HTTP plumbing both Google clients share.

A backend call is exactly one HTTP attempt (plus, on Vertex, one replay after a token refresh):
retrying belongs to :mod:`bananaflow.retry` so that every retry is visible, counted and bounded
by one policy. Everything that can go wrong comes out as a typed error from
:mod:`bananaflow.errors`; httpx exceptions never escape, so callers have one vocabulary.

Timeouts live on httpx because only a socket timeout can cut a blocked read: the read timeout
depends on the image size (4K takes several times longer than 1K), upscale and text calls have
their own.
"""

from __future__ import annotations

import json
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread
import httpx

from bananaflow.backends import wire
from bananaflow.backends.status import error_from_response, redact
from bananaflow.config import Settings, TimeoutSettings
from bananaflow.errors import ConfigError, InputError, RequestTimedOut, Unavailable
from bananaflow.models import BackendName, GeneratedImage, ImageRequest, UpscaledImage

T = TypeVar("T")

# Bodies above this are parsed (json + base64 + header read) in a worker thread: a 4K master is
# ~27 MB of JSON and decoding it on the loop would stall every other request in flight.
_THREAD_PARSE_BYTES = 1_000_000
# Parsing holds the GIL, so more parses at once than cores gain nothing; each holds the JSON text
# and the decoded image (~45 MB for a 4K Vertex PNG), so 20 at once cost ~0.9 GB.
_PARSE_SLOTS = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))

__all__ = ["HttpBackend", "ImageBackend"]


class ImageBackend(ABC):
    """One Google platform serving the image model, its text model and (maybe) upscaling.

    This is the interface the chain, the limiter wrapper and the tests program against; the
    HTTP machinery lives in :class:`HttpBackend` so wrappers need not inherit it.
    """

    name: BackendName
    model: str

    def check_request(self, request: ImageRequest) -> None:  # noqa: B027 - optional hook
        """Raise :class:`InputError` for what the server would reject, before any HTTP."""

    @abstractmethod
    async def generate(self, request: ImageRequest) -> GeneratedImage:
        """Exactly one HTTP attempt; raises typed errors."""

    @abstractmethod
    async def upscale(self, data: bytes, mime_type: str, factor: int) -> UpscaledImage:
        """Upscale with the platform's model, or raise :class:`Unsupported`."""

    @abstractmethod
    async def rewrite_prompt(self, prompt: str) -> str:
        """A richer image prompt from the platform's text model."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release the connection pool (when owned)."""


class HttpBackend(ImageBackend):
    """The plumbing both Google clients share: one pooled client, timeouts, error mapping."""

    text_model: str

    def __init__(self, settings: Settings, client: httpx.AsyncClient, *, owns_client: bool) -> None:
        self.settings = settings
        self._timeouts: TimeoutSettings = settings.generate.timeouts
        self._client = client
        self._owns_client = owns_client

    # ------------------------------------------------------------------ public API

    def check_request(self, request: ImageRequest) -> None:
        """Reject what the server would reject, before any HTTP (and before any cost)."""
        model = request.model or self.model
        if not wire.is_valid_model_id(model):
            raise InputError(
                "model",
                f"{model!r} is not a model id",
                fix="use an id such as gemini-3-pro-image (letters, digits, '.', '-', '_', '@')",
            )

    async def generate(self, request: ImageRequest) -> GeneratedImage:
        """One ``generateContent`` call; ``latency_s`` is this attempt's, ``attempts`` is 1."""
        self.check_request(request)
        model = wire.model_id(request.model or self.model)
        body = wire.build_generate_body(request, vertex=self.name == "vertex")
        started = time.perf_counter()
        response = await self._send(
            self._model_url(model, "generateContent"),
            body,
            self._timeout(self._timeouts.read_s[request.image_size]),
        )
        image = await self._parse(
            response,
            lambda payload: wire.parse_generate_response(payload, backend=self.name, model=model),
        )
        image.latency_s = time.perf_counter() - started
        return image

    async def rewrite_prompt(self, prompt: str) -> str:
        """Ask the text model for a richer image prompt (one attempt, ``text_s`` timeout)."""
        if not prompt.strip():
            raise InputError("prompt", "prompt is blank", fix="pass the text to rewrite")
        if not wire.is_valid_model_id(self.text_model):
            raise InputError("text_model", f"{self.text_model!r} is not a model id")
        body = wire.build_text_body(prompt, wire.REWRITE_SYSTEM_INSTRUCTION)
        response = await self._send(
            self._model_url(wire.model_id(self.text_model), "generateContent"),
            body,
            self._timeout(self._timeouts.text_s),
        )
        return await self._parse(
            response, lambda payload: wire.parse_text_response(payload, backend=self.name)
        )

    async def aclose(self) -> None:
        """Close the pooled client if this backend created it (a passed-in one is the caller's)."""
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> HttpBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ subclass hooks

    @abstractmethod
    def _model_url(self, model: str, method: str) -> str:
        """Full URL of ``models/{model}:{method}`` on this platform."""

    @abstractmethod
    def _secrets(self) -> list[str | None]:
        """Strings that must never appear in an error message (key, token)."""

    @abstractmethod
    async def _send(self, url: str, body: dict[str, Any], timeout: httpx.Timeout) -> httpx.Response:
        """POST the body with this platform's auth; returns a 2xx response or raises."""

    # ------------------------------------------------------------------ shared plumbing

    def _timeout(self, read_s: float) -> httpx.Timeout:
        """Write and pool waits get the read budget: big reference uploads and a full pool
        are both bounded by how long one request may take anyway."""
        return httpx.Timeout(
            connect=self._timeouts.connect_s, read=read_s, write=read_s, pool=read_s
        )

    async def _post(
        self,
        url: str,
        content: bytes,
        headers: dict[str, str],
        timeout: httpx.Timeout,
    ) -> httpx.Response:
        """One POST with transport failures mapped; the response may have any status."""
        try:
            return await self._client.post(url, content=content, headers=headers, timeout=timeout)
        except httpx.TimeoutException as e:
            raise RequestTimedOut(
                f"{e.__class__.__name__} after {self._which_timeout(e, timeout)}",
                backend=self.name,
            ) from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as e:
            # A bad base_url is a configuration problem: retrying cannot fix it.
            raise ConfigError(
                f"backends.{self.name}.base_url",
                f"cannot send to {url.split('?')[0]!r} ({e.__class__.__name__})",
                fix="use an http(s):// URL",
            ) from None
        except (httpx.TransportError, httpx.DecodingError) as e:
            # Connection refused/reset, peer closed mid-body, protocol errors: transient.
            detail = redact(str(e) or e.__class__.__name__, self._secrets())[:300]
            raise Unavailable(f"{e.__class__.__name__}: {detail}", backend=self.name) from None

    @staticmethod
    def _which_timeout(err: httpx.TimeoutException, timeout: httpx.Timeout) -> str:
        if isinstance(err, httpx.ConnectTimeout):
            return f"connect {timeout.connect}s"
        if isinstance(err, httpx.WriteTimeout):
            return f"write {timeout.write}s"
        if isinstance(err, httpx.PoolTimeout):
            return f"pool wait {timeout.pool}s"
        return f"read {timeout.read}s"

    def _raise_for_status(self, response: httpx.Response) -> None:
        if response.is_success:
            return
        raise error_from_response(
            response.status_code,
            response.content,
            backend=self.name,
            headers=response.headers,
            reason_phrase=response.reason_phrase,
            secrets=self._secrets(),
        )

    @staticmethod
    def _json_headers() -> dict[str, str]:
        return {"content-type": "application/json", "accept": "application/json"}

    @staticmethod
    def _encode(body: dict[str, Any]) -> bytes:
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    async def _parse(self, response: httpx.Response, parser: Callable[[Any], T]) -> T:
        content = response.content

        def run() -> T:
            with _PARSE_SLOTS:  # the parsed text and the decoded image exist only inside
                return parser(wire.loads(content, backend=self.name))

        if len(content) > _THREAD_PARSE_BYTES:
            return await anyio.to_thread.run_sync(run)
        return run()
