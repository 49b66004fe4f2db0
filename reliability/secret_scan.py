"""Secrets: a full run with canary credentials, then every place a secret could leak is read back.

Three canaries: an AI Studio key (``AIzaCANARY…``, accepted by the emulator), bearer tokens the
emulator issues with a ``CANARYTOKEN`` marker, and the service-account file's private key. The run
goes through the real flow (both backends, a token expiry, a billing 429, a refusal, GCS storage),
and exception texts are provoked on purpose (a rejected key, a twice-rejected token, a token
endpoint outage, a broken key file, an unreachable host). Then the scan reads: every log record
of this process (ours, httpx, google-auth, Prefect), the flow-run's logs, task runs and artifacts
read back from the Prefect API, every manifest/index object, every object's metadata as the GCS
emulator stores it, every URL and log entry the emulator saw, the config's repr/JSON, and those
exception texts. Any canary found anywhere is a finding; the target is none.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import subprocess
import tempfile
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bananaflow.backends import create_backend, generate_with_retries
from bananaflow.backends.auth import load_credentials
from bananaflow.config import EmulatorSettings, RetrySettings, load_settings
from bananaflow.emulator.server import EmulatorServer
from bananaflow.generation import ImageRequest
from bananaflow.storage import Store
from reliability.flowrun import run_flow
from reliability.harness import (
    Emulator,
    GcsServer,
    cli_command,
    emulator_settings,
    quiet_prefect,
    service_account,
    subprocess_env,
    write_config,
)

TOKEN_MARKER = "CANARYTOKEN"
LOGGERS = ("", "bananaflow", "httpx", "httpcore", "google", "google.auth", "urllib3", "prefect")


class Finding(BaseModel):
    place: str
    canary: str
    count: int


class SecretScanResult(BaseModel):
    jobs: int
    counts: dict[str, int]
    scanned: dict[str, int]  # place -> characters read
    exception_texts: dict[str, str]
    findings: list[Finding]
    tokens_issued: int
    controls_found: dict[str, bool]  # the scan finds each canary where it must be (sensitivity)
    loopback: dict[str, str]


class _Capture(logging.Handler):
    """Every record, formatted with its traceback, from every logger that matters."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record) + " " + json.dumps(record.args, default=str))
        except Exception:
            self.lines.append(str(record.msg))


@contextmanager
def capture_logs() -> Iterator[_Capture]:
    handler = _Capture()
    saved: list[tuple[logging.Logger, int]] = []
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger, level in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)


def _key_fragments(sa_file: Path) -> list[str]:
    """Pieces of the private key that cannot appear by chance: every full base64 line of it."""
    pem = json.loads(sa_file.read_text())["private_key"]
    return [ln for ln in pem.splitlines() if len(ln) >= 40 and "PRIVATE KEY" not in ln]


def _full_text(err: BaseException) -> str:
    return "".join(traceback.format_exception(err)) + repr(err)


async def _provoke(kind: str, settings_path: Path, **force: Any) -> str:
    """Run one request that must fail and return everything the error says about itself."""
    settings = load_settings(settings_path)
    backend = create_backend("vertex" if kind != "aistudio" else "aistudio", settings)
    policy = RetrySettings(initial_delay_s=0.01, max_delay_s=0.02, max_attempts=2, jitter=False)
    try:
        await generate_with_retries(backend, ImageRequest(prompt="a canary"), policy)
    except Exception as err:
        return _full_text(err)
    finally:
        await backend.aclose()
    return "(no error)"


def prefect_texts(flow_run_id: Any) -> dict[str, str]:
    """The flow run, its task runs, logs and artifacts, as the Prefect API returns them."""
    return asyncio.run(_read_prefect(flow_run_id))


