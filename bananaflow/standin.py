"""The stand-in for Google that an entry point started for this process (and its children).

Entry points (the CLI, ``bananaflow worker``, test fixtures) decide "emulator or real Google"
and start the emulator; they publish where it listens in one environment variable. The core
only reads it, and only for a config that asks for it (``emulator.embedded: true``): a dev or
prod config in the same worker still talks to Google. Child processes (a process worker's flow
runs) inherit the variable, so a run started from the UI with ``config: local`` meets the
worker's emulator.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping

from pydantic import BaseModel, SecretStr

from bananaflow.config import Settings
from bananaflow.errors import ConfigError

ENV_VAR = "BANANAFLOW_STAND_IN"


class StandIn(BaseModel):
    """Where the emulator listens and the credentials it accepts (none of them real)."""

    url: str
    api_key: str
    credentials_file: str
    project: str
    time_scale: float


@contextlib.contextmanager
def published(stand_in: StandIn) -> Iterator[StandIn]:
    """Make ``stand_in`` the one this process and its children use, for the block."""
    before = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = stand_in.model_dump_json()
    try:
        yield stand_in
    finally:
        if before is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = before


def current(environ: Mapping[str, str] | None = None) -> StandIn | None:
    raw = (os.environ if environ is None else environ).get(ENV_VAR)
    return StandIn.model_validate_json(raw) if raw else None


def apply(settings: Settings, environ: Mapping[str, str] | None = None) -> Settings:
    """A copy of ``settings`` pointed at the published stand-in when the config embeds one.

    The caller's settings are never mutated, so nothing emulator-specific leaks into a config
    that is saved or promoted.
    """
    if not settings.emulator.embedded:
        return settings
    stand_in = current(environ)
    if stand_in is None:
        raise ConfigError(
            "emulator.embedded",
            "this config renders on the embedded emulator, but none was started for this process",
            fix="run it with `bananaflow generate`, start workers with `bananaflow worker`, or "
            "use a config with emulator.embedded: false",
        )
    backends = settings.backends
    aistudio = backends.aistudio.model_copy(
        update={"base_url": stand_in.url, "api_key": SecretStr(stand_in.api_key)}
    )
    vertex = backends.vertex.model_copy(
        update={
            "base_url": stand_in.url,
            "credentials_file": stand_in.credentials_file,
            "project": stand_in.project,
        }
    )
    patched = settings.model_copy(deep=True)
    patched.backends = backends.model_copy(update={"aistudio": aistudio, "vertex": vertex})
    patched.emulator = settings.emulator.model_copy(update={"time_scale": stand_in.time_scale})
    return patched
