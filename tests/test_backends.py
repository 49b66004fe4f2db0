"""Backend clients against the emulator: real HTTP on 127.0.0.1 (or in-process ASGI), no mocks.

Each test asserts something that would be false if the client were wrong: what the emulator saw
(URLs, request counts, tokens issued), what came back (sizes read from bytes, refusal reasons),
and what the retry policy waited (a recording ``sleep``; never wall-clock time).
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import google.auth.credentials
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from PIL import Image

from bananaflow.backends import create_backend, generate_with_retries, wire
from bananaflow.backends.base import ImageBackend
from bananaflow.backends.status import error_from_response, parse_duration, parse_retry_after
from bananaflow.config import RetrySettings, Settings
from bananaflow.emulator.app import create_app
from bananaflow.emulator.messages import MSG_IMAGE_SAFETY
from bananaflow.emulator.responses import BLOCK_MESSAGE, CHATTER, NO_IMAGE_TEXT, THOUGHT
from bananaflow.emulator.textgen import rewrite
from bananaflow.errors import (
    AuthError,
    BackendError,
    BadRequest,
    ConfigError,
    InputError,
    MalformedResponse,
    NotFound,
    QuotaExceeded,
    Refused,
    RequestTimedOut,
    Unavailable,
    Unsupported,
)
from bananaflow.generation import ImageRequest, ReferenceImage, pixel_size

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --------------------------------------------------------------------------- helpers


def make_settings(
    url: str,
    *,
    api_key: str | None = None,
    sa_file: Path | None = None,
    project: str | None = None,
    read_s: float | None = None,
) -> Settings:
    vertex: dict[str, Any] = {"base_url": url, "project": project}
    if sa_file is not None:
        vertex["credentials_file"] = str(sa_file)
    data: dict[str, Any] = {
        "backends": {"aistudio": {"base_url": url, "api_key": api_key}, "vertex": vertex},
    }
    if read_s is not None:
        data["generate"] = {"timeouts": {"read_s": {"1K": read_s, "2K": read_s, "4K": read_s}}}
    return Settings.model_validate(data)


def policy(**kw: Any) -> RetrySettings:
    base: dict[str, Any] = {"initial_delay_s": 0.01, "max_attempts": 4, "jitter": False}
    base.update(kw)
    return RetrySettings(**base)


class Recorder:
    """A ``sleep`` that records the waits the policy asks for and returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class Retries:
    """An ``on_retry`` that keeps the errors that were retried."""

    def __init__(self) -> None:
        self.errors: list[BackendError] = []

    def __call__(self, err: BackendError, attempt: int, wait: float) -> None:
        self.errors.append(err)


@pytest.fixture
def settings_for(emu: Any, api_key: str, service_account_file: Path) -> Callable[..., Settings]:
    def build(**kw: Any) -> Settings:
        kw.setdefault("api_key", api_key)
        kw.setdefault("sa_file", service_account_file)
        kw.setdefault("project", emu.settings.project)
        return make_settings(emu.url, **kw)

    return build


@asynccontextmanager
async def opened(name: str, settings: Settings, **kw: Any) -> AsyncIterator[ImageBackend]:
    backend = create_backend(name, settings, **kw)  # type: ignore[arg-type]
    try:
        yield backend
    finally:
        await backend.aclose()


def api_calls(emu: Any) -> list[dict[str, Any]]:
    """Logged calls to the Google API routes (not the token endpoint)."""
    return [r for r in emu.control.requests() if r["backend"] in ("aistudio", "vertex")]


def png_bytes(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 40)).save(buf, "PNG")
    return buf.getvalue()


BACKENDS = ["aistudio", "vertex"]


# --------------------------------------------------------------------------- happy paths


