"""Bad input through the real CLI: one readable line, a non-zero exit, no traceback, no spending.

Each case builds its files in a fresh directory from a valid config that points both backends at
the emulator, breaks one thing, and runs ``bananaflow generate …`` through typer's CliRunner (the
same entry point as the installed command, in-process so 40 cases take seconds). The emulator's
generation counter must not move.

Decision recorded here: ``--max-usd 0`` (``budget.max_usd: 0``) is *not* an error. It means
"spend nothing": jobs a previous run finished are still reused (they cost nothing), every other
job is marked ``skipped_budget`` with zero requests, and the exit code is 1 because not every job
was uploaded. That makes a zero budget a safe way to re-publish what is already paid for.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from reliability.harness import (
    Emulator,
    cli_command,
    current_api_url,
    quiet_prefect,
    service_account,
    subprocess_env,
    write_config,
)

# Cases that can only pass once bananaflow/preflight.py checks upload names before the flow
# starts (the diff is in the reliability report); today the flow rejects them before any request,
# but through a Prefect flow-run failure that prints a traceback.
# A job that ends without an image fails its Prefect task, and Prefect logs that with a traceback;
# the CLI should keep the one-line reason and drop the traceback (diff in the report).

Setup = Callable[[Path, dict[str, Any]], tuple[list[str], dict[str, str]]]


@dataclass
class Case:
    name: str
    setup: Setup
    expect: str  # a word the message must contain (case-insensitive)
    exit_code: int = 2
    secret: str = ""  # a string that must NOT appear in the output
    env: dict[str, str] = field(default_factory=dict)
    # Cases that get as far as a Prefect flow run go through a real subprocess: in-process,
    # Prefect's console handler stays bound to the first CliRunner's (closed) stderr.
    subprocess: bool = False


class CaseResult(BaseModel):
    name: str
    command: str
    exit_code: int
    expected_exit: int
    message: str
    lines: int
    traceback: bool
    generation_requests: int
    ok: bool


# ----------------------------------------------------------------------------- helpers


def _cfg(tmp: Path, data: dict[str, Any], name: str = "config.yaml") -> str:
    path = tmp / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def _with(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(data))
    node = out
    parts = dotted.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def _config_case(dotted: str, value: Any, *extra: str) -> Setup:
    def setup(tmp: Path, base: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
        return ["a cat", "--config", _cfg(tmp, _with(base, dotted, value)), *extra], {}

    return setup


def _raw_config(text: str | bytes) -> Setup:
    def setup(tmp: Path, base: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
        path = tmp / "config.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["a cat", "--config", str(path)], {}

    return setup


def _args(*args: str) -> Setup:
    def setup(tmp: Path, base: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
        return [*args, "--config", _cfg(tmp, base)], {}

    return setup


def _only(*args: str) -> Setup:
    """Exactly these arguments (no config of ours appended)."""

    def setup(tmp: Path, base: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
        return list(args), {}

    return setup


def _batch(name: str, content: str | bytes) -> Setup:
    def setup(tmp: Path, base: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
        path = tmp / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return ["--batch", str(path), "--config", _cfg(tmp, base)], {}

    return setup


def _sa_file(content: str | None, *, stage: str = "prod") -> Setup:
    """A prod config whose service-account file is ``content`` (None: a directory)."""

    def setup(tmp: Path, base: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
        path = tmp / "sa.json"
        if content is None:
            path.mkdir()
        else:
            path.write_text(content)
        data = _with(_with(base, "stage", stage), "backends.vertex.credentials_file", str(path))
        return ["a cat", "--config", _cfg(tmp, data)], {}

    return setup


def _env_case(name: str, value: str) -> Setup:
    def setup(tmp: Path, base: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
        return ["a cat", "--config", _cfg(tmp, base)], {name: value}

    return setup


def _no_credential(dotted: str, stage: str, env: dict[str, str]) -> Setup:
    def setup(tmp: Path, base: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
        data = _with(_with(base, "stage", stage), dotted, None)
        return ["a cat", "--config", _cfg(tmp, data)], env

    return setup


# Not a key: a PEM frame around base64("MIIBogus"). Assembled at run time so the repository's
# secret scan (which looks for PEM private-key headers) keeps meaning "a real key leaked".
_PEM_LABEL = "PRIVATE " + "KEY"
_BROKEN_KEY = f"-----BEGIN {_PEM_LABEL}-----\nTUlJQm9ndXM=\n-----END {_PEM_LABEL}-----\n"
_SA_BASE = {
    "type": "service_account",
    "project_id": "emulator-project",
    "private_key_id": "0" * 40,
    "client_email": "x@emulator-project.iam.gserviceaccount.com",
    "token_uri": "http://127.0.0.1:9/token",
}
_URL_SECRET = "hunter2-url-password"

CASES: list[Case] = [
    # --- configs
    Case("config: unknown top-level key", _config_case("colour", "red"), "colour"),
    Case(
        "config: misspelt nested key",
        _config_case("generate.imagesize", "2K"),
        "generate.imagesize",
    ),
    Case(
        "config: wrong type", _config_case("generate.concurrency", "many"), "generate.concurrency"
    ),
    Case(
        "config: wrong type from an env var",
        _env_case("BANANAFLOW_GENERATE__CONCURRENCY", "lots"),
        "BANANAFLOW_GENERATE__CONCURRENCY",
    ),
    Case("config: not YAML", _raw_config("stage: [dev\n"), "YAML"),
    Case("config: a list, not a mapping", _raw_config("- stage\n- dev\n"), "mapping"),
    Case("config: not UTF-8", _raw_config(b"stage: d\xffv\n"), "cannot read"),
    Case("config: file does not exist", _only("a cat", "--config", "/nonexistent/c.yaml"), "exist"),
    Case("config: stage that does not exist", _config_case("stage", "staging"), "stage"),
    Case(
        "config: Provisioned Throughput only, on AI Studio",
        _config_case("backends.vertex.provisioned_throughput", "dedicated"),
        "backends.vertex.provisioned_throughput",
    ),
    Case(
        "config: Provisioned Throughput asked of AI Studio",
        _config_case("backends.aistudio.provisioned_throughput", "shared"),
        "backends.aistudio.provisioned_throughput",
    ),
    # --- credentials
    Case(
        "credentials: no API key (dev)",
        _no_credential(
            "backends.aistudio.api_key", "dev", {"GEMINI_API_KEY": "", "GOOGLE_API_KEY": ""}
        ),
        "backends.aistudio.api_key",
    ),
    Case(
        "credentials: no Vertex project (prod)",
        _no_credential(
            "backends.vertex.project", "prod", {"GOOGLE_CLOUD_PROJECT": "", "GCLOUD_PROJECT": ""}
        ),
        "backends.vertex.project",
    ),
    Case(
        "service account: file missing",
        _config_case("backends.vertex.credentials_file", "/nonexistent/sa.json", "--stage", "prod"),
        "does not exist",
    ),
    Case("service account: unreadable (a directory)", _sa_file(None), "cannot read"),
    Case("service account: not JSON", _sa_file("this is not json {"), "not JSON"),
    Case(
        "service account: JSON but not a service account",
        _sa_file(json.dumps({"type": "authorized_user", "client_id": "x", "refresh_token": "y"})),
        "not a service-account key",
    ),
    Case(
        "service account: fields missing",
        _sa_file(json.dumps({"type": "service_account"})),
        "lacks",
    ),
    Case(
        "service account: broken private key",
        _sa_file(json.dumps({**_SA_BASE, "private_key": _BROKEN_KEY})),
        "unusable private key",
        secret="TUlJQm9ndXM",
    ),
    # --- prompts and batch files
    Case("prompt: empty", _args(""), "prompt"),
    Case("prompt: only whitespace", _args("   \n\t "), "prompt"),
    Case("prompt: over 30,000 characters", _args("x" * 30_001), "30,000"),
    Case("no prompt at all", _args(), "prompt"),
    Case("batch: not UTF-8", _batch("b.yaml", b"- text: caf\xe9\n"), "UTF-8"),
    Case("batch: empty file", _batch("b.yaml", ""), "empty"),
    Case("batch: does not exist", _args("--batch", "/nonexistent/b.yaml"), "exist"),
    Case("batch: unsupported extension", _batch("b.txt", "a cat\n"), "extension"),
    Case("batch: unknown field in a row", _batch("b.yaml", "- text: a cat\n  colr: red\n"), "colr"),
    Case(
        "batch: text and template in one row",
        _batch("b.yaml", "- text: a cat\n  template: a $x\n  variables: {x: dog}\n"),
        "exactly one",
    ),
    Case("batch: row without a prompt", _batch("b.yaml", "- variants: 2\n"), "exactly one"),
    Case(
        "batch: broken JSONL line",
        _batch("b.jsonl", '{"text": "a cat"}\n{"text": "a dog"\n'),
        "line 2",
    ),
    Case(
        "batch: CSV row with a bad aspect ratio",
        _batch("b.csv", "text,aspect_ratios\na cat,1:1\na dog,7:3\n"),
        "aspect",
    ),
    Case("batch: 100 variants", _batch("b.yaml", "- text: a cat\n  variants: 100\n"), "variants"),
    Case(
        "batch: size that does not exist",
        _batch("b.yaml", "- text: a cat\n  image_sizes: [3K]\n"),
        "image_sizes",
    ),
    # --- templates that try to run code or read files
    Case(
        "template: undefined variable",
        _batch("b.yaml", "- template: a $animal on a $thing\n  variables: {animal: cat}\n"),
        "$thing",
    ),
    Case(
        "template: Python call in a placeholder",
        _batch("b.yaml", "- template: \"${__import__('os').system('id')}\"\n"),
        "placeholder",
    ),
    Case(
        "template: shell substitution",
        _batch("b.yaml", '- template: "a cat $(cat /etc/passwd)"\n'),
        "placeholder",
    ),
    Case(
        "template: attribute access",
        _batch("b.yaml", "- template: a ${x.__class__}\n  variables: {x: cat}\n"),
        "placeholder",
    ),
    # --- sizes and ratios (flags)
    Case("flag: size 8K", _args("a cat", "--size", "8K"), "size"),
    Case("flag: aspect ratio 7:3", _args("a cat", "--aspect-ratio", "7:3"), "aspect"),
    Case("flag: format bmp", _args("a cat", "--format", "bmp"), "format"),
    Case("flag: unknown backend", _args("a cat", "--backend", "midjourney"), "backend"),
    Case("flag: negative budget", _args("a cat", "--max-usd", "-1"), "max-usd"),
    # --- storage URLs
    Case("storage: unknown scheme", _args("a cat", "--out", "ftp2://nowhere/x"), "scheme"),
    Case(
        "storage: path under a regular file",
        _args("a cat", "--out", "file:///etc/hostname/out"),
        "cannot write",
    ),
    Case(
        "storage: no permission (/proc, even for root)",
        _args("a cat", "--out", "file:///proc/bananaflow-out"),
        "cannot write",
    ),
    Case("storage: invalid bucket name", _args("a cat", "--out", "gs://Not_A_Bucket/x"), "bucket"),
    Case(
        "storage: credentials in the URL are not echoed",
        _args("a cat", "--out", f"gs://user:{_URL_SECRET}@Bad_Bucket/x"),
        "bucket",
        secret=_URL_SECRET,
    ),
    # --- names that try to escape the prefix
    Case(
        "upload.prefix with ../",
        _config_case("upload.prefix", "../escape"),
        "upload.prefix",
        subprocess=True,
    ),
    Case(
        "name_template with ../",
        _config_case("upload.name_template", "../../{sha}.{ext}"),
        "upload.name_template",
        subprocess=True,
    ),
    Case(
        "name_template reaching for attributes",
        _config_case("upload.name_template", "{sha.__class__}/{sha}.{ext}"),
        "upload.name_template",
        subprocess=True,
    ),
    Case(
        "name_template with an unknown field",
        _config_case("upload.name_template", "{prefix}/{secret}.{ext}"),
        "upload.name_template",
        subprocess=True,
    ),
    # --- numbers that were caught late or never (the ledger issue's probes)
    Case("flag: infinite budget", _args("a cat", "--max-usd", "inf"), "max-usd"),
    Case("flag: NaN budget", _args("a cat", "--max-usd", "nan"), "max-usd"),
    Case(
        "config: negative price",
        _config_case("prices", {"gemini-3-pro-image": {"1K": -0.1, "2K": 0.134, "4K": 0.24}}),
        "prices",
    ),
    Case("config: read timeout 0", _config_case("generate.timeouts.read_s", 0), "read_s"),
    Case("config: a thumbnail of 0 px", _config_case("compress.thumbnails", [0]), "thumbnails"),
    Case("config: infinite budget", _config_case("budget.max_usd", float("inf")), "max_usd"),
    Case("prompt: zero-width characters only", _args("\u200b\u200c\u200d\u2060\ufeff"), "blank"),
    Case(
        "batch: YAML alias bomb (333 bytes)",
        _batch(
            "b.yaml",
            "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
            "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
            "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
            "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n",
        ),
        "aliases",
    ),
    # --- budget 0: decided to be "spend nothing", not an error (see module docstring)
    Case(
        "budget 0 (spend nothing: skipped_budget, exit 1)",
        _args("a cat on a budget", "--max-usd", "0"),
        "max_usd is 0",
        exit_code=1,
        subprocess=True,
    ),
]


def base_config(tmp: Path, emu: Emulator) -> dict[str, Any]:
    path = write_config(
        tmp / "base.yaml",
        emu.url,
        api_key=emu.settings.api_keys[0],
        service_account=service_account(tmp / "base-sa.json", emu),
        project=emu.settings.project,
        storage_url=f"file://{tmp}/out",
    )
    return yaml.safe_load(path.read_text())


def _message(output: str, exit_code: int) -> str:
    lines = [ln.strip() for ln in output.strip().splitlines() if ln.strip()]
    if exit_code == 1:  # a finished run: the per-job reason is in the results table
        for ln in lines:
            if "skipped_budget" in ln or "max_usd" in ln:
                return ln
    return " ".join(lines[:2])


def run_case(case: Case, emu: Emulator, workdir: Path | None = None) -> CaseResult:
    """Run one case through the CLI and judge it."""
    quiet_prefect()
    tmp = Path(tempfile.mkdtemp(prefix="bf-bad-", dir=workdir))
    argv, env = case.setup(tmp, base_config(tmp, emu))
    before = emu.generation_requests()
    if case.subprocess:
        exit_code, output = _run_subprocess(argv, {"COLUMNS": "2000", **case.env, **env}, tmp)
    else:
        exit_code, output = _run_in_process(argv, {"COLUMNS": "2000", **case.env, **env})
    requests = emu.generation_requests() - before
    message = _message(output, exit_code)
    traceback = "Traceback" in output
    one_line = len([ln for ln in output.strip().splitlines() if ln.strip()]) <= 2
    ok = (
        exit_code == case.exit_code
        and case.expect.lower() in output.lower()
        and not traceback
        and (one_line or case.exit_code == 1)
        and requests == 0
        and (not case.secret or case.secret not in output)
    )
    shown = [a if len(a) <= 60 else a[:24] + f"…({len(a)} chars)" for a in argv]
    shown = [_shell_word(a.replace(str(tmp), "$TMP")) for a in shown]
    envs = " ".join(f"{k}={v!r}" for k, v in env.items())
    return CaseResult(
        name=case.name,
        command=(envs + " " if envs else "") + "bananaflow generate " + " ".join(shown),
        exit_code=exit_code,
        expected_exit=case.exit_code,
        message=message.replace(str(tmp), "$TMP")[:300],
        lines=len(output.strip().splitlines()),
        traceback=traceback,
        generation_requests=requests,
        ok=ok,
    )


def _shell_word(arg: str) -> str:
    """Quote only what a shell would split or drop, so ``$TMP`` stays readable."""
    return arg if arg and not any(c.isspace() or c in "'\"" for c in arg) else shlex.quote(arg)


def _run_subprocess(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    proc = subprocess.run(
        cli_command("generate", *argv),
        env=subprocess_env(current_api_url(), **env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc.returncode, proc.stdout + proc.stderr


def _run_in_process(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    from typer.testing import CliRunner

    from bananaflow.cli.app import app

    # The CLI adds a stderr handler per call; in-process calls would pile up handlers bound to
    # the runner's closed streams, so each invocation gets the logger back as it found it.
    ours = logging.getLogger("bananaflow")
    handlers, level = list(ours.handlers), ours.level
    try:
        result = CliRunner().invoke(app, ["generate", *argv], env=env)
    finally:
        ours.handlers[:] = handlers
        ours.setLevel(level)
    output = result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        output += f"\nTraceback: {type(result.exception).__name__}: {result.exception}"
    return result.exit_code, output


def run_bad_inputs(emu: Emulator, cases: list[Case] | None = None) -> list[CaseResult]:
    saved = {k: os.environ.get(k) for k in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    try:
        return [run_case(c, emu) for c in (cases or CASES)]
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
