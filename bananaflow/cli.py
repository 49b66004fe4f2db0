"""The ``bananaflow`` command.

``generate`` runs the Prefect flow in this process (ephemeral Prefect when ``PREFECT_API_URL``
is unset, that server when it is set). Prefect is imported lazily, after quiet defaults are in
the environment, so ``bananaflow emulator`` and error paths start fast and the core stays free
of Prefect imports.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bananaflow.config import load_settings
from bananaflow.errors import BananaflowError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n")[0])
err_console = Console(stderr=True)
# Piped output (CI logs, files) gets a wide table instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 160)

DEMO_BATCH = Path(__file__).resolve().parent.parent / "configs" / "demo-batch.yaml"

_PREFECT_QUIET_DEFAULTS = {
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "DO_NOT_TRACK": "1",
    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
}


def _fail(err: BaseException, code: int = 2) -> typer.Exit:
    # soft_wrap: one physical line even when piped (rich would wrap at 80 columns); escape:
    # messages quote user input, and rich would eat "[a:b]" in "{sha[a:b]}" as markup.
    err_console.print(
        f"[bold red]error:[/] {escape(str(err))}", highlight=False, markup=True, soft_wrap=True
    )
    return typer.Exit(code)


class _OneLineJobFailures(logging.Filter):
    """Expected job outcomes (a refusal, a quota) fail their Prefect task; the results table
    and the manifest carry the reason, so Prefect's traceback for them is noise. Tracebacks of
    anything that is not a BananaflowError (a bug) are kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, BananaflowError):
            record.exc_info = None
            record.exc_text = None
        return True


def _log_to_stderr() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("bananaflow")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logging.getLogger(name).addFilter(_OneLineJobFailures())


@app.command()
def generate(
    prompts: Annotated[list[str] | None, typer.Argument(help="Prompt(s) to render.")] = None,
    batch: Annotated[
        Path | None, typer.Option("--batch", "-b", help="YAML/JSONL/CSV specs.")
    ] = None,
    demo: Annotated[bool, typer.Option(help="Render the built-in demo batch.")] = False,
    config: Annotated[
        str, typer.Option("--config", "-c", help="local|dev|prod or a path.")
    ] = "local",
    stage: Annotated[str | None, typer.Option(help="dev (AI Studio) or prod (Vertex).")] = None,
    backend: Annotated[str | None, typer.Option(help="Force aistudio or vertex.")] = None,
    size: Annotated[str | None, typer.Option(help="1K, 2K or 4K.")] = None,
    aspect_ratio: Annotated[str | None, typer.Option(help="e.g. 1:1, 16:9.")] = None,
    out: Annotated[str | None, typer.Option(help="Storage URL (file://, gs://).")] = None,
    max_usd: Annotated[float | None, typer.Option(help="Budget cap for this run.")] = None,
    upscale: Annotated[bool | None, typer.Option(help="Upscale before compressing.")] = None,
    format: Annotated[str | None, typer.Option(help="jpeg, webp, avif or png.")] = None,
) -> None:
    """Generate images through the Prefect chain and print what happened to each."""
    for key, value in _PREFECT_QUIET_DEFAULTS.items():
        os.environ.setdefault(key, value)
    _log_to_stderr()
    if demo:
        batch = DEMO_BATCH
    if not prompts and batch is None:
        raise _fail(BananaflowError("give a prompt, --batch FILE or --demo"))
    raw: dict[str, Any] = {
        "prompts": prompts or [],
        "batch_file": str(batch) if batch else None,
        "config": config,
        "stage": stage,
        "backend": backend,
        "image_size": size,
        "aspect_ratio": aspect_ratio,
        "output": out,
        "max_usd": max_usd,
        "upscale": upscale,
        "format": format,
    }
    try:
        from pydantic import ValidationError

        from flows.generate import GenerateParameters

        try:
            params = GenerateParameters.model_validate(raw)
        except ValidationError as e:
            first = e.errors(include_url=False)[0]
            field = ".".join(str(p) for p in first["loc"])
            raise BananaflowError(f"invalid --{field.replace('_', '-')}: {first['msg']}") from None
        from bananaflow.preflight import preflight

        settings = load_settings(params.config, params.overrides())
        preflight(settings, params.prompts, params.batch_file, params.backend)
        summary = _run_with_progress(params)
    except BananaflowError as err:
        raise _fail(err) from None
    _print_summary(summary)
    if summary.counts.get("uploaded", 0) != len(summary.rows):
        raise typer.Exit(1)


