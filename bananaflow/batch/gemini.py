"""AI Studio's asynchronous APIs over httpx: the Files API and the Gemini Batch API.

Raw JSON, not the SDK: the SDK drops a finished batch's ``error`` and ``batchStats`` and keeps
``done`` False on some end states (batch-and-model-tiers.md §0, §1.4). The API version is
pinned to ``v1beta`` (batch on ``v1`` is unverified); the key travels in a header only.
Create is not idempotent: it is asked again only when refused with 429 (``admission``), and
the caller records what it returned.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from bananaflow.backends import make_client
from bananaflow.backends.status import error_from_response
from bananaflow.batch.admission import admitted, create_policy
from bananaflow.batch.lines import to_jsonl
from bananaflow.batch.states import BatchState, normalize
from bananaflow.config import Settings
from bananaflow.errors import ConfigError, MalformedResponse

VERSION = "v1beta"


class GeminiBatches:
    """One AI Studio project's Files and Batch endpoints."""

    def __init__(self, settings: Settings, client: httpx.AsyncClient, *, owns_client: bool = False):
        cfg = settings.backends.aistudio
        key = cfg.api_key
        if key is None or not key.get_secret_value().strip():
            raise ConfigError(
                "backends.aistudio.api_key", "no API key", fix="export GEMINI_API_KEY=..."
            )
        self._key: SecretStr = key
        self._root = cfg.base_url.rstrip("/")
        self._client = client
        self._owns_client = owns_client
        self._create_retry = create_policy(settings)

    @classmethod
    def open(cls, settings: Settings) -> GeminiBatches:
        """With its own pooled client (closed by ``aclose``)."""
        return cls(settings, make_client(settings, 4), owns_client=True)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"x-goog-api-key": self._key.get_secret_value(), **(extra or {})}

    def _check(self, r: httpx.Response) -> None:
        if r.is_success:
            return
        raise error_from_response(
            r.status_code,
            r.content,
            backend="aistudio",
            headers=r.headers,
            reason_phrase=r.reason_phrase,
            secrets=[self._key.get_secret_value()],
        )

    def _json(self, r: httpx.Response) -> dict[str, Any]:
        self._check(r)
        try:
            body = r.json() if r.content else {}
        except ValueError:
            raise MalformedResponse("batch API answer is not JSON", backend="aistudio") from None
        if not isinstance(body, dict):
            raise MalformedResponse("batch API answer is not an object", backend="aistudio")
        return body

    # ------------------------------------------------------------------ Files API

    async def upload(self, data: bytes, display_name: str, mime_type: str) -> str:
        """Resumable upload (start, then upload+finalize); returns ``files/<id>``."""
        name = (await self.upload_file(data, display_name, mime_type)).get("name")
        if not isinstance(name, str):
            raise MalformedResponse("upload answer has no file name", backend="aistudio")
        return name

    async def upload_file(self, data: bytes, display_name: str, mime_type: str) -> dict[str, Any]:
        """Resumable upload (start, then upload+finalize); returns the File resource."""
        start = await self._client.post(
            f"{self._root}/upload/{VERSION}/files",
            headers=self._headers(
                {
                    "x-goog-upload-protocol": "resumable",
                    "x-goog-upload-command": "start",
                    "x-goog-upload-header-content-length": str(len(data)),
                    "x-goog-upload-header-content-type": mime_type,
                }
            ),
            json={"file": {"displayName": display_name, "mimeType": mime_type}},
        )
        self._check(start)
        url = start.headers.get("x-goog-upload-url")
        if not url:
            raise MalformedResponse("upload start gave no x-goog-upload-url", backend="aistudio")
        done = await self._client.post(
            url,
            headers={"x-goog-upload-command": "upload, finalize", "x-goog-upload-offset": "0"},
            content=data,
        )
        file = self._json(done).get("file")
        if not isinstance(file, dict):
            raise MalformedResponse("upload answer has no file", backend="aistudio")
        return file

    async def file(self, name: str) -> dict[str, Any] | None:
        """The File resource, or None when it is gone (expired, deleted: 403 or 404)."""
        r = await self._client.get(f"{self._root}/{VERSION}/{name}", headers=self._headers())
        if r.status_code in (403, 404):
            return None
        return self._json(r)

    async def download(self, file_name: str, dest: Path) -> None:
        """The file's bytes streamed to ``dest`` in chunks (a responses file may be GBs)."""
        fid = file_name.removeprefix("files/")
        async with self._client.stream(
            "GET",
            f"{self._root}/download/{VERSION}/files/{fid}:download",
            params={"alt": "media"},
            headers=self._headers(),
        ) as r:
            if not r.is_success:
                await r.aread()
                self._check(r)
            with dest.open("wb") as out:
                async for chunk in r.aiter_bytes():
                    out.write(chunk)

    async def delete_file(self, file_name: str) -> None:
        r = await self._client.delete(
            f"{self._root}/{VERSION}/{file_name}", headers=self._headers()
        )
        self._check(r)

    # ------------------------------------------------------------------ Batch API

    async def create(
        self, model: str, display_name: str, *, file_name: str | None, inline: list[Any] | None
    ) -> dict[str, Any]:
        """Create a batch from an uploaded JSONL file, or from inline requests."""
        if file_name is not None:
            config: dict[str, Any] = {"fileName": file_name}
        else:
            config = {"requests": {"requests": inline or []}}
        body = {"batch": {"displayName": display_name, "inputConfig": config}}
        r = await self._client.post(
            f"{self._root}/{VERSION}/models/{model}:batchGenerateContent",
            headers=self._headers({"content-type": "application/json"}),
            content=json.dumps(body).encode(),
        )
        return self._json(r)

    async def get(self, name: str) -> dict[str, Any]:
        return self._json(
            await self._client.get(f"{self._root}/{VERSION}/{name}", headers=self._headers())
        )

    # ------------------------------------------------------------------ as a batch provider

    async def submit(
        self, model: str, lines: list[dict[str, Any]], display_name: str, *, inline: bool
    ) -> tuple[str, str]:
        """Send the request lines as one batch: (batch name, where its input is)."""
        if inline:
            items = [{"request": ln["request"], "metadata": {"key": ln["key"]}} for ln in lines]
            op = await admitted(
                lambda: self.create(model, display_name, file_name=None, inline=items),
                self._create_retry,
            )
            return str(op["name"]), "inline"
        source = await self.upload(to_jsonl(lines), display_name, "application/jsonl")
        op = await admitted(
            lambda: self.create(model, display_name, file_name=source, inline=None),
            self._create_retry,
        )
        return str(op["name"]), source

    async def status(self, name: str) -> tuple[BatchState, dict[str, Any]]:
        op = await self.get(name)
        return normalize(op.get("metadata", {}).get("state")), op

    async def answers(self, op: dict[str, Any], folder: Path) -> list[Path]:
        """The answers of an ended batch as JSONL in ``folder``: the responses file, streamed,
        or the inline list written out."""
        output = op.get("metadata", {}).get("output") or op.get("response") or {}
        file_name = output.get("responsesFile")
        if isinstance(file_name, str):
            dest = folder / "responses.jsonl"
            await self.download(file_name, dest)
            return [dest]
        inline = output.get("inlinedResponses", {})
        items = inline.get("inlinedResponses", []) if isinstance(inline, dict) else []
        dest = folder / "inlined.jsonl"
        await asyncio.to_thread(
            dest.write_bytes, to_jsonl([i for i in items if isinstance(i, dict)])
        )
        return [dest]

    async def cancel(self, name: str) -> None:
        r = await self._client.post(
            f"{self._root}/{VERSION}/{name}:cancel", headers=self._headers(), content=b""
        )
        self._check(r)
