"""Where a config name or a shipped data file resolves: ``./configs`` first, then the package.

A team's checkout (or a project made by ``bananaflow init``) edits its own ``configs/``; a bare
``pip install bananaflow`` in an empty directory still finds ``local``/``dev``/``prod`` and the
demo batch, because they ship inside the package as ``bananaflow.configs``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

SHIPPED_NAMES = (
    "local.yaml",
    "dev.yaml",
    "prod.yaml",
    "demo-batch.yaml",
    "demo-references.yaml",
    "demo-edits.yaml",
    "demo-product.jpg",
)


def shipped_dir() -> Path:
    """The configs installed with the package (a real directory: wheels install unzipped)."""
    return Path(str(files("bananaflow.configs")))


def config_file(name: str, cwd: Path | None = None) -> Path:
    """``name`` (e.g. ``local.yaml``) from ``./configs`` when it exists there, else shipped."""
    local = (cwd or Path.cwd()) / "configs" / name
    return local if local.is_file() else shipped_dir() / name
