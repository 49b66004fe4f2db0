"""Request bodies and response parsing shared by the AI Studio and Vertex clients.

Both platforms speak the same ``generateContent`` JSON (reference §1.2, §2.3), so one builder and
one parser serve both; only the Vertex-only ``imageConfig`` fields differ. Everything here is
pure (no I/O), so it can run in a worker thread for multi-megabyte bodies.

Parsing rules and why:

* every part is scanned, because a text part often comes before the image (§1.6);
* ``thought: true`` parts are skipped: they are interim images or reasoning, not the answer;
* the *last* non-thought image wins, matching the thought-signature rules (the final image is
  the one with the signature);
* the type and size come from the bytes (:mod:`bananaflow.imagetype`, headers only), never from
  ``inlineData.mimeType`` (it is sometimes wrong); the declared type is kept next to it for the
  audit trail;
* an image cut short, or of a size the request cannot have produced, is :class:`BadImage`
  (retryable): storing it would record a broken master as paid and good;
* every string taken from the answer (refusal texts, messages, the declared type) passes through
  :func:`bananaflow.redact.redact` with the caller's secrets before it lands in an error or a
  record, because a refusal can quote back whatever the request carried;
* refusals arrive as HTTP 200 (§1.7) and become :class:`Refused`, which is never retried.
  A ``STOP`` with text but no image is also a refusal (``reason="NO_IMAGE"``): that is how the
  model declines when text output is allowed, and retrying the same prompt gets the same answer.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from typing import Any

from bananaflow import imagetype
from bananaflow.backends.status import error_from_payload
from bananaflow.errors import BadImage, MalformedResponse, Refused
from bananaflow.generation import (
    EditTurn,
    GeneratedImage,
    ImageRequest,
    ReferenceImage,
    UpscaledImage,
    Usage,
    size_problem,
)
from bananaflow.redact import redact

Secrets = Sequence[str | None]

# finishReason values that mean "the model declined to produce an image" (§1.7). Different
# models give different reasons for the same forbidden prompt, so they are one class.
REFUSAL_FINISH_REASONS: frozenset[str] = frozenset(
    {
        "NO_IMAGE",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
        "IMAGE_OTHER",
        "SAFETY",
        "PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "RECITATION",
    }
)

VALID_ROLES = ("user", "model")

# Service tiers (batch-and-model-tiers.md §5). AI Studio: a top-level body field (where the SDK
# puts ``service_tier``), answered by a header and ``usageMetadata.serviceTier``. Vertex: the
# request-type headers (``shared`` skips Provisioned Throughput), answered by
# ``usageMetadata.trafficType``. Online sends nothing: the platform's standard tier.
SERVICE_TIER_HEADER = "x-gemini-service-tier"
VERTEX_REQUEST_TYPE_HEADER = "X-Vertex-AI-LLM-Request-Type"
VERTEX_SHARED_REQUEST_TYPE_HEADER = "X-Vertex-AI-LLM-Shared-Request-Type"

REWRITE_SYSTEM_INSTRUCTION = (
    "You rewrite prompts for an image-generation model. Turn the user's prompt into one richer, "
    "more specific image prompt: subject, setting, composition, lighting, colour, style and mood. "
    "Keep every element, name and constraint the user asked for and add nothing that contradicts "
    "them. Answer with the rewritten prompt only: no preamble, no quotes, no list."
)


# --------------------------------------------------------------------------- image bytes


def _checked_image(
    data: bytes, *, what: str, declared: Any, backend: str, secrets: Secrets = ()
) -> tuple[str, int, int]:
    """(real type, width, height) of an image from upstream, or :class:`BadImage`.

    Headers and trailer only: this runs for every answer, several a second.
    """
    mime = imagetype.sniff_mime(data)
    if mime is None:
        shown = redact(str(declared), secrets)
        raise BadImage(
            f"{what} bytes are not PNG/JPEG/WebP/GIF/HEIF/AVIF (declared {shown}, "
            f"{len(data)} bytes)",
            backend=backend,
        )
    size = imagetype.image_size(data, mime)
    if size is None:
        raise BadImage(f"cannot read the {mime} header of the {what}", backend=backend)
    if not imagetype.is_complete(data, mime):
        raise BadImage(f"the {what} ({mime}, {len(data)} bytes) is cut short", backend=backend)
    return mime, size[0], size[1]


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: Any, *, what: str, backend: str) -> bytes:
    """Strict base64: silently skipping junk would hand corrupt bytes to the rest of the chain.

    Proto3 JSON accepts URL-safe and unpadded forms, so those are accepted too.
    """
    if not isinstance(text, str) or not text:
        raise MalformedResponse(f"{what} has no base64 data", backend=backend)
    candidate = text
    if "-" in candidate or "_" in candidate:
        candidate = candidate.translate(str.maketrans("-_", "+/"))
    candidate += "=" * (-len(candidate) % 4)
    try:
        return base64.b64decode(candidate, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedResponse(f"{what} is not valid base64", backend=backend) from None


# --------------------------------------------------------------------------- requests


def model_id(model: str) -> str:
    return model.removeprefix("models/")


_MODEL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")


def is_valid_model_id(model: str) -> bool:
    """Model ids go into a URL path; anything else would reach another route."""
    return bool(_MODEL_ID_RE.match(model_id(model)))


def user_turn(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Every turn carries a role: optional on AI Studio, required on Vertex (§2.3)."""
    return {"role": "user", "parts": parts}


