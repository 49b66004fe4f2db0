"""One emulator in its own process, its image cache warmed before it answers anything.

Why a process of its own: on 2 cores an in-process emulator would share the measured process's
GIL (it base64-encodes and frames multi-megabyte bodies), so its CPU would be billed to whichever
client was being measured. Why a warm cache: Google renders on its own hardware; the emulator
renders on ours, and that cost is an artifact of emulating, not part of any client's work.

Usage (by ``procs.EmulatorProcess``): ``python -m benchmarks.emulator_proc SPEC.json``, where
the file holds ``{"settings": EmulatorSettings, "warm": [[backend, model, prompt, ratio, size]]}``.
Prints ``READY <url>`` once serving; stops on SIGTERM or when stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import threading
from pathlib import Path

from bananaflow.config import EmulatorSettings
from bananaflow.emulator.catalog import output_pixels
from bananaflow.emulator.imagegen import ImageSpec, RenderCache
from bananaflow.emulator.server import EmulatorServer

WARM_PARALLEL = 2
CACHE_MAX_BYTES = 3 * 1024**3


def image_spec(settings: EmulatorSettings, item: list[str]) -> ImageSpec:
    """The spec the emulator builds for a plain text request (see pipeline._image_spec)."""
    backend, model, prompt, ratio, size = item
    profile = settings.profiles[backend]  # type: ignore[index]
    width, height = output_pixels(model, ratio, size)
    return ImageSpec(
        prompt=prompt,
        width=width,
        height=height,
        fmt=profile.image_format,
        quality=profile.jpeg_quality,
        detail=profile.detail,
        label=f"{backend} {model}",
    )


async def warm(cache: RenderCache, specs: list[ImageSpec]) -> None:
    gate = asyncio.Semaphore(WARM_PARALLEL)

    async def one(spec: ImageSpec) -> None:
        async with gate:
            await cache.get(spec)

    await asyncio.gather(*(one(s) for s in specs))


def main(spec_file: str) -> None:
    spec = json.loads(Path(spec_file).read_text())
    settings = EmulatorSettings.model_validate(spec["settings"])
    server = EmulatorServer(settings)
    cache = server.state.cache
    cache.max_bytes = CACHE_MAX_BYTES
    # Before the server starts: the cache is only ever touched from one loop at a time.
    asyncio.run(warm(cache, [image_spec(settings, item) for item in spec.get("warm", [])]))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    with server:
        print(f"READY {server.url} rendered={cache.renders}", flush=True)
        stop.wait()


if __name__ == "__main__":
    main(sys.argv[1])