async def test_aistudio_sends_the_key_in_the_header_never_in_the_url(
    emu: Any, settings_for: Callable[..., Settings], api_key: str
) -> None:
    async with opened("aistudio", settings_for()) as backend:
        image = await backend.generate(ImageRequest(prompt="a red apple", aspect_ratio="16:9"))
    assert (image.width, image.height) == pixel_size("16:9", "1K")
    assert image.mime_type == "image/jpeg"  # AI Studio profile serves JPEG, read from bytes
    assert image.backend == "aistudio" and image.model == "gemini-3-pro-image"
    assert image.usage.output_tokens == 1120 and image.usage.total_tokens > 1120
    assert image.response_id and image.model_version == "gemini-3-pro-image"
    assert image.thought_signature and image.text == CHATTER
    (call,) = api_calls(emu)
    assert call["url"].endswith("/v1beta/models/gemini-3-pro-image:generateContent")
    assert api_key not in call["url"] and "key=" not in call["url"]
    assert call["auth"] == "api_key" and call["key_in_url"] is False and call["status"] == 200


async def test_vertex_gets_a_bearer_from_the_service_account_file_and_reuses_it(
    emu: Any, settings_for: Callable[..., Settings]
) -> None:
    async with opened("vertex", settings_for()) as backend:
        first = await backend.generate(ImageRequest(prompt="a lighthouse", image_size="2K"))
        await backend.generate(ImageRequest(prompt="a lighthouse at dusk"))
    stats = emu.control.stats()
    assert stats["tokens_issued"] == 1  # google-auth refreshed once, the token was reused
    assert stats["generation_requests"]["vertex"] == 2
    assert (first.width, first.height) == pixel_size("1:1", "2K")
    assert first.mime_type == "image/png" and first.backend == "vertex"
    calls = api_calls(emu)
    assert all(c["auth"] == "bearer" and c["status"] == 200 for c in calls)
    assert (
        f"/v1/projects/{emu.settings.project}/locations/global/publishers/google/models/"
        in (calls[0]["url"])
    )


async def test_vertex_only_output_options_reach_vertex(
    emu: Any, settings_for: Callable[..., Settings]
) -> None:
    request = ImageRequest(
        prompt="a bowl of fruit",
        output_mime_type="image/jpeg",
        output_quality=80,
        person_generation="ALLOW_ADULT",
    )
    async with opened("vertex", settings_for()) as backend:
        image = await backend.generate(request)
    assert image.mime_type == "image/jpeg"  # the Vertex default would be PNG


async def test_every_turn_carries_a_role_on_vertex(
    emu: Any, settings_for: Callable[..., Settings]
) -> None:
    bodies: list[dict[str, Any]] = []

    async def capture(request: httpx.Request) -> None:
        bodies.append(json.loads(request.content))

    request = ImageRequest(
        prompt="make it blue",
        reference_images=[ReferenceImage(mime_type="image/png", data=png_bytes(64, 64))],
    )
    async with (
        httpx.AsyncClient(event_hooks={"request": [capture]}) as client,
        opened("vertex", settings_for(), client=client) as backend,
    ):
        await backend.generate(request)
        await backend.rewrite_prompt("a cat")
    assert len(bodies) == 2
    for body in bodies:
        assert body["contents"] and all(t["role"] in ("user", "model") for t in body["contents"])
        assert wire.check_roles(body) == []
    assert bodies[1]["systemInstruction"]["role"] == "user"
    parts = bodies[0]["contents"][0]["parts"]
    assert "inlineData" in parts[0] and parts[-1] == {"text": "make it blue"}
    assert all(c["status"] == 200 for c in api_calls(emu))


async def test_parser_skips_thought_parts_and_finds_the_image_after_text(
    emu: Any, api_key: str
) -> None:
    """A real emulator answer with a thought part and a text part before the image."""
    body = wire.build_generate_body(ImageRequest(prompt="a tiny robot"), vertex=False)
    body["generationConfig"]["thinkingConfig"] = {"includeThoughts": True}
    async with httpx.AsyncClient() as client:
        r = await client.post(
            emu.aistudio_url(), json=body, headers={"x-goog-api-key": api_key}, timeout=30
        )
    payload = r.json()
    parts = payload["candidates"][0]["content"]["parts"]
    answer = [p for p in parts if not p.get("thought")]
    assert parts[0].get("thought") is True
    assert "text" in answer[0] and "inlineData" in answer[-1]
    image = wire.parse_generate_response(payload, backend="aistudio", model="m")
    assert image.text == CHATTER and THOUGHT not in (image.text or "")
    assert image.data == base64.b64decode(answer[-1]["inlineData"]["data"])
    assert image.thought_signature == answer[-1]["thoughtSignature"]
    assert image.usage.thoughts_tokens > 0


