"""Every comparison of issue 5, in one process run, against emulators started for it.

Three emulators, each in its own process (see ``emulator_proc``), faults off:

* ``vertex``: the Vertex-like profile (300 RPM, 20 concurrent, 5-10 s per 1K image), scaled;
* ``aistudio``: the AI-Studio-like profile (60 RPM, 5 concurrent, 2-4 s), scaled harder because
  its RPM window must be crossed several times; it also serves the 4K peak-memory run;
* ``zero``: time scale 0 (no latency, no windows), for CPU per image and the scaling series.

Why two scales: compressing time multiplies the throughput a client must sustain. The scale of
each profile is chosen so that its quota ceiling stays below what this 2-core box can feed
(Prefect's server included); at time scale 1 the ceilings are lower still (1 and 2.7 images/s).
"""

from __future__ import annotations

import asyncio
import io
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import metrics, peers
from benchmarks.procs import (
    PREFECT_QUIET,
    ROOT,
    EmulatorProcess,
    PrefectServer,
    Processes,
    cpu_seconds,
    self_cpu,
)
from benchmarks.workload import (
    AISTUDIO_CONCURRENCY,
    AISTUDIO_RPM,
    JPEG_QUALITY,
    MODEL,
    RATIO,
    VERTEX_CONCURRENCY,
    VERTEX_RPM,
    Profile,
    bananaflow_config,
    emulator_settings,
    prompts,
    warm_items,
)


@dataclass(frozen=True)
class Sizes:
    """How big each measurement is; ``QUICK`` only proves every figure can be produced."""

    mode: str
    reps: int
    vertex_scale: float
    vertex_n: int
    aistudio_scale: float
    aistudio_n: int
    recipe_n: int
    cpu_n: int
    rss_size: str
    rss_n: int
    compress_size: str
    compress_reps: int
    scale_sizes: tuple[int, ...]
    budget_s: float
    # Imports and first calls outside every timing; the quick size's figures are only checked
    # for being there, so it skips this (a fifth of its time).
    warm_up: bool = True


FULL = Sizes(
    mode="full",
    reps=3,
    vertex_scale=0.6,
    vertex_n=60,
    aistudio_scale=0.2,
    aistudio_n=100,
    recipe_n=4,
    cpu_n=60,
    rss_size="4K",
    rss_n=20,
    compress_size="4K",
    compress_reps=5,
    scale_sizes=(10, 100, 1000),
    budget_s=570.0,
)
QUICK = Sizes(
    mode="quick",
    reps=1,
    vertex_scale=0.02,
    vertex_n=6,
    aistudio_scale=0.02,
    aistudio_n=6,
    recipe_n=2,
    cpu_n=6,
    rss_size="1K",
    rss_n=4,
    compress_size="1K",
    compress_reps=1,
    scale_sizes=(2, 4),
    budget_s=120.0,
    warm_up=False,
)
# The scaling series runs AI Studio's small JPEG masters at Vertex's concurrency: CPU-bound work,
# as parallel as production, so that any per-image cost that grows with N shows.
SCALE_CONCURRENCY = 20
PACKAGES = ("prefect", "pillow", "httpx", "google-genai", "tenacity", "uvicorn", "pydantic")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    mem_kb = 0
    model = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "missing"
    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    return {
        "nproc": os.cpu_count(),
        "ram_gib": round(mem_kb / 1024**2, 1),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "commit": commit,
        "loadavg_start": list(os.getloadavg()),
    }


