"""What a provider batch API offers batch delivery, and one per backend for a run.

AI Studio (``gemini``) and Vertex (``vertex``) differ in wire, storage (Files API vs
``gs://``) and state names; behind this interface the submit/collect logic is one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from bananaflow.batch.gemini import GeminiBatches
from bananaflow.batch.states import BatchState
from bananaflow.batch.vertex import VertexBatches
from bananaflow.config import Settings
from bananaflow.generation import BackendName


class BatchProvider(Protocol):
    async def submit(
        self, model: str, lines: list[dict[str, Any]], display_name: str, *, inline: bool
    ) -> tuple[str, str]:
        """Send request lines as one batch: (batch name, where its input lives)."""
        ...

    async def status(self, name: str) -> tuple[BatchState, dict[str, Any]]:
        """The batch's state and its raw resource (which carries its ``error``)."""
        ...

    async def answers(self, raw: dict[str, Any], folder: Path) -> list[Path]:
        """The answer JSONL files of an ended batch, copied into ``folder`` in chunks."""
        ...

    async def cancel(self, name: str) -> None: ...

    async def aclose(self) -> None: ...


Providers = Callable[[BackendName], BatchProvider]


class ProviderPool:
    """Opens each backend's provider on first use; ``aclose`` closes what it opened."""

    def __init__(self, settings: Settings, given: dict[BackendName, BatchProvider] | None = None):
        self._settings = settings
        self._given = dict(given or {})
        self._opened: dict[BackendName, BatchProvider] = {}

    def __call__(self, backend: BackendName) -> BatchProvider:
        if backend in self._given:
            return self._given[backend]
        if backend not in self._opened:
            opener = GeminiBatches.open if backend == "aistudio" else VertexBatches.open
            self._opened[backend] = opener(self._settings)
        return self._opened[backend]

    async def aclose(self) -> None:
        for provider in self._opened.values():
            await provider.aclose()
        self._opened.clear()
