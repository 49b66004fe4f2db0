"""In-process listeners for finished jobs and the run's summary (the CLI's terminal).

Flow parameters must stay serialisable, so a terminal's progress bar cannot travel as one; it
subscribes here for the duration of a run in the same process instead. The summary comes the
same way, so the terminal can print it even when the Prefect API vanished before the flow run
could report its final state.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from bananaflow.records import ManifestRow, RunSummary

Listener = Callable[[ManifestRow], None]
SummaryListener = Callable[[RunSummary], None]
_listeners: list[Listener] = []
_summary_listeners: list[SummaryListener] = []


@contextlib.contextmanager
def subscribed(listener: Listener, on_summary: SummaryListener | None = None) -> Iterator[None]:
    _listeners.append(listener)
    if on_summary is not None:
        _summary_listeners.append(on_summary)
    try:
        yield
    finally:
        _listeners.remove(listener)
        if on_summary is not None:
            _summary_listeners.remove(on_summary)


def notify(row: ManifestRow) -> None:
    for listener in list(_listeners):
        listener(row)


def summarised(summary: RunSummary) -> None:
    for listener in list(_summary_listeners):
        listener(summary)