def test_parser_ignores_an_interim_thought_image_before_the_final_one() -> None:
    """Reference §1.6 shape (the emulator never sends interim thought images; see report)."""
    interim, final = png_bytes(32, 32), png_bytes(48, 40)
    payload = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {
                            "inlineData": {
                                "mimeType": "image/png",
                                "data": wire.b64encode(interim),
                            },
                            "thought": True,
                        },
                        {"text": "Here it is.", "thoughtSignature": "c2lnQQ=="},
                        {
                            "inlineData": {"mimeType": "image/png", "data": wire.b64encode(final)},
                            "thoughtSignature": "c2lnQg==",
                        },
                    ],
                },
                "finishReason": "STOP",
            }
        ]
    }
    image = wire.parse_generate_response(payload, backend="vertex", model="m")
    assert image.data == final and (image.width, image.height) == (48, 40)
    assert image.thought_signature == "c2lnQg=="


def test_an_interim_thought_image_alone_is_not_the_answer() -> None:
    """Only the thought image survived (final missing): a refusal, not the interim draft."""
    payload = {
        "candidates": [
            {
                "content": {
                    "parts": [
                        {
                            "inlineData": {
                                "mimeType": "image/png",
                                "data": wire.b64encode(png_bytes(8, 8)),
                            },
                            "thought": True,
                        },
                        {"text": "I could not finish that image."},
                    ]
                },
                "finishReason": "STOP",
            }
        ]
    }
    with pytest.raises(Refused) as info:
        wire.parse_generate_response(payload, backend="aistudio", model="m")
    assert info.value.reason == "NO_IMAGE" and "could not finish" in str(info.value)


@pytest.mark.parametrize("name", BACKENDS)
async def test_lying_mime_type_is_corrected_from_the_bytes(
    emu: Any, settings_for: Callable[..., Settings], name: str
) -> None:
    emu.control.force("lying_mime", backend=name)
    async with opened(name, settings_for()) as backend:
        image = await backend.generate(ImageRequest(prompt="a kite"))
    real = "image/jpeg" if name == "aistudio" else "image/png"
    assert image.mime_type == real
    assert image.declared_mime_type not in (None, real)
    assert emu.control.stats()["faults_applied"] == {"lying_mime": 1}


@pytest.mark.parametrize("name", BACKENDS)
async def test_rewrite_prompt_returns_the_text_models_answer(
    emu: Any, settings_for: Callable[..., Settings], name: str
) -> None:
    async with opened(name, settings_for()) as backend:
        text = await backend.rewrite_prompt("a quiet harbour at dawn")
    assert text == rewrite("a quiet harbour at dawn")
    assert text.startswith("a quiet harbour at dawn, ")
    (call,) = api_calls(emu)
    assert call["model"] == "gemini-2.5-flash" and call["status"] == 200


async def test_vertex_upscale_x2_doubles_the_dimensions(
    emu: Any, settings_for: Callable[..., Settings]
) -> None:
    async with opened("vertex", settings_for()) as backend:
        result = await backend.upscale(png_bytes(320, 240), "image/png", 2)
    assert (result.width, result.height) == (640, 480)
    assert result.factor == 2 and result.method == "vertex" and result.mime_type == "image/png"
    (call,) = api_calls(emu)
    assert call["url"].endswith("/models/imagen-4.0-upscale-preview:predict")


# --------------------------------------------------------------------------- refusals


REFUSALS = [
    ("image_safety", "IMAGE_SAFETY", MSG_IMAGE_SAFETY),
    ("no_image_refusal", "NO_IMAGE", None),
    ("prompt_blocked", "SAFETY", None),
]


