"""Credentials kept in Prefect blocks, read at run time and handed to the core as plain values.

A config may name blocks instead of relying on environment variables: a ``Secret`` block for
the AI Studio key (``backends.aistudio.api_key_block``) and prefect-gcp ``GcpCredentials``
blocks for Vertex (``backends.vertex.credentials_block``) and ``gs://`` storage
(``storage.credentials_block``). Every flow calls :func:`with_blocks` right after loading its
config, before anything is paid for, so a wrong name is one ``ConfigError`` naming the field.

The values go on as ``SecretStr`` settings (``api_key``, ``credentials_info``), unwrapped only
where a request is signed or a filesystem opened. Deliberately not a Prefect task: a task's
inputs and result may be recorded and shown, and these are the secrets themselves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import google.auth.exceptions
from prefect.blocks.system import Secret
from pydantic import SecretStr

from bananaflow.backends.auth import service_account_problem
from bananaflow.config import Settings
from bananaflow.errors import ConfigError

_SECRET_FIX = "create it (the UI: Blocks > + > Secret; docs/team-server.md) or correct the name"
_GCP_FIX = (
    "create it (the UI: Blocks > + > GCP Credentials, after `prefect block register -m "
    "prefect_gcp`; docs/team-server.md) or correct the name"
)


def names_blocks(settings: Settings) -> bool:
    """Whether any credentials of this config live in Prefect blocks."""
    return bool(
        settings.backends.aistudio.api_key_block
        or settings.backends.vertex.credentials_block
        or settings.storage.credentials_block
    )


async def with_blocks(settings: Settings) -> Settings:
    """A copy of ``settings`` with the credentials of every block it names filled in.

    A block wins over the key or file set otherwise: naming it is the explicit choice, while
    ``GEMINI_API_KEY`` may just be lying around in a worker's environment.
    """
    if not names_blocks(settings):
        return settings
    aistudio, vertex = settings.backends.aistudio, settings.backends.vertex
    storage = settings.storage
    if aistudio.api_key_block:
        key = await _secret(aistudio.api_key_block, "backends.aistudio.api_key_block")
        aistudio = aistudio.model_copy(update={"api_key": key})
    if vertex.credentials_block:
        info, project = await _service_account(
            vertex.credentials_block, "backends.vertex.credentials_block"
        )
        update: dict[str, Any] = {"credentials_info": info} if info else {}
        if not vertex.project and project:
            update["project"] = project
        vertex = vertex.model_copy(update=update)
    if storage.credentials_block:
        info, _ = await _service_account(storage.credentials_block, "storage.credentials_block")
        if info:
            storage = storage.model_copy(update={"credentials_info": info})
    patched = settings.model_copy()
    patched.backends = settings.backends.model_copy(update={"aistudio": aistudio, "vertex": vertex})
    patched.storage = storage
    return patched


async def _secret(name: str, field: str) -> SecretStr:
    block = await _load(Secret, name, field, "Secret", _SECRET_FIX)
    value = block.get()
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            field,
            f"Secret block {name!r} does not hold a non-empty text value",
            fix="store the API key itself as the block's value",
        )
    return SecretStr(value.strip())


async def _service_account(name: str, field: str) -> tuple[SecretStr | None, str | None]:
    """The key JSON a ``GcpCredentials`` block holds (its info, or the file it points to on this
    worker; None for a block that means Application Default Credentials), and its project."""
    try:
        from prefect_gcp import GcpCredentials
    except ImportError:
        raise ConfigError(
            field, "prefect-gcp is not installed", fix="pip install 'bananaflow[gcp]'"
        ) from None
    block = await _load(GcpCredentials, name, field, "GcpCredentials", _GCP_FIX)
    if block.service_account_info is not None:
        text = json.dumps(block.service_account_info.get_secret_value())
    elif block.service_account_file is not None:
        path = Path(block.service_account_file).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(
                field,
                f"GcpCredentials block {name!r} points to {path}, unreadable on this worker "
                f"({e.__class__.__name__})",
                fix="put the key's JSON in the block's service_account_info instead",
            ) from None
    else:
        return None, block.project  # the block means Application Default Credentials
    problem = service_account_problem(text)
    if problem:
        raise ConfigError(
            field,
            f"GcpCredentials block {name!r}: the key {problem}",
            fix="paste a service-account JSON key (IAM > Service accounts > Keys)",
        )
    return SecretStr(text), block.project


async def _load(kind: Any, name: str, field: str, label: str, fix: str) -> Any:
    """``kind.aload(name)``, its failures as one line that names ``field``.

    Prefect's own messages are not passed on: a block that fails validation may quote what
    it holds.
    """
    try:
        return await kind.aload(name)
    except google.auth.exceptions.DefaultCredentialsError:
        # prefect-gcp looks for ADC when loading a block that holds no key
        raise ConfigError(
            field,
            f"{label} block {name!r} holds no key and this worker has no Application Default "
            "Credentials",
            fix="fill the block's service_account_info",
        ) from None
    except ValueError as e:
        if "Unable to find block document" in str(e):
            raise ConfigError(
                field, f"no {label} block named {name!r} on the Prefect server", fix=fix
            ) from None
        raise ConfigError(
            field,
            f"{label} block {name!r} cannot be read ({e.__class__.__name__})",
            fix=f"re-create it, or correct {field}",
        ) from None
    except Exception as e:
        raise ConfigError(
            field,
            f"{label} block {name!r} cannot be read ({e.__class__.__name__})",
            fix="check PREFECT_API_URL and that the server is up",
        ) from None
