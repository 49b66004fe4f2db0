"""Credentials from Prefect blocks, on a real Prefect server, and never printed.

A config names a ``Secret`` block for the AI Studio key and a prefect-gcp ``GcpCredentials``
block (a service-account JSON whose ``token_uri`` is the emulator's) for Vertex and for the
``gs://`` store on the GCS emulator; no credential variable is set. The emulator checks the key
and issues the bearer tokens, so a run that renders proves the blocks' values were used. Then a
secret scan (``reliability.secret_scan``'s capture and Prefect read-back) looks for the key, the
private key's lines and the tokens in our logs, Prefect's flow run (its parameters), task runs,
logs and artifacts, every manifest/ledger object, the emulator's URLs and the resolved config's
repr and JSON. A wrong block name is one line naming the config field, before any request.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.emulator import EmulatorHandle
from fixtures.prefect import rest

from bananaflow.config import load_settings
from bananaflow.emulator.credentials import service_account_info
from bananaflow.errors import ConfigError
from bananaflow.manifest import read_manifest
from bananaflow.storage import Store, open_store

# `reliability` lives at the repo root next to `tests/` (not an installed package).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reliability.secret_scan import TOKEN_MARKER, capture_logs, prefect_texts

pytestmark = pytest.mark.usefixtures("prefect_api")

CANARY_KEY = "AIzaCANARY" + secrets.token_hex(12)
CREDENTIAL_VARS = (
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_CLOUD_PROJECT",
    "GCLOUD_PROJECT",
)


@dataclass
class Blocks:
    key: str  # Secret block: the AI Studio key
    gcp: str  # GcpCredentials block: Vertex and the bucket
    info: dict[str, str]  # the service-account key the GcpCredentials block holds


@pytest.fixture
def block_emu(emulator_factory: Any) -> Iterator[EmulatorHandle]:
    """An emulator that accepts only the canary key and marks every token it issues."""
    server = emulator_factory(time_scale=0.0, api_keys=[CANARY_KEY])
    handle = EmulatorHandle.of(server)
    handle.control.set_token_prefix(f"ya29.{TOKEN_MARKER}-")
    yield handle
    handle.control.close()


@pytest.fixture
def blocks(block_emu: EmulatorHandle, monkeypatch: pytest.MonkeyPatch) -> Blocks:
    """The two blocks, saved on the test's Prefect server; no credential in the environment."""
    from prefect.blocks.system import Secret
    from prefect_gcp import GcpCredentials

    for name in CREDENTIAL_VARS:
        monkeypatch.delenv(name, raising=False)
    tag = uuid.uuid4().hex[:8]
    found = Blocks(
        key=f"bf-gemini-key-{tag}",
        gcp=f"bf-gcp-{tag}",
        info=service_account_info(block_emu.url + "/token", block_emu.settings.project),
    )

    async def save() -> None:
        await Secret(value=CANARY_KEY).asave(found.key)
        await GcpCredentials(service_account_info=found.info).asave(found.gcp)

    asyncio.run(save())
    return found


def _config(
    tmp_path: Path, emu: EmulatorHandle, bucket: tuple[str, dict[str, Any]], **blocks: str
) -> str:
    """A dev config that names blocks instead of holding credentials (what a team writes)."""
    url, options = bucket
    cfg = {
        "stage": "dev",
        "backends": {
            "aistudio": {"base_url": emu.url, "api_key_block": blocks["key"]},
            "vertex": {"base_url": emu.url, "credentials_block": blocks["vertex"]},
        },
        "generate": {"retry": {"initial_delay_s": 0.05, "max_delay_s": 0.5, "max_attempts": 3}},
        "compress": {"format": "jpeg", "quality": 80, "thumbnails": []},
        "storage": {
            "url": f"{url}/blocks",
            "options": {k: v for k, v in options.items() if k != "token"},
            "credentials_block": blocks["storage"],
        },
    }
    path = tmp_path / f"blocks-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _generate(config: str, prompt: str, backend: str) -> Any:
    from bananaflow.flows.generate import generate_images

    params = {"config": config, "prompts": [prompt], "backend": backend}
    return asyncio.run(generate_images(params=params, return_state=True))


def _key_lines(info: dict[str, str]) -> list[str]:
    """Pieces of the private key that cannot appear by chance: its full base64 lines."""
    lines = info["private_key"].splitlines()
    return [ln for ln in lines if len(ln) >= 40 and "PRIVATE KEY" not in ln]


