"""The ``bananaflow`` command.

``generate`` runs the Prefect flow in this process (ephemeral Prefect when ``PREFECT_API_URL``
is unset, that server when it is set), on the embedded emulator when the config says so.
Prefect is imported lazily, after quiet defaults are in the environment, so ``--version``,
``bananaflow emulator`` and error paths start fast.
"""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bananaflow import __version__, progress, shutdown, standin
from bananaflow.cli.embedded import embedded
from bananaflow.cli.prefect_api import ephemeral_api
from bananaflow.config import load_settings
from bananaflow.configfiles import config_file
from bananaflow.errors import BananaflowError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n")[0])
err_console = Console(stderr=True)
# Piped output (CI logs, files) gets a wide table instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 160)

DRAIN_S = 60.0  # the longest a first Ctrl-C waits for answers in flight
API_GRACE_S = 10.0  # after the summary, how long a silent Prefect API may keep the run open

# Flow-parameter names as the user typed them on the command line.
_FLAGS = {
    "image_size": "size",
    "output": "out",
    "batch_file": "batch",
    "prompts": "prompt",
    "references": "reference",
    "image_sizes": "size",
}

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


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is now: a handler bound to the stream of one command
    (a test runner's capture) must not outlive it."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property  # type: ignore[override]
    def stream(self):  # type: ignore[no-untyped-def]
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def _log_to_stderr() -> None:
    log = logging.getLogger("bananaflow")
    if not any(isinstance(h, _CurrentStderr) for h in log.handlers):
        log.addHandler(_CurrentStderr())
    log.setLevel(logging.INFO)
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _OneLineJobFailures) for f in logger.filters):
            logger.addFilter(_OneLineJobFailures())


def _version(value: bool) -> None:
    if value:
        console.print(f"bananaflow {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Prompts in, finished and stored images out (Nano Banana on AI Studio and Vertex AI)."""


def _quiet_prefect() -> None:
    for key, value in _PREFECT_QUIET_DEFAULTS.items():
        os.environ.setdefault(key, value)


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
    delivery: Annotated[
        str | None,
        typer.Option(help="online, flex (half price, slow), priority (~1.8x) or batch."),
    ] = None,
    size: Annotated[str | None, typer.Option(help="512, 1K, 2K or 4K.")] = None,
    quality: Annotated[
        str | None, typer.Option(help="Quality preset: draft, standard or final.")
    ] = None,
    reference: Annotated[
        list[str] | None,
        typer.Option(help="Reference image sent with each prompt (repeatable): path or URL."),
    ] = None,
    aspect_ratio: Annotated[str | None, typer.Option(help="e.g. 1:1, 16:9.")] = None,
    out: Annotated[str | None, typer.Option(help="Storage URL (file://, gs://).")] = None,
    max_usd: Annotated[float | None, typer.Option(help="Budget cap for this run.")] = None,
    upscale: Annotated[bool | None, typer.Option(help="Upscale before compressing.")] = None,
    format: Annotated[str | None, typer.Option(help="jpeg, webp, avif or png.")] = None,
) -> None:
    """Generate images through the Prefect chain and print what happened to each."""
    _quiet_prefect()
    _log_to_stderr()
    if demo:
        batch = config_file("demo-batch.yaml")
    if not prompts and batch is None:
        raise _fail(BananaflowError("give a prompt, --batch FILE or --demo"))
    raw: dict[str, Any] = {
        "prompts": prompts or [],
        "batch_file": str(batch) if batch else None,
        "config": config,
        "stage": stage,
        "backend": backend,
        "delivery": delivery,
        "image_size": size,
        "quality": quality,
        "references": reference or [],
        "aspect_ratio": aspect_ratio,
        "output": out,
        "max_usd": max_usd,
        "upscale": upscale,
        "format": format,
    }
    try:
        params = _parameters(raw)
        from bananaflow.preflight import preflight

        settings = load_settings(params.config, params.overrides())
        with embedded(settings.emulator, wanted=settings.emulator.embedded) as stand_in:
            if stand_in is not None:
                logging.getLogger("bananaflow").info(
                    "embedded emulator of AI Studio + Vertex (no Google calls) on %s",
                    stand_in.url,
                )
            preflight(
                standin.apply(settings),
                params.prompts,
                params.batch_file,
                params.forced_backend(),
                params.references,
                params.forced_delivery(),
            )
            with ephemeral_api():
                summary = _run_with_progress(params)
    except BananaflowError as err:
        raise _fail(err) from None
    except _ApiLost as lost:
        _leave_without_prefect(lost.summary)
    _print_summary(summary)
    if summary.counts.get("uploaded", 0) != summary.jobs:
        raise typer.Exit(1)