class Suite:
    def __init__(self, sizes: Sizes, workdir: Path):
        self.sizes = sizes
        self.workdir = workdir
        self.t0 = time.monotonic()
        self.figures: dict[str, Any] = {}
        self.notes: list[str] = []
        self.vertex = Profile(
            "vertex", "vertex", "prod", VERTEX_RPM, VERTEX_CONCURRENCY, sizes.vertex_scale
        )
        self.aistudio = Profile(
            "aistudio", "aistudio", "dev", AISTUDIO_RPM, AISTUDIO_CONCURRENCY, sizes.aistudio_scale
        )
        self.texts = {
            "vertex": prompts(sizes.vertex_n, "vx"),
            "aistudio": prompts(sizes.aistudio_n, "ai"),
            "rss": prompts(sizes.rss_n, "rss"),
            "cpu": prompts(sizes.cpu_n, "cpu"),
        }

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def out(self, name: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.workdir))
        return path

    # ------------------------------------------------------------------ orchestration

    def run(self) -> dict[str, Any]:
        s = self.sizes
        meta: dict[str, Any] = {
            "mode": s.mode,
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "sizes": asdict(s),
            "machine": machine(),
        }
        with Processes() as procs:
            prefect = procs.add(PrefectServer(self.workdir)).start()
            emus = {
                "vertex": EmulatorProcess(
                    "emu-vertex",
                    emulator_settings(s.vertex_scale),
                    warm_items("vertex", self.texts["vertex"], "1K"),
                ),
                "aistudio": EmulatorProcess(
                    "emu-aistudio",
                    emulator_settings(s.aistudio_scale),
                    warm_items("aistudio", self.texts["aistudio"], "1K")
                    + warm_items("vertex", self.texts["rss"], s.rss_size),
                ),
                "zero": EmulatorProcess(
                    "emu-zero",
                    emulator_settings(0.0, aistudio={"concurrency": SCALE_CONCURRENCY}),
                    warm_items("vertex", self.texts["cpu"], "1K"),
                ),
            }
            for emu in emus.values():
                procs.add(emu).start(self.workdir)
            log("emulators warming, Prefect server starting; compress micro-benchmark meanwhile")
            self.figures["compress_vs_pillow"] = self.compress_vs_pillow()
            prefect.wait_ready()
            for emu in emus.values():
                emu.wait_ready()
            meta["setup_s"] = self.elapsed()
            os.environ["PREFECT_API_URL"] = prefect.url
            for key, value in PREFECT_QUIET.items():
                os.environ.setdefault(key, value)
            log(f"ready after {meta['setup_s']:.1f} s")
            if s.warm_up:
                self.warm_up(emus["zero"])

            self.throughput(emus["vertex"], self.vertex, prefect, rerun=True)
            self.throughput(emus["aistudio"], self.aistudio, prefect, rerun=False)
            self.figures["orchestration_cpu"] = self.orchestration_cpu(emus["zero"], prefect)
            self.figures["peak_rss"] = self.peak_rss(emus["aistudio"])
            self.figures["scaling"] = self.scaling(emus["zero"], prefect)
        meta["duration_s"] = self.elapsed()
        meta["machine"]["loadavg_end"] = list(os.getloadavg())
        return {"meta": meta, "figures": self.figures, "notes": self.notes}

    def warm_up(self, emu: EmulatorProcess) -> None:
        """Imports and first-call costs (Prefect client, SDK, flow module) outside any timing."""
        profile = Profile("warm", "vertex", "prod", VERTEX_RPM, VERTEX_CONCURRENCY, 0.0)
        texts = self.texts["cpu"][:2]
        peers.run_bananaflow(emu, profile, texts, self.out("warm-bananaflow"))
        peers.run_sdk_script(emu, profile, texts, self.out("warm-sdk"))
        peers.run_recipe(emu, profile, texts[:1], self.out("warm-recipe"))

    # ------------------------------------------------------------------ throughput

    def _measure(
        self,
        emu: EmulatorProcess,
        profile: Profile,
        prefect: PrefectServer,
        fn: Callable[..., peers.PeerRun],
        texts: list[str],
        out: Path,
        **kw: Any,
    ) -> dict[str, Any]:
        emu.reset()
        emu_cpu, server_cpu = cpu_seconds(emu.pid), prefect.cpu()
        run = fn(emu, profile, texts, out, **kw)
        stats = emu.stats()
        use = metrics.quota_use(
            emu.generation_log(), profile.concurrency, profile.rpm, profile.window_s
        )
        return {
            "peer": run.peer,
            "images": run.images,
            "failed": run.failed,
            "wall_s": run.wall_s,
            "images_per_s": metrics.ratio(run.images - run.failed, run.wall_s),
            "client_cpu_s": run.cpu_s,
            "server_cpu_s": prefect.cpu() - server_cpu,
            "emulator_cpu_s": cpu_seconds(emu.pid) - emu_cpu,
            "generation_requests": sum(stats["generation_requests"].values()),
            "peak_in_flight": max(stats["peak_in_flight"].values()),
            "emulator_renders": stats.get("images_rendered", 0),
            **use,
            **run.extra,
        }

    def throughput(
        self, emu: EmulatorProcess, profile: Profile, prefect: PrefectServer, *, rerun: bool
    ) -> None:
        texts = self.texts[profile.name]
        runs: dict[str, list[dict[str, Any]]] = {"bananaflow": [], "sdk_script": []}
        last_bf: dict[str, Any] = {}
        for rep in range(self.sizes.reps):
            for name, fn in (
                ("bananaflow", peers.run_bananaflow),
                ("sdk_script", peers.run_sdk_script),
            ):
                r = self._measure(
                    emu, profile, prefect, fn, texts, self.out(f"{profile.name}-{name}")
                )
                runs[name].append(r)
                if name == "bananaflow":
                    last_bf = r
                log(
                    f"{profile.name} rep {rep + 1} {name}: {r['images_per_s']:.2f} img/s, "
                    f"quota use {r['ratio_formula']:.2f} (ideal-batch {r['ratio_ideal']:.2f}), "
                    f"{r['rejected']} rejected, {r['failed']} failed"
                )
        recipe = self._measure(
            emu,
            profile,
            prefect,
            peers.run_recipe,
            texts[: self.sizes.recipe_n],
            self.out(f"{profile.name}-recipe"),
        )
        log(f"{profile.name} recipe: {recipe['images_per_s']:.3f} img/s")
        keys = [
            "images_per_s",
            "throughput",
            "ceiling_formula",
            "ratio_formula",
            "ceiling_ideal",
            "ratio_ideal",
            "latency_s",
            "wall_s",
            "client_cpu_s",
            "server_cpu_s",
            "rejected",
            "failed",
            "peak_in_flight",
            "slot_use",
            "mean_in_flight",
        ]
        bf = metrics.summarise(runs["bananaflow"], keys)
        sdk = metrics.summarise(runs["sdk_script"], keys)
        common = {
            "time_scale": profile.time_scale,
            "rpm": profile.rpm,
            "concurrency": profile.concurrency,
            "images": len(texts),
        }
        self.figures.setdefault("throughput_vs_quota", {})[profile.name] = {
            **common,
            "bananaflow": bf,
            "sdk_script": sdk,
        }
        self.figures.setdefault("bananaflow_vs_sdk", {})[profile.name] = {
            **common,
            "ratio": metrics.ratio(bf["images_per_s"], sdk["images_per_s"]),
            "ratio_generation": metrics.ratio(bf["throughput"], sdk["throughput"]),
            "bananaflow_images_per_s": bf["images_per_s"],
            "sdk_images_per_s": sdk["images_per_s"],
        }
        self.figures.setdefault("bananaflow_vs_recipe", {})[profile.name] = {
            **common,
            "ratio": metrics.ratio(bf["images_per_s"], recipe["images_per_s"]),
            "bananaflow_images_per_s": bf["images_per_s"],
            "recipe_images_per_s": recipe["images_per_s"],
            "recipe_images": recipe["images"],
            "recipe": recipe,
        }
        if rerun and last_bf:
            self.figures["rerun"] = self.rerun(emu, profile, prefect, last_bf, texts)

    def rerun(
        self,
        emu: EmulatorProcess,
        profile: Profile,
        prefect: PrefectServer,
        first: dict[str, Any],
        texts: list[str],
    ) -> dict[str, Any]:
        """The same batch, config and storage again: nothing should be generated or paid."""
        config = Path(first["config"])
        again = self._measure(
            emu,
            profile,
            prefect,
            peers.run_bananaflow,
            texts,
            config.parent,
            config_path=config,
        )
        # The first run's time shrinks with the time scale, a re-run's does not: project both
        # to real time (generation span / scale) so the ratio means what it would at Google.
        first_real = first["wall_s"] + first["span_s"] * (1 / profile.time_scale - 1)
        log(
            f"re-run: {again['generation_requests']} generation requests, "
            f"{again['wall_s']:.2f} s vs {first['wall_s']:.2f} s"
        )
        return {
            "profile": profile.name,
            "images": len(texts),
            "generation_requests": again["generation_requests"],
            "first_generation_requests": first["generation_requests"],
            "requests_ratio": metrics.ratio(
                again["generation_requests"], first["generation_requests"]
            ),
            "wall_s": again["wall_s"],
            "first_wall_s": first["wall_s"],
            "time_ratio": metrics.ratio(again["wall_s"], first["wall_s"]),
            "time_ratio_real_time": metrics.ratio(again["wall_s"], first_real),
            "reused": again.get("counts", {}),
            "client_cpu_s": again["client_cpu_s"],
            "server_cpu_s": again["server_cpu_s"],
        }

    # ------------------------------------------------------------------ CPU per image

    def orchestration_cpu(self, emu: EmulatorProcess, prefect: PrefectServer) -> dict[str, Any]:
        """Latency 0: every CPU second is work. Flow process minus the same encodes."""
        from bananaflow.config import CompressSettings
        from bananaflow.imaging import derivatives

        profile = Profile("zero", "vertex", "prod", VERTEX_RPM, VERTEX_CONCURRENCY, 0.0)
        texts = self.texts["cpu"]
        n = len(texts)
        flow = self._measure(
            emu, profile, prefect, peers.run_bananaflow, texts, self.out("cpu-bananaflow")
        )
        sdk = self._measure(emu, profile, prefect, peers.run_sdk_script, texts, self.out("cpu-sdk"))
        core = self._measure(
            emu, profile, prefect, peers.run_core_only, texts, self.out("cpu-core")
        )
        # The compress call on the flow's own masters (since issue 14 Vertex sends JPEG at the
        # target quality, which the step publishes as is), and the PNG encode the SDK script
        # does, on PNG masters of the same prompts.
        from bananaflow.config import EmulatorSettings
        from bananaflow.emulator.imagegen import render
        from benchmarks.emulator_proc import image_spec

        settings = CompressSettings(format="jpeg", quality=JPEG_QUALITY, thumbnails=[])

        def compress_ms(blobs: list[bytes]) -> float:
            c0 = self_cpu()
            for blob in blobs:
                derivatives(blob, settings)
            return 1000 * metrics.ratio(self_cpu() - c0, len(blobs))

        store = Path(flow["config"]).parent / "store" / "images" / "masters"
        flow_compress_ms = compress_ms([p.read_bytes() for p in store.rglob("*") if p.is_file()])
        pngs = [
            render(image_spec(EmulatorSettings(), ["vertex", MODEL, t, RATIO, "1K"]))
            for t in texts[:10]
        ]
        encode_ms = compress_ms(pngs)
        per = {
            k: 1000 * v["client_cpu_s"] / n
            for k, v in (("flow", flow), ("sdk", sdk), ("core", core))
        }
        server_ms = 1000 * flow["server_cpu_s"] / n
        result = {
            "images": n,
            "image": "1K Vertex master (JPEG q85 from Vertex, published as is) -> JPEG q85",
            "flow_process_ms": per["flow"],
            "encode_ms": encode_ms,
            "flow_compress_ms": flow_compress_ms,
            "orchestration_ms": per["flow"] - flow_compress_ms,
            "prefect_server_ms": server_ms,
            "orchestration_with_server_ms": per["flow"] - flow_compress_ms + server_ms,
            "breakdown_ms": {
                "http_and_parse (sdk script minus encode)": per["sdk"] - encode_ms,
                "bananaflow core (core-only minus its compress, minus sdk's http and parse)": (
                    per["core"] - flow_compress_ms - (per["sdk"] - encode_ms)
                ),
                "prefect client (flow minus core-only)": per["flow"] - per["core"],
                "prefect server": server_ms,
            },
            "sdk_script_ms": per["sdk"],
            "core_only_ms": per["core"],
            "flow_images_per_s": flow["images_per_s"],
            "sdk_images_per_s": sdk["images_per_s"],
            "core_images_per_s": core["images_per_s"],
            "emulator_ms": 1000 * flow["emulator_cpu_s"] / n,
        }
        log(
            f"CPU/image: flow {per['flow']:.1f} ms (compress {flow_compress_ms:.1f}), "
            f"server {server_ms:.1f} ms, sdk {per['sdk']:.1f}, core {per['core']:.1f}"
        )
        return result

    # ------------------------------------------------------------------ compress step

    def compress_vs_pillow(self) -> dict[str, Any]:
        """The compress step's body (``chain.compress_master``) vs bare Pillow, same masters."""
        from PIL import Image

        from bananaflow import chain
        from bananaflow.config import EmulatorSettings, load_settings
        from bananaflow.emulator.imagegen import render
        from benchmarks.emulator_proc import image_spec

        size = self.sizes.compress_size
        profile = Profile("compress", "vertex", "prod", VERTEX_RPM, VERTEX_CONCURRENCY, 1.0)
        out = self.out("compress")
        cfg = bananaflow_config(out / "c.yaml", profile, out / "store")
        settings = load_settings(str(cfg), {"emulator.embedded": False})
        ctx = chain.open_context(settings, "compress-bench", set())
        emu_settings = EmulatorSettings()
        results: dict[str, Any] = {}
        try:
            for backend in ("vertex", "aistudio"):
                item = [backend, MODEL, f"compress bench {backend}", RATIO, size]
                data = render(image_spec(emu_settings, item))
                master = _work_dir_master(ctx.work_dir, data, backend)

                def raw(blob: bytes = data) -> None:
                    buf = io.BytesIO()
                    Image.open(io.BytesIO(blob)).save(
                        buf, format="JPEG", quality=JPEG_QUALITY, optimize=True
                    )

                def step(ref: Any = master) -> None:
                    chain.compress_master(ctx, ref)

                step()  # warm caches and lazy imports
                raw()
                samples: dict[str, list[tuple[float, float]]] = {"step": [], "raw": []}
                for _ in range(self.sizes.compress_reps):
                    for name, fn in (("raw", raw), ("step", step)):
                        w, c = time.perf_counter(), self_cpu()
                        fn()
                        samples[name].append((time.perf_counter() - w, self_cpu() - c))
                med = {
                    f"{name}_{kind}_s": metrics.median([x[i] for x in samples[name]])
                    for name in samples
                    for i, kind in ((0, "wall"), (1, "cpu"))
                }
                fmt = "png" if backend == "vertex" else "jpeg"
                results[f"{backend}_{fmt}_{size.lower()}"] = {
                    **med,
                    "master_bytes": len(data),
                    "ratio_cpu": metrics.ratio(med["step_cpu_s"], med["raw_cpu_s"]),
                    "ratio_wall": metrics.ratio(med["step_wall_s"], med["raw_wall_s"]),
                    "reps": self.sizes.compress_reps,
                }
        finally:
            asyncio.run(ctx.aclose())
        results["ratio"] = max(v["ratio_cpu"] for v in results.values() if isinstance(v, dict))
        log(f"compress step / raw Pillow: {results['ratio']:.3f}")
        return results

    # ------------------------------------------------------------------ memory

    def _child(
        self,
        emu: EmulatorProcess,
        profile: Profile,
        texts: list[str],
        size: str,
        name: str,
        peer: str = "bananaflow",
    ) -> dict[str, Any]:
        import json

        out = self.out(name)
        cfg = bananaflow_config(out / "bf.yaml", profile, out / "store", image_size=size)
        spec = out / "spec.json"
        spec.write_text(
            json.dumps(
                {
                    "peer": peer,
                    "url": emu.url,
                    "emulator": emu.settings.model_dump(mode="json"),
                    "config": str(cfg),
                    "prompts": texts,
                    "profile": asdict(profile),
                    "size": size,
                    "out": str(out / "files"),
                }
            )
        )
        emu.reset()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.child", str(spec)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=max(120.0, self.sizes.budget_s),
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"{name} child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        result = json.loads(lines[-1].removeprefix("RESULT "))
        stats = emu.stats()
        result["process_s"] = time.perf_counter() - t0
        result["peak_in_flight"] = max(stats["peak_in_flight"].values())
        result["generation_requests"] = sum(stats["generation_requests"].values())
        return result

    def peak_rss(self, emu: EmulatorProcess) -> dict[str, Any]:
        s = self.sizes
        profile = Profile("rss", "vertex", "prod", VERTEX_RPM, VERTEX_CONCURRENCY, s.aistudio_scale)
        r = self._child(emu, profile, self.texts["rss"], s.rss_size, "rss")
        sdk = self._child(emu, profile, self.texts["rss"], s.rss_size, "rss-sdk", "sdk_script")
        log(
            f"peak RSS {s.rss_size} x{s.rss_n} at concurrency {VERTEX_CONCURRENCY}: "
            f"{r['peak_rss_mb']:.0f} MB (after imports {r['rss_before_mb']:.0f} MB), "
            f"peak in flight {r['peak_in_flight']}"
        )
        return {
            "image_size": s.rss_size,
            "images": s.rss_n,
            "concurrency": VERTEX_CONCURRENCY,
            "peak_rss_mb": r["peak_rss_mb"],
            "rss_after_imports_mb": r["rss_before_mb"],
            "peak_in_flight": r["peak_in_flight"],
            "wall_s": r["wall_s"],
            "counts": r["counts"],
            "sdk_script_peak_rss_mb": sdk["peak_rss_mb"],
            "sdk_script_rss_after_imports_mb": sdk["rss_before_mb"],
            "sdk_script_peak_in_flight": sdk["peak_in_flight"],
            "sdk_script_counts": sdk["counts"],
        }

    # ------------------------------------------------------------------ scaling

    def scaling(self, emu: EmulatorProcess, prefect: PrefectServer) -> dict[str, Any]:
        """Same work at 10x steps; CPU-bound (latency 0), one fresh process per size."""
        s = self.sizes
        profile = Profile("scale", "aistudio", "dev", AISTUDIO_RPM, AISTUDIO_CONCURRENCY, 0.0)
        points: list[dict[str, Any]] = []
        planned = list(s.scale_sizes)
        for i, n in enumerate(planned):
            if i == len(planned) - 1 and points:
                n = self._largest_that_fits(points[-1], n)
            server0 = prefect.cpu()
            r = self._child(emu, profile, prompts(n, f"scale{n}"), "1K", f"scale-{n}")
            point = {
                "images": n,
                "wall_s": r["wall_s"],
                "s_per_image": r["wall_s"] / n,
                "client_cpu_ms_per_image": 1000 * r["cpu_s"] / n,
                "server_cpu_ms_per_image": 1000 * (prefect.cpu() - server0) / n,
                "peak_rss_mb": r["peak_rss_mb"],
                "rss_after_imports_mb": r["rss_before_mb"],
                "counts": r["counts"],
            }
            points.append(point)
            log(
                f"scaling {n}: {point['s_per_image'] * 1000:.0f} ms/image, "
                f"peak RSS {point['peak_rss_mb']:.0f} MB"
            )
        first, last = points[0], points[-1]
        mid = points[1] if len(points) > 2 else first
        return {
            "image": (
                f"1K AI Studio JPEG master -> JPEG q85, latency 0, concurrency {SCALE_CONCURRENCY}"
            ),
            "planned": planned,
            "points": points,
            "largest": last["images"],
            "time_per_image_growth": metrics.ratio(last["s_per_image"], mid["s_per_image"]),
            "peak_rss_growth": metrics.ratio(last["peak_rss_mb"], mid["peak_rss_mb"]),
            "time_per_image_growth_from_smallest": metrics.ratio(
                last["s_per_image"], first["s_per_image"]
            ),
        }

    def _largest_that_fits(self, previous: dict[str, Any], wanted: int) -> int:
        remaining = self.sizes.budget_s - self.elapsed() - 20.0
        per_image = previous["s_per_image"] * 1.15
        fits = int(remaining / per_image) if per_image > 0 else wanted
        # Never below twice the previous point, however busy the machine: the series keeps a
        # growth figure, and a size with two points (the smoke test's) is never cut.
        n = min(wanted, max(2 * previous["images"], (fits // 100) * 100))
        if n == wanted:
            return wanted
        self.notes.append(
            f"scaling: {wanted} images would take ~{wanted * per_image:.0f} s, "
            f"{remaining:.0f} s were left in the {self.sizes.budget_s:.0f} s budget: ran {n}"
        )
        return n


def _work_dir_master(work_dir: Path, data: bytes, backend: str) -> Any:
    """A master as the generate step leaves it: bytes in the run's work dir, a small ref."""
    import hashlib

    from bananaflow.imagetype import identify
    from bananaflow.records import MasterRef

    info = identify(data)
    sha = hashlib.sha256(data).hexdigest()
    (work_dir / sha).write_bytes(data)
    return MasterRef(
        uri=(work_dir / sha).as_uri(),
        path=f"masters/{sha}.{info.ext}",
        sha256=sha,
        mime_type=info.mime_type,
        width=info.width,
        height=info.height,
        bytes=len(data),
        backend=backend,  # type: ignore[arg-type]
        model=MODEL,
    )


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
