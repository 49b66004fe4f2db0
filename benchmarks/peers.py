"""The three ways to turn N prompts into N JPEG files, run against the same emulator.

1. ``run_recipe``: the article's sequential recipe (platform-measurements.md, last section).
2. ``run_sdk_script``: what an engineer writes by hand today: asyncio, the official
   ``google-genai`` SDK, a semaphore at the platform's concurrency.
3. ``run_bananaflow``: the ``generate_images`` Prefect flow.

Each returns a ``PeerRun``: wall time, this process's CPU, files written. The peers share one
output format (JPEG quality 85) and write one file per prompt.
"""

from __future__ import annotations

import asyncio
import base64
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from benchmarks.procs import EmulatorProcess, self_cpu
from benchmarks.workload import JPEG_QUALITY, MODEL, RATIO, Profile, bananaflow_config


@dataclass
class PeerRun:
    peer: str
    images: int
    wall_s: float
    cpu_s: float
    failed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _body(prompt: str, size: str) -> dict[str, Any]:
    return {
        "contents": [{"role": "user", "parts": [{"text": prompt}]}],
        "generationConfig": {
            "responseModalities": ["IMAGE"],
            "imageConfig": {"aspectRatio": RATIO, "imageSize": size},
        },
    }


def _vertex_path(emu: EmulatorProcess) -> str:
    return (
        f"/v1/projects/{emu.settings.project}/locations/global/publishers/google/models/"
        f"{MODEL}:generateContent"
    )


def _vertex_credentials(emu: EmulatorProcess, workdir: Path) -> Any:
    """A real service-account file whose token_uri is the emulator (google-auth does the rest)."""
    from google.oauth2 import service_account

    from bananaflow.emulator.credentials import write_service_account_file

    sa = write_service_account_file(
        workdir / "bench-sa.json", emu.url + "/token", emu.settings.project
    )
    return service_account.Credentials.from_service_account_file(
        str(sa), scopes=["https://www.googleapis.com/auth/cloud-platform"]
    )


def compress_and_write(data: bytes, path: Path) -> None:
    """The recipe's post-processing, shared by both hand-written peers."""
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    path.write_bytes(buf.getvalue())


# ----------------------------------------------------------------------------- 1. recipe


def run_recipe(
    emu: EmulatorProcess, profile: Profile, texts: list[str], out: Path, size: str = "1K"
) -> PeerRun:
    """Sequential: httpx (60 s timeout) under tenacity's retry, then Pillow, then the file."""
    import google.auth.transport.requests
    from tenacity import retry, stop_after_attempt, wait_exponential

    out.mkdir(parents=True, exist_ok=True)
    s = profile.time_scale or 0.001
    headers = {"content-type": "application/json"}
    if profile.backend == "vertex":
        creds = _vertex_credentials(emu, out)
        url = emu.url + _vertex_path(emu)
    else:
        headers["x-goog-api-key"] = emu.settings.api_keys[0]
        url = f"{emu.url}/v1beta/models/{MODEL}:generateContent"

    # The recipe's waits (4-10 s) compressed like the emulator's clock.
    @retry(
        stop=stop_after_attempt(3),
        wait=wait_exponential(multiplier=1 * s, min=4 * s, max=10 * s),
    )
    def call(prompt: str) -> bytes:
        h = dict(headers)
        if profile.backend == "vertex":
            if not creds.valid:
                creds.refresh(google.auth.transport.requests.Request())
            h["authorization"] = f"Bearer {creds.token}"
        r = httpx.post(url, json=_body(prompt, size), headers=h, timeout=60)
        r.raise_for_status()
        for part in r.json()["candidates"][0]["content"]["parts"]:
            if "inlineData" in part and not part.get("thought"):
                return base64.b64decode(part["inlineData"]["data"])
        raise ValueError("no image in the response")

    failed = 0
    t0, c0 = time.perf_counter(), self_cpu()
    for i, prompt in enumerate(texts):
        try:
            compress_and_write(call(prompt), out / f"{i:05d}.jpg")
        except Exception:
            failed += 1
    return PeerRun("recipe", len(texts), time.perf_counter() - t0, self_cpu() - c0, failed)


# ----------------------------------------------------------------------------- 2. SDK script


