"""The decision "embedded emulator or real Google", made here, at the entry points only.

A config with ``emulator.embedded: true`` renders on bananaflow's own emulator of both Google
APIs. The entry point starts it (or attaches to one already running), writes a real
service-account file whose ``token_uri`` points at it, and publishes the stand-in for the core
(``bananaflow.standin``) and for child processes such as a process worker's flow runs.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bananaflow import standin
from bananaflow.config import EmulatorSettings


@contextlib.contextmanager
def attached(url: str, settings: EmulatorSettings) -> Iterator[standin.StandIn]:
    """Publish an emulator that is already running (another process, a test's fixture)."""
    # Imported here, not at the top: the emulator package costs ~0.3 s of CPU to import, and a
    # run against real Google (or a flow run on a worker) never needs it.
    from bananaflow.emulator.credentials import write_service_account_file

    with tempfile.TemporaryDirectory(prefix="bf-emu-") as workdir:
        sa_file = write_service_account_file(
            Path(workdir) / "emulator-service-account.json", url + "/token", settings.project
        )
        stand_in = standin.StandIn(
            url=url.rstrip("/"),
            api_key=settings.api_keys[0],
            credentials_file=str(sa_file),
            project=settings.project,
            time_scale=settings.time_scale,
        )
        with standin.published(stand_in):
            yield stand_in


@contextlib.contextmanager
def embedded(settings: EmulatorSettings, *, wanted: bool) -> Iterator[standin.StandIn | None]:
    """Start the emulator for the block when ``wanted`` and none is published yet."""
    already = standin.current()
    if not wanted or already is not None:
        yield already
        return
    from bananaflow.emulator.server import EmulatorServer

    with EmulatorServer(settings) as server, attached(server.url, server.settings) as stand_in:
        yield stand_in
