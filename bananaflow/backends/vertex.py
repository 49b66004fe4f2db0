"""Vertex AI (OAuth bearer from a service account, ADC or explicit credentials).

Differences from AI Studio that matter to a client (reference §2, §4):

* every ``contents`` turn must carry a role, or Vertex answers 400 "Please use a valid role";
  the shared body builder always sets one and this client re-checks before sending;
* the Vertex-only ``imageConfig`` options (person generation, output MIME type and quality) are
  sent through;
* tokens expire: a 401 triggers one refresh and one replay of the same request; a second 401 is
  an :class:`AuthError`, because the credentials themselves are the problem;
* upscaling exists (Imagen ``:predict`` with ``mode: upscale``), with limits enforced here
  before the call since a rejected upscale still costs a round trip of a 10 MB body.
"""

from __future__ import annotations

from typing import Any

import httpx

from bananaflow import imagetype
from bananaflow.backends import wire
from bananaflow.backends.auth import TokenSource
from bananaflow.backends.base import HttpBackend, Reply
from bananaflow.config import Settings
from bananaflow.errors import InputError, Unsupported
from bananaflow.generation import ImageRequest, UpscaledImage

# Vertex model card: 7 MB per inline input image (§2.1).
MAX_INLINE_IMAGE_BYTES = 7 * 1024 * 1024
# Imagen upscale: input at most 10 MB as sent (base64), output at most 17 megapixels (§4.1).
MAX_UPSCALE_INPUT_BYTES = 10 * 1024 * 1024
MAX_UPSCALE_OUTPUT_PIXELS = 17_000_000
UPSCALE_FACTORS = (2, 4)

__all__ = [
    "MAX_UPSCALE_INPUT_BYTES",
    "MAX_UPSCALE_OUTPUT_PIXELS",
    "UPSCALE_FACTORS",
    "VertexBackend",
]


class VertexBackend(HttpBackend):
    name = "vertex"

    def __init__(
        self,
        settings: Settings,
        client: httpx.AsyncClient,
        *,
        tokens: TokenSource,
        owns_client: bool,
    ) -> None:
        super().__init__(settings, client, owns_client=owns_client)
        cfg = settings.backends.vertex
        if not cfg.project:  # create_backend checks this first; kept for direct construction
            raise ValueError("VertexSettings.project is required")
        self.model = cfg.model
        self.text_model = cfg.text_model
        self.upscale_model = cfg.upscale_model
        self.project = cfg.project
        self.location = cfg.location
        self._base = (
            f"{cfg.endpoint()}/{cfg.api_version}/projects/{cfg.project}"
            f"/locations/{cfg.location}/publishers/google/models"
        )
        self._tokens = tokens

    def __repr__(self) -> str:
        return f"VertexBackend(base={self._base!r}, model={self.model!r})"

    @property
    def tokens(self) -> TokenSource:
        return self._tokens

    def check_request(self, request: ImageRequest) -> None:
        super().check_request(request)
        for i, ref in enumerate(request.reference_images):
            if len(ref.data) > MAX_INLINE_IMAGE_BYTES:  # a file reference has no inline bytes
                raise InputError(
                    f"reference_images[{i}]",
                    f"{len(ref.data) / 1e6:.1f} MB is over Vertex's 7 MB inline image limit",
                    fix="downscale or recompress the reference image, or send it as a file "
                    "(references.upload_above_bytes with backends.vertex.reference_staging)",
                )
        # An edit step sends the image of every step before it back inline, under the same
        # limit (a signed model turn cannot be swapped for a file).
        for k, turn in enumerate(request.history):
            if len(turn.image.data) > MAX_INLINE_IMAGE_BYTES:
                raise InputError(
                    f"history[{k}].image",
                    f"edit step {k + 1}'s image, sent back inline, is "
                    f"{len(turn.image.data) / 1e6:.1f} MB, over Vertex's 7 MB inline image limit",
                    fix="give the chain a smaller image_size, or JPEG masters "
                    "(compress.format jpeg with compress.provider_jpeg)",
                )

    async def upscale(self, data: bytes, mime_type: str, factor: int) -> UpscaledImage:
        """Imagen upscale (x2/x4). Limits are checked first: over them the call cannot succeed."""
        if factor not in UPSCALE_FACTORS:
            raise InputError("factor", f"x{factor} is not offered", fix="use 2 or 4")
        if not wire.is_valid_model_id(self.upscale_model):
            raise InputError("upscale_model", f"{self.upscale_model!r} is not a model id")
        sent_bytes = 4 * ((len(data) + 2) // 3)
        if sent_bytes > MAX_UPSCALE_INPUT_BYTES:
            raise Unsupported(
                f"input is {sent_bytes / 1048576:.1f} MB as sent (base64); Vertex upscale accepts "
                "at most 10 MB. Recompress the image or upscale locally (upscale.method=local)",
                backend=self.name,
            )
        real_mime = imagetype.sniff_mime(data)
        size = imagetype.image_size(data, real_mime) if real_mime else None
        if size is None:
            raise InputError("image", "the bytes to upscale are not a readable image")
        width, height = size
        out_w, out_h = width * factor, height * factor
        if out_w * out_h > MAX_UPSCALE_OUTPUT_PIXELS:
            raise Unsupported(
                f"x{factor} of {width}x{height} would be {out_w}x{out_h} = "
                f"{out_w * out_h / 1e6:.1f} MP; Vertex upscale output is limited to 17 MP. "
                "Use a smaller factor, a smaller input, or upscale locally",
                backend=self.name,
            )
        body = wire.build_upscale_body(data, real_mime or mime_type, factor)
        reply = await self._exchange(
            self._model_url(self.upscale_model, "predict"), body, self._timeouts.upscale_s
        )
        return await self._parse(
            reply,
            lambda payload, secrets: wire.parse_upscale_response(
                payload,
                backend=self.name,
                model=self.upscale_model,
                factor=factor,
                secrets=secrets,
            ),
        )

    async def aclose(self) -> None:
        await super().aclose()
        self._tokens.close()

    def _model_url(self, model: str, method: str) -> str:
        return f"{self._base}/{model}:{method}"

    def _secrets(self) -> list[str | None]:
        return [self._tokens.credentials.token]

    def _tier_headers(self, request: ImageRequest) -> dict[str, str]:
        return wire.vertex_tier_headers(request.delivery, request.provisioned_throughput)

    def _headers(self, token: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {**self._json_headers(), **(extra or {})}
        headers["authorization"] = f"Bearer {token}"
        quota_project = getattr(self._tokens.credentials, "quota_project_id", None)
        if quota_project:
            headers["x-goog-user-project"] = quota_project
        return headers

    async def _send(
        self,
        url: str,
        body: dict[str, Any],
        timeout: httpx.Timeout,
        extra_headers: dict[str, str] | None = None,
    ) -> Reply:
        problems = wire.check_roles(body)
        if problems:  # a programming error, caught before Vertex's 400
            raise InputError("contents", f"turns without a valid role: {', '.join(problems)}")
        content = self._encode(body)
        token = await self._tokens.token()
        sent = [token]  # every token this request carried may come back in an error
        reply = await self._post(url, content, self._headers(token, extra_headers), timeout, sent)
        if reply.status_code == 401:
            token = await self._tokens.refresh_after_rejection(token)
            sent.append(token)
            reply = await self._post(
                url, content, self._headers(token, extra_headers), timeout, sent
            )
        self._raise_for_status(reply, sent)
        return reply