def run_sdk_script(
    emu: EmulatorProcess, profile: Profile, texts: list[str], out: Path, size: str = "1K"
) -> PeerRun:
    """asyncio + google-genai + a semaphore; the SDK's own retry options, waits scaled."""
    from google import genai
    from google.genai import types

    out.mkdir(parents=True, exist_ok=True)
    s = profile.time_scale or 0.001
    retry = types.HttpRetryOptions(attempts=5, initial_delay=1.0 * s, max_delay=60.0 * s)
    # The clock starts before the client is made from the credentials, as bananaflow's starts
    # before it reads its config and credentials: 0.25-0.3 s of the script's set-up (parsing
    # the service-account key, building the SDK's clients) used to be outside its time.
    t0, c0 = time.perf_counter(), self_cpu()
    if profile.backend == "vertex":
        client = genai.Client(
            vertexai=True,
            project=emu.settings.project,
            location="global",
            credentials=_vertex_credentials(emu, out),
            http_options=types.HttpOptions(base_url=emu.url, api_version="v1", retry_options=retry),
        )
    else:
        client = genai.Client(
            api_key=emu.settings.api_keys[0],
            http_options=types.HttpOptions(
                base_url=emu.url, api_version="v1beta", retry_options=retry
            ),
        )
    config = types.GenerateContentConfig(
        response_modalities=["IMAGE"],
        image_config=types.ImageConfig(aspect_ratio=RATIO, image_size=size),
    )

    async def main() -> int:
        gate = asyncio.Semaphore(profile.concurrency)

        async def one(i: int, prompt: str) -> bool:
            try:
                async with gate:
                    response = await client.aio.models.generate_content(
                        model=MODEL, contents=prompt, config=config
                    )
                parts = response.candidates[0].content.parts  # type: ignore[index,union-attr]
                data = next(p.inline_data.data for p in parts if p.inline_data and not p.thought)  # type: ignore[union-attr]
                await asyncio.to_thread(compress_and_write, data, out / f"{i:05d}.jpg")  # type: ignore[arg-type]
                return True
            except Exception:
                return False

        try:
            done = await asyncio.gather(*(one(i, p) for i, p in enumerate(texts)))
        finally:
            await client.aio.aclose()
        return sum(1 for ok in done if not ok)

    failed = asyncio.run(main())
    return PeerRun("sdk_script", len(texts), time.perf_counter() - t0, self_cpu() - c0, failed)


# ----------------------------------------------------------------------------- 3. bananaflow


def run_bananaflow(
    emu: EmulatorProcess,
    profile: Profile,
    texts: list[str],
    out: Path,
    *,
    size: str = "1K",
    config_path: Path | None = None,
) -> PeerRun:
    """The generate_images flow in this process, its embedded emulator attached to ``emu``."""
    from bananaflow.cli.embedded import attached
    from bananaflow.flows.generate import generate_images
    from bananaflow.parameters import GenerateParameters

    out.mkdir(parents=True, exist_ok=True)
    cfg = config_path or bananaflow_config(
        out / "bananaflow.yaml", profile, out / "store", image_size=size
    )
    params = GenerateParameters(config=str(cfg), prompts=texts)
    t0, c0 = time.perf_counter(), self_cpu()
    with attached(emu.url, emu.settings):
        summary = asyncio.run(generate_images(params))
    wall, cpu = time.perf_counter() - t0, self_cpu() - c0
    uploaded = summary.counts.get("uploaded", 0)
    return PeerRun(
        "bananaflow",
        len(texts),
        wall,
        cpu,
        len(texts) - uploaded,
        {"run_id": summary.run_id, "counts": dict(summary.counts), "config": str(cfg)},
    )


def sdk_version() -> str:
    try:
        from google.genai import version

        return str(version.__version__)
    except Exception:
        return "missing"


# ----------------------------------------------------------------------------- diagnostic


def run_core_only(
    emu: EmulatorProcess, profile: Profile, texts: list[str], out: Path, size: str = "1K"
) -> PeerRun:
    """Diagnostic, not a peer: bananaflow's core chain with no Prefect at all.

    The same steps as ``bananaflow.render.render_one`` (index lookup, generate + master, compress,
    upload, manifest row, done-index), called directly. Comparing it with the flow splits the
    orchestration cost into "our code" and "Prefect".
    """
    from bananaflow import chain, standin
    from bananaflow.cli.embedded import attached
    from bananaflow.config import load_settings
    from bananaflow.expand import expand
    from bananaflow.preflight import collect_specs
    from bananaflow.records import utcnow
    from bananaflow.routing import route

    out.mkdir(parents=True, exist_ok=True)
    cfg = bananaflow_config(out / "core.yaml", profile, out / "store", image_size=size)

    async def main() -> int:
        with attached(emu.url, emu.settings):
            s = standin.apply(load_settings(str(cfg)))
            jobs = expand(collect_specs(texts, None), s.expand, s.generate)
            decisions = [route(j, s.stage, s.route, None) for j in jobs]
            ctx = chain.open_context(s, "core-only", {d.backends[0] for d in decisions})
            gate = asyncio.Semaphore(2 * profile.concurrency)  # as render.jobs_in_flight

            async def one(job: Any, decision: Any) -> bool:
                async with gate:
                    row = chain.base_row(ctx, job, decision, utcnow())
                    await asyncio.to_thread(ctx.ledger.get_done, row.output_key)
                    master = await chain.generate_master(ctx, job, decision)
                    comp = await asyncio.to_thread(chain.compress_master, ctx, master)
                    uri, thumbs = await asyncio.to_thread(
                        chain.upload_derivative, ctx, job, master, comp
                    )
                    row = chain.uploaded_row(row, master, comp, uri, thumbs, ctx)
                await asyncio.to_thread(ctx.manifest.append, row)
                await asyncio.to_thread(ctx.ledger.put_done, row)
                return True

            try:
                done = await asyncio.gather(
                    *(one(j, d) for j, d in zip(jobs, decisions, strict=True)),
                    return_exceptions=True,
                )
                await asyncio.to_thread(ctx.manifest.close)
            finally:
                await ctx.aclose()
        return sum(1 for d in done if d is not True)

    t0, c0 = time.perf_counter(), self_cpu()
    failed = asyncio.run(main())
    return PeerRun("core_only", len(texts), time.perf_counter() - t0, self_cpu() - c0, failed)
