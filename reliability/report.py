"""docs/reliability.md: every figure of one run, with the command that reproduces it."""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

from reliability.bad_input import CaseResult
from reliability.crash import CrashResult
from reliability.ledger import LedgerCase
from reliability.matrix import MatrixResult
from reliability.secret_scan import SecretScanResult

COMMAND = ".venv/bin/python -m reliability"


class Results(BaseModel):
    matrix: MatrixResult
    crashes: list[CrashResult]
    ledger: list[LedgerCase] = []
    bad_inputs: list[CaseResult]
    secrets: SecretScanResult
    duration_s: float


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _matrix(m: MatrixResult) -> list[str]:
    paid_twice = "0" if m.jobs_paid_twice == 0 else f"**{m.jobs_paid_twice}**"
    lines = [
        "## 1. Fault matrix",
        "",
        f"{m.jobs} jobs (60 % AI Studio, 40 % Vertex, 1K) through the real `generate_images` "
        f"flow against the emulator at time scale {m.time_scale} (seed {m.seed}), storage on "
        "`gs://` through gcsfs against fake-gcs-server with a filesystem backend. Every image "
        "request draws each fault class at the rates below; the GCS emulator is stopped "
        f"{m.storage_outage.outage_s:.0f} s after {m.storage_outage.after_generation_requests} "
        f"generation requests and restarted (happened: {m.storage_outage.happened}); "
        f"{len(m.identical_existing_jobs)} jobs meet byte-identical objects already stored "
        f"under their names and {len(m.conflicting_existing_jobs)} meet different bytes.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| jobs accounted in the manifest | {m.rows} / {m.jobs} ({m.accounted_pct:.1f} %) |",
        f"| jobs lost (no manifest row) | {m.lost} |",
        f"| final status | {', '.join(f'{k} {v}' for k, v in sorted(m.counts.items()))} |",
        f"| failed or refused without a reason | {m.failed_without_reason} |",
        "| generation requests | "
        + ", ".join(f"{k} {v}" for k, v in sorted(m.generation_requests.items()))
        + f" (total {sum(m.generation_requests.values())}) |",
        f"| generation requests per uploaded job | {m.requests_per_uploaded_job:.3f} |",
        f"| jobs with more than one usable (billable) image answer | {paid_twice} "
        f"(max per job: {m.usable_answers_max_per_job}) |",
        f"| objects in the bucket | {m.objects} |",
        f"| jobs with more than one published derivative | {m.jobs_with_duplicate_derivatives} |",
        f"| jobs with more than one stored master | {m.jobs_with_duplicate_masters} |",
        f"| uploaded rows whose object is missing | {m.uploaded_rows_without_object} |",
        f"| jobs failed on authentication | {m.auth_failures} |",
        f"| jobs a transient fault ended with attempts left | {m.given_up_early} |",
        f"| wall time (3 flow runs + setup) | {m.duration_s:.0f} s |",
        "",
        "How each injected fault class ended, per job it hit (a job hit by two classes counts "
        "in both rows). The join is the emulator's request log (`fault` per request) with the "
        "manifest rows, by prompt.",
        "",
        "| fault class | rate | injected | jobs hit | → uploaded (retried / absorbed) | "
        "→ failed, with reason | → refused | lost |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rates = {**m.image_fault_rates, **m.token_fault_rates}
    for o in m.outcomes:
        failed = ", ".join(f"{k}: {v}" for k, v in o.failed.items()) or "0"
        hit = str(o.jobs_hit) if o.fault not in m.token_faults else "n/a (before the body)"
        lines.append(
            f"| `{o.fault}` | {rates.get(o.fault, 0):g} | {o.injected} | {hit} | {o.uploaded} | "
            f"{_cell(failed)} | {o.refused} | {o.lost} |"
        )
    lines += [
        "",
        "Token faults (`token_expired`: a 401 on a token older than a scaled minute; "
        "`token_error`: a 500 from `/token`, which google-auth retries itself before "
        "bananaflow's policy does) happen before the request body is read, so they cannot be "
        f"joined to a job; their effect is the auth-failure count above ({m.auth_failures}).",
        "",
        "Objects already present under the same name (create-only writes):",
        "",
        "| job | existing object | result |",
        "|---|---|---|",
    ]
    for job, status in m.identical_existing_jobs.items():
        lines.append(f"| {job} | identical bytes | {_cell(status)} (counts as success) |")
    for job, err in m.conflicting_existing_jobs.items():
        lines.append(f"| {job} | different bytes | {_cell(err[:300])} |")
    r = m.resume
    lines += [
        "",
        "**Next run** of the same batch on a fault-free emulator: "
        f"{r.generation_requests} generation requests, of which "
        f"**{r.requests_for_jobs_finished_before}** for jobs the matrix run had finished "
        f"(uploaded, or master in the index); final status "
        f"{', '.join(f'{k} {v}' for k, v in sorted(r.counts.items()))}; "
        f"{r.accounted} / {m.jobs} jobs accounted. The jobs still failing are the ones whose "
        "name holds different bytes: that needs a person, and the error says so.",
        "",
    ]
    return lines


def _crashes(results: list[CrashResult]) -> list[str]:
    lines = [
        "## 2. Crash and resume",
        "",
        "The real CLI in a subprocess (own process group), an emulator in the measuring process "
        "on loopback. *Finished before* = a row `uploaded` in the first run's manifest, or the "
        "job's master in the completion index. The second run is the same command, undisturbed.",
        "",
        "| scenario | jobs | disruption | 1st exit | 1st run: uploaded / rows | 1st run: not "
        "uploaded (reason) | finished before | 2nd exit | 2nd run: status | 2nd run: "
        "generation requests | … of which for finished jobs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in results:
        reasons = "; ".join(f"{n}× {k}" for k, n in c.first_failed_reasons.items()) or "–"
        status = ", ".join(f"{k} {v}" for k, v in sorted(c.second_counts.items()))
        lines.append(
            f"| {c.scenario} | {c.jobs} | {_cell(c.disruption)} | {c.first_exit} | "
            f"{c.first_uploaded} / {c.first_rows} | {_cell(reasons)} | {c.finished_before} | "
            f"{c.second_exit} | {status} | {c.second_generation_requests} | "
            f"**{c.second_requests_for_finished}** |"
        )
    lines += [
        "",
        "Command of each run: `bananaflow generate --batch <tmp>/batch.yaml --config "
        "<tmp>/config.yaml` (exit −9 = killed by SIGKILL). A job killed while its request was in "
        "flight is paid again: that is the one request a crash can cost.",
        "",
    ]
    return lines


def _ledger(cases: list[LedgerCase]) -> list[str]:
    lines = [
        "## 3. The job ledger under ordinary accidents",
        "",
        "Claims before paying, durable masters, a local spool and verified reuse "
        "(`bananaflow/ledger.py`). *Billable* counts the emulator's generation answers over "
        "every run of a case; each case must stay at or under its job count.",
        "",
        "| case | jobs | exit codes | billable answers | paid once | last manifest accounts "
        "for | `uploaded` rows pointing at nothing | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        lines.append(
            f"| {c.name} | {c.jobs} | {', '.join(map(str, c.runs))} | {c.billable} | "
            f"{'yes' if c.paid_once else '**no**'} | {c.accounted} | {c.missing_objects} | "
            f"{_cell(c.note)} |"
        )
    lines += [
        "",
        "Hard bounds (measured by `tests/test_bounds.py`): a body trickled one byte at a time "
        "is cut at the retry deadline (`read_s: 2, deadline_s: 5`: 5.0 s); a 1 MiB gzip body "
        "that inflates to 1 GiB is refused at `generate.max_response_mb` (peak RSS +140 to "
        "+200 MB, was +2,077 MB); a 381-byte YAML alias bomb is refused in 5 ms (was 8.4 s CPU "
        "and 707 MB).",
        "",
    ]
    return lines


def _bad_inputs(results: list[CaseResult]) -> list[str]:
    ok = sum(1 for r in results if r.ok)
    lines = [
        "## 4. Bad input",
        "",
        f"{len(results)} cases, {ok} pass. Each runs `bananaflow generate …` (typer's CliRunner, "
        "or a subprocess for the cases that reach a Prefect flow run) with a config pointing at "
        "the emulator. A case passes when the exit code is the expected one, the message names "
        "the problem in one line, no traceback is printed, and the emulator counted **0** "
        "generation requests. `$TMP` is the case's temp directory.",
        "",
        "Decision: **`--max-usd 0` is not an error**. It means *spend nothing*: jobs a previous "
        "run finished are reused (they cost nothing), every other job is `skipped_budget` with "
        "0 requests, and the exit code is 1 because not every job was uploaded.",
        "",
        "| # | case | command | exit | message | gen. requests | pass |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(results, 1):
        verdict = "yes" if r.ok else "**no** – see message"
        lines.append(
            f"| {i} | {_cell(r.name)} | `{_cell(r.command)}` | {r.exit_code} | "
            f"{_cell(r.message)} | {r.generation_requests} | {verdict} |"
        )
    lines.append("")
    return lines


def _secrets(s: SecretScanResult) -> list[str]:
    lines = [
        "## 5. Secrets",
        "",
        f"A run of {s.jobs} jobs on both backends (status: "
        f"{', '.join(f'{k} {v}' for k, v in sorted(s.counts.items()))}) with a canary API key "
        "(`AIzaCANARY…`, given through `GEMINI_API_KEY` and accepted by the emulator), bearer "
        f"tokens carrying a `CANARYTOKEN` marker ({s.tokens_issued} issued, one expired on "
        "purpose) and the service-account file's private key, plus provoked failures. "
        f"Findings: **{len(s.findings)}**.",
        "",
        "| place read back | characters scanned |",
        "|---|---|",
    ]
    lines += [f"| {_cell(k)} | {v:,} |" for k, v in s.scanned.items()]
    if s.findings:
        lines += ["", "| place | canary | occurrences |", "|---|---|---|"]
        lines += [f"| {f.place} | {f.canary} | {f.count} |" for f in s.findings]
    lines += [
        "",
        "Positive controls (the same matcher finds each canary where it must be): "
        + ", ".join(f"{k}: {'found' if v else '**missed**'}" for k, v in s.controls_found.items())
        + ".",
        "",
        "What the provoked errors say (last line of each traceback):",
        "",
        "| failure | error text |",
        "|---|---|",
    ]
    lines += [f"| {k} | {_cell(v)} |" for k, v in s.exception_texts.items()]
    lines += [
        "",
        "Where the emulator listens when nobody says otherwise (from `/proc/net/tcp`):",
        "",
        "| how it was started | bound address |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in s.loopback.items()]
    lines.append("")
    return lines


NOTES = """## 6. What these runs changed, and what they do not cover

Fixed in the product because a run here failed first:

- **Token endpoint outage** (a 5xx from `/token` after google-auth's own retries, or the endpoint
  unreachable) was an `AuthError`: not retried, not a fallback reason, the job failed at once.
  It is now `Unavailable` (retryable); a token the server *refuses* (400 `invalid_grant`) is
  still an `AuthError`. `bananaflow/backends/auth.py`.
- **Storage blips** (gs:// calls failing with connection errors after gcsfs's own ~33 s of
  retries) now get more tries within 90 s per call (`bananaflow/storage/retry.py`,
  `retry_transient`); a probe in `check_writable` still fails fast.
- **A manifest row that cannot be written** no longer raises out of the flow's gather (which
  failed the whole run with every paid image already stored): the row is kept and written before
  the next one and at `close()`, which fails loudly if storage is still gone
  (`bananaflow/manifest.py`). A broken or unreadable *done* entry is treated as absent (the job
  goes on to the strict master lookup, so nothing is paid twice); writing it is best effort.
- **Names that escape the prefix** (`upload.prefix: ../x`, `name_template: ../../{sha}.{ext}`,
  `{sha.__class__}`) were first built at upload time, after the image was paid for. They are now
  checked when the run's context opens (`chain.check_upload_names`), before any request.
- **Masters carry the same object metadata as derivatives** (job id, run id, backend, model,
  prompt hash), so an audit can count masters per job; the master's recorded backend is now the
  one that rendered it.
- **Emulator**: `BackendProfile.fault_rates` draws every forced-fault class at a seeded rate;
  random token expiry spares tokens younger than a (scaled) minute, as real tokens do;
  `POST /_emulator/token-prefix` lets a scan mark issued tokens with a canary.

Added with the job ledger (`bananaflow/ledger.py`, section 3):

- A job is **claimed** (create-only: `file://` hard link, `gs://` `ifGenerationMatch=0`) before
  its request is sent; a live claim of another run is waited for, never paid again; a claim
  whose process died on this host is taken over at once, one elsewhere when it expires.
- The paid master is **durable in the store** before any later step; if the store refuses it
  (disk full, bucket down past its retries) it goes to a **local spool** and the next run saves
  it without paying. This closes the gap the previous version of this page listed.
- A finished image is reused only after **checking its objects** in the store; paths are
  recorded relative to the store root, so a moved store resolves and a deleted image is
  republished from its master.
- The first **Ctrl-C** drains (no new requests; answers in flight land and are saved); a full
  disk ends in a summary, not a traceback; an upload conflict or a full store is not retried.

Not covered, on purpose or for lack of time:

- A crash (SIGKILL) while a request is in flight costs that request again on the next run: the
  answer never reached a process that could save it.
- Claims use wall clocks: machines whose clocks disagree by more than a claim's lifetime
  (twice `generate.retry.deadline_s` plus 2 minutes) could take over a live claim.
"""


def render(results: Results, sizes: dict[str, int]) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    head = [
        "# Reliability and security",
        "",
        "Under faults, crashes and bad input bananaflow loses nothing, pays for nothing twice "
        "and leaks nothing. This page is written by one command, which runs everything at full "
        "size and takes about "
        f"{results.duration_s / 60:.0f} minutes on a 2-core machine:",
        "",
        "```bash",
        COMMAND,
        "```",
        "",
        f"Last run: {when}, Python {platform.python_version()}, "
        f"{results.matrix.jobs} matrix jobs, "
        + ", ".join(f"{k} {v}" for k, v in sizes.items())
        + ". CI runs the same code at a small size (`tests/test_faults.py`, "
        "`tests/test_crash_resume.py`, `tests/test_bad_input.py`, `tests/test_secrets.py`).",
        "",
    ]
    body = (
        _matrix(results.matrix)
        + _crashes(results.crashes)
        + _ledger(results.ledger)
        + _bad_inputs(results.bad_inputs)
        + _secrets(results.secrets)
        + [NOTES]
    )
    return "\n".join(head + body)


def write(results: Results, sizes: dict[str, int], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(results, sizes))
    return path