async def _read_prefect(flow_run_id: Any) -> dict[str, str]:
    # The async client: the sync one of Prefect 3.8 sends nulls these filter routes reject.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
        TaskRunFilter,
    )
    from prefect.client.schemas.sorting import ArtifactSort, LogSort, TaskRunSort

    async with get_client() as client:
        flow_run = await client.read_flow_run(flow_run_id)
        runs = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        tasks = await client.read_task_runs(
            flow_run_filter=runs, limit=200, sort=TaskRunSort.EXPECTED_START_TIME_ASC
        )
        logs = await client.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
            limit=200,
            offset=0,
            sort=LogSort.TIMESTAMP_ASC,
        )
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(),
            flow_run_filter=runs,
            task_run_filter=TaskRunFilter(),
            limit=200,
            offset=0,
            sort=ArtifactSort.CREATED_DESC,
        )
    return {
        "prefect flow run": flow_run.model_dump_json(),
        "prefect task runs": json.dumps([t.model_dump(mode="json") for t in tasks]),
        "prefect logs": json.dumps([lg.model_dump(mode="json") for lg in logs]),
        "prefect artifacts": json.dumps([a.model_dump(mode="json") for a in artifacts]),
    }


def listening_address(port: int) -> str | None:
    """The local address a LISTEN socket on ``port`` is bound to (Linux /proc/net/tcp*)."""
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            addr, hexport = parts[1].split(":")
            if int(hexport, 16) == port and parts[3] == "0A":  # 0A = LISTEN
                if width == 8:
                    raw = bytes.fromhex(addr)[::-1]
                    return ".".join(str(b) for b in raw)
                return "::1" if addr.endswith("01000000") and addr.startswith("0" * 24) else addr
    return None


