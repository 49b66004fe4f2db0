"""Google AI Studio (the Gemini API, API key).

The key travels only in the ``x-goog-api-key`` header: a ``?key=`` URL ends up in proxy logs,
httpx exception texts and tracebacks. AI Studio has no upscale model and rejects the Vertex-only
image options with a 400, so both are refused locally with a message that names the fix.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import SecretStr

from bananaflow.backends.base import HttpBackend, Reply
from bananaflow.config import Settings
from bananaflow.errors import InputError, Unsupported
from bananaflow.generation import ImageRequest, UpscaledImage

__all__ = ["AIStudioBackend"]


class AIStudioBackend(HttpBackend):
    name = "aistudio"

    def __init__(
        self,
        settings: Settings,
        client: httpx.AsyncClient,
        *,
        api_key: SecretStr,
        owns_client: bool,
    ) -> None:
        super().__init__(settings, client, owns_client=owns_client)
        cfg = settings.backends.aistudio
        self.model = cfg.model
        self.text_model = cfg.text_model
        self._base = f"{cfg.base_url.rstrip('/')}/{cfg.api_version}"
        self._api_key = api_key

    def __repr__(self) -> str:
        return f"AIStudioBackend(base={self._base!r}, model={self.model!r})"

    def check_request(self, request: ImageRequest) -> None:
        super().check_request(request)
        vertex_only = request.vertex_only_fields()
        if vertex_only:
            raise InputError(
                vertex_only[0],
                f"{', '.join(vertex_only)} {'is' if len(vertex_only) == 1 else 'are'} Vertex-only; "
                "AI Studio answers 400 'Unknown name' for them",
                fix="route this job to the vertex backend, or drop "
                + ", ".join(vertex_only)
                + " (and convert the output locally in the compress step)",
            )

    async def upscale(self, data: bytes, mime_type: str, factor: int) -> UpscaledImage:
        raise Unsupported(
            "AI Studio has no upscale model; use the vertex backend or upscale.method=local",
            backend=self.name,
        )

    def _model_url(self, model: str, method: str) -> str:
        return f"{self._base}/models/{model}:{method}"

    def _secrets(self) -> list[str | None]:
        return [self._api_key.get_secret_value()]

    async def _send(
        self,
        url: str,
        body: dict[str, Any],
        timeout: httpx.Timeout,
        extra_headers: dict[str, str] | None = None,
    ) -> Reply:
        headers = {**self._json_headers(), **(extra_headers or {})}
        headers["x-goog-api-key"] = self._api_key.get_secret_value()
        secrets = self._secrets()
        reply = await self._post(url, self._encode(body), headers, timeout, secrets)
        self._raise_for_status(reply, secrets)
        return reply
