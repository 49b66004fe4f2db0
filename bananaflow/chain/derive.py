"""From the master to the published files: optional upscale, compress, upload.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from pathlib import Path

from bananaflow.chain.context import ChainContext
from bananaflow.chain.failure import JobFailed
from bananaflow.chain.objects import object_metadata, path_for
from bananaflow.errors import Unsupported
from bananaflow.expand import ImageJob
from bananaflow.imagetype import identify
from bananaflow.imaging import derivatives, upscale_local
from bananaflow.records import (
    CompressedRef,
    MasterRef,
)
from bananaflow.retry import retry_async

# Encoding is CPU-bound (Pillow releases the GIL): more at once than cores only adds memory.
_ENCODE_SLOTS = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))


def _master_bytes(ctx: ChainContext, master: MasterRef) -> bytes:
    """The work-dir copy when this process made it, else the stored master (a re-run)."""
    local = ctx.work_dir / master.sha256
    if local.exists():
        return local.read_bytes()
    data = ctx.store.get(master.path)
    local.write_bytes(data)
    return data


async def upscale_master(ctx: ChainContext, master: MasterRef) -> MasterRef:
    """Vertex's upscaler where it applies, else a local Lanczos resample; records which."""
    cfg = ctx.settings.upscale
    data = await asyncio.to_thread(_master_bytes, ctx, master)
    vertex = ctx.backends.get("vertex")
    method = "local-lanczos"
    upscaled: bytes | None = None
    if cfg.method == "vertex" or (cfg.method == "auto" and vertex is not None):
        if vertex is None:
            raise JobFailed(
                "failed",
                "upscale.method is vertex but no Vertex backend is configured",
                kind="ConfigError",
                routes=master.routes,
            )
        try:
            result, _ = await retry_async(
                lambda: vertex.upscale(data, master.mime_type, cfg.factor),
                ctx.settings.generate.retry,
            )
            upscaled, method = result.data, "vertex"
        except Unsupported:
            if cfg.method == "vertex":
                raise
    if upscaled is None:
        upscaled = (await asyncio.to_thread(upscale_local, data, cfg.factor)).data
    info = identify(upscaled)
    sha = hashlib.sha256(upscaled).hexdigest()
    (ctx.work_dir / sha).write_bytes(upscaled)
    return master.model_copy(
        update={
            "sha256": sha,
            "mime_type": info.mime_type,
            "width": info.width,
            "height": info.height,
            "bytes": len(upscaled),
            "upscale_method": method,
        }
    )


def compress_master(ctx: ChainContext, master: MasterRef) -> CompressedRef:
    """Encode the web derivative and thumbnails into the work dir (CPU-bound: run in a thread)."""
    cfg = ctx.settings.compress
    with _ENCODE_SLOTS:  # one decoded master per core: a 4K one is ~50 MB of pixels
        data = _master_bytes(ctx, master)
        main, thumbs = derivatives(data, cfg)
        del data

    def keep(enc, tag: str) -> CompressedRef:
        sha = hashlib.sha256(enc.data).hexdigest()
        path = ctx.work_dir / f"{sha}-{tag}.{enc.ext}"
        path.write_bytes(enc.data)
        return CompressedRef(
            local_path=str(path),
            sha256=sha,
            mime_type=enc.mime_type,
            ext=enc.ext,
            width=enc.width,
            height=enc.height,
            bytes=len(enc.data),
            quality=enc.quality,
            method=enc.method,
        )

    ref = keep(main, "main")
    ref.thumbnails = [keep(t, f"t{side}") for t, side in zip(thumbs, cfg.thumbnails, strict=True)]
    return ref


def upload_derivative(
    ctx: ChainContext, job: ImageJob, master: MasterRef, compressed: CompressedRef
) -> tuple[str, list[str]]:
    """Create-only, content-addressed uploads of the derivative and its thumbnails."""
    meta = object_metadata(ctx, job, master)
    cache = ctx.settings.upload.cache_control

    def put(ref: CompressedRef, sub: str) -> str:
        data = Path(ref.local_path).read_bytes()
        path = path_for(ctx, sub, ref.sha256, ref.ext)
        return ctx.store.put(
            path, data, content_type=ref.mime_type, metadata=meta, cache_control=cache
        ).uri

    uri = put(compressed, "")
    thumbs = [put(t, f"thumbs/{max(t.width, t.height)}") for t in compressed.thumbnails]
    return uri, thumbs
