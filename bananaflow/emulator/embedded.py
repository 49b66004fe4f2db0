"""Embedded mode: bananaflow starts its own emulator and points both backends at it.

The caller's ``Settings`` are never mutated; a deep copy with emulator URLs and credentials is
yielded, so nothing emulator-specific can leak into a config that is saved or promoted.

``attach_emulator`` makes embedded mode use an emulator that is already running (for instance
in another process) instead of starting one per run. Benchmarks need that: every run then meets
the same emulator (one warm image cache, one request log to count from), and the emulator's CPU
stays out of the process being measured. The attached emulator's settings replace the config's
``emulator`` section, so the per-process limiter scales its window by the time scale the
emulator really runs at.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from bananaflow.config import EmulatorSettings, Settings
from bananaflow.emulator.credentials import write_service_account_file
from bananaflow.emulator.server import EmulatorServer


@dataclass(frozen=True)
class AttachedEmulator:
    """An emulator this process did not start: where it listens and how it was configured."""

    url: str
    settings: EmulatorSettings


_attached: list[AttachedEmulator] = []


@contextlib.contextmanager
def attach_emulator(url: str, settings: EmulatorSettings) -> Iterator[AttachedEmulator]:
    """Within the block, embedded mode talks to the emulator at ``url`` (started elsewhere)."""
    attached = AttachedEmulator(url.rstrip("/"), settings.model_copy(update={"embedded": True}))
    _attached.append(attached)
    try:
        yield attached
    finally:
        _attached.remove(attached)


@contextlib.contextmanager
def embedded_emulator(
    settings: Settings, workdir: Path | None = None
) -> Iterator[tuple[Settings, EmulatorServer | AttachedEmulator | None]]:
    if not settings.emulator.embedded:
        yield settings, None
        return
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bf-emu-")))
        server: EmulatorServer | AttachedEmulator
        if _attached:
            server = _attached[-1]
        else:
            server = stack.enter_context(EmulatorServer(settings.emulator))
        emu = server.settings
        sa_file = write_service_account_file(
            Path(workdir) / "emulator-service-account.json", server.url + "/token", emu.project
        )
        backends = settings.backends
        aistudio = backends.aistudio.model_copy(
            update={"base_url": server.url, "api_key": SecretStr(emu.api_keys[0])}
        )
        vertex = backends.vertex.model_copy(
            update={"base_url": server.url, "credentials_file": sa_file, "project": emu.project}
        )
        patched = settings.model_copy(deep=True)
        patched.backends = backends.model_copy(update={"aistudio": aistudio, "vertex": vertex})
        if isinstance(server, AttachedEmulator):
            patched.emulator = emu.model_copy(deep=True)
        yield patched, server
