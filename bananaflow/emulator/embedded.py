"""Embedded mode: bananaflow starts its own emulator and points both backends at it.

The caller's ``Settings`` are never mutated; a deep copy with emulator URLs and credentials is
yielded, so nothing emulator-specific can leak into a config that is saved or promoted.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pydantic import SecretStr

from bananaflow.config import Settings
from bananaflow.emulator.credentials import write_service_account_file
from bananaflow.emulator.server import EmulatorServer


@contextlib.contextmanager
def embedded_emulator(
    settings: Settings, workdir: Path | None = None
) -> Iterator[tuple[Settings, EmulatorServer | None]]:
    if not settings.emulator.embedded:
        yield settings, None
        return
    emu = settings.emulator
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bf-emu-")))
        server = stack.enter_context(EmulatorServer(emu))
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
        yield patched, server