def test_blocks_feed_every_credential_and_none_is_printed(
    blocks: Blocks,
    block_emu: EmulatorHandle,
    gcs_bucket: tuple[str, dict[str, Any]],
    tmp_path: Path,
) -> None:
    from bananaflow.tasks.blocks import with_blocks

    config = _config(
        tmp_path, block_emu, gcs_bucket, key=blocks.key, vertex=blocks.gcp, storage=blocks.gcp
    )
    with capture_logs() as logs:
        studio = _generate(config, "a teal teapot from a Secret block", "aistudio")
        tokens_for_bucket = block_emu.control.stats()["tokens_issued_total"]
        vertex = _generate(config, "a brass lamp from a GcpCredentials block", "vertex")
        resolved = asyncio.run(with_blocks(load_settings(config)))

    assert studio.is_completed(), studio.message
    assert vertex.is_completed(), vertex.message
    stats = block_emu.control.stats()
    assert stats["generation_requests"] == {"aistudio": 1, "vertex": 1}
    # The AI Studio run needs no token: the ones issued came from gcsfs, signed with the block's
    # key (nothing else here can sign one); the Vertex run then took its own.
    assert tokens_for_bucket >= 1
    assert stats["tokens_issued_total"] > tokens_for_bucket
    # The block's project filled backends.vertex.project (the config names none).
    assert resolved.backends.vertex.project == block_emu.settings.project

    url, _ = gcs_bucket
    store = open_store(resolved.storage)
    for state in (studio, vertex):
        (row,) = read_manifest(store, _run_id(store, str(state.state_details.flow_run_id)))
        assert row.status == "uploaded" and row.uri.startswith(f"{url}/blocks/")

    texts: dict[str, str] = {"our process logs": "\n".join(logs.lines)}
    for name, state in (("aistudio", studio), ("vertex", vertex)):
        for place, text in prefect_texts(state.state_details.flow_run_id).items():
            texts[f"{place} ({name})"] = text
    texts["objects in the bucket"] = "\n".join(
        store.get(p).decode("utf-8", "replace")
        for p in store.list()
        if p.endswith((".json", ".jsonl"))
    )
    texts["URLs seen by the emulator"] = "\n".join(r["url"] for r in block_emu.control.requests())
    texts["resolved config"] = repr(resolved) + resolved.model_dump_json()
    canaries = {"API key": CANARY_KEY, "bearer token": TOKEN_MARKER}
    canaries.update({f"private key line {i}": s for i, s in enumerate(_key_lines(blocks.info))})
    found = [
        (place, name) for place, text in texts.items() for name, v in canaries.items() if v in text
    ]
    assert found == []
    assert all(len(t) > 0 for t in texts.values()), {k: len(v) for k, v in texts.items()}

    # Positive controls: the secrets are where they belong, where this matcher sees them; and
    # what the UI reads of the blocks (no include_secrets) has them masked.
    assert resolved.backends.aistudio.api_key.get_secret_value() == CANARY_KEY
    info = json.loads(resolved.backends.vertex.credentials_info.get_secret_value())
    assert all(line in info["private_key"] for line in _key_lines(blocks.info))
    for name in (blocks.key, blocks.gcp):
        shown, full = _block_document(name), _block_document(name, include_secrets=True)
        assert not any(v in shown for v in canaries.values()), name
        assert any(v in full for v in canaries.values()), name


def _run_id(store: Store, flow_run_id: str) -> str:
    runs = {p.split("/")[1] for p in store.list("runs") if p.count("/") >= 2}
    (run_id,) = [r for r in runs if r.endswith("-" + flow_run_id[:8])]
    return run_id


def _block_document(name: str, include_secrets: bool = False) -> str:
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value().rstrip("/")
    (doc,) = rest(
        "POST",
        f"{api}/block_documents/filter",
        json={"block_documents": {"name": {"any_": [name]}}, "include_secrets": include_secrets},
    )
    return json.dumps(doc["data"])


def test_a_wrong_block_is_one_line_naming_the_field_and_quoting_nothing(
    blocks: Blocks,
    block_emu: EmulatorHandle,
    gcs_bucket: tuple[str, dict[str, Any]],
    tmp_path: Path,
) -> None:
    from prefect.blocks.system import Secret

    from bananaflow.tasks.blocks import with_blocks

    not_text = f"bf-dict-{uuid.uuid4().hex[:8]}"
    asyncio.run(Secret(value={"nested": CANARY_KEY}).asave(not_text))
    good = {"key": blocks.key, "vertex": blocks.gcp, "storage": blocks.gcp}
    cases = [
        ("key", "no-such-block", "backends.aistudio.api_key_block", "Fix: create it"),
        ("vertex", "no-such-block", "backends.vertex.credentials_block", "Fix: create it"),
        ("storage", "no-such-block", "storage.credentials_block", "Fix: create it"),
        ("key", not_text, "backends.aistudio.api_key_block", "non-empty text"),
    ]
    for which, name, field, words in cases:
        config = _config(tmp_path, block_emu, gcs_bucket, **{**good, which: name})

        with pytest.raises(ConfigError) as err:
            asyncio.run(with_blocks(load_settings(config)))

        text = str(err.value)
        assert err.value.field == field and f"{name!r}" in text and words in text, text
        assert "\n" not in text and CANARY_KEY not in text


def test_a_run_naming_a_missing_block_fails_before_any_request(
    block_emu: EmulatorHandle, gcs_bucket: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    config = _config(
        tmp_path, block_emu, gcs_bucket, key="typo-key", vertex="typo-gcp", storage="typo-gcp"
    )

    state = _generate(config, "a paper crane never rendered", "aistudio")

    assert state.is_failed()
    assert "backends.aistudio.api_key_block" in state.message, state.message
    assert "'typo-key'" in state.message
    assert block_emu.control.stats()["generation_requests"] == {"aistudio": 0, "vertex": 0}
