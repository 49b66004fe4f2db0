"""In-process listeners for finished jobs (the CLI's progress bar).

Flow parameters must stay serialisable, so a terminal's progress bar cannot travel as one; it
subscribes here for the duration of a run in the same process instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from bananaflow.records import ManifestRow

Listener = Callable[[ManifestRow], None]
_listeners: list[Listener] = []


@contextlib.contextmanager
def subscribed(listener: Listener) -> Iterator[None]:
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def notify(row: ManifestRow) -> None:
    for listener in list(_listeners):
        listener(row)