def _leave_without_prefect(summary: Any) -> NoReturn:
    """Print what the run did and exit now: Prefect's client would retry its dead API for
    minutes, in threads that no longer matter."""
    for name in ("prefect", "bananaflow"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    _print_summary(summary)
    err_console.print(
        f"warning: the Prefect API ({os.environ.get('PREFECT_API_URL', '')}) stopped answering "
        "during the run; every image and the manifest are stored, the run's state in Prefect "
        "is stale",
        highlight=False,
        soft_wrap=True,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0 if summary.counts.get("uploaded", 0) == summary.jobs else 1)


def _parameters(raw: dict[str, Any]) -> Any:
    """The flow's parameters; a bad value is one line naming the flag the user typed."""
    from bananaflow.parameters import GenerateParameters

    return _validated(GenerateParameters, raw)


def _validated(model: Any, raw: dict[str, Any]) -> Any:
    from pydantic import ValidationError

    try:
        return model.model_validate(raw)
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        name = str(first["loc"][0]) if first["loc"] else "input"
        flag = _FLAGS.get(name, name).replace("_", "-")
        raise BananaflowError(f"invalid --{flag}: {first['msg']}") from None


def _run_with_progress(params: Any) -> Any:
    from bananaflow.flows.generate import generate_images

    columns = (
        TextColumn("[bold]generating"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
    )
    with Progress(*columns, console=err_console, transient=True) as bar_view:
        bar = bar_view.add_task("", total=None)

        def on_row(row: Any) -> None:
            bar_view.advance(bar)
            bar_view.update(bar, description=f"{row.job_id[:8]} {row.status}")

        finished: list[Any] = []
        with progress.subscribed(on_row, finished.append), _stop_gently():
            return _await_flow(generate_images(params), finished)


class _ApiLost(Exception):
    """The run finished its work but the Prefect API stopped answering."""

    def __init__(self, summary: Any):
        super().__init__("the Prefect API stopped answering")
        self.summary = summary


def _await_flow(flow_call: Any, finished: list[Any]) -> Any:
    """Run the flow in a thread; the summary is the user's, whatever befalls Prefect's API.

    When the API vanishes mid-run, the images, the ledger and the manifest still land (they
    live in the store), but Prefect's client then spends minutes retrying the final state
    updates. Once the summary is here and the API does not answer its health check, waiting
    longer serves nobody: the summary is printed with a one-line warning instead.
    """
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            outcome["summary"] = asyncio.run(flow_call)
        except BaseException as err:
            outcome["error"] = err
        finally:
            done.set()

    threading.Thread(target=run, name="bananaflow-flow", daemon=True).start()
    since: float | None = None
    while not done.wait(0.5):
        if not finished:
            continue
        since = since if since is not None else time.monotonic()
        if time.monotonic() - since > API_GRACE_S and not _api_answers():
            raise _ApiLost(finished[-1])
    if "error" in outcome:
        err = outcome["error"]
        if finished and not isinstance(err, BananaflowError | KeyboardInterrupt):
            raise _ApiLost(finished[-1]) from err
        raise err
    return outcome["summary"]


def _api_answers() -> bool:
    url = os.environ.get("PREFECT_API_URL", "")
    try:
        return httpx.get(url.rstrip("/") + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def _stop_gently() -> Iterator[None]:
    """First Ctrl-C: start nothing new, let paid answers land and be saved, then summarise.

    A second Ctrl-C (or ``DRAIN_S`` without the run ending) aborts at once; a re-run then
    finds everything that was saved and pays only for what was not.
    """
    shutdown.draining.clear()

    def first(_signum: int, _frame: object) -> None:
        shutdown.draining.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        err_console.print(
            f"stopping: no new requests; waiting up to {DRAIN_S:.0f} s for the images in flight "
            "to land and be saved (Ctrl-C again to abort)"
        )
        timer = threading.Timer(DRAIN_S, _thread.interrupt_main)
        timer.daemon = True
        timer.start()

    previous = signal.signal(signal.SIGINT, first)
    try:
        yield
    except KeyboardInterrupt:
        raise BananaflowError(
            "aborted: answers in flight were dropped; re-run the same command to finish "
            "(what was saved is not paid again)"
        ) from None
    finally:
        signal.signal(signal.SIGINT, previous)


def _print_summary(summary: Any) -> None:
    root = summary.manifest_uri.rsplit(f"runs/{summary.run_id}/", 1)[0]
    table = Table(title=f"run {summary.run_id} ({summary.stage}) in {root}", title_justify="left")
    for col in ("job", "status", "backend", "delivery", "size", "KiB raw → final", "result"):
        table.add_column(col)
    for r in summary.rows:
        result = r.uri.removeprefix(root) if r.status == "uploaded" else (r.error or "")
        note = " (reused)" if r.reused_from_run else ""
        table.add_row(
            r.job_id[:8],
            r.status + note,
            r.backend or "-",
            _delivery_cell(r),
            f"{r.width}x{r.height}",
            f"{r.bytes_raw // 1024:,} → {r.bytes_final // 1024:,}",
            result[:160],
        )
    console.print(table)
    if len(summary.rows) < summary.jobs:  # a large run lists the jobs that need a look
        console.print(
            f"{summary.jobs - len(summary.rows):,} more uploaded jobs: {summary.manifest_uri}",
            highlight=False,
            soft_wrap=True,
        )
    counts = ", ".join(f"{k} {v}" for k, v in sorted(summary.counts.items()))
    console.print(f"{counts}; estimated ${summary.estimated_usd:.3f}", highlight=False)
    console.print(f"manifest {summary.manifest_uri}", highlight=False, soft_wrap=True)
    if summary.contact_sheet_uri:
        console.print(f"contact sheet {summary.contact_sheet_uri}", highlight=False, soft_wrap=True)


def _delivery_cell(row: Any) -> str:
    """The delivery, and the tier billed when Google sold it another way (shed, downgraded)."""
    billed = row.billed_delivery
    if billed is None or billed == row.delivery:
        return row.delivery
    return f"{row.delivery} → {billed}"


@app.command()
def compare(
    prompts: Annotated[list[str] | None, typer.Argument(help="Prompt(s) to compare.")] = None,
    batch: Annotated[
        Path | None, typer.Option("--batch", "-b", help="YAML/JSONL/CSV specs.")
    ] = None,
    deliveries: Annotated[
        str | None,
        typer.Option(
            help="Compare deliveries instead of platforms, e.g. online,flex,batch "
            "(priority too); each prompt is bought each way."
        ),
    ] = None,
    config: Annotated[
        str, typer.Option("--config", "-c", help="local|dev|prod or a path.")
    ] = "local",
    size: Annotated[
        list[str] | None, typer.Option(help="Size to compare at (repeatable); default 1K.")
    ] = None,
    out: Annotated[str | None, typer.Option(help="Storage URL (file://, gs://).")] = None,
) -> None:
    """Measure the same prompts on AI Studio vs Vertex AI, or bought by each delivery."""
    _quiet_prefect()
    _log_to_stderr()
    if not prompts and batch is None:
        raise _fail(BananaflowError("give a prompt or --batch FILE"))
    raw: dict[str, Any] = {
        "prompts": prompts or [],
        "batch_file": str(batch) if batch else None,
        "config": config,
        "output": out,
        "deliveries": [d.strip() for d in (deliveries or "").split(",") if d.strip()],
    }
    if size:
        raw["image_sizes"] = size
    try:
        from bananaflow.flows.compare import CompareParameters, compare

        params = _validated(CompareParameters, raw)
        settings = load_settings(params.config, params.overrides("compare"))
        with embedded(settings.emulator, wanted=settings.emulator.embedded), ephemeral_api():
            report = _await_flow(compare(params), [])
    except BananaflowError as err:
        raise _fail(err) from None
    _print_comparison(report)


def _print_comparison(report: Any) -> None:
    from bananaflow.comparison_delivery import COLUMNS, DeliveryReport, delivery_rows

    if isinstance(report, DeliveryReport):
        table = Table(
            *[name for name, _ in COLUMNS],
            title=f"deliveries compared on {report.backend} ({report.run_id})",
            title_justify="left",
        )
        for cells in delivery_rows(report):
            table.add_row(*cells)
    else:
        table = Table("platform", "size", "images", "latency p50", "cost / image")
        for s in report.stats:
            table.add_row(
                s.backend,
                s.image_size,
                f"{s.uploaded} / {s.jobs}",
                "—" if s.latency_p50_s is None else f"{s.latency_p50_s:.2f} s",
                "—" if s.usd_per_image is None else f"${s.usd_per_image:.4f}",
            )
    console.print(table)
    if report.note:
        console.print(report.note, highlight=False, soft_wrap=True)
    console.print(f"report {report.markdown_uri}", highlight=False, soft_wrap=True)


@app.command()
def setup(
    config: Annotated[
        str, typer.Option("--config", "-c", help="Quotas from this config.")
    ] = "prod",
    pool: Annotated[str, typer.Option(help="Process work pool name.")] = "bananaflow-pool",
) -> None:
    """Create the work pool and per-backend global limits on the Prefect server (idempotent)."""
    _quiet_prefect()
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
    from bananaflow.deployments.setup import setup_prefect

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


@app.command()
def worker(
    pool: Annotated[str, typer.Option(help="Process work pool name.")] = "bananaflow-pool",
    emulator_config: Annotated[
        str, typer.Option("--emulator-config", help="Config whose emulator section to serve.")
    ] = "local",
) -> None:
    """A Prefect worker whose flow runs can use the embedded emulator (``config: local``).

    Runs with a dev or prod config still talk to Google: only a config that asks for the
    embedded emulator is pointed at it.
    """
    _quiet_prefect()
    try:
        settings = load_settings(emulator_config)
    except BananaflowError as err:
        raise _fail(err) from None
    prefect = Path(sys.executable).with_name("prefect")
    with embedded(settings.emulator, wanted=True) as stand_in:
        assert stand_in is not None
        err_console.print(f"embedded emulator on {stand_in.url}; starting the worker", style="dim")
        try:
            code = subprocess.call([str(prefect), "worker", "start", "--pool", pool])
        except KeyboardInterrupt:
            code = 130
    raise typer.Exit(code)


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Project folder (created if missing).")] = Path(
        "."
    ),
    force: Annotated[bool, typer.Option(help="Overwrite files that exist.")] = False,
) -> None:
    """Write editable configs, a sample batch and prefect.yaml into a project of your own."""
    from bananaflow.cli.project import write_project

    try:
        written = write_project(directory, force=force)
    except BananaflowError as err:
        raise _fail(err) from None
    for path, status in written:
        console.print(f"{status:9} {path}", highlight=False)
    console.print(
        f"next: cd {directory} && bananaflow generate --batch prompts/nightly.yaml", highlight=False
    )


batch_app = typer.Typer(
    no_args_is_help=True, help="Provider batches of batch delivery: status and cancel."
)
app.add_typer(batch_app, name="batch")


def _batch_call(config: str, call: Any) -> Any:
    """Run ``call(settings)`` against the config's backends (the embedded emulator if local)."""
    try:
        settings = load_settings(config)
        with embedded(settings.emulator, wanted=settings.emulator.embedded):
            return asyncio.run(call(standin.apply(settings)))
    except BananaflowError as err:
        raise _fail(err) from None


@batch_app.command("status")
def batch_status(
    run: Annotated[str | None, typer.Argument(help="Run id; every run when left out.")] = None,
    config: Annotated[str, typer.Option("--config", "-c", help="local|dev|prod or a path.")] = (
        "local"
    ),
) -> None:
    """The provider batches of a run: state, jobs, expected cost, collected or not."""
    from bananaflow.batch.control import status

    records = _batch_call(config, lambda settings: status(settings, run))
    if not records:
        console.print("no provider batches recorded", highlight=False)
        return
    table = Table("batch", "run", "model", "jobs", "expected $", "state", "collected")
    for r in records:
        state = f"{r.state} ({r.note})" if r.note else r.state
        table.add_row(
            r.name,
            r.run_id,
            r.model,
            str(len(r.jobs)),
            f"{r.expected_usd:.3f}",
            state,
            "yes" if r.collected else "no",
        )
    console.print(table)


@batch_app.command("cancel")
def batch_cancel(
    run: Annotated[str, typer.Argument(help="Run id whose pending batches to cancel.")],
    config: Annotated[str, typer.Option("--config", "-c", help="local|dev|prod or a path.")] = (
        "local"
    ),
) -> None:
    """Cancel a run's pending provider batches; their jobs end at the next collection."""
    from bananaflow.batch.control import cancel_run

    names = _batch_call(config, lambda settings: cancel_run(settings, run))
    console.print(f"cancelled {len(names)} batch(es): {', '.join(names) or '-'}", highlight=False)


if __name__ == "__main__":  # pragma: no cover
    app()
