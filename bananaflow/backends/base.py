"""The backend interface and the HTTP plumbing both Google clients share.

A backend call is exactly one HTTP attempt (plus, on Vertex, one replay after a token refresh):
retrying belongs to :mod:`bananaflow.retry` so that every retry is visible, counted and bounded
by one policy. Everything that can go wrong comes out as a typed error from
:mod:`bananaflow.errors`; httpx exceptions never escape, so callers have one vocabulary.

Timeouts live on httpx because only a socket timeout can cut a blocked read: the read timeout
depends on the image size (4K takes several times longer than 1K), upscale and text calls have
their own. Socket timeouts measure silence, though, so a server trickling a byte now and then
never trips them: every attempt also runs under one overall budget (connect + read timeout, and
never past what is left of ``generate.retry.deadline_s``) that cancels it wherever it is.

Bodies are streamed and counted *after* decompression: a 1 MiB gzip body can inflate to a
gigabyte, so the cap (``generate.max_response_mb``) is checked chunk by chunk and the read is
abandoned the moment it is passed.
"""

from __future__ import annotations

import json
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import httpx

from bananaflow.backends import wire
from bananaflow.backends.status import error_from_response
from bananaflow.config import Settings, TimeoutSettings
from bananaflow.errors import (
    ConfigError,
    InputError,
    RequestTimedOut,
    ResponseTooLarge,
    Unavailable,
)
from bananaflow.generation import (
    BackendName,
    GeneratedImage,
    ImageRequest,
    UpscaledImage,
    is_blank_text,
)
from bananaflow.redact import redact
from bananaflow.retry import remaining_s

T = TypeVar("T")

# Bodies above this are parsed (json + base64 + header read) in a worker thread: a 4K master is
# ~27 MB of JSON and decoding it on the loop would stall every other request in flight.
_THREAD_PARSE_BYTES = 1_000_000
# Parsing holds the GIL, so more parses at once than cores gain nothing; each holds the JSON text
# and the decoded image (~45 MB for a 4K Vertex PNG), so 20 at once cost ~0.9 GB.
_PARSE_SLOTS = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))
# An error body only has to carry a google.rpc.Status; past this it is a proxy's page or junk,
# and the status code already decides what happens, so the rest is not read.
_ERROR_BODY_BYTES = 1 << 20

__all__ = ["HttpBackend", "ImageBackend", "Reply"]


