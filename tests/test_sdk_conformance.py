"""The official ``google-genai`` SDK, unmodified, against the emulator on both platforms.

If Google's own client can drive the emulator (build its URLs, authenticate, parse every
answer and error into its types), then so can any client that works against Google. AI Studio
uses an API key and ``HttpOptions(base_url=...)``; Vertex uses a real RSA service-account file
whose ``token_uri`` is the emulator's ``/token``, so google-auth signs a real JWT grant.

Speed: one emulator for the module at ``time_scale=0`` (no latency) without film grain, AI
Studio answers JPEG (fast to encode) and Vertex is asked for JPEG where the size matrix runs.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fixtures.emulator import EmulatorHandle
from google import genai
from google.genai import errors, types
from google.oauth2 import service_account
from PIL import Image

from bananaflow.emulator import EmulatorServer
from bananaflow.emulator.catalog import IMAGE_CATALOG, OTHER_CATALOG, ImageModel
from bananaflow.emulator.credentials import write_service_account_file

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
PRO = "gemini-3-pro-image"
FLASH31 = "gemini-3.1-flash-image"
LITE = "gemini-3.1-flash-lite-image"
# generate_images/edit_image warn that they are deprecated: calling them is the point here.
pytestmark = pytest.mark.filterwarnings("ignore:The (generate_images|edit_image) method")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def server(still_server: EmulatorServer) -> EmulatorServer:
    return still_server


@pytest.fixture
def emu(still_emu: EmulatorHandle) -> EmulatorHandle:
    return still_emu


@pytest.fixture(scope="module")
def sa_file(server: EmulatorServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_service_account_file(
        tmp_path_factory.mktemp("sa") / "service-account.json",
        server.url + "/token",
        server.settings.project,
    )


@pytest.fixture(scope="module")
def studio_client(server: EmulatorServer) -> Iterator[genai.Client]:
    client = genai.Client(
        api_key=server.settings.api_keys[0],
        http_options=types.HttpOptions(base_url=server.url),
    )
    yield client
    client.close()


@pytest.fixture(scope="module")
def vertex_client(server: EmulatorServer, sa_file: Path) -> Iterator[genai.Client]:
    creds = service_account.Credentials.from_service_account_file(str(sa_file), scopes=SCOPES)
    client = genai.Client(
        vertexai=True,
        project=server.settings.project,
        location="global",
        credentials=creds,
        http_options=types.HttpOptions(base_url=server.url),
    )
    yield client
    client.close()


@pytest.fixture(params=["aistudio", "vertex"])
def client(
    request: pytest.FixtureRequest, studio_client: genai.Client, vertex_client: genai.Client
) -> genai.Client:
    return studio_client if request.param == "aistudio" else vertex_client


def backend_of(client: genai.Client) -> str:
    return "vertex" if client.vertexai else "aistudio"


def final_image(response: types.GenerateContentResponse) -> tuple[Image.Image, types.Part]:
    """The answer image: the last non-thought inline image (how a client must read it)."""
    parts = response.candidates[0].content.parts  # type: ignore[index,union-attr]
    part = [p for p in parts if p.inline_data and not p.thought][-1]  # type: ignore[union-attr]
    return Image.open(io.BytesIO(part.inline_data.data)), part  # type: ignore[union-attr,arg-type]


def png(colour: tuple[int, int, int] = (10, 120, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 48), colour).save(buf, "PNG")
    return buf.getvalue()


def image_config(client: genai.Client, **kw: Any) -> types.GenerateContentConfig:
    """JPEG on Vertex too (its PNG default is slower to encode), images only."""
    if client.vertexai:
        kw.setdefault("output_mime_type", "image/jpeg")
    return types.GenerateContentConfig(
        response_modalities=["IMAGE"], image_config=types.ImageConfig(**kw)
    )


# --------------------------------------------------------------------------- generation matrix


def _size_cases() -> list[tuple[str, str]]:
    return [(m.id, s) for m in IMAGE_CATALOG for s in (m.sizes or ("1K",))]


def _ratio_cases() -> list[tuple[str, str]]:
    return [(m.id, r) for m in IMAGE_CATALOG for r in m.ratios_for("aistudio")]


def _expected(model: ImageModel, ratio: str, size: str) -> tuple[int, int]:
    return model.pixels(ratio, size)


def _spec(model: str) -> ImageModel:
    return next(m for m in IMAGE_CATALOG if m.id == model)


@pytest.mark.parametrize(("model", "size"), _size_cases())
def test_every_model_and_size_on_both_platforms(
    studio_client: genai.Client, vertex_client: genai.Client, model: str, size: str
) -> None:
    spec = _spec(model)
    for client in (studio_client, vertex_client):
        config = image_config(client, aspect_ratio="1:1", image_size=size)
        response = client.models.generate_content(
            model=model, contents=f"size check {size}", config=config
        )
        image, part = final_image(response)
        assert image.size == _expected(spec, "1:1", size)
        if spec.thinks:
            assert part.thought_signature
        usage = response.usage_metadata
        assert usage is not None and usage.candidates_token_count == spec.tokens(size)
        assert response.model_version == model
        if client.vertexai:
            assert usage.traffic_type == types.TrafficType.ON_DEMAND
            assert response.create_time is not None


@pytest.mark.parametrize(("model", "ratio"), _ratio_cases())
def test_every_model_and_ratio(studio_client: genai.Client, model: str, ratio: str) -> None:
    spec = _spec(model)
    size = "512" if "512" in spec.sizes else "1K"
    config = image_config(studio_client, aspect_ratio=ratio, image_size=size)
    response = studio_client.models.generate_content(
        model=model, contents=f"ratio {ratio}", config=config
    )
    assert final_image(response)[0].size == _expected(spec, ratio, size)


def test_sizes_and_ratios_a_model_lacks_raise_client_errors(studio_client: genai.Client) -> None:
    cases = [(PRO, "1:1", "512"), (LITE, "1:1", "2K"), (PRO, "1:8", "1K"), (LITE, "4:1", "1K")]
    for model, ratio, size in cases:
        with pytest.raises(errors.ClientError) as caught:
            studio_client.models.generate_content(
                model=model,
                contents="x",
                config=image_config(studio_client, aspect_ratio=ratio, image_size=size),
            )
        assert caught.value.code == 400 and caught.value.status == "INVALID_ARGUMENT"
        assert "is not supported for this model" in (caught.value.message or "")


def test_flash25_answers_png_on_aistudio(studio_client: genai.Client) -> None:
    response = studio_client.models.generate_content(
        model="gemini-2.5-flash-image", contents="a png please"
    )
    image, part = final_image(response)
    assert part.inline_data.mime_type == "image/png" and image.format == "PNG"  # type: ignore[union-attr]


def test_service_tier_is_sent_and_echoed(client: genai.Client) -> None:
    """``service_tier`` (SDK 3.6.1) goes top level; the tier comes back where each API puts it."""
    config = image_config(client, aspect_ratio="1:1")
    config.service_tier = types.ServiceTier.FLEX
    response = client.models.generate_content(model=PRO, contents="a flex fox", config=config)
    assert final_image(response)[0].size == _expected(_spec(PRO), "1:1", "1K")
    if client.vertexai:
        assert response.usage_metadata.traffic_type == types.TrafficType.ON_DEMAND_FLEX  # type: ignore[union-attr]
    else:
        headers = response.sdk_http_response.headers  # type: ignore[union-attr]
        assert headers is not None and headers["x-gemini-service-tier"] == "flex"


def test_pro_thought_image_parses_as_a_thought_part(client: genai.Client) -> None:
    response = client.models.generate_content(
        model=PRO,
        contents="a fox in the snow",
        config=types.GenerateContentConfig(
            thinking_config=types.ThinkingConfig(include_thoughts=True)
        ),
    )
    parts = response.candidates[0].content.parts  # type: ignore[index,union-attr]
    thought_images = [p for p in parts if p.thought and p.inline_data]  # type: ignore[union-attr]
    assert len(thought_images) == 1 and thought_images[0].thought_signature is None
    assert response.text == "Here is your image."  # the SDK leaves thought text out
    image, part = final_image(response)
    assert image.size == (1024, 1024) and part.thought_signature
    if client.vertexai:
        ratings = response.candidates[0].safety_ratings  # type: ignore[index]
        assert ratings and all(r.probability_score is not None for r in ratings)


def test_seed_reaches_the_emulator_and_is_reproducible(client: genai.Client) -> None:
    def generate(seed: int) -> bytes:
        config = image_config(client, aspect_ratio="1:1")
        config.seed = seed
        response = client.models.generate_content(model=FLASH31, contents="seeded", config=config)
        return final_image(response)[1].inline_data.data  # type: ignore[union-attr,return-value]

    assert generate(11) == generate(11) != generate(12)


def test_reference_images_arrive(client: genai.Client, emu: EmulatorHandle) -> None:
    refs = [
        types.Part.from_bytes(data=png(c), mime_type="image/png")
        for c in ((255, 0, 0), (0, 255, 0))
    ]
    response = client.models.generate_content(
        model=PRO, contents=[*refs, "blend these"], config=image_config(client)
    )
    final_image(response)
    details = response.usage_metadata.prompt_tokens_details  # type: ignore[union-attr]
    assert any(
        d.modality == types.MediaModality.IMAGE and d.token_count == 2 * 258 for d in details
    )  # type: ignore[union-attr]


# --------------------------------------------------------------------------- chats


def test_chat_round_trips_signatures(client: genai.Client, emu: EmulatorHandle) -> None:
    chat = client.chats.create(model=PRO, config=image_config(client))
    first = chat.send_message("a red apple on a table")
    second = chat.send_message("now make the apple blue")
    assert final_image(first)[0].size == final_image(second)[0].size == (1024, 1024)
    history = chat.get_history()
    assert [c.role for c in history] == ["user", "model", "user", "model"]
    sent = [p for p in history[1].parts if p.inline_data and not p.thought]  # type: ignore[union-attr]
    assert sent and all(p.thought_signature for p in sent)
    calls = [e for e in emu.control.requests() if e["operation"] == "generateContent"]
    assert [e["status"] for e in calls] == [200, 200]


def test_history_image_without_signature_is_a_400(client: genai.Client) -> None:
    history = [
        types.Content(role="user", parts=[types.Part.from_text(text="a red apple")]),
        types.Content(
            role="model", parts=[types.Part.from_bytes(data=png(), mime_type="image/png")]
        ),
    ]
    chat = client.chats.create(model=PRO, history=history, config=image_config(client))
    with pytest.raises(errors.ClientError) as caught:
        chat.send_message("make it blue")
    assert caught.value.code == 400
    assert caught.value.message == (
        "Image part is missing a thought_signature in content position 2, part position 1."
    )
    signed = types.Part(
        inline_data=types.Blob(data=png(), mime_type="image/png"),
        thought_signature=b"skip_thought_signature_validator",
    )
    history[1] = types.Content(role="model", parts=[signed])
    chat = client.chats.create(model=PRO, history=history, config=image_config(client))
    assert final_image(chat.send_message("make it blue"))[0].size == (1024, 1024)


# --------------------------------------------------------------------------- streaming


def test_stream_parses_with_the_sdk(client: genai.Client) -> None:
    chunks = list(
        client.models.generate_content_stream(
            model=FLASH31, contents="a streamed kite", config=image_config(client)
        )
    )
    assert len(chunks) == 1
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP  # type: ignore[index]
    assert final_image(chunks[-1])[0].size == (1024, 1024)


def test_sse_framing_is_crlf_crlf(emu: EmulatorHandle) -> None:
    r = httpx.post(
        emu.aistudio_url(FLASH31, "streamGenerateContent") + "?alt=sse",
        json={"contents": [{"role": "user", "parts": [{"text": "framing"}]}]},
        headers={"x-goog-api-key": emu.api_key},
        timeout=60,
    )
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.content.startswith(b"data: {") and r.content.endswith(b"}\r\n\r\n")
    assert r.content.count(b"\r\n\r\n") == 1


# --------------------------------------------------------------------------- model reads


def test_count_tokens_matches_what_generate_bills(client: genai.Client) -> None:
    contents = [types.Part.from_bytes(data=png(), mime_type="image/png"), "a cat in a hat"]
    counted = client.models.count_tokens(model=PRO, contents=contents)
    response = client.models.generate_content(
        model=PRO, contents=contents, config=image_config(client)
    )
    assert counted.total_tokens == response.usage_metadata.prompt_token_count  # type: ignore[union-attr]
    assert counted.total_tokens > 258


def test_models_get(client: genai.Client) -> None:
    for spec in IMAGE_CATALOG:
        model = client.models.get(model=spec.id)
        prefix = "publishers/google/models/" if client.vertexai else "models/"
        assert model.name == prefix + spec.id
        if not client.vertexai:
            assert model.display_name == spec.display_name
            assert model.input_token_limit == spec.input_token_limit
            assert "generateContent" in (model.supported_actions or [])
    with pytest.raises(errors.ClientError) as caught:
        client.models.get(model="gemini-9-ultra-image")
    assert caught.value.code == 404


def test_models_list_pages_through_the_catalogue(client: genai.Client) -> None:
    pager = client.models.list(config={"page_size": 2})
    assert len(pager.page) == 2
    names = [m.name for m in pager]  # iterating fetches the following pages
    backend = backend_of(client)
    ids = [m.id for m in IMAGE_CATALOG] + [m.id for m in OTHER_CATALOG if backend in m.backends]
    prefix = "publishers/google/models/" if client.vertexai else "models/"
    assert names == [prefix + i for i in ids]


# --------------------------------------------------------------------------- Imagen surfaces


@pytest.mark.parametrize(
    "model", ["imagen-4.0-generate-001", "imagen-4.0-fast-generate-001", "imagen-3.0-generate-002"]
)
def test_retired_imagen_generate_images_is_404(vertex_client: genai.Client, model: str) -> None:
    with pytest.raises(errors.ClientError) as caught:
        vertex_client.models.generate_images(model=model, prompt="a cat")
    assert caught.value.code == 404 and caught.value.status == "NOT_FOUND"


def test_retired_imagen_edit_image_is_404(vertex_client: genai.Client) -> None:
    ref = types.RawReferenceImage(
        reference_id=1, reference_image=types.Image(image_bytes=png(), mime_type="image/png")
    )
    with pytest.raises(errors.ClientError) as caught:
        vertex_client.models.edit_image(
            model="imagen-3.0-capability-001", prompt="make it blue", reference_images=[ref]
        )
    assert caught.value.code == 404


def test_upscale_image_still_works(vertex_client: genai.Client) -> None:
    response = vertex_client.models.upscale_image(
        model="imagen-4.0-upscale-preview",
        image=types.Image(image_bytes=png(), mime_type="image/png"),
        upscale_factor="x2",
    )
    data = response.generated_images[0].image.image_bytes  # type: ignore[index,union-attr]
    assert Image.open(io.BytesIO(data)).size == (96, 96)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- refusals & errors


def test_refusals_are_responses_not_errors(client: genai.Client) -> None:
    safety = client.models.generate_content(model=PRO, contents="something forbidden")
    assert safety.candidates[0].finish_reason == types.FinishReason.IMAGE_SAFETY  # type: ignore[index]
    blocked = client.models.generate_content(model=PRO, contents="a blocked-prompt")
    assert blocked.prompt_feedback.block_reason == types.BlockedReason.SAFETY  # type: ignore[union-attr]
    assert not blocked.candidates


def test_quota_errors(client: genai.Client, emu: EmulatorHandle) -> None:
    emu.control.force("quota", backend=backend_of(client))
    with pytest.raises(errors.ClientError) as caught:
        client.models.generate_content(model=PRO, contents="over quota")
    assert caught.value.code == 429 and caught.value.status == "RESOURCE_EXHAUSTED"
    details = caught.value.details["error"].get("details", [])
    types_seen = {d["@type"].rsplit(".", 1)[-1] for d in details}
    if client.vertexai:
        assert types_seen == set()  # Vertex's DSQ 429 is plain
    else:
        assert {"QuotaFailure", "RetryInfo"} <= types_seen


def test_auth_errors(emu: EmulatorHandle, sa_file: Path) -> None:
    bad = genai.Client(api_key="not-a-key", http_options=types.HttpOptions(base_url=emu.url))
    with pytest.raises(errors.ClientError) as caught:
        bad.models.generate_content(model=PRO, contents="x")
    assert caught.value.code == 400 and "API key not valid" in (caught.value.message or "")
    bad.close()

    def vertex_client() -> genai.Client:  # its own token: the module's client stays valid
        creds = service_account.Credentials.from_service_account_file(str(sa_file), scopes=SCOPES)
        return genai.Client(
            vertexai=True,
            project=emu.settings.project,
            location="global",
            credentials=creds,
            http_options=types.HttpOptions(base_url=emu.url),
        )

    expired = vertex_client()
    emu.control.force("token_expired")
    with pytest.raises(errors.ClientError) as caught:
        expired.models.generate_content(model=PRO, contents="x")
    assert caught.value.code == 401 and caught.value.status == "UNAUTHENTICATED"
    with pytest.raises(errors.ClientError):  # the token stays revoked; the SDK won't refresh
        expired.models.count_tokens(model=PRO, contents="x")
    expired.close()
    fresh = vertex_client()  # a new client fetches a new token from /token
    response = fresh.models.generate_content(
        model=PRO, contents="after refresh", config=image_config(fresh)
    )
    assert final_image(response)[0].size == (1024, 1024)
    fresh.close()
    assert emu.control.stats()["tokens_issued"] == 2