@pytest.mark.parametrize(("fault", "reason", "finish_message"), REFUSALS)
async def test_refusals_are_typed_and_not_retried(
    emu: Any,
    settings_for: Callable[..., Settings],
    fault: str,
    reason: str,
    finish_message: str | None,
) -> None:
    emu.control.force(fault, backend="aistudio")
    sleep = Recorder()
    async with opened("aistudio", settings_for()) as backend:
        with pytest.raises(Refused) as info:
            await generate_with_retries(backend, ImageRequest(prompt="x"), policy(), sleep=sleep)
    err = info.value
    assert err.reason == reason and err.finish_message == finish_message
    assert err.attempts == 1 and sleep.waits == []  # type: ignore[attr-defined]
    assert emu.control.stats()["generation_requests"]["aistudio"] == 1


async def test_stop_with_text_and_no_image_is_a_no_image_refusal(
    emu: Any, settings_for: Callable[..., Settings]
) -> None:
    emu.control.force("no_image", backend="aistudio")
    async with opened("aistudio", settings_for()) as backend:
        with pytest.raises(Refused) as info:
            await generate_with_retries(backend, ImageRequest(prompt="x"), policy())
    assert info.value.reason == "NO_IMAGE"
    assert NO_IMAGE_TEXT in str(info.value) and info.value.finish_message == NO_IMAGE_TEXT
    assert emu.control.stats()["generation_requests"]["aistudio"] == 1


async def test_vertex_blocked_prompt_carries_the_block_message(
    emu: Any, settings_for: Callable[..., Settings]
) -> None:
    async with opened("vertex", settings_for()) as backend:
        with pytest.raises(Refused) as info:
            await generate_with_retries(
                backend, ImageRequest(prompt="a blocked-prompt here"), policy()
            )
    assert info.value.reason == "SAFETY" and info.value.finish_message == BLOCK_MESSAGE
    assert emu.control.stats()["generation_requests"]["vertex"] == 1


async def test_a_forbidden_prompt_is_refused_by_the_model(
    emu: Any, settings_for: Callable[..., Settings]
) -> None:
    async with opened("vertex", settings_for()) as backend:
        with pytest.raises(Refused) as info:
            await generate_with_retries(backend, ImageRequest(prompt="forbidden art"), policy())
    assert info.value.reason == "IMAGE_SAFETY" and info.value.attempts == 1  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- quota


async def test_quota_429_waits_exactly_the_servers_retry_delay(
    emu: Any, settings_for: Callable[..., Settings]
) -> None:
    emu.control.force("quota", backend="aistudio", retry_delay_s=30)
    sleep, retries = Recorder(), Retries()
    async with opened("aistudio", settings_for()) as backend:
        image = await generate_with_retries(
            backend, ImageRequest(prompt="x"), policy(), sleep=sleep, on_retry=retries
        )
    scaled = 30 * emu.settings.time_scale
    assert sleep.waits == [pytest.approx(scaled)]
    assert image.attempts == 2
    (err,) = retries.errors
    assert isinstance(err, QuotaExceeded) and err.retryable and not err.per_day
    assert err.quota_id == "GenerateRequestsPerMinutePerProjectPerModel"
    assert emu.control.stats()["generation_requests"]["aistudio"] == 2


async def test_vertex_plain_429_is_retried_with_backoff(
    emu: Any, settings_for: Callable[..., Settings]
) -> None:
    emu.control.force("quota", backend="vertex")
    sleep, retries = Recorder(), Retries()
    async with opened("vertex", settings_for()) as backend:
        image = await generate_with_retries(
            backend,
            ImageRequest(prompt="x"),
            policy(initial_delay_s=0.25),
            sleep=sleep,
            on_retry=retries,
        )
    assert image.attempts == 2 and sleep.waits == [0.25]  # no hint: exponential backoff
    (err,) = retries.errors
    assert isinstance(err, QuotaExceeded) and err.retry_after is None and not err.billing


