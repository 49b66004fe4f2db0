"""No credential survives in anything built from upstream text: errors, refusals, image records.

A local server plays an upstream that echoes whatever credential the request carried back into
every place a message can come from (finishMessage, a text part, blockReasonMessage, an error
body, the reason phrase, an error inside a 200). Each exception is then searched for it: the
message, ``str``, ``repr``, the formatted traceback and every text attribute.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import traceback
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import google.auth.credentials
import pytest
from PIL import Image

from bananaflow.backends import create_backend
from bananaflow.config import Settings
from bananaflow.errors import BackendError
from bananaflow.generation import ImageRequest

API_KEY = "configured-key-7f3a9c"  # not Google-shaped: only verbatim removal can catch it
TOKEN = "vertex-token-51be02d4"
FOREIGN_KEY = "AIza" + "Sy" + "D" * 33  # Google-shaped, never configured: caught by pattern

pytestmark = pytest.mark.anyio

_CREDENTIAL_HEADER = re.compile(r"(?im)^(?:x-goog-api-key|authorization):(?:\s*Bearer)?\s*(\S+)")

# An answer builder gets the credential the request carried and returns (status line, body).
Answer = Callable[[str], tuple[str, dict[str, Any] | bytes]]


@asynccontextmanager
async def echoing(answer: Answer) -> AsyncIterator[str]:
    """A server that answers every request with ``answer(credential the request carried)``."""

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            length = re.search(r"(?i)content-length:\s*(\d+)", head)
            await reader.readexactly(int(length.group(1)) if length else 0)
            found = _CREDENTIAL_HEADER.search(head)
            status, body = answer(found.group(1) if found else "")
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            writer.write(
                f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(data)}\r\nconnection: close\r\n\r\n".encode("latin-1")
                + data
            )
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def candidate(reason: str, *, message: str | None = None, text: str | None = None) -> dict:
    parts = [{"text": text}] if text else []
    cand: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "finishReason": reason}
    if message:
        cand["finishMessage"] = message
    return {"candidates": [cand]}


def status(code: int, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": "INVALID_ARGUMENT"}}


ECHOES: dict[str, Answer] = {
    "finishMessage": lambda k: ("200 OK", candidate("IMAGE_SAFETY", message=f"blocked {k}")),
    "text part": lambda k: ("200 OK", candidate("STOP", text=f"I will not draw {k}")),
    "other finish": lambda k: ("200 OK", candidate("OTHER", message=f"key={k}")),
    "blockReasonMessage": lambda k: (
        "200 OK",
        {"promptFeedback": {"blockReason": "OTHER", "blockReasonMessage": f"saw {k}"}},
    ),
    "error body": lambda k: ("400 Bad Request", status(400, f"header x-goog-api-key: {k}")),
    "error in a 200": lambda k: ("200 OK", status(500, f"internal: {k} {FOREIGN_KEY}")),
    "reason phrase": lambda k: (f"502 Upstream {k} failed", b"<html>proxy error</html>"),
    "quota id": lambda k: (
        "429 Too Many Requests",
        {
            "error": {
                "code": 429,
                "message": "quota",
                "status": f"RESOURCE_EXHAUSTED {k}",
                "details": [
                    {
                        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                        "violations": [{"quotaId": f"PerMinute-{k}"}],
                    }
                ],
            }
        },
    ),
}


class FixedToken(google.auth.credentials.Credentials):
    """Credentials holding one bearer token that never needs a refresh."""

    def __init__(self) -> None:
        super().__init__()
        self.token = TOKEN

    def refresh(self, request: Any) -> None:
        self.token = TOKEN


def texts_of(err: BaseException) -> list[str]:
    """Everything a log line, a manifest row or a terminal could show of this error."""
    shown = [str(err), repr(err), "".join(traceback.format_exception(err)), *map(str, err.args)]
    shown += [str(v) for v in vars(err).values() if isinstance(v, str)]
    return shown


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize("backend_name", ["aistudio", "vertex"])
@pytest.mark.parametrize("where", list(ECHOES))
async def test_an_echoed_credential_never_reaches_an_error(backend_name: str, where: str) -> None:
    async with echoing(ECHOES[where]) as url:
        settings = Settings.model_validate(
            {
                "backends": {
                    "aistudio": {"base_url": url, "api_key": API_KEY},
                    "vertex": {"base_url": url, "project": "p"},
                }
            }
        )
        backend = create_backend(backend_name, settings, credentials=FixedToken())  # type: ignore[arg-type]
        with pytest.raises(BackendError) as info:
            await backend.generate(ImageRequest(prompt="x"))
        await backend.aclose()
    secret = API_KEY if backend_name == "aistudio" else TOKEN
    for text in texts_of(info.value):
        assert secret not in text and FOREIGN_KEY not in text
    assert "[redacted]" in str(info.value) or "[redacted]" in str(vars(info.value))


async def test_model_chatter_next_to_an_image_is_redacted_too() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (1024, 1024)).save(buf, "PNG")
    data = base64.b64encode(buf.getvalue()).decode()
    image = {"inlineData": {"mimeType": "image/png", "data": data}}

    def answer(key: str) -> tuple[str, dict[str, Any]]:
        parts = [{"text": f"Here you go ({key})"}, image]
        return "200 OK", {"candidates": [{"content": {"parts": parts}, "finishReason": "STOP"}]}

    async with echoing(answer) as url:
        settings = Settings.model_validate(
            {"backends": {"aistudio": {"base_url": url, "api_key": API_KEY}}}
        )
        backend = create_backend("aistudio", settings)
        result = await backend.generate(ImageRequest(prompt="x"))
        await backend.aclose()
    assert result.text == "Here you go ([redacted])"
    assert API_KEY not in str(result.model_dump(exclude={"data"}))


# --------------------------------------------------------------------------- the redactor itself


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        (f"key {FOREIGN_KEY} leaked", FOREIGN_KEY),
        ("token ya29.a0AfH6SMBx-y_z.9 leaked", "ya29.a0AfH6SMBx-y_z.9"),
        ("Authorization: Bearer abc.DEF-123_x== done", "abc.DEF-123_x=="),
        ("GET /v1/models?alt=json&key=abc123def HTTP/1.1", "abc123def"),
        (
            '{"type": "service_account", "private_key": "MIIEvQIBADAN\\nBgkq"}',
            "MIIEvQIBADAN",
        ),
        (
            "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkq\n-----END PRIVATE KEY-----\n",
            "MIIEvQIBADANBgkq",
        ),
        ("cut at a limit: -----BEGIN RSA PRIVATE KEY-----\nMIIEvQIBADANBgkq", "MIIEvQIBADANBgkq"),
    ],
)
def test_credential_shapes_are_removed_without_being_configured(text: str, gone: str) -> None:
    from bananaflow.redact import redact

    assert gone not in redact(text)


def test_configured_secrets_go_verbatim_and_ordinary_text_stays() -> None:
    from bananaflow.redact import MASK, redact, redact_optional

    assert redact("a abc-1234 b abc-12345", ["abc-1234", "abc-12345", None, "ab"]) == (
        f"a {MASK} b {MASK}"
    )
    plain = "The monkey=banana keyboard, the bearer of news, max_token=5; 16:9 at 1K"
    assert redact(plain, ["x"]) == plain
    assert redact_optional(None) is None
