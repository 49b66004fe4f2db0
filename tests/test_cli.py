"""The `bananaflow` command: the README's main command end to end, and bad input → one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bananaflow.cli.app import app

REPO = Path(__file__).resolve().parent.parent


def test_demo_command_on_the_embedded_default_lands_images(tmp_path: Path) -> None:
    """What README command 1 runs, in a fresh directory with a fresh ephemeral Prefect."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    proc = subprocess.run(
        [sys.executable, "-m", "bananaflow.cli.app", "generate", "--demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "output"
    manifests = list(out.glob("runs/*/manifest.jsonl"))
    assert len(manifests) == 1
    rows = manifests[0].read_text().splitlines()
    assert len(rows) >= 6
    assert list(out.glob("runs/*/contact-sheet.jpg"))
    published = [p for p in (out / "images").rglob("*.webp") if "thumbs" not in p.parts]
    assert len(published) == len(rows)
    assert list((out / "images" / "masters").rglob("*.*"))
    assert "emulator" in proc.stderr  # it says it started the emulator itself
    assert "uploaded" in proc.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--batch", "does-not-exist.yaml"], "does-not-exist.yaml"),
        (["a cat", "--size", "8K"], "invalid --size:"),  # the flag the user typed
        (["a cat", "--aspect-ratio", "7:3"], "aspect"),
        (["a cat", "--stage", "staging"], "stage"),
        (["a cat", "--format", "bmp"], "format"),
        (["a cat", "--out", "ftp2://nowhere/x"], "storage.url"),
        (["a cat", "--config", "no-such-config"], "config"),
        (["   "], "prompt"),
        (["\u200b\u200d\ufeff"], "blank"),  # zero-width characters only: nothing to render
        (["a cat", "--max-usd", "inf"], "max-usd"),
        (["a cat", "--max-usd", "-1"], "max-usd"),
        ([], "prompt"),
    ],
)
def test_bad_input_is_one_readable_line(args: list[str], expected: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["generate", *args])
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert expected.lower() in text.lower()
    assert "Traceback" not in text
    assert len(text.splitlines()) <= 2


def test_missing_credentials_fail_before_any_request(emu, tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"stage: dev\nbackends:\n  aistudio:\n    base_url: {emu.url}\n"
        f"storage:\n  url: file://{tmp_path}/o\n"
    )
    env = {"GEMINI_API_KEY": "", "GOOGLE_API_KEY": ""}
    result = CliRunner().invoke(app, ["generate", "a cat", "--config", str(cfg)], env=env)
    assert result.exit_code == 2
    assert "backends.aistudio.api_key" in result.output and "GEMINI_API_KEY" in result.output
    assert emu.control.stats()["generation_requests"] == {"aistudio": 0, "vertex": 0}