@pytest.mark.parametrize(
    ("fault", "attr"), [("quota_daily", "per_day"), ("quota_billing", "billing")]
)
async def test_daily_and_billing_quota_are_not_retried(
    emu: Any, settings_for: Callable[..., Settings], fault: str, attr: str
) -> None:
    emu.control.force(fault, backend="aistudio")
    sleep = Recorder()
    async with opened("aistudio", settings_for()) as backend:
        with pytest.raises(QuotaExceeded) as info:
            await generate_with_retries(backend, ImageRequest(prompt="x"), policy(), sleep=sleep)
    assert getattr(info.value, attr) is True and info.value.retryable is False
    assert info.value.attempts == 1 and sleep.waits == []  # type: ignore[attr-defined]
    assert emu.control.stats()["generation_requests"]["aistudio"] == 1


# --------------------------------------------------------------------------- transient faults


@pytest.mark.parametrize(
    ("name", "fault"),
    [
        ("aistudio", "500"),
        ("aistudio", "502"),
        ("aistudio", "503"),
        ("aistudio", "504"),
        ("vertex", "503"),
        ("vertex", "500"),
    ],
)
async def test_server_errors_are_retried_to_success(
    emu: Any, settings_for: Callable[..., Settings], name: str, fault: str
) -> None:
    emu.control.force(fault, backend=name)
    retries = Retries()
    async with opened(name, settings_for()) as backend:
        image = await generate_with_retries(
            backend, ImageRequest(prompt="x"), policy(), sleep=Recorder(), on_retry=retries
        )
    assert image.attempts == 2
    (err,) = retries.errors
    assert isinstance(err, Unavailable) and err.status == int(fault)
    assert emu.control.stats()["generation_requests"][name] == 2


@pytest.mark.parametrize(
    ("fault", "error_type"),
    [
        ("reset", Unavailable),
        ("truncated_json", MalformedResponse),
        ("malformed_json", MalformedResponse),
        ("bad_base64", MalformedResponse),
    ],
)
async def test_broken_bodies_are_retried(
    emu: Any, settings_for: Callable[..., Settings], fault: str, error_type: type
) -> None:
    emu.control.force(fault, backend="vertex")
    retries = Retries()
    async with opened("vertex", settings_for()) as backend:
        image = await generate_with_retries(
            backend, ImageRequest(prompt="x"), policy(), sleep=Recorder(), on_retry=retries
        )
    assert image.attempts == 2 and image.width == 1024
    assert [type(e) for e in retries.errors] == [error_type]
    assert emu.control.stats()["faults_applied"] == {fault: 1}


async def test_a_hung_request_is_cut_by_the_read_timeout_and_retried(
    emu: Any, settings_for: Callable[..., Settings]
) -> None:
    """The hung call is cut by the read timeout and retried, and the retry's answer is used.

    Whether the retry answers inside the (short) read timeout depends on the machine's load, so
    the count of attempts is not pinned: on a busy machine a slow answer is cut as well and
    tried again, which is the same behaviour. Without a read timeout the call would wait out
    the 30 s hang and come back after one attempt.
    """
    emu.control.force("hang", backend="aistudio", hang_s=3000)  # 30 s at the test time scale
    retries = Retries()
    async with opened("aistudio", settings_for(read_s=2.0)) as backend:
        image = await generate_with_retries(
            backend, ImageRequest(prompt="x"), policy(), sleep=Recorder(), on_retry=retries
        )
    assert image.attempts == len(retries.errors) + 1 >= 2
    assert all(isinstance(e, RequestTimedOut) and "read 2.0s" in str(e) for e in retries.errors)
    outcomes = emu.wait_idle()["by_route"]["aistudio:generateContent"]
    assert outcomes["hang"] == 1 and outcomes["ok"] == image.attempts - 1, outcomes


# --------------------------------------------------------------------------- Vertex auth


async def test_an_expired_token_is_refreshed_once_and_the_request_replayed(
    emu: Any, settings_for: Callable[..., Settings]
) -> None:
    async with opened("vertex", settings_for()) as backend:
        await backend.generate(ImageRequest(prompt="first"))
        assert emu.control.stats()["tokens_issued"] == 1
        emu.control.force("token_expired", backend="vertex")
        image = await backend.generate(ImageRequest(prompt="second"))
    assert image.attempts == 1
    stats = emu.control.stats()
    assert stats["tokens_issued"] == 2
    assert [c["status"] for c in api_calls(emu)] == [200, 401, 200]