def _run_with_progress(params: Any) -> Any:
    from flows import generate as flow_module

    columns = (
        TextColumn("[bold]generating"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
    )
    with Progress(*columns, console=err_console, transient=True) as progress:
        bar = progress.add_task("", total=None)

        def on_row(row: Any) -> None:
            progress.advance(bar)
            progress.update(bar, description=f"{row.job_id[:8]} {row.status}")

        flow_module._listeners.append(on_row)
        try:
            return asyncio.run(flow_module.generate_images(params))
        finally:
            flow_module._listeners.remove(on_row)


def _print_summary(summary: Any) -> None:
    root = summary.manifest_uri.rsplit(f"runs/{summary.run_id}/", 1)[0]
    table = Table(title=f"run {summary.run_id} ({summary.stage}) in {root}", title_justify="left")
    for col in ("job", "status", "backend", "size", "KiB raw → final", "result"):
        table.add_column(col)
    for r in summary.rows:
        result = r.uri.removeprefix(root) if r.status == "uploaded" else (r.error or "")
        note = " (reused)" if r.reused_from_run else ""
        table.add_row(
            r.job_id[:8],
            r.status + note,
            r.backend or "-",
            f"{r.width}x{r.height}",
            f"{r.bytes_raw // 1024:,} → {r.bytes_final // 1024:,}",
            result[:160],
        )
    console.print(table)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(summary.counts.items()))
    console.print(f"{counts}; estimated ${summary.estimated_usd:.3f}", highlight=False)
    console.print(f"manifest {summary.manifest_uri}", highlight=False, soft_wrap=True)
    if summary.contact_sheet_uri:
        console.print(f"contact sheet {summary.contact_sheet_uri}", highlight=False, soft_wrap=True)


@app.command()
def setup(
    config: Annotated[
        str, typer.Option("--config", "-c", help="Quotas from this config.")
    ] = "prod",
    pool: Annotated[str, typer.Option(help="Process work pool name.")] = "bananaflow-pool",
) -> None:
    """Create the work pool and per-backend global limits on the Prefect server (idempotent)."""
    for key, value in _PREFECT_QUIET_DEFAULTS.items():
        os.environ.setdefault(key, value)
    try:
        settings = load_settings(config)
    except BananaflowError as err:
        raise _fail(err) from None
    if not os.environ.get("PREFECT_API_URL"):
        raise _fail(
            BananaflowError(
                "PREFECT_API_URL is not set: limits in an ephemeral server would vanish. "
                "Fix: start `prefect server start` and export "
                "PREFECT_API_URL=http://127.0.0.1:4200/api"
            )
        )
    from deployments.setup import setup_prefect

    for line in asyncio.run(setup_prefect(settings, pool)):
        console.print(line, highlight=False)


@app.command()
def emulator(
    config: Annotated[str, typer.Option("--config", "-c")] = "local",
    host: Annotated[
        str, typer.Option(help="Bind address; loopback unless you mean it.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="0 picks a free port.")] = 8089,
    time_scale: Annotated[float | None, typer.Option(help="Multiply every delay.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Serve the local emulator of both Google APIs until interrupted."""
    from bananaflow.emulator.server import serve_forever

    try:
        settings = load_settings(
            config,
            {
                "emulator.host": host,
                "emulator.port": port,
                "emulator.time_scale": time_scale,
                "emulator.seed": seed,
            },
        )
    except BananaflowError as err:
        raise _fail(err) from None
    serve_forever(settings.emulator)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
