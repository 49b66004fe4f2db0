"""One YAML dialect for configs and batch files.

YAML 1.1 reads an unquoted ``16:9`` as the base-60 integer 969. Aspect ratios are everywhere
in this project's files, so the loader keeps any colon-separated integer as text.

Aliases are bounded before anything is built. PyYAML shares an aliased node instead of copying
it, so a few hundred bytes of nested aliases ("billion laughs") load quickly into a structure
that *looks* like billions of values, and the first thing that walks it (a validation error
quoting the input, a hash, ``repr``) runs for minutes and takes gigabytes. The composer's node
graph is measured instead: the number of values the document would have with every alias
written out. Files without aliases skip the measurement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from yaml.composer import ComposerError

__all__ = ["ALIAS_EXPANSION_LIMIT", "AliasLimitError", "RatioSafeLoader", "load_yaml"]

# Values a document may gain through aliases, beyond the ones written in it: ample for anchors
# reused across thousands of prompts, far below what makes a walk of the result slow.
ALIAS_EXPANSION_LIMIT = 100_000


class AliasLimitError(ComposerError):
    """Aliases would expand the document past :data:`ALIAS_EXPANSION_LIMIT` (or into itself)."""


@dataclass
class _Expansion:
    written: int = 0  # distinct nodes in the document
    expanded: int = 0  # nodes once every alias is written out
    loop: yaml.Node | None = None  # a node reached from inside itself
    first_large: yaml.Node | None = None  # the first node found to exceed the limit alone


def _measure(root: yaml.Node) -> _Expansion:
    """Iterative and memoised per node: linear in the written document even when its expansion
    is astronomically large (Python's ints do not overflow, so the count stays exact)."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    result = _Expansion()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            size = sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            if size > ALIAS_EXPANSION_LIMIT and result.first_large is None:
                result.first_large = node
            continue
        if key in sizes:
            continue
        on_path.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in on_path:
                result.loop = child
                return result
            if id(child) not in sizes:
                stack.append((child, False))
    result.written, result.expanded = len(sizes), sizes[id(root)]
    return result


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return []


class RatioSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that keeps ``16:9`` a string and refuses alias bombs."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._aliases_seen = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases_seen += 1
        return super().compose_node(parent, index)

    def compose_document(self) -> yaml.Node | None:
        self._aliases_seen = 0
        node = super().compose_document()
        if node is not None and self._aliases_seen:
            self._check_aliases(node)
        return node

    def _check_aliases(self, root: yaml.Node) -> None:
        found = _measure(root)
        if found.loop is not None:
            raise AliasLimitError(
                problem="aliases are limited: an anchor is used inside itself",
                problem_mark=found.loop.start_mark,
            )
        if found.expanded - found.written > ALIAS_EXPANSION_LIMIT:
            where = found.first_large or root
            raise AliasLimitError(
                problem=(
                    f"aliases are limited: {self._aliases_seen} aliases expand this document "
                    f"to {found.expanded:,} values (at most {ALIAS_EXPANSION_LIMIT:,} more than "
                    "written); write the values out or nest fewer aliases"
                ),
                problem_mark=where.start_mark,
            )


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    value = loader.construct_scalar(node)
    if isinstance(value, str) and ":" in value:
        return value
    return yaml.SafeLoader.construct_yaml_int(loader, node)


RatioSafeLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def load_yaml(text: str) -> Any:
    """Parse one YAML document; raises ``yaml.YAMLError`` (:class:`AliasLimitError` for bombs)."""
    return yaml.load(text, Loader=RatioSafeLoader)