def model_turn(turn: EditTurn) -> dict[str, Any]:
    """An earlier answer sent back: its words and image with their signatures as received,
    without which Gemini 3 answers 400 "Image part is missing a thought_signature" (§1.6)."""
    parts: list[dict[str, Any]] = []
    answer = turn.answer
    if answer.text:
        text: dict[str, Any] = {"text": answer.text}
        if answer.text_signature:
            text["thoughtSignature"] = answer.text_signature
        parts.append(text)
    image: dict[str, Any] = {
        "inlineData": {"mimeType": turn.image.mime_type, "data": b64encode(turn.image.data)}
    }
    if answer.image_signature:
        image["thoughtSignature"] = answer.image_signature
    parts.append(image)
    return {"role": "model", "parts": parts}


def reference_part(ref: ReferenceImage) -> dict[str, Any]:
    """Inline bytes, or a file the backend reads itself: ``fileData`` in camelCase (Vertex is
    reported to drop a snake_case ``file_data`` part, google-image-apis.md §1.2)."""
    if ref.file_uri is not None:
        return {"fileData": {"mimeType": ref.mime_type, "fileUri": ref.file_uri}}
    return {"inlineData": {"mimeType": ref.mime_type, "data": b64encode(ref.data)}}


def _contents(request: ImageRequest) -> list[dict[str, Any]]:
    """The conversation: the reference images open the first user turn, each earlier answer
    follows its instruction, and the newest instruction ends it (one turn without history)."""
    references = [reference_part(ref) for ref in request.reference_images]
    contents: list[dict[str, Any]] = []
    for turn in request.history:
        contents.append(user_turn([*references, {"text": turn.instruction}]))
        contents.append(model_turn(turn))
        references = []
    contents.append(user_turn([*references, {"text": request.prompt}]))
    return contents


def build_generate_body(
    request: ImageRequest,
    *,
    vertex: bool,
    response_modalities: tuple[str, ...] = ("TEXT", "IMAGE"),
) -> dict[str, Any]:
    """The ``generateContent`` body for one image.

    TEXT stays in the modalities by default: when the model declines, its sentence explaining
    why is the only useful part of a refusal. ``candidateCount`` is omitted (the Pro model
    returns one image and answers 400 to anything else). Reference images go before the text.
    """
    image_config: dict[str, Any] = {
        "aspectRatio": request.aspect_ratio,
        "imageSize": request.image_size,
    }
    if vertex:
        if request.person_generation is not None:
            image_config["personGeneration"] = request.person_generation
        output: dict[str, Any] = {}
        if request.output_mime_type is not None:
            output["mimeType"] = request.output_mime_type
        if request.output_quality is not None:
            output["compressionQuality"] = request.output_quality
        if output:
            image_config["imageOutputOptions"] = output
    generation_config: dict[str, Any] = {
        "responseModalities": list(response_modalities),
        "imageConfig": image_config,
    }
    if request.seed is not None:  # a variant is a seed: reproducible, and distinct per variant
        generation_config["seed"] = request.seed
    body: dict[str, Any] = {"contents": _contents(request), "generationConfig": generation_config}
    if not vertex and request.delivery != "online":
        body["serviceTier"] = request.delivery  # top level, lower case: "flex" | "priority"
    return body


