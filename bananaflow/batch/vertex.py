"""Vertex AI batch prediction for Gemini image models: JSONL in and out of ``gs://``.

The input JSONL is written under ``batch.vertex_staging`` (default: ``batch/`` in the image
store; a ``gs://`` folder the storage options reach), the job is created with
``batchPredictionJobs``, and the answers are read from every ``*.jsonl`` under the job's
``outputInfo.gcsOutputDirectory`` (the docs show one ``predictions.jsonl``; listing the
directory does not depend on it). Each input line carries its job key as a request label
(see ``lines.request_line``). Auth is the backend's own OAuth token source; the API version
is pinned in ``backends.vertex.api_version``.
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

import httpx

from bananaflow.backends import make_client
from bananaflow.backends.auth import TokenSource, load_credentials
from bananaflow.backends.status import error_from_response
from bananaflow.batch.admission import admitted, create_policy
from bananaflow.batch.lines import to_jsonl
from bananaflow.batch.states import BatchState, normalize
from bananaflow.config import Settings
from bananaflow.errors import ConfigError, MalformedResponse
from bananaflow.storage import Store


class VertexBatches:
    """One project/location's ``batchPredictionJobs``, with its staging store."""

    def __init__(
        self,
        settings: Settings,
        client: httpx.AsyncClient,
        tokens: TokenSource,
        *,
        owns_client: bool = False,
    ):
        cfg = settings.backends.vertex
        if not cfg.project:
            raise ConfigError(
                "backends.vertex.project", "no Google Cloud project", fix="set GOOGLE_CLOUD_PROJECT"
            )
        staging = settings.batch.vertex_staging or f"{settings.storage.url.rstrip('/')}/batch"
        self._root = cfg.endpoint()
        self._version = cfg.api_version
        self._parent = f"projects/{cfg.project}/locations/{cfg.location}"
        self._staging = Store(
            staging, settings.storage.options, credentials=settings.storage.credentials_info
        )
        self._client = client
        self._tokens = tokens
        self._owns_client = owns_client
        self._create_retry = create_policy(settings)

    @classmethod
    def open(cls, settings: Settings) -> VertexBatches:
        creds = load_credentials(settings.backends.vertex, None)
        tokens = TokenSource(creds, backend="vertex")
        return cls(settings, make_client(settings, 4), tokens, owns_client=True)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        token = await self._tokens.token()
        r = await self._client.request(
            method,
            f"{self._root}/{self._version}/{path}",
            headers={"authorization": f"Bearer {token}"},
            json=body,
        )
        if r.status_code == 401:
            token = await self._tokens.refresh_after_rejection(token)
            r = await self._client.request(
                method,
                f"{self._root}/{self._version}/{path}",
                headers={"authorization": f"Bearer {token}"},
                json=body,
            )
        if not r.is_success:
            raise error_from_response(
                r.status_code,
                r.content,
                backend="vertex",
                headers=r.headers,
                reason_phrase=r.reason_phrase,
                secrets=[token],
            )
        try:
            out = r.json() if r.content else {}
        except ValueError:
            raise MalformedResponse("batch API answer is not JSON", backend="vertex") from None
        if not isinstance(out, dict):
            raise MalformedResponse("batch API answer is not an object", backend="vertex")
        return out

    async def submit(
        self, model: str, lines: list[dict[str, Any]], display_name: str, *, inline: bool
    ) -> tuple[str, str]:
        """Vertex takes no inline requests: always a JSONL file in the staging folder."""
        folder = display_name.replace("/", "-")
        path = f"{folder}/input.jsonl"
        await asyncio.to_thread(
            functools.partial(
                self._staging.put,
                path,
                to_jsonl(lines),
                content_type="application/jsonl",
                create_only=False,
            )
        )
        source = self._staging.uri(path)
        body = {
            "displayName": display_name,
            "model": f"publishers/google/models/{model}",
            "inputConfig": {"instancesFormat": "jsonl", "gcsSource": {"uris": [source]}},
            "outputConfig": {
                "predictionsFormat": "jsonl",
                "gcsDestination": {"outputUriPrefix": self._staging.uri(f"{folder}/output")},
            },
        }
        job = await admitted(
            lambda: self._call("POST", f"{self._parent}/batchPredictionJobs", body),
            self._create_retry,
        )
        return str(job["name"]), source

    async def status(self, name: str) -> tuple[BatchState, dict[str, Any]]:
        job = await self._call("GET", name)
        return normalize(job.get("state")), job

    async def answers(self, job: dict[str, Any], folder: Path) -> list[Path]:
        """Every ``*.jsonl`` of the job's output directory, copied into ``folder`` in chunks."""
        output = job.get("outputInfo", {}).get("gcsOutputDirectory")
        if not isinstance(output, str):
            return []
        rel = self._staging.relative(output)
        if rel is None:
            raise MalformedResponse(
                f"output {output} is outside batch.vertex_staging", backend="vertex"
            )
        found = [
            p for p in await asyncio.to_thread(self._staging.list, rel) if p.endswith(".jsonl")
        ]
        paths = []
        for n, path in enumerate(found):
            dest = folder / f"{n:04d}.jsonl"
            await asyncio.to_thread(self._staging.get_to_file, path, dest)
            paths.append(dest)
        return paths

    async def cancel(self, name: str) -> None:
        await self._call("POST", f"{name}:cancel", {})