async def test_concurrent_requests_share_one_token_refresh(
    emu: Any, settings_for: Callable[..., Settings]
) -> None:
    import asyncio

    async with opened("vertex", settings_for()) as backend:
        images = await asyncio.gather(
            *(backend.generate(ImageRequest(prompt=f"p{i}")) for i in range(6))
        )
    assert len(images) == 6
    assert emu.control.stats()["tokens_issued"] == 1


async def test_token_endpoint_outage_is_unavailable_and_retried(
    emu: Any, settings_for: Callable[..., Settings]
) -> None:
    # google-auth retries a 500 from the token endpoint itself (3 tries, 1 s and 2 s apart);
    # fail every refresh. Two attempts of ours are enough to show they are retried.
    emu.control.force("token_error", count=50)
    retry = policy(max_attempts=2)
    async with opened("vertex", settings_for()) as backend:
        with pytest.raises(Unavailable) as info:
            await generate_with_retries(backend, ImageRequest(prompt="x"), retry)
    assert "token endpoint" in str(info.value)
    assert info.value.attempts == 2  # type: ignore[attr-defined]
    assert api_calls(emu) == []  # no API call without a token


class RejectedCredentials(google.auth.credentials.Credentials):
    """Credentials whose every token the server rejects (a revoked key, say)."""

    def __init__(self) -> None:
        super().__init__()
        self.token = "bogus-token-0"
        self.refreshed = 0

    def refresh(self, request: Any) -> None:
        self.refreshed += 1
        self.token = f"bogus-token-{self.refreshed}"


async def test_a_second_401_is_an_auth_error_after_one_refresh(
    emu: Any, settings_for: Callable[..., Settings]
) -> None:
    creds = RejectedCredentials()
    async with opened("vertex", settings_for(), credentials=creds) as backend:
        with pytest.raises(AuthError) as info:
            await generate_with_retries(backend, ImageRequest(prompt="x"), policy())
    assert creds.refreshed == 1 and info.value.status == 401
    assert "bogus-token" not in str(info.value)
    assert [c["status"] for c in api_calls(emu)] == [401, 401]


async def test_an_invalid_api_key_is_an_auth_error_without_the_key(
    emu: Any, settings_for: Callable[..., Settings]
) -> None:
    secret = "AIza-not-a-real-key-123456"
    async with opened("aistudio", settings_for(api_key=secret)) as backend:
        with pytest.raises(AuthError) as info:
            await generate_with_retries(backend, ImageRequest(prompt="x"), policy())
    assert secret not in str(info.value) and secret not in repr(info.value)
    assert "API key not valid" in str(info.value) and len(api_calls(emu)) == 1


# --------------------------------------------------------------------------- bad input / config


@pytest.mark.parametrize("name", BACKENDS)
async def test_unknown_model_is_not_found_and_not_retried(
    emu: Any, settings_for: Callable[..., Settings], name: str
) -> None:
    async with opened(name, settings_for()) as backend:
        with pytest.raises(NotFound) as info:
            await generate_with_retries(
                backend, ImageRequest(prompt="x", model="gemini-9-ultra-image"), policy()
            )
    assert "gemini-9-ultra-image" in str(info.value) and info.value.status == 404
    assert len(api_calls(emu)) == 1


async def test_vertex_only_options_on_aistudio_fail_before_any_request(
    emu: Any, settings_for: Callable[..., Settings]
) -> None:
    async with opened("aistudio", settings_for()) as backend:
        with pytest.raises(InputError) as info:
            await generate_with_retries(
                backend, ImageRequest(prompt="x", person_generation="ALLOW_ALL"), policy()
            )
    assert info.value.field == "person_generation" and "vertex" in str(info.value)
    assert info.value.attempts == 0  # type: ignore[attr-defined]
    assert emu.control.requests() == []