def vertex_tier_headers(delivery: str, pool: str | None = None) -> dict[str, str]:
    """Vertex's pool for a call (§5.2). Flex and priority are PayGo kinds (``shared`` plus
    the kind); ``pool`` is the Provisioned Throughput choice: ``dedicated`` is PT only, whatever
    the delivery, ``shared`` skips PT, and ``spillover`` (or None) sends no header for online."""
    if pool == "dedicated":
        return {VERTEX_REQUEST_TYPE_HEADER: "dedicated"}
    if delivery == "online":
        return {VERTEX_REQUEST_TYPE_HEADER: "shared"} if pool == "shared" else {}
    return {VERTEX_REQUEST_TYPE_HEADER: "shared", VERTEX_SHARED_REQUEST_TYPE_HEADER: delivery}


def build_text_body(prompt: str, system_instruction: str) -> dict[str, Any]:
    """A plain text turn for the text model (prompt rewriting)."""
    return {
        "systemInstruction": user_turn([{"text": system_instruction}]),
        "contents": [user_turn([{"text": prompt}])],
        "generationConfig": {"responseModalities": ["TEXT"]},
    }


def build_upscale_body(data: bytes, mime_type: str, factor: int) -> dict[str, Any]:
    """Vertex Imagen upscale ``:predict`` body (§4.1), as the SDKs send it."""
    return {
        "instances": [
            {"prompt": "", "image": {"bytesBase64Encoded": b64encode(data), "mimeType": mime_type}}
        ],
        "parameters": {
            "mode": "upscale",
            "sampleCount": 1,
            "upscaleConfig": {"upscaleFactor": f"x{factor}"},
            "outputOptions": {"mimeType": "image/png"},
        },
    }


def check_roles(body: dict[str, Any]) -> list[str]:
    """Problems that would earn Vertex's 400 "Please use a valid role"; empty when fine."""
    problems = []
    for i, turn in enumerate(body.get("contents") or []):
        if turn.get("role") not in VALID_ROLES:
            problems.append(f"contents[{i}].role={turn.get('role')!r}")
    si = body.get("systemInstruction")
    if si is not None and si.get("role") not in VALID_ROLES:
        problems.append(f"systemInstruction.role={si.get('role')!r}")
    return problems


# --------------------------------------------------------------------------- responses


def loads(content: bytes, *, backend: str) -> Any:
    """JSON of a 200 body; a truncated or non-JSON body is a (retryable) glitch, not a verdict."""
    if not content:
        raise MalformedResponse("empty response body", backend=backend, status=200)
    try:
        return json.loads(content)
    except (ValueError, UnicodeDecodeError) as e:
        raise MalformedResponse(
            f"response body is not valid JSON ({len(content)} bytes; {e.__class__.__name__})",
            backend=backend,
            status=200,
        ) from None


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def parse_usage(payload: dict[str, Any]) -> Usage:
    meta = payload.get("usageMetadata") or {}
    if not isinstance(meta, dict):
        return Usage()
    return Usage(
        prompt_tokens=_as_int(meta.get("promptTokenCount")),
        output_tokens=_as_int(meta.get("candidatesTokenCount")),
        thoughts_tokens=_as_int(meta.get("thoughtsTokenCount")),
        total_tokens=_as_int(meta.get("totalTokenCount")),
    )


def reported_tier(payload: dict[str, Any], secrets: Secrets = ()) -> str | None:
    """The tier the answer says served it: ``usageMetadata.serviceTier`` (AI Studio) or
    ``usageMetadata.trafficType`` (Vertex); None when it says neither."""
    meta = payload.get("usageMetadata")
    if not isinstance(meta, dict):
        return None
    return _text_field(meta.get("serviceTier"), secrets) or _text_field(
        meta.get("trafficType"), secrets
    )


def _check_error_in_body(payload: Any, backend: str, secrets: Secrets) -> None:
    """An error object can arrive with HTTP 200 (mid-stream, or wrapped in a list, §1.8)."""
    first = payload[0] if isinstance(payload, list) and len(payload) == 1 else payload
    if isinstance(first, dict) and isinstance(first.get("error"), dict):
        raise error_from_payload(first["error"], http_status=None, backend=backend, secrets=secrets)


