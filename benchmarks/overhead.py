"""Orchestration overhead per image (issue 14): ``python -m benchmarks.overhead [options]``.

Everything at emulator latency 0, so every CPU second is work; CPU is per process (user+sys,
from ``/proc``), never wall time, because other jobs share the 2 cores. One Prefect server
(SQLite, its own home) and one emulator process serve every part:

* ``cpu``: the same 1K Vertex images through each variant of the flow (per-step / per-job task
  runs; PNG master + encode / Vertex JPEG published as is), plus the hand-written SDK script and
  bananaflow's core without Prefect, for flow-process and server CPU per image;
* ``profile`` (needs the ``bench`` extra): py-spy samples the flow process (a child) and the
  Prefect server during one per-step and one per-job run; stacks are sorted into categories;
* ``vertex4k``: the compress step on a 4K Vertex master, PNG (encode) vs JPEG (passthrough),
  CPU and bytes over the wire;
* ``scale``: fresh flow processes of growing size (default 100, 1000, 10000): time and CPU per
  image, peak RSS, and the Prefect database's growth per image.

Writes ``benchmarks/results/overhead.{json,md}`` and the "Orchestration overhead" section of
``docs/benchmarks.md`` (which ``python -m benchmarks`` keeps when it rewrites the page).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from benchmarks import metrics, peers
from benchmarks.procs import (
    PREFECT_QUIET,
    ROOT,
    EmulatorProcess,
    PrefectServer,
    Processes,
    self_cpu,
)
from benchmarks.workload import (
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

ZERO = Profile("zero", "vertex", "prod", VERTEX_RPM, VERTEX_CONCURRENCY, 0.0)
MARK_START = "<!-- overhead:start -->"
MARK_END = "<!-- overhead:end -->"
# The flow variants of the ``cpu`` part: name -> config overrides.
VARIANTS: dict[str, dict[str, Any]] = {
    "per-step, PNG + encode (as before)": {
        "generate": {"task_runs": "per_step"},
        "compress": {"provider_jpeg": False},
    },
    "per-job, PNG + encode": {
        "generate": {"task_runs": "grouped", "jobs_per_task_run": 1},
        "compress": {"provider_jpeg": False},
    },
    "per-step, Vertex JPEG as is": {"generate": {"task_runs": "per_step"}},
    "per-job, Vertex JPEG as is": {"generate": {"task_runs": "grouped", "jobs_per_task_run": 1}},
    "25 jobs per task run, Vertex JPEG as is (the default above 50 jobs)": {
        "generate": {"task_runs": "grouped", "jobs_per_task_run": 25}
    },
}
# The profiled variants (PNG masters, so the encode shows as a reference).
PROFILED: dict[str, dict[str, Any]] = {
    "per-step": {"generate": {"task_runs": "per_step"}, "compress": {"provider_jpeg": False}},
    "25 jobs per task run": {
        "generate": {"task_runs": "grouped", "jobs_per_task_run": 25},
        "compress": {"provider_jpeg": False},
    },
}


def log(msg: str) -> None:
    print(f"[overhead {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def flow_config(out: Path, over: dict[str, Any], *, image_size: str = "1K") -> Path:
    path = bananaflow_config(out / "bf.yaml", ZERO, out / "store", image_size=image_size)
    cfg = _merge(yaml.safe_load(path.read_text()), over)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def db_bytes(home_glob: Path) -> int:
    """The Prefect server's SQLite database, WAL included."""
    return sum(p.stat().st_size for p in home_glob.parent.glob(f"{home_glob.name}/prefect.db*"))