async def test_vertex_rejects_an_oversized_reference_image_before_sending(
    emu: Any, settings_for: Callable[..., Settings]
) -> None:
    big = ReferenceImage(mime_type="image/png", data=png_bytes(8, 8) + os.urandom(8 * 1024 * 1024))
    async with opened("vertex", settings_for()) as backend:
        with pytest.raises(InputError) as info:
            await backend.generate(ImageRequest(prompt="x", reference_images=[big]))
    assert info.value.field == "reference_images[0]" and "7 MB" in str(info.value)
    assert emu.control.requests() == []


async def test_a_base_url_httpx_cannot_use_is_a_config_error(api_key: str) -> None:
    async with opened("aistudio", make_settings("ftp://127.0.0.1:9", api_key=api_key)) as backend:
        with pytest.raises(ConfigError) as info:
            await backend.generate(ImageRequest(prompt="x"))
    assert info.value.field == "backends.aistudio.base_url"


async def test_upscale_limits_are_enforced_before_the_call(
    emu: Any, settings_for: Callable[..., Settings]
) -> None:
    async with opened("vertex", settings_for()) as backend:
        with pytest.raises(InputError) as bad_factor:
            await backend.upscale(png_bytes(100, 100), "image/png", 3)
        with pytest.raises(Unsupported) as too_many_pixels:
            await backend.upscale(png_bytes(1100, 1100), "image/png", 4)
        with pytest.raises(Unsupported) as too_big:
            await backend.upscale(png_bytes(8, 8) + os.urandom(8 * 1024 * 1024), "image/png", 2)
    assert bad_factor.value.field == "factor"
    assert "17 MP" in str(too_many_pixels.value) and "4400x4400" in str(too_many_pixels.value)
    assert "10 MB" in str(too_big.value)
    assert not too_many_pixels.value.retryable and not too_big.value.retryable
    assert emu.control.requests() == []


async def test_aistudio_has_no_upscale(emu: Any, settings_for: Callable[..., Settings]) -> None:
    async with opened("aistudio", settings_for()) as backend:
        with pytest.raises(Unsupported):
            await backend.upscale(png_bytes(10, 10), "image/png", 2)
    assert emu.control.requests() == []


def test_missing_api_key_is_a_config_error(emu: Any) -> None:
    with pytest.raises(ConfigError) as info:
        create_backend("aistudio", make_settings(emu.url))
    assert info.value.field == "backends.aistudio.api_key" and "GEMINI_API_KEY" in str(info.value)
    assert emu.control.requests() == []


def test_missing_project_is_a_config_error(emu: Any, service_account_file: Path) -> None:
    with pytest.raises(ConfigError) as info:
        create_backend("vertex", make_settings(emu.url, sa_file=service_account_file))
    assert info.value.field == "backends.vertex.project"
    assert "GOOGLE_CLOUD_PROJECT" in str(info.value)


_EC_KEY = (
    ec.generate_private_key(ec.SECP256R1())
    .private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    .decode()
)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "does not exist"),
        ("{not json", "is not JSON"),
        (json.dumps({"type": "authorized_user", "client_id": "x"}), "not a service-account"),
        (json.dumps({"type": "service_account", "client_email": "a@b"}), "lacks"),
        (
            json.dumps(
                {
                    "type": "service_account",
                    "client_email": "a@b",
                    "token_uri": "http://x",
                    "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                }
            ),
            "unusable private key",
        ),
        (  # a real key, but not the RSA key a service account signs with
            json.dumps(
                {
                    "type": "service_account",
                    "client_email": "a@b",
                    "token_uri": "http://x",
                    "private_key": _EC_KEY,
                }
            ),
            "unusable private key",
        ),
        (
            json.dumps(
                {"type": "service_account", "client_email": "a", "token_uri": "x", "private_key": 7}
            ),
            "unusable private key",
        ),
    ],
)
def test_bad_service_account_files_are_config_errors(
    emu: Any, tmp_path: Path, content: str | None, problem: str
) -> None:
    path = tmp_path / "sa.json"
    if content is not None:
        path.write_text(content)
    settings = make_settings(emu.url, sa_file=path, project="p")
    with pytest.raises(ConfigError) as info:
        create_backend("vertex", settings)
    assert info.value.field == "backends.vertex.credentials_file" and problem in str(info.value)
    assert emu.control.requests() == []


