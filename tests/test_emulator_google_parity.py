"""The emulator answers what an image pipeline asks Google the way Google answers it.

Real HTTP over loopback. Each test pins one difference that used to exist between the emulator
and the live services (model catalogue and reads, error envelopes, thought signatures, SSE
framing, unknown-field reports, output formats, thought images, safety ratings, service tiers,
seeds, retired Imagen ids, reference images). Rules and texts: ../shared/reference/.
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import httpx
import pytest
from fixtures.emulator import EmulatorHandle
from PIL import Image, ImageChops, ImageStat

from bananaflow.emulator import EmulatorServer
from bananaflow.emulator.catalog import IMAGE_CATALOG, OTHER_CATALOG
from bananaflow.generation import pixel_size

PRO, FLASH31, LITE, FLASH25 = (
    "gemini-3-pro-image",
    "gemini-3.1-flash-image",
    "gemini-3.1-flash-lite-image",
    "gemini-2.5-flash-image",
)
MISSING_SIGNATURE = (
    "Image part is missing a thought_signature in content position {}, part position {}."
)


# --------------------------------------------------------------------------- fixtures & helpers


@pytest.fixture
def emu(still_emu: EmulatorHandle) -> EmulatorHandle:
    return still_emu


@pytest.fixture
def token(emu: EmulatorHandle) -> str:
    return emu.bearer_token()


def body(
    prompt: str = "a red apple",
    *,
    ratio: str | None = None,
    size: str | None = None,
    contents: list[dict[str, Any]] | None = None,
    **generation: Any,
) -> dict[str, Any]:
    image_config = {k: v for k, v in (("aspectRatio", ratio), ("imageSize", size)) if v}
    config: dict[str, Any] = dict(generation)
    if image_config:
        config["imageConfig"] = image_config
    out: dict[str, Any] = {"contents": contents or [{"role": "user", "parts": [{"text": prompt}]}]}
    if config:
        out["generationConfig"] = config
    return out


def studio(
    emu: EmulatorHandle,
    payload: Any,
    model: str = PRO,
    op: str = "generateContent",
    **kw: Any,
) -> httpx.Response:
    headers = {"x-goog-api-key": emu.api_key, **kw.pop("headers", {})}
    url = emu.aistudio_url(model, op) + kw.pop("query", "")
    return httpx.post(url, json=payload, headers=headers, timeout=60, **kw)


def vertex(
    emu: EmulatorHandle,
    payload: Any,
    token: str,
    model: str = PRO,
    op: str = "generateContent",
    *,
    location: str = "global",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    url = (
        f"{emu.url}/v1/projects/{emu.settings.project}/locations/{location}"
        f"/publishers/google/models/{model}:{op}"
    )
    h = {"authorization": f"Bearer {token}", **(headers or {})}
    return httpx.post(url, json=payload, headers=h, timeout=60)


def parts_of(r: httpx.Response) -> list[dict[str, Any]]:
    assert r.status_code == 200, r.text
    return r.json()["candidates"][0]["content"]["parts"]


def final_image(r: httpx.Response) -> tuple[Image.Image, str, bytes]:
    part = [p for p in parts_of(r) if "inlineData" in p and not p.get("thought")][-1]
    raw = base64.b64decode(part["inlineData"]["data"])
    return Image.open(io.BytesIO(raw)), part["inlineData"]["mimeType"], raw


def error_of(r: httpx.Response) -> dict[str, Any]:
    assert r.headers["content-type"].startswith("application/json"), r.headers
    return r.json()["error"]


def png(colour: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --------------------------------------------------------------------------- routes


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nothing/here", 404),
        ("POST", "/v1beta/models/gemini-3-pro-image:frobnicate", 404),
        ("POST", "/v2/models/gemini-3-pro-image:generateContent", 404),
        ("GET", "/v1beta/models/gemini-3-pro-image:generateContent", 405),
        ("PUT", "/v1/projects/p/locations/global/publishers/google/models/m:predict", 405),
        ("POST", "/v1beta/models", 405),
        ("DELETE", "/v1beta/models/gemini-3-pro-image", 405),
        ("GET", "/token", 405),
        ("PUT", "/_emulator/stats", 405),
    ],
)
def test_unknown_routes_and_wrong_methods_answer_a_json_status(
    emu: EmulatorHandle, method: str, path: str, status: int
) -> None:
    r = httpx.request(method, emu.url + path, headers={"x-goog-api-key": emu.api_key})
    assert r.status_code == status
    err = error_of(r)  # JSON, never Starlette's text/plain "Not Found"/"Method Not Allowed"
    assert err["code"] == status and err["message"]
    assert err["status"] == ("NOT_FOUND" if status == 404 else "UNIMPLEMENTED")
    if status == 405:
        assert r.headers["allow"] in ("GET", "POST")


# --------------------------------------------------------------------------- catalogue reads


def _walk_pages(get: Any, key: str, page_size: int) -> list[list[dict[str, Any]]]:
    pages, token = [], ""
    for _ in range(20):
        query = f"?pageSize={page_size}" + (f"&pageToken={token}" if token else "")
        r = get(query)
        assert r.status_code == 200, r.text
        data = r.json()
        pages.append(data[key])
        token = data.get("nextPageToken", "")
        if not token:
            return pages
    raise AssertionError("pagination never ended")


def test_aistudio_models_get_and_paged_list(emu: EmulatorHandle) -> None:
    headers = {"x-goog-api-key": emu.api_key}
    one = httpx.get(f"{emu.url}/v1beta/models/{FLASH31}", headers=headers).json()
    assert one["name"] == f"models/{FLASH31}" and one["displayName"] == "Nano Banana 2"
    assert one["supportedGenerationMethods"] == [
        "generateContent",
        "countTokens",
        "batchGenerateContent",
    ]
    assert one["inputTokenLimit"] > 0 and one["outputTokenLimit"] == 32_768
    alias = httpx.get(f"{emu.url}/v1/models/{PRO}-preview", headers=headers).json()
    assert alias["name"] == f"models/{PRO}-preview"  # retired spelling still answers get

    pages = _walk_pages(
        lambda q: httpx.get(f"{emu.url}/v1beta/models{q}", headers=headers), "models", 2
    )
    assert all(len(p) <= 2 for p in pages) and len(pages) >= 3
    names = [m["name"] for p in pages for m in p]
    expected = [m.id for m in IMAGE_CATALOG] + [
        m.id for m in OTHER_CATALOG if "aistudio" in m.backends
    ]
    assert names == [f"models/{m}" for m in expected]
    assert f"models/{LITE}" in names and "models/imagen-4.0-upscale-preview" not in names

    bad = httpx.get(f"{emu.url}/v1beta/models?pageToken=forged", headers=headers)
    assert bad.status_code == 400 and error_of(bad)["status"] == "INVALID_ARGUMENT"
    assert httpx.get(f"{emu.url}/v1beta/models").status_code == 403  # reads need a key too
    missing = httpx.get(f"{emu.url}/v1beta/models/gemini-9-image", headers=headers)
    assert missing.status_code == 404 and error_of(missing)["status"] == "NOT_FOUND"


@pytest.mark.parametrize("scoped", [False, True])
def test_vertex_models_get_and_paged_list(emu: EmulatorHandle, token: str, scoped: bool) -> None:
    """The SDK reads ``/v1beta1/publishers/google/models``; the project-scoped form works too."""
    prefix = (
        f"{emu.url}/v1/projects/{emu.settings.project}/locations/global"
        if scoped
        else f"{emu.url}/v1beta1"
    )
    headers = {"authorization": f"Bearer {token}"}
    one = httpx.get(f"{prefix}/publishers/google/models/{PRO}", headers=headers).json()
    assert one["name"] == f"publishers/google/models/{PRO}"
    assert one["versionId"] and one["launchStage"] == "GA"
    pages = _walk_pages(
        lambda q: httpx.get(f"{prefix}/publishers/google/models{q}", headers=headers),
        "publisherModels",
        3,
    )
    names = [m["name"] for p in pages for m in p]
    assert f"publishers/google/models/{LITE}" in names
    assert "publishers/google/models/imagen-4.0-upscale-preview" in names  # Vertex only
    assert httpx.get(f"{prefix}/publishers/google/models").status_code == 401


@pytest.mark.parametrize("backend", ["aistudio", "vertex"])
def test_count_tokens_equals_the_prompt_tokens_generate_bills(
    emu: EmulatorHandle, token: str, backend: str
) -> None:
    contents = [
        {
            "role": "user",
            "parts": [
                {"inlineData": {"mimeType": "image/png", "data": b64(png((9, 9, 9)))}},
                {"text": "put this mug on a beach at golden hour"},
            ],
        }
    ]
    count_body = {"contents": contents}
    if backend == "aistudio":
        counted = studio(emu, count_body, op="countTokens")
        billed = studio(emu, body(contents=contents))
    else:
        counted = vertex(emu, count_body, token, op="countTokens")
        billed = vertex(emu, body(contents=contents), token)
    assert counted.status_code == 200, counted.text
    usage = billed.json()["usageMetadata"]
    assert counted.json()["totalTokens"] == usage["promptTokenCount"] > 258
    assert counted.json()["promptTokensDetails"] == usage["promptTokensDetails"]
    assert ("totalBillableCharacters" in counted.json()) == (backend == "vertex")
    stats = emu.control.stats()
    assert stats["generation_requests"][backend] == 1  # counting is not generating


def test_count_tokens_accepts_a_generate_content_request_on_aistudio(emu: EmulatorHandle) -> None:
    inner = {"model": f"models/{PRO}", **body("a quiet harbour at dawn")}
    wrapped = studio(emu, {"generateContentRequest": inner}, op="countTokens")
    plain = studio(emu, {"contents": inner["contents"]}, op="countTokens")
    assert wrapped.json()["totalTokens"] == plain.json()["totalTokens"] > 0


# --------------------------------------------------------------------------- catalogue rules


@pytest.mark.parametrize(
    ("model", "size", "expected"),
    [
        (FLASH31, "512", (512, 512)),
        (FLASH31, "2K", (2048, 2048)),
        (LITE, "1K", (1024, 1024)),
        (FLASH25, "4K", (1024, 1024)),  # 2.5 ignores imageSize
    ],
)
def test_sizes_each_model_has(emu: EmulatorHandle, model: str, size: str, expected: Any) -> None:
    r = studio(emu, body(f"size {size}", size=size), model)
    assert final_image(r)[0].size == expected


@pytest.mark.parametrize(
    ("model", "size"), [(PRO, "512"), (LITE, "2K"), (LITE, "4K"), (LITE, "512")]
)
def test_sizes_a_model_lacks_are_400(emu: EmulatorHandle, model: str, size: str) -> None:
    r = studio(emu, body(size=size), model)
    assert r.status_code == 400
    assert r.json() == {
        "error": {
            "code": 400,
            "message": f"Image size {size} is not supported for this model",
            "status": "INVALID_ARGUMENT",
        }
    }


def test_extreme_ratios_follow_each_model_and_backend(emu: EmulatorHandle, token: str) -> None:
    for model in (PRO, FLASH25, LITE):
        refused = studio(emu, body(ratio="8:1"), model)
        assert error_of(refused)["message"] == "Aspect ratio 8:1 is not supported for this model"
    w, h = final_image(studio(emu, body(ratio="8:1", size="512"), FLASH31))[0].size
    assert w == 8 * h
    # The Lite Vertex card lists all 14 ratios, the Gemini API page only the standard 10.
    w, h = final_image(vertex(emu, body(ratio="1:4"), token, LITE))[0].size
    assert h == 4 * w


def test_global_only_models_are_not_found_in_a_region(emu: EmulatorHandle, token: str) -> None:
    for model in (PRO, LITE):
        r = vertex(emu, body(), token, model, location="us-central1")
        assert r.status_code == 404 and error_of(r)["status"] == "NOT_FOUND"
        assert "locations/us-central1/publishers/google/models/" in error_of(r)["message"]
    assert vertex(emu, body(), token, FLASH31, location="us-central1").status_code == 200


# --------------------------------------------------------------------------- thought signatures


def _history(model_parts: list[dict[str, Any]], *, before: int = 0) -> list[dict[str, Any]]:
    """``before`` extra user/model text turns, then a user turn, the model turn, a new ask."""
    turns: list[dict[str, Any]] = []
    for i in range(before):
        role = "user" if i % 2 == 0 else "model"
        turns.append({"role": role, "parts": [{"text": f"earlier turn {i}"}]})
    turns.append({"role": "user", "parts": [{"text": "a red apple"}]})
    turns.append({"role": "model", "parts": model_parts})
    turns.append({"role": "user", "parts": [{"text": "make it blue"}]})
    return turns


def test_history_image_without_signature_is_400_with_one_based_positions(
    emu: EmulatorHandle, token: str
) -> None:
    image = {"inlineData": {"mimeType": "image/png", "data": b64(png((200, 0, 0)))}}
    r = studio(emu, body(contents=_history([image])))
    assert r.status_code == 400
    assert r.json() == {
        "error": {
            "code": 400,
            "message": MISSING_SIGNATURE.format(2, 1),
            "status": "INVALID_ARGUMENT",
        }
    }
    later = _history([{"text": "Here it is.", "thoughtSignature": "c2ln"}, image], before=2)
    v = vertex(emu, body(contents=later), token, FLASH31)
    assert error_of(v)["message"] == MISSING_SIGNATURE.format(4, 2)
    # Gemini 2.5 does not validate signatures; a user turn's image never needs one.
    assert studio(emu, body(contents=_history([image])), FLASH25).status_code == 200
    user_image = [{"role": "user", "parts": [image, {"text": "edit this"}]}]
    assert studio(emu, body(contents=user_image)).status_code == 200


@pytest.mark.parametrize(
    "signature",
    [
        "skip_thought_signature_validator",
        "context_engineering_is_the_way_to_go",
        b64(b"skip_thought_signature_validator"),  # what the SDK sends for the bytes value
    ],
)
def test_documented_dummy_signatures_are_accepted(emu: EmulatorHandle, signature: str) -> None:
    image = {
        "inlineData": {"mimeType": "image/png", "data": b64(png((0, 0, 200)))},
        "thoughtSignature": signature,
    }
    assert studio(emu, body(contents=_history([image]))).status_code == 200


def test_a_model_turn_sent_back_as_received_is_accepted(emu: EmulatorHandle) -> None:
    first = studio(emu, body("a lighthouse"))
    turn = first.json()["candidates"][0]["content"]
    contents = [
        {"role": "user", "parts": [{"text": "a lighthouse"}]},
        turn,  # thought image, signed text, signed image: exactly as received
        {"role": "user", "parts": [{"text": "now at night"}]},
    ]
    second = studio(emu, body(contents=contents))
    assert second.status_code == 200
    prompt = second.json()["usageMetadata"]["promptTokensDetails"]
    assert {"modality": "IMAGE", "tokenCount": 258} in prompt  # the final image, not the draft


# --------------------------------------------------------------------------- unknown fields


def test_several_unknown_fields_are_each_reported(emu: EmulatorHandle) -> None:
    payload = body(ratio="1:1")
    payload.update(negativePrompt="dogs", styleHint="noir")
    payload["generationConfig"]["colour"] = "red"
    payload["generationConfig"]["imageConfig"]["personGeneration"] = "ALLOW_ADULT"
    payload["contents"][0]["parts"][0]["emphasis"] = 2
    r = studio(emu, payload)
    assert r.status_code == 400
    err = error_of(r)
    expected = [  # in the body's order, as Google's parser meets them
        ("emphasis", "contents[0].parts[0]"),
        ("personGeneration", "generation_config.image_config"),
        ("colour", "generation_config"),
        ("negativePrompt", None),
        ("styleHint", None),
    ]
    lines = err["message"].split("\n")
    (bad_request,) = err["details"]
    violations = bad_request["fieldViolations"]
    assert bad_request["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert len(lines) == len(violations) == len(expected)
    for line, violation, (name, where) in zip(lines, violations, expected, strict=True):
        at = f" at '{where}'" if where else ""
        text = f'Invalid JSON payload received. Unknown name "{name}"{at}: Cannot find field.'
        assert line == text and violation["description"] == text
        if where is None:
            assert "field" not in violation  # not "field": ""
        else:
            assert violation["field"] == where


# --------------------------------------------------------------------------- answers


def test_output_formats_per_model_and_platform(emu: EmulatorHandle, token: str) -> None:
    image, mime, raw = final_image(studio(emu, body(), FLASH25))
    assert mime == "image/png" and image.format == "PNG" and raw.startswith(b"\x89PNG")
    for model in (PRO, FLASH31, LITE):
        image, mime, _ = final_image(studio(emu, body(), model))
        assert mime == "image/jpeg" and image.format == "JPEG"
    image, mime, _ = final_image(vertex(emu, body(), token, FLASH25))
    assert mime == "image/png" and image.format == "PNG"


def test_pro_sends_an_interim_thought_image_before_the_final_one(emu: EmulatorHandle) -> None:
    r = studio(emu, body(ratio="16:9", size="2K"))
    parts = parts_of(r)
    thoughts = [p for p in parts if p.get("thought")]
    assert len(thoughts) == 1 and "inlineData" in thoughts[0]
    assert "thoughtSignature" not in thoughts[0]
    assert parts.index(thoughts[0]) < parts.index(
        next(p for p in parts if "inlineData" in p and not p.get("thought"))
    )
    draft = Image.open(io.BytesIO(base64.b64decode(thoughts[0]["inlineData"]["data"])))
    final, _, _ = final_image(r)
    assert final.size == pixel_size("16:9", "2K") and draft.size == (688, 384)
    usage = r.json()["usageMetadata"]
    assert usage["candidatesTokenCount"] == 1120  # interim images are not billed
    for model in (FLASH31, LITE, FLASH25):
        assert not any(p.get("thought") for p in parts_of(studio(emu, body(), model)))


def test_vertex_candidates_carry_safety_ratings(emu: EmulatorHandle, token: str) -> None:
    cand = vertex(emu, body(), token).json()["candidates"][0]
    ratings = cand["safetyRatings"]
    assert {r["category"] for r in ratings} == {
        "HARM_CATEGORY_HATE_SPEECH",
        "HARM_CATEGORY_DANGEROUS_CONTENT",
        "HARM_CATEGORY_HARASSMENT",
        "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    }
    for rating in ratings:
        assert rating["probability"] == "NEGLIGIBLE"
        assert rating["severity"] == "HARM_SEVERITY_NEGLIGIBLE"
        assert 0 <= rating["probabilityScore"] <= 1 and 0 <= rating["severityScore"] <= 1
    refused = vertex(emu, body("something forbidden"), token).json()["candidates"][0]
    assert refused["finishReason"] == "IMAGE_SAFETY"
    assert any(r.get("blocked") for r in refused["safetyRatings"])
    assert "safetyRatings" not in studio(emu, body()).json()["candidates"][0]


@pytest.mark.parametrize(
    ("model", "tier", "header"),
    [
        (PRO, None, "standard"),
        (PRO, "flex", "flex"),
        (PRO, "PRIORITY", "priority"),
        (PRO, "standard", "standard"),
        (LITE, "flex", "standard"),  # Lite has no Flex/Priority: served as standard
    ],
)
def test_aistudio_service_tier_is_echoed_in_header_and_usage(
    emu: EmulatorHandle, model: str, tier: str | None, header: str
) -> None:
    payload = body()
    if tier is not None:
        payload["serviceTier"] = tier
    r = studio(emu, payload, model)
    assert r.status_code == 200
    assert r.headers["x-gemini-service-tier"] == header
    assert r.json()["usageMetadata"]["serviceTier"] == header
    assert "trafficType" not in r.json()["usageMetadata"]


def test_unknown_service_tier_is_400(emu: EmulatorHandle) -> None:
    r = studio(emu, {**body(), "serviceTier": "gold"})
    assert r.status_code == 400 and "'service_tier'" in error_of(r)["message"]


@pytest.mark.parametrize(
    ("headers", "tier", "traffic"),
    [
        ({}, None, "ON_DEMAND"),
        ({"X-Vertex-AI-LLM-Request-Type": "shared"}, None, "ON_DEMAND"),
        ({"X-Vertex-AI-LLM-Shared-Request-Type": "priority"}, None, "ON_DEMAND_PRIORITY"),
        ({"X-Vertex-AI-LLM-Shared-Request-Type": "flex"}, None, "ON_DEMAND_FLEX"),
        ({}, "flex", "ON_DEMAND_FLEX"),
    ],
)
def test_vertex_traffic_type_follows_the_request_type_headers(
    emu: EmulatorHandle,
    token: str,
    headers: dict[str, str],
    tier: str | None,
    traffic: str,
) -> None:
    payload = body() if tier is None else {**body(), "serviceTier": tier}
    r = vertex(emu, payload, token, headers=headers)
    usage = r.json()["usageMetadata"]
    assert usage["trafficType"] == traffic and "serviceTier" not in usage
    assert "x-gemini-service-tier" not in r.headers


def test_vertex_dedicated_without_provisioned_throughput_is_429(
    emu: EmulatorHandle, token: str
) -> None:
    r = vertex(emu, body(), token, headers={"X-Vertex-AI-LLM-Request-Type": "dedicated"})
    assert r.status_code == 429
    assert r.json() == {
        "error": {
            "code": 429,
            "message": "Too many requests. Exceeded the Provisioned Throughput.",
            "status": "RESOURCE_EXHAUSTED",
        }
    }


# --------------------------------------------------------------------------- seeds


def _mean_difference(a: Image.Image, b: Image.Image) -> float:
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    return sum(ImageStat.Stat(diff).mean) / 3


def test_seed_makes_the_image_reproducible_and_each_seed_distinct(emu: EmulatorHandle) -> None:
    def raw(e: EmulatorHandle, seed: Any, prompt: str = "a seeded lighthouse") -> bytes:
        return final_image(studio(e, body(prompt, ratio="3:2", seed=seed), FLASH25))[2]

    first = raw(emu, 7)
    emu.control.reset()
    assert raw(emu, 7) == first
    assert raw(emu, "7") == first  # int32 as a JSON string, as proto3 JSON allows
    other = EmulatorServer(emu.settings).start()
    try:
        fresh = EmulatorHandle.of(other)
        assert raw(fresh, 7) == first  # same bytes in another process-wide state
    finally:
        other.stop()
    a = Image.open(io.BytesIO(first))
    b = Image.open(io.BytesIO(raw(emu, 8)))
    assert _mean_difference(a, b) > 25  # a different background, not just other noise
    unseeded = raw(emu, None)
    assert unseeded == raw(emu, None) and unseeded != first
    assert raw(emu, 7, "another prompt") != first
    log = [e for e in emu.control.requests() if e.get("seed") is not None]
    assert {e["seed"] for e in log} == {7, 8}


def test_seed_must_be_an_int32(emu: EmulatorHandle) -> None:
    r = studio(emu, body(seed="seven"))
    assert r.status_code == 400
    assert error_of(r)["message"].startswith("Invalid value at 'generation_config.seed'")


# --------------------------------------------------------------------------- retired Imagen


IMAGEN_BODY = {"instances": [{"prompt": "a cat"}], "parameters": {"sampleCount": 1}}


@pytest.mark.parametrize(
    "model",
    [
        "imagen-3.0-generate-002",
        "imagen-3.0-fast-generate-001",
        "imagen-3.0-capability-001",
        "imagen-4.0-generate-001",
        "imagen-4.0-fast-generate-001",
        "imagen-4.0-ultra-generate-001",
        "imagegeneration@006",
    ],
)
def test_retired_imagen_ids_are_not_found(emu: EmulatorHandle, token: str, model: str) -> None:
    v = vertex(emu, IMAGEN_BODY, token, model, "predict")
    assert v.status_code == 404 and error_of(v)["status"] == "NOT_FOUND"
    assert f"publishers/google/models/{model}`" in error_of(v)["message"]
    s = studio(emu, IMAGEN_BODY, model, "predict")
    assert s.status_code == 404 and error_of(s)["message"].startswith(f"models/{model} is not")
    got = httpx.get(
        f"{emu.url}/v1beta1/publishers/google/models/{model}",
        headers={"authorization": f"Bearer {token}"},
    )
    assert got.status_code == 404


def test_the_upscaler_is_still_served(emu: EmulatorHandle, token: str) -> None:
    payload = {
        "instances": [{"prompt": "", "image": {"bytesBase64Encoded": b64(png((1, 2, 3)))}}],
        "parameters": {
            "mode": "upscale",
            "sampleCount": 1,
            "upscaleConfig": {"upscaleFactor": "x2"},
        },
    }
    r = vertex(emu, payload, token, "imagen-4.0-upscale-preview", "predict")
    assert r.status_code == 200 and r.json()["predictions"][0]["mimeType"] == "image/png"


# --------------------------------------------------------------------------- references


def test_reference_images_are_drawn_as_a_thumbnail_strip(emu: EmulatorHandle, token: str) -> None:
    colours = [(230, 20, 20), (20, 200, 40), (30, 60, 230)]
    parts: list[dict[str, Any]] = [
        {"inlineData": {"mimeType": "image/png", "data": b64(png(c))}} for c in colours
    ]
    parts.append({"text": "combine these three"})
    r = vertex(emu, body(contents=[{"role": "user", "parts": parts}]), token)
    image, mime, _ = final_image(r)
    assert mime == "image/png" and image.size == (1024, 1024)
    margin, box = 1024 // 48, 1024 // 10  # the strip's geometry at 1K (imagegen._draw_badges)
    y = 1024 - margin - box // 2
    for i, colour in enumerate(colours):
        x = margin + i * (box + margin) + box // 2
        assert image.getpixel((x, y)) == colour
    r0 = vertex(emu, body("combine these three"), token)
    plain, _, _ = final_image(r0)
    assert all(
        plain.getpixel((margin + i * (box + margin) + box // 2, y)) != c
        for i, c in enumerate(colours)
    )
    usage = r.json()["usageMetadata"]
    assert {"modality": "IMAGE", "tokenCount": 3 * 258} in usage["promptTokensDetails"]


def test_request_log_is_json_serialisable(emu: EmulatorHandle) -> None:
    studio(emu, body(seed=3))
    httpx.get(f"{emu.url}/v1beta/models", headers={"x-goog-api-key": emu.api_key})
    log = emu.control.requests()
    json.dumps(log)
    assert [e["operation"] for e in log] == ["generateContent", "list"]
    assert emu.control.stats()["by_route"]["aistudio:list"] == {"ok": 1}