def check_loopback(api_url: str) -> dict[str, str]:
    """Where the emulator listens when nobody says otherwise: as a library and as a command."""
    out: dict[str, str] = {"EmulatorSettings().host": EmulatorSettings().host}
    with EmulatorServer(EmulatorSettings()) as server:
        out["EmulatorServer (defaults)"] = listening_address(server.port) or "not found"
    proc = subprocess.Popen(
        cli_command("emulator", "--port", "0", "--config", "local"),
        env=subprocess_env(api_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        first = proc.stdout.readline() if proc.stdout else ""
        m = re.search(r":(\d+)\s*$", first.strip())
        port = int(m.group(1)) if m else 0
        out["bananaflow emulator (defaults)"] = listening_address(port) or f"not found ({first!r})"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return out


def run_secret_scan(jobs: int = 6, *, workdir: Path | None = None) -> SecretScanResult:
    quiet_prefect()
    tmp = Path(workdir or tempfile.mkdtemp(prefix="bf-secrets-"))
    canary_key = "AIzaCANARY" + secrets.token_hex(14)
    settings = emulator_settings(api_keys=[canary_key])
    texts: dict[str, str] = {}
    errors: dict[str, str] = {}
    saved_env = {k: os.environ.get(k) for k in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    with GcsServer(tmp / "gcs") as gcs, Emulator(settings) as emu:
        emu.control.set_token_prefix(f"ya29.{TOKEN_MARKER}-")
        sa = service_account(tmp / "sa.json", emu)
        fragments = _key_fragments(sa)
        storage_url = gcs.new_bucket() + "/secrets"
        config = write_config(
            tmp / "config.yaml",
            emu.url,
            api_key=None,
            service_account=sa,
            project=emu.settings.project,
            storage_url=storage_url,
            storage_options=gcs.options,
        )
        batch = tmp / "batch.yaml"
        batch.write_text(
            json.dumps(
                [
                    {
                        "text": f"secret scan job {i}" + (" forbidden" if i == 1 else ""),
                        "backend": "vertex" if i % 2 == 0 else "aistudio",
                    }
                    for i in range(jobs)
                ]
            )
        )
        os.environ["GEMINI_API_KEY"] = canary_key
        os.environ.pop("GOOGLE_API_KEY", None)
        try:
            emu.control.force("token_expired", count=1, backend="vertex")
            emu.control.force("quota_billing", count=1, backend="aistudio")
            with capture_logs() as logs:
                summary, flow_run_id = run_flow(config, batch_file=batch)
                # Error paths, each with a canary in reach.
                wrong = write_config(
                    tmp / "wrong-key.yaml",
                    emu.url,
                    api_key="AIzaCANARYWRONG" + canary_key[10:],
                    service_account=sa,
                    project=emu.settings.project,
                    storage_url=storage_url,
                    storage_options=gcs.options,
                )
                errors["rejected API key"] = asyncio.run(_provoke("aistudio", wrong))
                emu.control.force("token_expired", count=2, backend="vertex")
                errors["token rejected twice"] = asyncio.run(_provoke("vertex", config))
                emu.control.force("token_error", count=20)
                errors["token endpoint down"] = asyncio.run(_provoke("vertex-token", config))
                unreachable = write_config(
                    tmp / "unreachable.yaml",
                    "http://127.0.0.1:9",
                    api_key=canary_key,
                    service_account=sa,
                    project=emu.settings.project,
                    storage_url=storage_url,
                    storage_options=gcs.options,
                )
                errors["host unreachable"] = asyncio.run(_provoke("aistudio", unreachable))
                broken = tmp / "broken-sa.json"
                info = json.loads(sa.read_text())
                pem = info["private_key"].splitlines()
                info["private_key"] = "\n".join([*pem[:3], "!!broken!!", *pem[3:]])
                broken.write_text(json.dumps(info))
                try:
                    cfg = load_settings(config).backends.vertex
                    load_credentials(cfg.model_copy(update={"credentials_file": broken}))
                    errors["broken key file"] = "(no error)"
                except Exception as err:
                    errors["broken key file"] = _full_text(err)
                loaded = load_settings(config)
                texts["settings repr"] = repr(loaded) + str(loaded)
                texts["settings json"] = loaded.model_dump_json()
        finally:
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        texts["our process logs"] = "\n".join(logs.lines)
        store = Store(storage_url, gcs.options)
        texts["manifests and index"] = "\n".join(
            store.get(p).decode("utf-8", "replace")
            for p in store.list()
            if p.endswith((".json", ".jsonl"))
        )
        texts["object metadata (GCS)"] = json.dumps(gcs.objects(storage_url))
        requests = emu.requests()
        texts["URLs seen by the emulator"] = "\n".join(e["url"] for e in requests)
        texts["emulator request log"] = json.dumps(requests, default=str)
        tokens_issued = int(emu.control.stats()["tokens_issued_total"])
        sa_text = sa.read_text()
        issued_token = emu.server.state.tokens.issue() if emu.server else ""
    texts.update(prefect_texts(flow_run_id))
    texts.update({f"exception: {k}": v for k, v in errors.items()})
    canaries = {"API key": canary_key, "API key (random part)": canary_key[10:]}
    canaries["bearer token"] = TOKEN_MARKER
    canaries.update({f"private key line {i + 1}": f for i, f in enumerate(fragments)})
    findings = [
        Finding(place=place, canary=name, count=text.count(value))
        for place, text in texts.items()
        for name, value in canaries.items()
        if value and value in text
    ]
    # Positive controls: the same matcher must see each canary where it legitimately lives,
    # or "no findings" would prove nothing.
    controls = {
        "API key in the emulator's accepted keys": canary_key in json.dumps(settings.api_keys),
        "private key in the service-account file": all(f in sa_text for f in fragments),
        "bearer marker in a token the emulator issues": TOKEN_MARKER in issued_token,
    }
    return SecretScanResult(
        jobs=jobs,
        counts=dict(summary.counts),
        scanned={k: len(v) for k, v in texts.items()},
        exception_texts={k: _first_line(v) for k, v in errors.items()},
        findings=_merge_key_lines(findings),
        tokens_issued=tokens_issued,
        controls_found=controls,
        loopback={},
    )


def _first_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:240] if lines else ""


def _merge_key_lines(findings: list[Finding]) -> list[Finding]:
    """One finding per place for the private key, however many of its lines leaked."""
    out: dict[tuple[str, str], Finding] = {}
    for f in findings:
        name = "private key" if f.canary.startswith("private key") else f.canary
        key = (f.place, name)
        if key in out:
            out[key].count += f.count
        else:
            out[key] = Finding(place=f.place, canary=name, count=f.count)
    return list(out.values())