def test_no_application_default_credentials_names_the_env_var(
    emu: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))  # no gcloud ADC file there
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # never probe a metadata server
    with pytest.raises(ConfigError) as info:
        create_backend("vertex", make_settings(emu.url, project="p"))
    assert "GOOGLE_APPLICATION_CREDENTIALS" in str(info.value)


def test_adc_from_google_application_credentials_is_used(
    emu: Any, service_account_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(service_account_file))
    backend = create_backend("vertex", make_settings(emu.url, project=emu.settings.project))
    try:
        assert backend.tokens.credentials.service_account_email.startswith("bananaflow-emulator@")  # type: ignore[attr-defined]
    finally:
        import asyncio

        asyncio.run(backend.aclose())


# --------------------------------------------------------------------------- in-process ASGI


async def test_in_process_emulator_through_asgi_transport(emu: Any, api_key: str) -> None:
    """The same client code against the emulator app in-process (no socket)."""
    app = create_app(emu.settings)
    transport = httpx.ASGITransport(app=app)
    settings = make_settings("http://emulator.local", api_key=api_key)
    async with httpx.AsyncClient(transport=transport) as client:
        backend = create_backend("aistudio", settings, client=client)
        image = await backend.generate(ImageRequest(prompt="in process", aspect_ratio="3:2"))
        assert (image.width, image.height) == pixel_size("3:2", "1K")
        state = app.state.emulator
        state.faults.add(_fault("reset"))
        with pytest.raises(Unavailable):
            await backend.generate(ImageRequest(prompt="dropped"))
        state.faults.add(_fault("truncated_json"))
        with pytest.raises(MalformedResponse):
            await backend.generate(ImageRequest(prompt="cut"))
        await backend.aclose()  # a passed-in client stays open
        assert not client.is_closed
    assert state.stats()["generation_requests"]["aistudio"] == 3
    assert emu.control.requests() == []  # nothing went to the socket server


def _fault(name: str) -> Any:
    from bananaflow.emulator.faults import ForcedFault

    return ForcedFault(name, 1)


# --------------------------------------------------------------------------- status mapping


def test_status_envelopes_map_to_typed_errors() -> None:
    """Verbatim bodies from the reference (§5.3) through the status mapper."""
    vertex_429 = json.dumps(
        {
            "error": {
                "code": 429,
                "message": "Resource exhausted. Please try again later.",
                "status": "RESOURCE_EXHAUSTED",
            }
        }
    ).encode()
    v = error_from_response(429, vertex_429, backend="vertex")
    a = error_from_response(429, vertex_429, backend="aistudio")
    assert isinstance(v, QuotaExceeded) and v.retryable and v.retry_after is None
    assert isinstance(a, QuotaExceeded) and a.billing and not a.retryable
    hinted = error_from_response(429, vertex_429, backend="aistudio", headers={"retry-after": "7"})
    assert hinted.retryable and hinted.retry_after == 7.0  # type: ignore[attr-defined]
    listed = json.dumps(
        [
            {
                "error": {
                    "code": 400,
                    "message": "Please use a valid role: user, model.",
                    "status": "INVALID_ARGUMENT",
                }
            }
        ]
    ).encode()
    bad = error_from_response(400, listed, backend="vertex")
    assert isinstance(bad, BadRequest) and "valid role" in str(bad)
    bare = json.dumps({"code": 404, "message": "models/x is not found", "status": "NOT_FOUND"})
    assert isinstance(error_from_response(404, bare.encode(), backend="aistudio"), NotFound)
    html = error_from_response(
        502, b"<html>oops</html>", backend="vertex", reason_phrase="Bad Gateway"
    )
    assert isinstance(html, Unavailable) and "Bad Gateway" in str(html)


def test_durations_and_retry_after_headers() -> None:
    assert parse_duration("34s") == 34.0 and parse_duration("0.34s") == 0.34
    assert parse_duration("1.5") == 1.5 and parse_duration("soon") is None
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after(None) is None