def _text_field(value: Any, secrets: Secrets) -> str | None:
    """An upstream string field, redacted; anything that is not a non-empty string is absent."""
    return redact(value, secrets) if isinstance(value, str) and value else None


def _first_candidate(payload: dict[str, Any], backend: str, secrets: Secrets) -> dict[str, Any]:
    """The candidate, or the refusal when the prompt was blocked before generation."""
    candidates = payload.get("candidates") or []
    if not candidates:
        feedback = payload.get("promptFeedback") or {}
        reason = feedback.get("blockReason")
        message = _text_field(feedback.get("blockReasonMessage"), secrets)
        if reason or message:
            reason = redact(str(reason or "BLOCKED_REASON_UNSPECIFIED"), secrets)
            raise Refused(
                f"prompt blocked ({reason})" + (f": {message}" if message else ""),
                reason=reason,
                finish_message=message,
                backend=backend,
            )
        raise MalformedResponse("response has no candidates and no promptFeedback", backend=backend)
    cand = candidates[0]
    if not isinstance(cand, dict):
        raise MalformedResponse("candidates[0] is not an object", backend=backend)
    return cand


def _parts(cand: dict[str, Any]) -> list[dict[str, Any]]:
    content = cand.get("content") or {}
    parts = content.get("parts") if isinstance(content, dict) else None
    return [p for p in parts or [] if isinstance(p, dict)]


def _texts(parts: list[dict[str, Any]], secrets: Secrets) -> list[str]:
    return [
        redact(p["text"].strip(), secrets)
        for p in parts
        if not p.get("thought") and isinstance(p.get("text"), str) and p["text"].strip()
    ]


def _refuse_on_finish_reason(
    cand: dict[str, Any], texts: list[str], backend: str, secrets: Secrets, *, image_found: bool
) -> None:
    raw_reason = cand.get("finishReason")
    reason = redact(str(raw_reason), secrets) if raw_reason else None
    finish_message = _text_field(cand.get("finishMessage"), secrets)
    explanation = finish_message or " ".join(texts) or None
    if raw_reason in REFUSAL_FINISH_REASONS:
        # The server's verdict wins even if some image part slipped through: it was filtered.
        raise Refused(
            f"{reason}" + (f": {explanation}" if explanation else ""),
            reason=str(raw_reason),
            finish_message=finish_message,
            backend=backend,
        )
    if image_found:
        return
    if raw_reason == "STOP":
        raise Refused(
            "the model answered without an image" + (f": {explanation}" if explanation else ""),
            reason="NO_IMAGE",
            finish_message=finish_message or explanation,
            backend=backend,
        )
    if reason:  # MAX_TOKENS, OTHER, LANGUAGE, ...: a verdict, not a transport glitch
        raise Refused(
            f"no image ({reason})" + (f": {explanation}" if explanation else ""),
            reason=reason,
            finish_message=finish_message or explanation,
            backend=backend,
        )
    raise MalformedResponse("candidate has no image and no finishReason", backend=backend)


