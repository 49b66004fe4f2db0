"""One YAML dialect for configs and batch files.

YAML 1.1 reads an unquoted ``16:9`` as the base-60 integer 969. Aspect ratios are everywhere
in this project's files, so the loader keeps any colon-separated integer as text.
"""

from __future__ import annotations

from typing import Any

import yaml


class RatioSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that keeps ``16:9`` a string."""


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    value = loader.construct_scalar(node)
    if isinstance(value, str) and ":" in value:
        return value
    return yaml.SafeLoader.construct_yaml_int(loader, node)


RatioSafeLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=RatioSafeLoader)
