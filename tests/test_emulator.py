"""The emulator of AI Studio and Vertex AI: wire format, auth, validation, refusals, quotas, faults.

Real HTTP over loopback against ``EmulatorServer`` (plus a few in-process calls through
``httpx.ASGITransport``). Every assertion pins a rule a client relies on; the messages are the
verbatim texts of ../shared/reference/google-image-apis.md.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import google.auth.transport.requests
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from fixtures.emulator import EmulatorHandle, emulator_test_settings, fake_jwt
from google.oauth2 import service_account
from PIL import Image

from bananaflow import standin
from bananaflow.cli.embedded import embedded
from bananaflow.config import EmulatorSettings, Settings
from bananaflow.emulator import create_app
from bananaflow.emulator.credentials import write_service_account_file
from bananaflow.emulator.messages import MSG_IMAGE_SAFETY, MSG_VERTEX_429
from bananaflow.emulator.textgen import SUFFIXES
from bananaflow.errors import ConfigError
from bananaflow.generation import pixel_size

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
UNKNOWN_IMAGE_CONFIG = (
    'Invalid JSON payload received. Unknown name "{}" at '
    "'generation_config.image_config': Cannot find field."
)


# --------------------------------------------------------------------------- helpers


def body(
    prompt: str = "a red apple on a wooden table",
    *,
    ratio: str | None = None,
    size: str | None = None,
    role: str | None = "user",
    **generation: Any,
) -> dict[str, Any]:
    turn: dict[str, Any] = {"parts": [{"text": prompt}]}
    if role is not None:
        turn["role"] = role
    image_config = {k: v for k, v in (("aspectRatio", ratio), ("imageSize", size)) if v}
    config: dict[str, Any] = dict(generation)
    if image_config:
        config.setdefault("imageConfig", {}).update(image_config)
    out: dict[str, Any] = {"contents": [turn]}
    if config:
        out["generationConfig"] = config
    return out


def studio(
    emu: EmulatorHandle,
    payload: Any,
    *,
    model: str = "gemini-3-pro-image",
    op: str = "generateContent",
    key: str | None = "",
    query: str = "",
    timeout: float = 30,
) -> httpx.Response:
    headers = {"x-goog-api-key": key or emu.api_key} if key is not None else {}
    url = emu.aistudio_url(model, op) + query
    if isinstance(payload, bytes):
        return httpx.post(url, content=payload, headers=headers, timeout=timeout)
    return httpx.post(url, json=payload, headers=headers, timeout=timeout)


def vertex(
    emu: EmulatorHandle,
    payload: Any,
    token: str | None,
    *,
    model: str = "gemini-3-pro-image",
    op: str = "generateContent",
    url: str | None = None,
    timeout: float = 30,
) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.post(
        url or emu.vertex_url(model, op), json=payload, headers=headers, timeout=timeout
    )


def image_part(data: dict[str, Any]) -> dict[str, Any]:
    parts = data["candidates"][0]["content"]["parts"]
    return next(p["inlineData"] for p in parts if "inlineData" in p and not p.get("thought"))


def image_bytes(response: httpx.Response) -> tuple[bytes, str]:
    blob = image_part(response.json())
    return base64.b64decode(blob["data"]), blob["mimeType"]


def pil(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def error_of(response: httpx.Response) -> dict[str, Any]:
    return response.json()["error"]


def detail(err: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next(
        (d for d in err.get("details", []) if d["@type"].endswith(f"google.rpc.{kind}")), None
    )


def outcomes(emu: EmulatorHandle, route: str) -> dict[str, int]:
    return emu.wait_idle()["by_route"].get(route, {})


@pytest.fixture
def token(emu: EmulatorHandle) -> str:
    return emu.bearer_token()


# --------------------------------------------------------------------------- server & CLI


def test_server_picks_a_free_loopback_port_and_stops(emulator_factory) -> None:
    server = emulator_factory()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", server.url)
    assert server.port != 0
    assert httpx.get(server.url + "/_emulator/health").json() == {"ok": True}
    server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/_emulator/health", timeout=2)


def test_serve_forever_prints_url_and_stops_on_sigterm(tmp_path: Path) -> None:
    code = (
        "from bananaflow.config import EmulatorSettings\n"
        "from bananaflow.emulator.server import serve_forever\n"
        "serve_forever(EmulatorSettings(time_scale=0))\n"
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        url = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert url, line
        for _ in range(100):
            try:
                assert httpx.get(url.group(0) + "/_emulator/health").status_code == 200
                break
            except httpx.ConnectError:
                time.sleep(0.05)
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


# --------------------------------------------------------------------------- auth


def test_aistudio_key_in_header_or_query(emu: EmulatorHandle) -> None:
    assert studio(emu, body()).status_code == 200
    assert studio(emu, body(), key=None, query=f"?key={emu.api_key}").status_code == 200
    urls = [r["url"] for r in emu.control.requests()]
    assert not urls[0].endswith(emu.api_key)  # header: nothing in the URL
    assert urls[1].endswith(f"?key={emu.api_key}")  # query: logged exactly as received


def test_aistudio_missing_key_is_403_unregistered_callers(emu: EmulatorHandle) -> None:
    r = studio(emu, body(), key=None)
    assert r.status_code == 403
    assert r.json() == {
        "error": {
            "code": 403,
            "message": "Method doesn't allow unregistered callers (callers without established "
            "identity). Please use API Key or other form of API consumer identity to call "
            "this API.",
            "status": "PERMISSION_DENIED",
        }
    }


def test_aistudio_unknown_key_is_400_api_key_invalid(emu: EmulatorHandle) -> None:
    r = studio(emu, body(), key="not-a-key")
    assert r.status_code == 400
    err = error_of(r)
    assert err["message"] == "API key not valid. Please pass a valid API key."
    assert err["status"] == "INVALID_ARGUMENT"
    info = detail(err, "ErrorInfo")
    assert info and info["reason"] == "API_KEY_INVALID"
    assert info["metadata"]["service"] == "generativelanguage.googleapis.com"


def test_vertex_requires_an_issued_bearer(emu: EmulatorHandle, token: str) -> None:
    missing = vertex(emu, body(), None)
    assert missing.status_code == 401
    assert error_of(missing)["status"] == "UNAUTHENTICATED"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    forged = vertex(emu, body(), "ya29.forged-token")
    assert forged.status_code == 401 and error_of(forged)["status"] == "UNAUTHENTICATED"
    assert "invalid authentication credentials" in error_of(forged)["message"]
    key_only = httpx.post(emu.vertex_url(), json=body(), headers={"x-goog-api-key": emu.api_key})
    assert key_only.status_code == 401  # the project path wants OAuth, not a key
    assert vertex(emu, body(), token).status_code == 200


def test_vertex_express_mode_takes_an_api_key(emu: EmulatorHandle) -> None:
    url = f"{emu.url}/v1beta1/publishers/google/models/gemini-3-pro-image:generateContent"
    ok = httpx.post(url, json=body(), headers={"x-goog-api-key": emu.api_key}, timeout=30)
    assert ok.status_code == 200 and "createTime" in ok.json()
    bad = httpx.post(url, json=body(), headers={"x-goog-api-key": "nope"})
    assert bad.status_code == 400
    assert detail(error_of(bad), "ErrorInfo")["metadata"]["service"] == "aiplatform.googleapis.com"


def test_vertex_other_project_is_403_iam(emu: EmulatorHandle, token: str) -> None:
    url = emu.vertex_url().replace(emu.settings.project, "someone-elses-project")
    r = vertex(emu, body(), token, url=url)
    assert r.status_code == 403
    assert detail(error_of(r), "ErrorInfo")["reason"] == "IAM_PERMISSION_DENIED"


def test_token_endpoint_checks_grant_type_and_jwt_shape(emu: EmulatorHandle) -> None:
    grant = "urn:ietf:params:oauth:grant-type:jwt-bearer"
    ok = httpx.post(emu.url + "/token", data={"grant_type": grant, "assertion": fake_jwt()})
    assert ok.status_code == 200
    data = ok.json()
    assert data["access_token"].startswith("ya29.emulator-")
    assert data["expires_in"] == 3599 and data["token_type"] == "Bearer"
    wrong_grant = httpx.post(
        emu.url + "/token", data={"grant_type": "password", "assertion": fake_jwt()}
    )
    assert wrong_grant.status_code == 400
    assert wrong_grant.json()["error"] == "unsupported_grant_type"
    not_jwt = httpx.post(emu.url + "/token", data={"grant_type": grant, "assertion": "abc"})
    assert not_jwt.status_code == 400 and not_jwt.json()["error"] == "invalid_grant"
    stats = emu.control.stats()
    assert stats["tokens_issued"] == 1
    assert stats["by_route"]["auth:token"] == {"ok": 1, "400": 2}


def test_google_auth_service_account_refresh_gets_a_token_vertex_accepts(
    emu: EmulatorHandle, service_account_file: Path
) -> None:
    creds = service_account.Credentials.from_service_account_file(
        str(service_account_file), scopes=SCOPES
    )
    creds.refresh(google.auth.transport.requests.Request())
    assert creds.valid and creds.token.startswith("ya29.emulator-")
    assert vertex(emu, body(), creds.token).status_code == 200
    assert emu.control.stats()["tokens_issued"] == 1


def test_token_expired_fault_revokes_the_token_until_refresh(
    emu: EmulatorHandle, service_account_file: Path
) -> None:
    creds = service_account.Credentials.from_service_account_file(
        str(service_account_file), scopes=SCOPES
    )
    creds.refresh(google.auth.transport.requests.Request())
    old = creds.token
    emu.control.force("token_expired")
    expired = vertex(emu, body(), old)
    assert expired.status_code == 401
    assert detail(error_of(expired), "ErrorInfo")["reason"] == "ACCESS_TOKEN_EXPIRED"
    again = vertex(emu, body(), old)  # revoked: the fault is spent but the token stays dead
    assert again.status_code == 401
    assert detail(error_of(again), "ErrorInfo")["reason"] == "ACCESS_TOKEN_EXPIRED"
    creds.refresh(google.auth.transport.requests.Request())
    assert creds.token != old
    assert vertex(emu, body(), creds.token).status_code == 200


def test_token_error_fault_fails_one_token_request(emu: EmulatorHandle) -> None:
    emu.control.force("token_error")
    grant = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": fake_jwt()}
    failed = httpx.post(emu.url + "/token", data=grant)
    assert failed.status_code == 500 and failed.json()["error"] == "internal_failure"
    assert httpx.post(emu.url + "/token", data=grant).status_code == 200


# --------------------------------------------------------------------------- models


def test_unknown_model_is_404_with_the_real_message(emu: EmulatorHandle, token: str) -> None:
    r = studio(emu, body(), model="gemini-9-ultra-image")
    assert r.status_code == 404
    assert error_of(r)["message"] == (
        "models/gemini-9-ultra-image is not found for API version v1beta, or is not supported "
        "for generateContent. Call ListModels to see the list of available models and their "
        "supported methods."
    )
    v = vertex(emu, body(), token, model="gemini-9-ultra-image")
    assert v.status_code == 404 and error_of(v)["status"] == "NOT_FOUND"
    assert "Publisher Model `projects/" in error_of(v)["message"]
    upscale_on_studio = studio(emu, {}, model="imagen-4.0-upscale-preview", op="predict")
    assert upscale_on_studio.status_code == 404
    assert emu.control.stats()["generation_requests"]["aistudio"] == 0  # unknown: not an image


@pytest.mark.parametrize(
    "model",
    ["gemini-3-pro-image-preview", "gemini-3.1-flash-image", "gemini-3.1-flash-image-preview"],
)
def test_other_image_model_ids_are_served(emu: EmulatorHandle, model: str) -> None:
    r = studio(emu, body(ratio="4:3"), model=model)
    assert r.status_code == 200 and r.json()["modelVersion"] == model
    assert pil(image_bytes(r)[0]).size == pixel_size("4:3", "1K")


def test_flash_25_ignores_image_size_and_uses_its_own_table(emu: EmulatorHandle) -> None:
    r = studio(emu, body(ratio="16:9", size="8K"), model="gemini-2.5-flash-image")
    assert r.status_code == 200
    assert pil(image_bytes(r)[0]).size == (1344, 768)
    assert r.json()["usageMetadata"]["candidatesTokenCount"] == 1290


def test_extreme_ratios_only_on_flash_31(emu: EmulatorHandle) -> None:
    refused = studio(emu, body(ratio="1:4"))
    assert refused.status_code == 400
    assert error_of(refused)["message"] == "Aspect ratio 1:4 is not supported for this model"
    ok = studio(emu, body(ratio="1:4"), model="gemini-3.1-flash-image")
    w, h = pil(image_bytes(ok)[0]).size
    assert ok.status_code == 200 and h == 4 * w


@pytest.mark.parametrize("model", ["gemini-2.5-flash", "gemini-3-flash", "gemini-3-pro"])
def test_text_models_rewrite_the_last_user_text_deterministically(
    emu: EmulatorHandle, model: str
) -> None:
    payload = {
        "systemInstruction": {"role": "user", "parts": [{"text": "Rewrite the prompt."}]},
        "contents": [{"role": "user", "parts": [{"text": "a blue mug"}]}],
        "generationConfig": {"responseModalities": ["TEXT"]},
    }
    first = studio(emu, payload, model=model)
    second = studio(emu, payload, model=model)
    assert first.status_code == 200
    parts = first.json()["candidates"][0]["content"]["parts"]
    assert len(parts) == 1 and "inlineData" not in parts[0]
    text = parts[0]["text"]
    assert text.startswith("a blue mug, ") and text.removeprefix("a blue mug, ") in SUFFIXES
    assert second.json()["candidates"][0]["content"]["parts"][0]["text"] == text
    assert emu.control.stats()["generation_requests"]["aistudio"] == 0


# --------------------------------------------------------------------------- validation


def test_roleless_turn_is_400_on_vertex_but_fine_on_aistudio(
    emu: EmulatorHandle, token: str
) -> None:
    v = vertex(emu, body(role=None), token)
    assert v.status_code == 400
    assert v.json() == {
        "error": {
            "code": 400,
            "message": "Please use a valid role: user, model.",
            "status": "INVALID_ARGUMENT",
        }
    }
    assert studio(emu, body(role=None)).status_code == 200
    assert error_of(studio(emu, body(role="system")))["message"] == (
        "Please use a valid role: user, model."
    )


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda b: b.update(negativePrompt="dogs"),
            'Invalid JSON payload received. Unknown name "negativePrompt": Cannot find field.',
        ),
        (
            lambda b: b["generationConfig"].update(colour="red"),
            'Invalid JSON payload received. Unknown name "colour" at '
            "'generation_config': Cannot find field.",
        ),
        (
            lambda b: b["generationConfig"]["imageConfig"].update(style="noir"),
            UNKNOWN_IMAGE_CONFIG.format("style"),
        ),
    ],
)
def test_unknown_fields_are_400(emu: EmulatorHandle, mutate: Any, message: str) -> None:
    payload = body(ratio="1:1")
    mutate(payload)
    r = studio(emu, payload)
    assert r.status_code == 400 and error_of(r)["message"] == message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("personGeneration", "ALLOW_ADULT"),
        ("imageOutputOptions", {"mimeType": "image/png"}),
        ("prominentPeople", "BLOCK_PROMINENT_PEOPLE"),
        ("outputMimeType", "image/png"),
        ("outputCompressionQuality", 80),
    ],
)
def test_vertex_only_image_options_are_unknown_on_aistudio(
    emu: EmulatorHandle, token: str, field: str, value: Any
) -> None:
    payload = body(ratio="1:1")
    payload["generationConfig"]["imageConfig"][field] = value
    r = studio(emu, payload)
    assert r.status_code == 400
    assert error_of(r)["message"] == UNKNOWN_IMAGE_CONFIG.format(field)
    if field == "personGeneration":
        assert vertex(emu, payload, token).status_code == 200


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (
            body(ratio="7:3"),
            "Unsupported aspect ratio '7:3'. Supported values are: 1:1, 2:3, "
            "3:2, 3:4, 4:3, 4:5, 5:4, 9:16, 16:9, 21:9, 1:4, 4:1, 1:8, 8:1.",
        ),
        (
            body(size="8K"),
            "Unsupported image_size '8K'. Supported values are: 1K, 2K, 4K, 512, 512P, 512PX.",
        ),
        (body(candidateCount=2), "Multiple candidates is not enabled for this model"),
        ({"contents": [{"role": "user", "parts": []}]}, "Request has empty input."),
        ({"contents": [{"role": "user"}]}, "Request has empty input."),
        ({}, "* GenerateContentRequest.contents: contents is not specified\n"),
        ({"contents": []}, "* GenerateContentRequest.contents: contents is not specified\n"),
    ],
)
def test_invalid_requests_get_the_real_400s(
    emu: EmulatorHandle, payload: dict[str, Any], message: str
) -> None:
    r = studio(emu, payload)
    assert r.status_code == 400
    assert r.json() == {"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}


def test_body_that_is_not_json_is_400(emu: EmulatorHandle) -> None:
    r = studio(emu, b"this is not json")
    assert r.status_code == 400
    err = error_of(r)
    assert err["status"] == "INVALID_ARGUMENT"
    assert err["message"].startswith("Invalid JSON payload received.")


def test_bad_modality_and_bad_input_base64_are_400(emu: EmulatorHandle) -> None:
    r = studio(emu, body(responseModalities=["BANANA"]))
    assert r.status_code == 400
    assert "generation_config.response_modalities[0]" in error_of(r)["message"]
    bad_image = {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"inlineData": {"mimeType": "image/png", "data": "%%"}},
                    {"text": "edit this"},
                ],
            }
        ]
    }
    r = studio(emu, bad_image)
    assert r.status_code == 400 and "Base64 decoding failed" in error_of(r)["message"]


def test_snake_case_input_is_accepted_and_output_is_camel_case(emu: EmulatorHandle) -> None:
    payload = {
        "contents": [{"role": "user", "parts": [{"text": "a lighthouse"}]}],
        "generation_config": {
            "response_modalities": ["TEXT", "IMAGE"],
            "image_config": {"aspect_ratio": "9:16", "image_size": "1K"},
        },
    }
    r = studio(emu, payload)
    assert r.status_code == 200
    assert pil(image_bytes(r)[0]).size == pixel_size("9:16", "1K")
    raw = r.text
    assert (
        '"usageMetadata"' in raw
        and '"inlineData"' in raw
        and "_" not in "".join(k for k in r.json()["usageMetadata"])
    )


def test_image_modality_only_drops_the_text_part(emu: EmulatorHandle) -> None:
    r = studio(emu, body(responseModalities=["IMAGE"]))
    parts = r.json()["candidates"][0]["content"]["parts"]
    answer = [p for p in parts if not p.get("thought")]  # the Pro model's draft is a thought
    assert [("inlineData" in p) for p in answer] == [True]
    assert all("text" not in p for p in parts)


def test_reference_images_change_the_result(emu: EmulatorHandle) -> None:
    ref = base64.b64encode(b"\x89PNG fake reference").decode()
    with_ref = {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"inline_data": {"mime_type": "image/png", "data": ref}},
                    {"text": "a red apple on a wooden table"},
                ],
            }
        ]
    }
    a = image_bytes(studio(emu, with_ref))[0]
    b = image_bytes(studio(emu, body()))[0]
    assert a != b
    usage = studio(emu, with_ref).json()["usageMetadata"]
    assert {"modality": "IMAGE", "tokenCount": 258} in usage["promptTokensDetails"]


# --------------------------------------------------------------------------- success


@pytest.mark.parametrize(
    ("ratio", "size"),
    [("1:1", "1K"), ("16:9", "2K"), ("9:16", "1K"), ("21:9", "1K"), ("3:4", "2K"), ("4:5", "1K")],
)
def test_exact_pixel_size(emu: EmulatorHandle, ratio: str, size: str) -> None:
    r = studio(emu, body(f"size check {ratio} {size}", ratio=ratio, size=size))
    assert r.status_code == 200
    assert pil(image_bytes(r)[0]).size == pixel_size(ratio, size)


def test_defaults_are_square_1k(emu: EmulatorHandle, token: str) -> None:
    assert pil(image_bytes(studio(emu, body()))[0]).size == (1024, 1024)
    assert pil(image_bytes(vertex(emu, body(), token))[0]).size == (1024, 1024)


def test_same_request_gives_identical_bytes(emu: EmulatorHandle, token: str) -> None:
    def digest(r: httpx.Response) -> str:
        return hashlib.sha256(image_bytes(r)[0]).hexdigest()

    a = digest(studio(emu, body("a lighthouse at dusk", ratio="3:2")))
    emu.control.reset()
    b = digest(studio(emu, body("a lighthouse at dusk", ratio="3:2")))
    c = digest(studio(emu, body("a lighthouse at dawn", ratio="3:2")))
    v = digest(vertex(emu, body("a lighthouse at dusk", ratio="3:2"), token))
    assert a == b and a != c and a != v


def test_fresh_server_renders_the_same_bytes(emulator_factory, emu: EmulatorHandle) -> None:
    other = EmulatorHandle.of(emulator_factory())
    first = image_bytes(studio(emu, body("identical everywhere")))[0]
    assert image_bytes(studio(other, body("identical everywhere")))[0] == first


def test_success_shape_aistudio(emu: EmulatorHandle) -> None:
    r = studio(emu, body(thinkingConfig={"includeThoughts": True}))
    assert r.headers.get("retry-after") is None
    data = r.json()
    cand = data["candidates"][0]
    parts = cand["content"]["parts"]
    assert parts[0] == {"text": parts[0]["text"], "thought": True}
    # The Pro model's interim image: a thought, unsigned, smaller than the answer.
    assert parts[1]["thought"] is True and "thoughtSignature" not in parts[1]
    draft = pil(base64.b64decode(parts[1]["inlineData"]["data"]))
    assert draft.size == (256, 256)
    assert parts[2]["text"] == "Here is your image." and parts[2]["thoughtSignature"]
    assert parts[3]["inlineData"]["mimeType"] == "image/jpeg" and parts[3]["thoughtSignature"]
    assert "thought" not in parts[3]
    base64.b64decode(parts[3]["thoughtSignature"], validate=True)
    assert cand["finishReason"] == "STOP" and cand["content"]["role"] == "model"
    usage = data["usageMetadata"]
    assert usage["candidatesTokenCount"] == 1120
    assert usage["candidatesTokensDetails"] == [{"modality": "IMAGE", "tokenCount": 1120}]
    assert 136 <= usage["thoughtsTokenCount"] <= 220
    assert usage["totalTokenCount"] == (
        usage["promptTokenCount"] + usage["candidatesTokenCount"] + usage["thoughtsTokenCount"]
    )
    assert data["modelVersion"] == "gemini-3-pro-image" and data["responseId"]
    assert "createTime" not in data and "trafficType" not in usage
    # As live answers carry it (google-image-apis.md §1.6): in the usage and in a header.
    assert usage["serviceTier"] == "standard" and r.headers["x-gemini-service-tier"] == "standard"
    assert "safetyRatings" not in cand


def test_success_shape_vertex_png_by_default(emu: EmulatorHandle, token: str) -> None:
    r = vertex(emu, body(), token)
    data = r.json()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", data["createTime"])
    assert data["usageMetadata"]["trafficType"] == "ON_DEMAND"
    raw, mime = image_bytes(r)
    assert mime == "image/png" and pil(raw).format == "PNG"


@pytest.mark.parametrize(
    ("options", "fmt"),
    [
        ({"mimeType": "image/jpeg", "compressionQuality": 80}, "JPEG"),
        ({"mimeType": "image/png"}, "PNG"),
    ],
)
def test_vertex_output_options_are_honoured(
    emu: EmulatorHandle, token: str, options: dict[str, Any], fmt: str
) -> None:
    payload = body(ratio="1:1")
    payload["generationConfig"]["imageConfig"]["imageOutputOptions"] = options
    raw, mime = image_bytes(vertex(emu, payload, token))
    assert mime == options["mimeType"] and pil(raw).format == fmt


def test_file_sizes_follow_the_measurements(grainy_emu: EmulatorHandle) -> None:
    """1K for both, one 4K per backend (4K rendering is the slow part of this file)."""
    emu, token = grainy_emu, grainy_emu.bearer_token()
    studio_1k = image_bytes(studio(emu, body("size study")))[0]
    vertex_1k = image_bytes(vertex(emu, body("size study"), token))[0]
    assert 200_000 < len(studio_1k) < 1_200_000
    assert 1_500_000 < len(vertex_1k) < 4_500_000
    s4 = studio(emu, body("size study", size="4K"), timeout=60)
    v4 = vertex(emu, body("size study", size="4K"), token, timeout=60)
    studio_4k, vertex_4k = image_bytes(s4)[0], image_bytes(v4)[0]
    assert pil(studio_4k).size == pil(vertex_4k).size == (4096, 4096)
    assert s4.json()["usageMetadata"]["candidatesTokenCount"] == 2000
    assert 1_500_000 < len(studio_4k) < 8_000_000
    assert 12_000_000 < len(vertex_4k) < 24_000_000
    assert len(vertex_4k) > 3 * len(studio_4k)


# --------------------------------------------------------------------------- streaming


def test_stream_with_alt_sse_is_one_event_stream_chunk(emu: EmulatorHandle) -> None:
    r = studio(emu, body(), op="streamGenerateContent", query="?alt=sse")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.text.startswith("data: ") and r.text.endswith("}\r\n\r\n")  # live framing
    events = [e for e in r.text.split("\r\n\r\n") if e]
    assert len(events) == 1
    chunk = json.loads(events[0].removeprefix("data: "))
    assert chunk["candidates"][0]["finishReason"] == "STOP"
    assert chunk["usageMetadata"]["candidatesTokenCount"] == 1120
    assert pil(base64.b64decode(image_part(chunk)["data"])).size == (1024, 1024)


def test_stream_without_sse_is_a_json_array_errors_too(emu: EmulatorHandle) -> None:
    ok = studio(emu, body(), op="streamGenerateContent")
    assert isinstance(ok.json(), list) and ok.json()[0]["candidates"]
    err = studio(emu, body(), op="streamGenerateContent", key=None)
    assert err.status_code == 403 and err.json()[0]["error"]["status"] == "PERMISSION_DENIED"
    assert emu.control.stats()["by_route"]["aistudio:streamGenerateContent"] == {"ok": 1, "403": 1}


# --------------------------------------------------------------------------- refusals


def test_refusal_words(emu: EmulatorHandle, token: str) -> None:
    safety = studio(emu, body("something forbidden here"))
    assert safety.status_code == 200
    cand = safety.json()["candidates"][0]
    assert cand["finishReason"] == "IMAGE_SAFETY" and cand["finishMessage"] == MSG_IMAGE_SAFETY
    assert cand["content"] == {}
    no_image = vertex(emu, body("NO-IMAGE-PLEASE now"), token)
    assert no_image.status_code == 200
    assert no_image.json()["candidates"][0]["finishReason"] == "NO_IMAGE"
    blocked = studio(emu, body("a blocked-prompt"))
    assert blocked.status_code == 200
    assert blocked.json()["promptFeedback"]["blockReason"] == "SAFETY"
    assert "candidates" not in blocked.json()
    stats = emu.control.stats()
    assert stats["by_route"]["aistudio:generateContent"] == {"refused": 2}
    assert stats["by_route"]["vertex:generateContent"] == {"refused": 1}


def test_refusal_rates(emulator_factory) -> None:
    emu = EmulatorHandle.of(emulator_factory(refusals={"image_safety_rate": 1.0}))
    r = studio(emu, body())
    assert r.json()["candidates"][0]["finishReason"] == "IMAGE_SAFETY"


# --------------------------------------------------------------------------- quotas


def test_aistudio_rpm_quota_429_with_quota_failure_and_retry_info(emulator_factory) -> None:
    # A real-length minute and no latency: the window cannot age out however slow the machine.
    emu = EmulatorHandle.of(
        emulator_factory(
            time_scale=1.0,
            profiles={"aistudio": {"requests_per_minute": 2, "latency_s": {"1K": (0, 0)}}},
        )
    )
    assert [studio(emu, body()).status_code for _ in range(2)] == [200, 200]
    rejected = [studio(emu, body()) for _ in range(3)]
    assert [r.status_code for r in rejected] == [429, 429, 429]
    r = rejected[0]
    assert "retry-after" not in r.headers
    err = error_of(r)
    assert err["status"] == "RESOURCE_EXHAUSTED"
    violation = detail(err, "QuotaFailure")["violations"][0]
    assert violation["quotaId"] == "GenerateRequestsPerMinutePerProjectPerModel"
    assert violation["quotaValue"] == "2"
    delay = detail(err, "RetryInfo")["retryDelay"]
    assert re.fullmatch(r"\d+(\.\d+)?s", delay)
    assert 0 < float(delay[:-1]) <= 60
    assert emu.control.stats()["generation_requests"]["aistudio"] == 5


def test_a_rejected_request_takes_no_quota_slot(emulator_factory) -> None:
    # A 1.2 s "minute": waiting out the advertised delay frees the oldest slot. Were rejected
    # requests counted, the window would still be full after the wait; a slow machine only
    # lets more of the window age out, which cannot turn the final 200 into a 429.
    emu = EmulatorHandle.of(
        emulator_factory(
            time_scale=0.02,
            profiles={"aistudio": {"requests_per_minute": 2, "latency_s": {"1K": (0, 0)}}},
        )
    )
    statuses: list[int] = []
    rejected = None
    while rejected is None:
        assert len(statuses) < 50, "the quota never answered 429"
        r = studio(emu, body())
        statuses.append(r.status_code)
        if r.status_code == 429:
            rejected = r
    assert statuses.count(200) >= 2
    time.sleep(float(detail(error_of(rejected), "RetryInfo")["retryDelay"][:-1]) + 0.05)
    assert studio(emu, body()).status_code == 200


def test_vertex_quota_429_is_plain(emulator_factory) -> None:
    # A real-length minute and no latency: the window cannot age out however slow the render.
    emu = EmulatorHandle.of(
        emulator_factory(
            time_scale=1.0,
            profiles={"vertex": {"requests_per_minute": 1, "latency_s": {"1K": (0, 0)}}},
        )
    )
    token = emu.bearer_token()
    assert vertex(emu, body(), token).status_code == 200
    r = vertex(emu, body(), token)
    assert r.status_code == 429
    assert r.json() == {
        "error": {"code": 429, "message": MSG_VERTEX_429, "status": "RESOURCE_EXHAUSTED"}
    }


def test_daily_quota_has_no_retry_info(emulator_factory) -> None:
    emu = EmulatorHandle.of(emulator_factory(profiles={"aistudio": {"requests_per_day": 2}}))
    assert [studio(emu, body()).status_code for _ in range(2)] == [200, 200]
    r = studio(emu, body())
    assert r.status_code == 429
    err = error_of(r)
    assert detail(err, "QuotaFailure")["violations"][0]["quotaId"] == (
        "GenerateRequestsPerDayPerProjectPerModel"
    )
    assert detail(err, "RetryInfo") is None


async def _burst(urls: list[str], payload: dict[str, Any], headers: dict[str, str]) -> list:
    async with httpx.AsyncClient(timeout=30) as client:
        return await asyncio.gather(*(client.post(u, json=payload, headers=headers) for u in urls))


def test_concurrency_cap_is_429_and_peak_in_flight_counts(emulator_factory) -> None:
    server = emulator_factory(
        time_scale=0.1, profiles={"aistudio": {"concurrency": 1, "latency_s": {"1K": (3, 3)}}}
    )
    emu = EmulatorHandle.of(server)
    results = asyncio.run(_burst([emu.aistudio_url()] * 2, body(), {"x-goog-api-key": emu.api_key}))
    assert sorted(r.status_code for r in results) == [200, 429]
    busy = next(r for r in results if r.status_code == 429)
    assert detail(error_of(busy), "RetryInfo")["retryDelay"] == "0.1s"  # 1 s x time_scale
    stats = emu.control.stats()
    assert stats["peak_in_flight"]["aistudio"] == 2
    assert stats["by_route"]["aistudio:generateContent"] == {"ok": 1, "429": 1}


# --------------------------------------------------------------------------- random faults


def test_random_error_rate_gives_the_real_503(emulator_factory) -> None:
    emu = EmulatorHandle.of(emulator_factory(profiles={"aistudio": {"error_rates": {503: 1.0}}}))
    r = studio(emu, body())
    assert r.status_code == 503
    assert r.json() == {
        "error": {
            "code": 503,
            "message": "The service is currently unavailable.",
            "status": "UNAVAILABLE",
        }
    }


def test_random_hang_ends_in_504(emulator_factory) -> None:
    emu = EmulatorHandle.of(
        emulator_factory(profiles={"aistudio": {"hang_rate": 1.0, "hang_s": 2.0}})
    )
    r = studio(emu, body())
    assert r.status_code == 504 and error_of(r)["status"] == "DEADLINE_EXCEEDED"
    assert emu.control.stats()["by_route"]["aistudio:generateContent"] == {"hang": 1}


# --------------------------------------------------------------------------- forced faults


def test_forced_quota_fault_bodies(emu: EmulatorHandle, token: str) -> None:
    emu.control.force("quota", backend="aistudio")
    emu.control.force("quota", backend="aistudio", retry_delay_s=100)
    default = error_of(studio(emu, body()))
    assert detail(default, "RetryInfo")["retryDelay"] == "0.34s"  # 34 s x 0.01
    assert "Please retry in 0.340000000s." in default["message"]
    assert detail(error_of(studio(emu, body())), "RetryInfo")["retryDelay"] == "1s"
    emu.control.force("quota", backend="vertex")
    v = vertex(emu, body(), token)
    assert v.status_code == 429 and "details" not in error_of(v)


def test_forced_daily_and_billing_quota(emu: EmulatorHandle) -> None:
    emu.control.force("quota_daily")
    emu.control.force("quota_billing")
    daily = error_of(studio(emu, body()))
    quota_id = detail(daily, "QuotaFailure")["violations"][0]["quotaId"]
    assert quota_id == "GenerateRequestsPerDayPerProjectPerModel"
    assert detail(daily, "RetryInfo") is None
    billing = studio(emu, body())
    assert billing.status_code == 429
    assert error_of(billing)["message"].startswith("Your prepayment credits are depleted")
    assert "details" not in error_of(billing)


@pytest.mark.parametrize(
    ("fault", "status", "status_name"),
    [("500", 500, "INTERNAL"), ("503", 503, "UNAVAILABLE"), ("504", 504, "DEADLINE_EXCEEDED")],
)
def test_forced_server_errors(
    emu: EmulatorHandle, fault: str, status: int, status_name: str
) -> None:
    emu.control.force(fault)
    r = studio(emu, body())
    assert r.status_code == status and error_of(r)["status"] == status_name
    assert studio(emu, body()).status_code == 200  # count=1: consumed


def test_forced_502_is_googles_html_page(emu: EmulatorHandle) -> None:
    emu.control.force("502")
    r = studio(emu, body())
    assert r.status_code == 502 and r.headers["content-type"].startswith("text/html")
    assert "That’s an error." in r.text


def test_forced_hang_does_not_answer_in_time(emu: EmulatorHandle) -> None:
    emu.control.force("hang")
    with pytest.raises(httpx.ReadTimeout):
        studio(emu, body(), timeout=0.3)
    assert outcomes(emu, "aistudio:generateContent") == {"hang": 1}


def test_forced_reset_drops_the_connection_mid_body(emu: EmulatorHandle, token: str) -> None:
    emu.control.force("reset", backend="vertex")
    with pytest.raises(httpx.RemoteProtocolError):
        vertex(emu, body(), token)
    assert outcomes(emu, "vertex:generateContent") == {"reset": 1}
    assert vertex(emu, body(), token).status_code == 200


def test_forced_body_faults(emu: EmulatorHandle) -> None:
    full = studio(emu, body("body faults")).content
    emu.control.force("truncated_json")
    emu.control.force("malformed_json")
    emu.control.force("bad_base64")
    emu.control.force("lying_mime")
    emu.control.force("no_image")
    truncated = studio(emu, body("body faults"))
    assert truncated.status_code == 200
    assert abs(len(truncated.content) - len(full) // 2) < 100
    with pytest.raises(ValueError):
        json.loads(truncated.content)
    malformed = studio(emu, body("body faults"))
    assert malformed.status_code == 200 and malformed.content.startswith(b"{")
    with pytest.raises(ValueError):
        json.loads(malformed.content)
    data = image_part(studio(emu, body("body faults")).json())["data"]
    with pytest.raises(binascii.Error):
        base64.b64decode(data, validate=True)
    with pytest.raises(binascii.Error):
        base64.b64decode(data)
    raw, declared = image_bytes(studio(emu, body("body faults")))
    assert declared == "image/png" and pil(raw).format == "JPEG"
    talk = studio(emu, body("body faults")).json()["candidates"][0]
    assert talk["finishReason"] == "STOP"
    assert all("inlineData" not in p for p in talk["content"]["parts"])
    assert emu.control.stats()["faults_applied"] == {
        "truncated_json": 1,
        "malformed_json": 1,
        "bad_base64": 1,
        "lying_mime": 1,
        "no_image": 1,
    }


def test_forced_refusals(emu: EmulatorHandle) -> None:
    for fault in ("image_safety", "no_image_refusal", "prompt_blocked"):
        emu.control.force(fault)
    assert studio(emu, body()).json()["candidates"][0]["finishReason"] == "IMAGE_SAFETY"
    assert studio(emu, body()).json()["candidates"][0]["finishReason"] == "NO_IMAGE"
    assert studio(emu, body()).json()["promptFeedback"]["blockReason"] == "SAFETY"
    assert emu.control.stats()["by_route"]["aistudio:generateContent"] == {"refused": 3}


def test_faults_match_backend_operation_count_and_wait_for_valid_requests(
    emu: EmulatorHandle, token: str
) -> None:
    emu.control.force("503", count=2, backend="vertex")
    emu.control.force("500", operation="streamGenerateContent")
    assert studio(emu, body()).status_code == 200  # aistudio: not matched
    assert vertex(emu, body(role=None), token).status_code == 400  # invalid: fault kept
    assert vertex(emu, body(), token).status_code == 503
    assert vertex(emu, body(), token).status_code == 503
    assert vertex(emu, body(), token).status_code == 200
    assert studio(emu, body(), op="streamGenerateContent", query="?alt=sse").status_code == 500
    assert emu.control.pending_faults() == []
    with pytest.raises(ValueError, match="unknown fault"):
        emu.control.force("gremlins")


# --------------------------------------------------------------------------- stats & log


def test_generation_requests_count_every_attempt(emu: EmulatorHandle, token: str) -> None:
    studio(emu, body())
    studio(emu, body(), key=None)  # 403
    studio(emu, body(candidateCount=3))  # 400
    studio(emu, body(), op="streamGenerateContent", query="?alt=sse")
    studio(emu, body(), model="gemini-2.5-flash")  # a text model: not a generation
    vertex(emu, body(), token)
    vertex(emu, body(), None)  # 401
    stats = emu.control.stats()
    assert stats["generation_requests"] == {"aistudio": 4, "vertex": 2}
    assert stats["by_route"] == {
        "aistudio:generateContent": {"ok": 2, "403": 1, "400": 1},
        "aistudio:streamGenerateContent": {"ok": 1},
        "auth:token": {"ok": 1},  # the token fixture
        "vertex:generateContent": {"ok": 1, "401": 1},
    }
    assert stats["peak_in_flight"] == {"aistudio": 1, "vertex": 1}


def test_request_log_has_urls_as_sent_and_never_secrets(emu: EmulatorHandle, token: str) -> None:
    studio(emu, body(), query="?alt=json")
    vertex(emu, body(), token)
    log = emu.control.requests()
    api = [e for e in log if e["backend"] != "auth"]
    assert [e["url"] for e in api] == [emu.aistudio_url() + "?alt=json", emu.vertex_url()]
    required = {"method", "url", "backend", "operation", "model", "status", "outcome", "t"}
    for e in api:
        assert required <= set(e)
        assert e["method"] == "POST" and e["status"] == 200 and e["outcome"] == "ok"
    assert api[0]["t"] <= api[1]["t"]
    dumped = json.dumps(log) + json.dumps(emu.control.stats())
    assert emu.api_key not in dumped and token not in dumped


def test_reset_clears_state_but_tokens_stay_valid(emulator_factory) -> None:
    emu = EmulatorHandle.of(
        emulator_factory(
            time_scale=1.0,
            profiles={"vertex": {"requests_per_minute": 1, "latency_s": {"1K": (0, 0)}}},
        )
    )
    token = emu.bearer_token()
    assert vertex(emu, body(), token).status_code == 200
    assert vertex(emu, body(), token).status_code == 429
    emu.control.force("503")
    emu.control.reset()
    stats = emu.control.stats()
    assert stats["generation_requests"] == {"aistudio": 0, "vertex": 0}
    assert stats["by_route"] == {} and stats["faults_pending"] == []
    assert emu.control.requests() == []
    assert vertex(emu, body(), token).status_code == 200  # window cleared, no 503, token valid


# --------------------------------------------------------------------------- upscale


def _png(size: tuple[int, int]) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def upscale_body(image_b64: str, factor: str = "x2", **params: Any) -> dict[str, Any]:
    return {
        "instances": [{"prompt": "", "image": {"bytesBase64Encoded": image_b64}}],
        "parameters": {
            "mode": "upscale",
            "sampleCount": 1,
            "upscaleConfig": {"upscaleFactor": factor},
            **params,
        },
    }


def test_upscale_resamples_by_the_factor(emu: EmulatorHandle, token: str) -> None:
    r = vertex(
        emu, upscale_body(_png((300, 200))), token, model="imagen-4.0-upscale-preview", op="predict"
    )
    assert r.status_code == 200
    pred = r.json()["predictions"][0]
    assert pred["mimeType"] == "image/png"
    assert pil(base64.b64decode(pred["bytesBase64Encoded"])).size == (600, 400)
    assert emu.control.stats()["by_route"]["vertex:predict"] == {"ok": 1}
    assert emu.control.stats()["generation_requests"]["vertex"] == 0


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (upscale_body(_png((1100, 1100)), "x4"), "17 megapixel"),
        (upscale_body("A" * (10 * 1024 * 1024 + 4)), "10 MB"),
        (
            {"instances": [{"image": {"bytesBase64Encoded": _png((8, 8))}}], "parameters": {}},
            "upscale",
        ),
        (upscale_body(_png((8, 8)), "x8"), "upscale factor"),
    ],
)
def test_upscale_limits(emu: EmulatorHandle, token: str, payload: dict, needle: str) -> None:
    r = vertex(emu, payload, token, model="imagen-4.0-upscale-preview", op="predict")
    assert r.status_code == 400 and needle in error_of(r)["message"]


# --------------------------------------------------------------------------- in-process (ASGI)


def test_in_process_via_asgi_transport() -> None:
    settings = emulator_test_settings()
    key = settings.api_keys[0]

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=create_app(settings))
        async with httpx.AsyncClient(transport=transport, base_url="http://emulator") as client:
            url = "/v1beta/models/gemini-3-pro-image:generateContent"
            ok = await client.post(url, json=body(ratio="16:9"), headers={"x-goog-api-key": key})
            assert ok.status_code == 200
            assert pil(image_bytes(ok)[0]).size == pixel_size("16:9", "1K")
            await client.post("/_emulator/faults", json={"fault": "reset", "count": 1})
            with pytest.raises(httpx.RemoteProtocolError):
                await client.post(url, json=body(), headers={"x-goog-api-key": key})
            stats = (await client.get("/_emulator/stats")).json()
            assert stats["by_route"]["aistudio:generateContent"] == {"ok": 1, "reset": 1}

    asyncio.run(scenario())


# --------------------------------------------------------------------------- files & embedding


def test_service_account_file_is_real_and_private(tmp_path: Path) -> None:
    path = write_service_account_file(tmp_path / "sa.json", "http://127.0.0.1:1/token", "proj-x")
    info = json.loads(path.read_text())
    assert info["type"] == "service_account" and info["token_uri"] == "http://127.0.0.1:1/token"
    assert info["client_email"].endswith("@proj-x.iam.gserviceaccount.com")
    assert len(info["private_key_id"]) == 40
    key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
    assert key.key_size == 2048  # type: ignore[union-attr]
    assert path.stat().st_mode & 0o777 == 0o600


def test_the_entry_point_starts_the_emulator_and_the_core_points_a_copy_at_it() -> None:
    settings = Settings(emulator=emulator_test_settings(embedded=True))
    with embedded(settings.emulator, wanted=True) as stand_in:
        assert stand_in is not None
        patched = standin.apply(settings)
        assert patched is not settings
        assert patched.backends.aistudio.base_url == stand_in.url
        assert patched.backends.aistudio.api_key.get_secret_value() == "emulator-local-key"
        assert patched.backends.vertex.base_url == stand_in.url
        assert patched.backends.vertex.project == settings.emulator.project
        sa = patched.backends.vertex.credentials_file
        assert sa is not None
        assert json.loads(Path(sa).read_text())["token_uri"] == stand_in.url + "/token"
        assert httpx.get(stand_in.url + "/_emulator/health").status_code == 200
        plain = Settings(emulator=EmulatorSettings(embedded=False))
        assert standin.apply(plain) is plain  # a dev/prod config in the same process: Google
        url = stand_in.url
    assert settings.backends.aistudio.base_url == "https://generativelanguage.googleapis.com"
    assert settings.backends.vertex.credentials_file is None
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/_emulator/health", timeout=2)
    with pytest.raises(ConfigError, match=r"emulator\.embedded"):  # nobody started one
        standin.apply(settings)
