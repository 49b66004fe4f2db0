"""``bananaflow init``: a team's own project, started from the package rather than a clone.

It writes editable copies of what ships inside the package: the three configs, a sample batch
(as ``prompts/nightly.yaml``, the file the nightly deployment renders) and ``prefect.yaml``
whose entrypoints name the installed flows (``bananaflow.flows.generate:generate_images``), so
``prefect deploy --all`` works in that folder with no checkout of bananaflow.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from bananaflow.configfiles import shipped_dir
from bananaflow.errors import InputError

_CONFIGS = ("local.yaml", "dev.yaml", "prod.yaml")


def _sources() -> list[tuple[Path, str]]:
    shipped = shipped_dir()
    out = [(Path("configs") / name, (shipped / name).read_text("utf-8")) for name in _CONFIGS]
    out.append((Path("prompts/nightly.yaml"), (shipped / "demo-batch.yaml").read_text("utf-8")))
    prefect_yaml = files("bananaflow.deployments").joinpath("prefect.yaml").read_text("utf-8")
    out.append((Path("prefect.yaml"), prefect_yaml))
    return out


def write_project(directory: Path, *, force: bool = False) -> list[tuple[Path, str]]:
    """Write the project files; an existing file is kept unless ``force`` (never half-done)."""
    if directory.exists() and not directory.is_dir():
        raise InputError("directory", f"{directory} is a file", fix="name a folder")
    planned = [(directory / rel, text) for rel, text in _sources()]
    results: list[tuple[Path, str]] = []
    for path, text in planned:
        if path.exists() and not force:
            results.append((path, "kept"))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        results.append((path, "written"))
    return results
