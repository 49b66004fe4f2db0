"""Large reference images uploaded once and named by every request that uses them (``fileData``).

Inlining a 5 MB product photo in each of 300 requests sends 2 GB of base64; Google lets a
request name a file instead (google-image-apis.md §1.2, batch-and-model-tiers.md §1.1, §2).
Above ``references.upload_above_bytes``:

- AI Studio: the Files API. A File lives 48 h, so its uri is kept in the store's ledger
  (``ledger/uploads/aistudio-<scope>/<sha256>.json``, the scope a hash of the endpoint and key, so
  another project's files are never named) and reused across jobs and runs until an hour before
  its ``expirationTime``; a record from an earlier run is looked up once per run (``files.get``)
  and uploaded again when Google says it is gone.
- Vertex: a ``gs://`` reference is named as it is, at any size. A local one is copied once to
  ``backends.vertex.reference_staging`` under its content hash (create-only, so concurrent runs
  agree); without a staging prefix it stays inline.

The job id never changes: it hashes the reference's content (``expand.references``), whichever
way the bytes travel. Uploads cost nothing, so two runs racing may both upload one photo; images
are still paid once (the ledger). Records hold the File's uri without any query string: the key
travels in a header only and is never stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from bananaflow.config import Settings
from bananaflow.errors import MalformedResponse
from bananaflow.expand import ImageJob
from bananaflow.generation import BackendName, ReferenceImage
from bananaflow.imagetype import EXTENSIONS
from bananaflow.records import ReferenceRef
from bananaflow.storage import Store

if TYPE_CHECKING:  # batch.gemini imports the chain (its request lines): imported when used
    from bananaflow.batch.gemini import GeminiBatches

# A File is not named when it expires within this: the job may wait in line, then retry.
EXPIRY_MARGIN_S = 3600.0
# When Google's expirationTime cannot be read: its documented 48 h lifetime, halved.
_ASSUMED_LIFETIME_S = 24 * 3600.0
_FRACTION = re.compile(r"(\.\d{6})\d+")


class UploadedFile(BaseModel):
    """A reference on the Files API, as the next request (or run) names it."""

    sha256: str
    name: str  # files/<id>
    uri: str  # fileData.fileUri
    mime_type: str
    expires_at: float  # wall clock


def expires_at(resource: dict[str, Any], now: float) -> float:
    """``expirationTime`` (RFC 3339, up to nanoseconds) as a timestamp."""
    text = resource.get("expirationTime")
    if isinstance(text, str):
        try:
            return datetime.fromisoformat(_FRACTION.sub(r"\1", text)).timestamp()
        except ValueError:
            pass
    return now + _ASSUMED_LIFETIME_S


class ReferenceUploads:
    """One run's way of sending references: inline, or uploaded once and named."""

    def __init__(self, settings: Settings, store: Store, files: GeminiBatches | None = None):
        """``store`` holds the ledger; ``files``: the Files API client (opened when first
        needed otherwise, so a run without large references never asks for a key)."""
        self._settings = settings
        self._store = store
        self._files = files
        self._owns_files = files is None
        self._locks: dict[str, asyncio.Lock] = {}
        self._named: dict[str, str] = {}  # "<backend>:<sha256>" -> uri, checked this run

    async def aclose(self) -> None:
        if self._owns_files and self._files is not None:
            await self._files.aclose()

    async def sent(
        self, backend: BackendName, job: ImageJob, images: list[ReferenceImage]
    ) -> list[ReferenceImage]:
        """``images`` (the job's references read inline, in order) as ``backend`` gets them."""
        return [
            await self._one(backend, ref, image)
            for ref, image in zip(job.references, images, strict=True)
        ]

    async def _one(
        self, backend: BackendName, ref: ReferenceRef, image: ReferenceImage
    ) -> ReferenceImage:
        if backend == "vertex" and ref.uri.startswith("gs://"):
            return ReferenceImage(mime_type=image.mime_type, file_uri=ref.uri)
        if len(image.data) <= self._settings.references.upload_above_bytes:
            return image
        staging = self._settings.backends.vertex.reference_staging
        if backend == "vertex" and staging is None:
            return image
        key = f"{backend}:{ref.sha256}"
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:  # three jobs of one photo: one upload
            uri = self._named.get(key)
            if uri is None:
                if backend == "vertex":
                    uri = await asyncio.to_thread(self._staged, ref, image)
                else:
                    uri = await self._on_files_api(ref, image)
                self._named[key] = uri
        return ReferenceImage(mime_type=image.mime_type, file_uri=uri)

    # ------------------------------------------------------------------ Vertex

    def _staged(self, ref: ReferenceRef, image: ReferenceImage) -> str:
        """The reference's copy under the staging prefix, made if missing."""
        staging = self._settings.backends.vertex.reference_staging
        assert staging is not None
        storage = self._settings.storage
        if storage.url.split("://")[0] == "gs":
            store = Store(staging, storage.options, credentials=storage.credentials_info)
        else:
            store = Store(staging)
        name = f"{ref.sha256}.{EXTENSIONS.get(image.mime_type, 'img')}"
        if not store.exists(name):
            store.put(name, image.data, content_type=image.mime_type, create_only=True)
        return store.uri(name)

    # ------------------------------------------------------------------ AI Studio

    def _files_api(self) -> GeminiBatches:
        if self._files is None:
            from bananaflow.batch.gemini import GeminiBatches

            self._files = GeminiBatches.open(self._settings)
        return self._files

    def _record_path(self, sha256: str) -> str:
        cfg = self._settings.backends.aistudio
        key = cfg.api_key.get_secret_value() if cfg.api_key is not None else ""
        scope = hashlib.sha256(f"{cfg.base_url}\n{key}".encode()).hexdigest()[:16]
        return f"ledger/uploads/aistudio-{scope}/{sha256}.json"

    def _recorded(self, path: str) -> UploadedFile | None:
        try:
            return UploadedFile.model_validate_json(self._store.get(path))
        except (FileNotFoundError, ValidationError):
            return None

    async def _on_files_api(self, ref: ReferenceRef, image: ReferenceImage) -> str:
        files = self._files_api()
        path = self._record_path(ref.sha256)
        known = await asyncio.to_thread(self._recorded, path)
        fresh = known is not None and known.expires_at - time.time() > EXPIRY_MARGIN_S
        if known is not None and fresh and await files.file(known.name) is not None:
            return known.uri
        resource = await files.upload_file(
            image.data, f"bananaflow-ref-{ref.sha256[:16]}", image.mime_type
        )
        name, uri = resource.get("name"), resource.get("uri")
        if not isinstance(name, str) or not isinstance(uri, str):
            raise MalformedResponse("uploaded File has no name or uri", backend="aistudio")
        uploaded = UploadedFile(
            sha256=ref.sha256,
            name=name,
            uri=uri.split("?", 1)[0],
            mime_type=image.mime_type,
            expires_at=expires_at(resource, time.time()),
        )
        await asyncio.to_thread(
            self._store.write_text,
            path,
            uploaded.model_dump_json(),
            content_type="application/json",
        )
        return uploaded.uri