@dataclass(frozen=True)
class Reply:
    """One HTTP answer, read in full (and within bounds) before the connection is released."""

    status_code: int
    headers: httpx.Headers
    reason_phrase: str
    content: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300


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
        self._max_body = int(settings.generate.max_response_mb * 1024 * 1024)
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
        reply = await self._exchange(
            self._model_url(model, "generateContent"),
            body,
            self._read_s(request),
            self._tier_headers(request),
        )
        image = await self._parse(
            reply,
            lambda payload, secrets: wire.parse_generate_response(
                payload, backend=self.name, model=model, request=request, secrets=secrets
            ),
        )
        # The header is what Google documents for spotting a downgraded priority call.
        header = reply.headers.get(wire.SERVICE_TIER_HEADER)
        if header:
            image.service_tier = redact(header, self._secrets())
        image.latency_s = time.perf_counter() - started
        return image

    async def rewrite_prompt(self, prompt: str) -> str:
        """Ask the text model for a richer image prompt (one attempt, ``text_s`` timeout)."""
        if is_blank_text(prompt):
            raise InputError("prompt", "prompt is blank", fix="pass the text to rewrite")
        if not wire.is_valid_model_id(self.text_model):
            raise InputError("text_model", f"{self.text_model!r} is not a model id")
        body = wire.build_text_body(prompt, wire.REWRITE_SYSTEM_INSTRUCTION)
        reply = await self._exchange(
            self._model_url(wire.model_id(self.text_model), "generateContent"),
            body,
            self._timeouts.text_s,
        )
        return await self._parse(
            reply,
            lambda payload, secrets: wire.parse_text_response(
                payload, backend=self.name, secrets=secrets
            ),
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
    async def _send(
        self,
        url: str,
        body: dict[str, Any],
        timeout: httpx.Timeout,
        extra_headers: dict[str, str] | None = None,
    ) -> Reply:
        """POST the body with this platform's auth; returns a 2xx reply or raises."""

    def _tier_headers(self, request: ImageRequest) -> dict[str, str]:
        """Headers that choose the service tier; AI Studio chooses it in the body instead."""
        return {}

    # ------------------------------------------------------------------ shared plumbing

    def _read_s(self, request: ImageRequest) -> float:
        """The read timeout: by size, or the delivery's when longer (flex answers in minutes)."""
        by_size = self._timeouts.read_for(request.image_size)
        by_tier = self._timeouts.delivery_read_s.get(request.delivery, {}).get(self.name)
        return max(by_size, by_tier) if by_tier else by_size

    def _timeout(self, read_s: float) -> httpx.Timeout:
        """Write and pool waits get the read budget: big reference uploads and a full pool
        are both bounded by how long one request may take anyway."""
        return httpx.Timeout(
            connect=self._timeouts.connect_s, read=read_s, write=read_s, pool=read_s
        )

    async def _exchange(
        self,
        url: str,
        body: dict[str, Any],
        read_s: float,
        extra_headers: dict[str, str] | None = None,
    ) -> Reply:
        """One attempt's whole request (auth, connect, send, headers, full body) in one budget.

        A legitimate answer needs at most the time to connect plus the read timeout it is sized
        for; past that, or past what is left of the retry deadline, the attempt is cancelled
        wherever it is, so a trickled body cannot hold a job (or a paid-for slot) forever.
        """
        budget = self._timeouts.connect_s + read_s
        why = f"connect {self._timeouts.connect_s}s + read {read_s}s"
        left = remaining_s()
        if left is not None and left < budget:
            budget, why = left, "what was left of retry.deadline_s"
        if budget <= 0:
            raise RequestTimedOut(f"no time left for another attempt ({why})", backend=self.name)
        with anyio.move_on_after(budget):
            return await self._send(url, body, self._timeout(read_s), extra_headers)
        raise RequestTimedOut(
            f"attempt cut after {budget:.1f}s, the whole-request budget ({why})",
            backend=self.name,
        )

    async def _post(
        self,
        url: str,
        content: bytes,
        headers: dict[str, str],
        timeout: httpx.Timeout,
        secrets: Sequence[str | None],
    ) -> Reply:
        """One POST, body read within the size cap, transport failures mapped; any status."""
        try:
            async with self._client.stream(
                "POST", url, content=content, headers=headers, timeout=timeout
            ) as response:
                return Reply(
                    response.status_code,
                    response.headers,
                    response.reason_phrase,
                    await self._read_body(response),
                )
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
            detail = redact(str(e) or e.__class__.__name__, secrets)[:300]
            raise Unavailable(f"{e.__class__.__name__}: {detail}", backend=self.name) from None

    async def _read_body(self, response: httpx.Response) -> bytes:
        """The decoded body, counted as it inflates; over the cap a 2xx answer is refused and
        an error page is cut (its status already says what happened)."""
        limit = self._max_body if response.is_success else _ERROR_BODY_BYTES
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                if not response.is_success:
                    chunks.append(chunk[: len(chunk) - (size - limit)])
                    break
                raise ResponseTooLarge(
                    f"body passed {limit / 1048576:.0f} MiB after decompression "
                    f"(content-encoding {response.headers.get('content-encoding', 'none')}); "
                    "no genuine answer is that large (raise generate.max_response_mb if this "
                    "one was)",
                    backend=self.name,
                    status=response.status_code,
                )
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _which_timeout(err: httpx.TimeoutException, timeout: httpx.Timeout) -> str:
        if isinstance(err, httpx.ConnectTimeout):
            return f"connect {timeout.connect}s"
        if isinstance(err, httpx.WriteTimeout):
            return f"write {timeout.write}s"
        if isinstance(err, httpx.PoolTimeout):
            return f"pool wait {timeout.pool}s"
        return f"read {timeout.read}s"

    def _raise_for_status(self, reply: Reply, secrets: Sequence[str | None]) -> None:
        if reply.is_success:
            return
        raise error_from_response(
            reply.status_code,
            reply.content,
            backend=self.name,
            headers=reply.headers,
            reason_phrase=reply.reason_phrase,
            secrets=secrets,
        )

    @staticmethod
    def _json_headers() -> dict[str, str]:
        return {"content-type": "application/json", "accept": "application/json"}

    @staticmethod
    def _encode(body: dict[str, Any]) -> bytes:
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    async def _parse(self, reply: Reply, parser: Callable[[Any, list[str | None]], T]) -> T:
        content = reply.content
        secrets = self._secrets()

        def run() -> T:
            with _PARSE_SLOTS:  # the parsed text and the decoded image exist only inside
                return parser(wire.loads(content, backend=self.name), secrets)

        if len(content) > _THREAD_PARSE_BYTES:
            return await anyio.to_thread.run_sync(run)
        return run()
