"""The wheel ships every package of the source tree (a subpackage left out of pyproject's list
installs a bananaflow that fails on its first import outside the checkout)."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_every_source_package_is_in_the_wheel_list() -> None:
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {
        ".".join((name, *init.parent.relative_to(REPO / folder).parts))
        for name, folder in tool["package-dir"].items()
        for init in (REPO / folder).rglob("__init__.py")
    }
    assert len(found) >= 14
    assert found - set(tool["packages"]) == set(), "add these to [tool.setuptools] packages"