def _candidate_and_parts(
    payload: Any, backend: str, secrets: Secrets
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The first candidate and its parts, after ruling out error bodies and non-objects."""
    if not isinstance(payload, dict | list):
        raise MalformedResponse("response body is not a JSON object", backend=backend)
    _check_error_in_body(payload, backend, secrets)
    if isinstance(payload, list):
        raise MalformedResponse("response body is a JSON array", backend=backend)
    cand = _first_candidate(payload, backend, secrets)
    return cand, _parts(cand)


def parse_generate_response(
    payload: Any,
    *,
    backend: str,
    model: str,
    request: ImageRequest | None = None,
    secrets: Secrets = (),
) -> GeneratedImage:
    """Turn a decoded ``generateContent`` body into a :class:`GeneratedImage` or a typed error.

    With ``request`` the image must also have a size that request can produce
    (:func:`bananaflow.generation.size_problem`). ``secrets`` are removed from every upstream text.
    """
    cand, parts = _candidate_and_parts(payload, backend, secrets)
    image_part: dict[str, Any] | None = None
    for part in parts:
        if part.get("thought"):
            continue
        inline = part.get("inlineData") or part.get("inline_data")
        if not isinstance(inline, dict):
            continue
        declared = inline.get("mimeType") or inline.get("mime_type")
        if declared and not str(declared).startswith("image/"):
            continue
        image_part = part
    texts = _texts(parts, secrets)
    text_part = next(
        (p for p in parts if not p.get("thought") and isinstance(p.get("text"), str)), None
    )
    _refuse_on_finish_reason(cand, texts, backend, secrets, image_found=image_part is not None)
    assert image_part is not None
    inline = image_part.get("inlineData") or image_part.get("inline_data")
    declared_mime = _text_field(inline.get("mimeType") or inline.get("mime_type"), secrets)
    data = b64decode(inline.get("data"), what="inlineData image", backend=backend)
    mime, width, height = _checked_image(
        data, what="image", declared=declared_mime, backend=backend, secrets=secrets
    )
    if request is not None:
        problem = size_problem(model, request.aspect_ratio, request.image_size, width, height)
        if problem:
            raise BadImage(f"wrong image size: {problem}", backend=backend)
    signature = _signature(image_part)
    return GeneratedImage(
        data=data,
        mime_type=mime,
        declared_mime_type=declared_mime,
        width=width,
        height=height,
        backend=backend,  # type: ignore[arg-type]
        model=model,
        model_version=_text_field(payload.get("modelVersion"), secrets),
        response_id=_text_field(payload.get("responseId"), secrets),
        thought_signature=signature,
        text="\n".join(texts) or None,
        text_signature=_signature(text_part) if text_part is not None else None,
        usage=parse_usage(payload),
        service_tier=reported_tier(payload, secrets),
    )


def _signature(part: dict[str, Any]) -> str | None:
    """A part's thoughtSignature as sent (base64 text), kept to be sent back unchanged."""
    value = part.get("thoughtSignature") or part.get("thought_signature")
    return value if isinstance(value, str) and value else None


def parse_text_response(payload: Any, *, backend: str, secrets: Secrets = ()) -> str:
    """The answer text of a text-model call (thoughts excluded)."""
    cand, parts = _candidate_and_parts(payload, backend, secrets)
    reason = cand.get("finishReason")
    if reason in REFUSAL_FINISH_REASONS:
        message = _text_field(cand.get("finishMessage"), secrets)
        raise Refused(
            f"{reason}" + (f": {message}" if message else ""),
            reason=reason,
            finish_message=message,
            backend=backend,
        )
    text = "".join(
        p["text"] for p in parts if not p.get("thought") and isinstance(p.get("text"), str)
    ).strip()
    if not text:
        shown = redact(str(reason), secrets) if reason else "missing"
        raise MalformedResponse(f"text answer is empty (finishReason {shown})", backend=backend)
    return redact(text, secrets)


def parse_upscale_response(
    payload: Any, *, backend: str, model: str, factor: int, secrets: Secrets = ()
) -> UpscaledImage:
    """``predictions[0]`` of an Imagen upscale; an empty or filtered answer is a refusal."""
    if not isinstance(payload, dict | list):
        raise MalformedResponse("response body is not a JSON object", backend=backend)
    _check_error_in_body(payload, backend, secrets)
    if isinstance(payload, list):
        raise MalformedResponse("response body is a JSON array", backend=backend)
    predictions = payload.get("predictions") or []
    if not predictions:
        raise Refused("upscale returned no image (filtered)", reason="FILTERED", backend=backend)
    first = predictions[0]
    if not isinstance(first, dict):
        raise MalformedResponse("predictions[0] is not an object", backend=backend)
    if "bytesBase64Encoded" not in first and first.get("raiFilteredReason"):
        filtered = redact(str(first["raiFilteredReason"]), secrets)
        raise Refused(
            f"upscale filtered: {filtered}",
            reason="RAI_FILTERED",
            finish_message=filtered,
            backend=backend,
        )
    data = b64decode(first.get("bytesBase64Encoded"), what="upscaled image", backend=backend)
    mime, width, height = _checked_image(
        data,
        what="upscaled image",
        declared=first.get("mimeType"),
        backend=backend,
        secrets=secrets,
    )
    return UpscaledImage(
        data=data,
        mime_type=mime,
        width=width,
        height=height,
        factor=factor,
        method="vertex",
        model=model,
    )