class Overhead:
    def __init__(
        self,
        workdir: Path,
        args: argparse.Namespace,
        checkpoint: Callable[[dict[str, Any]], None] = lambda _results: None,
    ):
        self.workdir = workdir
        self.args = args
        self.figures: dict[str, Any] = {}
        self.checkpoint = checkpoint  # gets the results so far after each part and size

    def out(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.workdir))

    def run(self) -> dict[str, Any]:
        a = self.args
        meta: dict[str, Any] = {
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "loadavg_start": list(os.getloadavg()),
            "args": {k: v for k, v in vars(a).items() if k != "out"},
        }
        cpu_texts = prompts(a.images, "ovh")
        with Processes() as procs:
            self.prefect = procs.add(PrefectServer(self.workdir)).start()
            self.emu = procs.add(
                EmulatorProcess(
                    "emu-zero",
                    emulator_settings(0.0),
                    warm_items("vertex", cpu_texts, "1K"),
                )
            ).start(self.workdir)
            if "vertex4k" in a.parts:
                self.figures["vertex4k"] = self.vertex4k()
            self.prefect.wait_ready()
            self.emu.wait_ready()
            os.environ["PREFECT_API_URL"] = self.prefect.url
            for key, value in PREFECT_QUIET.items():
                os.environ.setdefault(key, value)
            self.home = next(self.workdir.glob("prefect-home-*"))
            peers.run_bananaflow(self.emu, ZERO, cpu_texts[:2], self.out("warm"))
            meta["cpu_model"] = _cpu_model()
            if "cpu" in a.parts:
                self.figures["cpu"] = self.cpu(cpu_texts)
                self._checkpoint(meta)
            if "profile" in a.parts:
                self.figures["profile"] = {
                    name: self.profile(cpu_texts, name, over) for name, over in PROFILED.items()
                }
                self._checkpoint(meta)
            if "scale" in a.parts:
                self.figures["scale"] = {"points": []}
                self.scale(a.scale, meta)
        return self._checkpoint(meta)

    def _checkpoint(self, meta: dict[str, Any]) -> dict[str, Any]:
        meta["loadavg_end"] = list(os.getloadavg())
        results = {"meta": dict(meta), "figures": json.loads(json.dumps(self.figures))}
        self.checkpoint(results)
        return results

    # ------------------------------------------------------------------ CPU per image

    def _cpu_run(self, fn: Any, texts: list[str], **kw: Any) -> dict[str, Any]:
        self.emu.reset()
        server0, db0 = self.prefect.cpu(), db_bytes(self.home)
        run = fn(self.emu, ZERO, texts, self.out("cpu"), **kw)
        n = len(texts)
        return {
            "images": n,
            "failed": run.failed,
            "client_ms": 1000 * run.cpu_s / n,
            "server_ms": 1000 * (self.prefect.cpu() - server0) / n,
            "db_bytes_per_image": (db_bytes(self.home) - db0) / n,
            "wall_s": run.wall_s,
        }

    def cpu(self, texts: list[str]) -> dict[str, Any]:
        from bananaflow.config import CompressSettings
        from bananaflow.imaging import derivatives

        reps = self.args.reps
        rows: dict[str, list[dict[str, Any]]] = {}
        for rep in range(reps):
            for name, over in VARIANTS.items():
                cfg = flow_config(self.out("variant"), over)
                r = self._cpu_run(peers.run_bananaflow, texts, config_path=cfg)
                rows.setdefault(name, []).append(r)
                log(
                    f"rep {rep + 1} {name}: client {r['client_ms']:.1f}, "
                    f"server {r['server_ms']:.1f}"
                )
            for name, fn in (
                ("sdk script", peers.run_sdk_script),
                ("core, no Prefect", peers.run_core_only),
            ):
                r = self._cpu_run(fn, texts)
                rows.setdefault(name, []).append(r)
                log(f"rep {rep + 1} {name}: client {r['client_ms']:.1f}")
        # The encode the SDK script and the PNG variants do, on the same masters, here.
        from bananaflow.config import EmulatorSettings
        from bananaflow.emulator.imagegen import render
        from benchmarks.emulator_proc import image_spec

        masters = [
            render(image_spec(EmulatorSettings(), ["vertex", MODEL, t, RATIO, "1K"]))
            for t in texts[:10]
        ]
        settings = CompressSettings(format="jpeg", quality=JPEG_QUALITY, thumbnails=[])
        c0 = self_cpu()
        for blob in masters:
            derivatives(blob, settings)
        encode_ms = 1000 * (self_cpu() - c0) / len(masters)
        keys = ["client_ms", "server_ms", "db_bytes_per_image", "wall_s"]
        summary = {name: metrics.summarise(runs, keys) for name, runs in rows.items()}
        return {"images": len(texts), "reps": reps, "encode_ms": encode_ms, "variants": summary}

    def child_spec(
        self, out: Path, over: dict[str, Any], texts: list[str], *, batch_file: bool = False
    ) -> Path:
        """What ``benchmarks.child`` runs: this emulator, a flow config and the prompts, inline
        or (``batch_file``) as a JSONL batch file: the Prefect server refuses a flow run whose
        parameters exceed 512 KB (``server.api.max_parameter_size``), about 6,000 inline
        prompts of this length, so a 10,000-prompt run goes as a file, as a user's would."""
        spec = out / "spec.json"
        body: dict[str, Any] = {
            "url": self.emu.url,
            "emulator": self.emu.settings.model_dump(mode="json"),
            "config": str(flow_config(out, over)),
            "prompts": texts,
        }
        if batch_file:
            path = out / "prompts.jsonl"
            path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
            body |= {"prompts": [], "batch_file": str(path)}
        spec.write_text(json.dumps(body))
        return spec

    # ------------------------------------------------------------------ profiles

    def profile(self, texts: list[str], mode: str, over: dict[str, Any]) -> dict[str, Any]:
        """py-spy on a child flow process and on the server, during one run of ``texts``."""
        pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        out = self.out("profile")
        spec = self.child_spec(out, over, texts)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        rate = "100"
        server_raw, flow_raw = out / "server.txt", out / "flow.txt"
        server = subprocess.Popen(
            [pyspy, "record", "--pid", str(self.prefect.child.pid), "--subprocesses",
             "--rate", rate, "--format", "raw", "--nonblocking", "-o", str(server_raw)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        time.sleep(1.0)  # attached before the run starts
        self.emu.reset()
        server0 = self.prefect.cpu()
        child = subprocess.run(
            [pyspy, "record", "--rate", rate, "--format", "raw", "--nonblocking", "-o",
             str(flow_raw), "--", sys.executable, "-m", "benchmarks.child", str(spec)],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        server_cpu = self.prefect.cpu() - server0
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        result = next(
            (json.loads(ln[7:]) for ln in child.stdout.splitlines() if ln.startswith("RESULT ")),
            None,
        )
        if result is None or not flow_raw.exists():
            raise RuntimeError(f"profiled run failed:\n{child.stderr[-3000:]}")
        n = len(texts)
        return {
            "mode": mode,
            "images": n,
            "flow_cpu_ms": 1000 * result["cpu_s"] / n,
            "server_cpu_ms": 1000 * server_cpu / n,
            "flow": categorise(flow_raw, FLOW_CATEGORIES),
            "server": categorise(server_raw, SERVER_CATEGORIES) if server_raw.exists() else {},
        }

    # ------------------------------------------------------------------ 4K compress

    def vertex4k(self) -> dict[str, Any]:
        """The compress step on the master Vertex sends: PNG (then encoded) vs JPEG (as is)."""
        import io

        from PIL import Image

        from bananaflow import chain
        from bananaflow.config import EmulatorSettings, load_settings
        from bananaflow.emulator.imagegen import render
        from benchmarks.emulator_proc import image_spec
        from benchmarks.suite import _work_dir_master

        out = self.out("vertex4k")
        cfg = flow_config(out, {})
        settings = load_settings(str(cfg), {"emulator.embedded": False})
        ctx = chain.open_context(settings, "vertex4k", set())
        png = render(image_spec(EmulatorSettings(), ["vertex", MODEL, "4k bench", RATIO, "4K"]))
        buf = io.BytesIO()
        Image.open(io.BytesIO(png)).save(buf, "JPEG", quality=JPEG_QUALITY)  # as Vertex would
        jpeg = buf.getvalue()
        result: dict[str, Any] = {}
        try:
            for name, data in (("png_master_encoded", png), ("jpeg_master_as_is", jpeg)):
                master = _work_dir_master(ctx.work_dir, data, "vertex")
                chain.compress_master(ctx, master)  # warm
                samples = []
                for _ in range(self.args.reps4k):
                    c0 = self_cpu()
                    ref = chain.compress_master(ctx, master)
                    samples.append(self_cpu() - c0)
                result[name] = {
                    "compress_cpu_s": metrics.median(samples),
                    "method": ref.method,
                    "master_bytes": len(data),
                    "wire_bytes": len(base64.b64encode(data)),
                    "published_bytes": ref.bytes,
                }
                log(f"4K {name}: {result[name]['compress_cpu_s']:.3f} s CPU, {ref.method}")
        finally:
            asyncio.run(ctx.aclose())
        return result

    # ------------------------------------------------------------------ scale

    def scale(self, sizes: list[int], meta: dict[str, Any]) -> None:
        points = self.figures["scale"]["points"]
        for n in sizes:
            texts = prompts(n, f"scale{n}")
            out = self.out(f"scale-{n}")
            spec = self.child_spec(out, {}, texts, batch_file=True)
            self.emu.reset()
            server0, db0, load0 = self.prefect.cpu(), db_bytes(self.home), os.getloadavg()[0]
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            proc = subprocess.run(
                [sys.executable, "-m", "benchmarks.child", str(spec)],
                env=env, cwd=ROOT, capture_output=True, text=True, timeout=6 * 3600,
            )  # fmt: skip
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                raise RuntimeError(f"scale {n} failed:\n{proc.stderr[-3000:]}")
            r = json.loads(lines[-1][7:])
            point = {
                "images": n,
                "counts": r["counts"],
                "wall_s": r["wall_s"],
                "s_per_image": r["wall_s"] / n,
                "client_cpu_ms_per_image": 1000 * r["cpu_s"] / n,
                "server_cpu_ms_per_image": 1000 * (self.prefect.cpu() - server0) / n,
                "peak_rss_mb": r["peak_rss_mb"],
                "rss_after_imports_mb": r["rss_before_mb"],
                "db_bytes_per_image": (db_bytes(self.home) - db0) / n,
                "loadavg": [load0, os.getloadavg()[0]],
                "code": self.args.label,
            }
            points.append(point)
            log(
                f"scale {n}: {1000 * point['s_per_image']:.1f} ms/image wall, client "
                f"{point['client_cpu_ms_per_image']:.1f} ms, server "
                f"{point['server_cpu_ms_per_image']:.1f} ms CPU, peak RSS "
                f"{point['peak_rss_mb']:.0f} MB, DB +{point['db_bytes_per_image']:.0f} B/image"
            )
            self._checkpoint(meta)


def _cpu_model() -> str:
    """``lscpu``'s model, CPU count, hypervisor and caches, on one line."""
    keep = ("Model name", "CPU(s)", "Hypervisor vendor", "L2 cache", "L3 cache")
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return ", ".join(f"{k} {fields[k].strip()}" for k in keep if k in fields)


# ----------------------------------------------------------------------------- profiles

# First pattern found anywhere in a stack names its category (so order is priority).
FLOW_CATEGORIES: list[tuple[str, str]] = [
    ("image decode/encode (Pillow)", r"PIL/"),
    ("Prefect events (task-run states over the websocket)", r"prefect/events/|websockets/"),
    ("Prefect log shipping", r"prefect/logging/"),
    ("Prefect artifacts", r"prefect/artifacts"),
    ("Prefect results and cache keys", r"prefect/results|cache_policies|hash_objects"),
    ("pydantic (de)serialisation under Prefect", r"prefect/.*pydantic/|pydantic/.*prefect/"),
    ("Prefect task engine (run creation, state transitions)", r"prefect/"),
    ("HTTP to the emulator and JSON/base64 parsing", r"httpx/|httpcore/|h11/|backends/wire|base64"),
    ("bananaflow core (store, ledger, manifest, hashing)", r"bananaflow/|chain/|tasks/"),
    ("event loop, threads, other", r"."),
]
SERVER_CATEGORIES: list[tuple[str, str]] = [
    ("task-run recorder (task runs and states into the DB)", r"task_run_recorder"),
    ("event persister (events into the DB)", r"event_persister"),
    ("automation triggers (every event is evaluated)", r"server/events/triggers"),
    ("artifact API", r"api/artifacts"),
    ("log API", r"api/logs"),
    ("events websocket (receiving)", r"api/events"),
    ("other API routes", r"prefect/server/api/"),
    ("perpetual-service scheduling (docket on in-memory redis)", r"docket/|redis"),
    ("SQLite and SQLAlchemy (on the database thread)", r"aiosqlite|sqlalchemy"),
    ("HTTP and websockets (uvicorn, starlette)", r"starlette/|uvicorn/protocols|websockets/|h11"),
    ("other", r"."),
]


_IDLE = re.compile(r"select|epoll|poll \(|\.wait|Queue\.get|_wait|sleep")


def categorise(raw: Path, categories: list[tuple[str, str]]) -> dict[str, float]:
    """Share of samples per category from py-spy's raw (collapsed) output."""
    counts: Counter[str] = Counter()
    compiled = [(name, re.compile(p)) for name, p in categories]
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit() or "_find_and_load" in stack:  # imports are not per image
            continue
        if _IDLE.search(stack.rsplit(";", 1)[-1]):  # a thread waiting, not working
            continue
        for name, pattern in compiled:
            if pattern.search(stack):
                counts[name] += int(n)
                break
    total = sum(counts.values()) or 1
    return {name: counts[name] / total for name, _ in categories if counts[name]}


# ----------------------------------------------------------------------------- report


def markdown(results: dict[str, Any]) -> str:
    from benchmarks.overhead_report import render

    return render(results)


def write(results: dict[str, Any], out_dir: Path, docs: Path | None) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    js, md = out_dir / "overhead.json", out_dir / "overhead.md"
    js.write_text(json.dumps(results, indent=1, default=str))
    text = markdown(results)
    md.write_text(text)
    written = [js, md]
    if docs is not None:
        page = docs.read_text() if docs.exists() else "# Benchmarks\n"
        section = f"{MARK_START}\n{text}\n{MARK_END}"
        if MARK_START in page:
            before, rest = page.split(MARK_START, 1)
            page = before + section + rest.split(MARK_END, 1)[1]
        else:
            page = page.rstrip() + "\n\n" + section + "\n"
        docs.write_text(page)
        written.append(docs)
    return written


def _merged(old: dict[str, Any] | None, results: dict[str, Any]) -> dict[str, Any]:
    """``results`` added to an earlier overhead.json: parts replaced, scale points added."""
    if old is None:
        return {**results, "runs": [results["meta"]]}
    merged = json.loads(json.dumps(old))
    figures = dict(results["figures"])
    scale = figures.pop("scale", None)
    merged["figures"].update(figures)
    if scale is not None:
        # A point is replaced by one of the same size and code; other codes stay (before/after).
        sizes = {(p["images"], p.get("code", "")) for p in scale["points"]}
        kept = [p for p in merged["figures"].get("scale", {}).get("points", [])]
        points = [p for p in kept if (p["images"], p.get("code", "")) not in sizes]
        points += scale["points"]
        merged["figures"]["scale"] = {"points": sorted(points, key=lambda p: p["images"])}
    merged["runs"] = [*merged.get("runs", []), results["meta"]]
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overhead", description=__doc__)
    parser.add_argument(
        "--parts", default="cpu,vertex4k", help="cpu, profile, vertex4k, scale (comma-separated)"
    )
    parser.add_argument("--images", type=int, default=60, help="images per CPU run")
    parser.add_argument("--reps", type=int, default=2, help="repetitions of each CPU run")
    parser.add_argument("--reps4k", type=int, default=3)
    parser.add_argument("--scale", default="100,1000,10000", help="scale series sizes")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--merge", action="store_true", help="add to the last overhead.json")
    parser.add_argument(
        "--label",
        default="",
        help="names the code a scale series measured; series of other labels stay beside it",
    )
    parser.add_argument(
        "--render", action="store_true", help="only rewrite the pages from overhead.json"
    )
    args = parser.parse_args(argv)
    if args.render:
        results = json.loads((args.out / "overhead.json").read_text())
        for path in write(results, args.out, args.docs):
            log(f"wrote {path}")
        return 0
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    args.scale = [int(x) for x in args.scale.split(",") if x.strip()]
    previous = args.out / "overhead.json"
    old = json.loads(previous.read_text()) if args.merge and previous.exists() else None

    def checkpoint(results: dict[str, Any]) -> None:
        """Write what is measured so far: a long scale run stopped early still reports."""
        merged = _merged(old, results)
        for path in write(merged, args.out, args.docs):
            log(f"wrote {path}")

    workdir = Path(tempfile.mkdtemp(prefix="bananaflow-overhead-"))
    try:
        Overhead(workdir, args, checkpoint).run()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
