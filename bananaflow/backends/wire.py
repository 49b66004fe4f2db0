"""Request bodies and response parsing shared by the AI Studio and Vertex clients.

Both platforms speak the same ``generateContent`` JSON (reference §1.2, §2.3), so one builder and
one parser serve both; only the Vertex-only ``imageConfig`` fields differ. Everything here is
pure (no I/O), so it can run in a worker thread for multi-megabyte bodies.

Parsing rules and why:

* every part is scanned, because a text part often comes before the image (§1.6);
* ``thought: true`` parts are skipped: they are interim images or reasoning, not the answer;
* the *last* non-thought image wins, matching the thought-signature rules (the final image is
  the one with the signature);
* the type and size come from the bytes, never from ``inlineData.mimeType`` (it is sometimes
  wrong); the declared type is kept next to it for the audit trail;
* refusals arrive as HTTP 200 (§1.7) and become :class:`Refused`, which is never retried.
  A ``STOP`` with text but no image is also a refusal (``reason="NO_IMAGE"``): that is how the
  model declines when text output is allowed, and retrying the same prompt gets the same answer.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import struct
from typing import Any

from PIL import Image, UnidentifiedImageError

from bananaflow.backends.status import error_from_payload
from bananaflow.errors import MalformedResponse, Refused
from bananaflow.models import GeneratedImage, ImageRequest, UpscaledImage, Usage

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

REWRITE_SYSTEM_INSTRUCTION = (
    "You rewrite prompts for an image-generation model. Turn the user's prompt into one richer, "
    "more specific image prompt: subject, setting, composition, lighting, colour, style and mood. "
    "Keep every element, name and constraint the user asked for and add nothing that contradicts "
    "them. Answer with the rewritten prompt only: no preamble, no quotes, no list."
)

_HEIF_BRANDS = {
    b"heic": "image/heic",
    b"heix": "image/heic",
    b"hevc": "image/heic",
    b"hevx": "image/heic",
    b"heim": "image/heic",
    b"heis": "image/heic",
    b"mif1": "image/heif",
    b"msf1": "image/heif",
}


# --------------------------------------------------------------------------- image bytes


def sniff_mime(data: bytes) -> str | None:
    """The real image type from magic bytes; None when the bytes are not a known image."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if len(data) >= 12 and data[4:8] == b"ftyp":
        return _HEIF_BRANDS.get(data[8:12])
    return None


def _heif_size(data: bytes) -> tuple[int, int] | None:
    """Pillow cannot read HEIF without a plugin; the ``ispe`` box holds width and height."""
    idx = data.find(b"ispe")
    if idx < 0 or len(data) < idx + 16:
        return None
    width, height = struct.unpack(">II", data[idx + 8 : idx + 16])
    return (width, height) if width and height else None


def image_dimensions(data: bytes, mime_type: str | None = None) -> tuple[int, int] | None:
    """Width and height read from the header only (Pillow opens lazily; no pixel decode)."""
    mime_type = mime_type or sniff_mime(data)
    if mime_type in ("image/heic", "image/heif"):
        return _heif_size(data)
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    return (width, height) if width > 0 and height > 0 else None


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
    parts: list[dict[str, Any]] = [
        {"inlineData": {"mimeType": ref.mime_type, "data": b64encode(ref.data)}}
        for ref in request.reference_images
    ]
    parts.append({"text": request.prompt})
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
    return {
        "contents": [user_turn(parts)],
        "generationConfig": {
            "responseModalities": list(response_modalities),
            "imageConfig": image_config,
        },
    }


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


def _check_error_in_body(payload: Any, backend: str) -> None:
    """An error object can arrive with HTTP 200 (mid-stream, or wrapped in a list, §1.8)."""
    first = payload[0] if isinstance(payload, list) and len(payload) == 1 else payload
    if isinstance(first, dict) and isinstance(first.get("error"), dict):
        raise error_from_payload(first["error"], http_status=None, backend=backend)


def _first_candidate(payload: dict[str, Any], backend: str) -> dict[str, Any]:
    """The candidate, or the refusal when the prompt was blocked before generation."""
    candidates = payload.get("candidates") or []
    if not candidates:
        feedback = payload.get("promptFeedback") or {}
        reason = feedback.get("blockReason")
        message = feedback.get("blockReasonMessage")
        if reason or message:
            reason = reason or "BLOCKED_REASON_UNSPECIFIED"
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


def _texts(parts: list[dict[str, Any]]) -> list[str]:
    return [
        p["text"]
        for p in parts
        if not p.get("thought") and isinstance(p.get("text"), str) and p["text"].strip()
    ]


def _refuse_on_finish_reason(
    cand: dict[str, Any], texts: list[str], backend: str, *, image_found: bool
) -> None:
    reason = cand.get("finishReason")
    finish_message = cand.get("finishMessage")
    explanation = finish_message or " ".join(t.strip() for t in texts) or None
    if reason in REFUSAL_FINISH_REASONS:
        # The server's verdict wins even if some image part slipped through: it was filtered.
        raise Refused(
            f"{reason}" + (f": {explanation}" if explanation else ""),
            reason=reason,
            finish_message=finish_message,
            backend=backend,
        )
    if image_found:
        return
    if reason == "STOP":
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
    payload: Any, backend: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The first candidate and its parts, after ruling out error bodies and non-objects."""
    if not isinstance(payload, dict | list):
        raise MalformedResponse("response body is not a JSON object", backend=backend)
    _check_error_in_body(payload, backend)
    if isinstance(payload, list):
        raise MalformedResponse("response body is a JSON array", backend=backend)
    cand = _first_candidate(payload, backend)
    return cand, _parts(cand)


def parse_generate_response(payload: Any, *, backend: str, model: str) -> GeneratedImage:
    """Turn a decoded ``generateContent`` body into a :class:`GeneratedImage` or a typed error."""
    cand, parts = _candidate_and_parts(payload, backend)
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
    texts = _texts(parts)
    _refuse_on_finish_reason(cand, texts, backend, image_found=image_part is not None)
    assert image_part is not None
    inline = image_part.get("inlineData") or image_part.get("inline_data")
    declared_mime = inline.get("mimeType") or inline.get("mime_type")
    data = b64decode(inline.get("data"), what="inlineData image", backend=backend)
    mime = sniff_mime(data)
    if mime is None:
        raise MalformedResponse(
            f"image bytes are not PNG/JPEG/WebP/GIF/HEIF (declared {declared_mime}, "
            f"{len(data)} bytes)",
            backend=backend,
        )
    size = image_dimensions(data, mime)
    if size is None:
        raise MalformedResponse(f"cannot read the {mime} image header", backend=backend)
    signature = image_part.get("thoughtSignature") or image_part.get("thought_signature")
    return GeneratedImage(
        data=data,
        mime_type=mime,
        declared_mime_type=declared_mime,
        width=size[0],
        height=size[1],
        backend=backend,  # type: ignore[arg-type]
        model=model,
        model_version=payload.get("modelVersion"),
        response_id=payload.get("responseId"),
        thought_signature=signature,
        text="\n".join(t.strip() for t in texts) or None,
        usage=parse_usage(payload),
    )


def parse_text_response(payload: Any, *, backend: str) -> str:
    """The answer text of a text-model call (thoughts excluded)."""
    cand, parts = _candidate_and_parts(payload, backend)
    reason = cand.get("finishReason")
    if reason in REFUSAL_FINISH_REASONS:
        message = cand.get("finishMessage")
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
        raise MalformedResponse(
            f"text answer is empty (finishReason {reason or 'missing'})", backend=backend
        )
    return text


def parse_upscale_response(payload: Any, *, backend: str, model: str, factor: int) -> UpscaledImage:
    """``predictions[0]`` of an Imagen upscale; an empty or filtered answer is a refusal."""
    if not isinstance(payload, dict | list):
        raise MalformedResponse("response body is not a JSON object", backend=backend)
    _check_error_in_body(payload, backend)
    if isinstance(payload, list):
        raise MalformedResponse("response body is a JSON array", backend=backend)
    predictions = payload.get("predictions") or []
    if not predictions:
        raise Refused("upscale returned no image (filtered)", reason="FILTERED", backend=backend)
    first = predictions[0]
    if not isinstance(first, dict):
        raise MalformedResponse("predictions[0] is not an object", backend=backend)
    if "bytesBase64Encoded" not in first and first.get("raiFilteredReason"):
        raise Refused(
            f"upscale filtered: {first['raiFilteredReason']}",
            reason="RAI_FILTERED",
            finish_message=first["raiFilteredReason"],
            backend=backend,
        )
    data = b64decode(first.get("bytesBase64Encoded"), what="upscaled image", backend=backend)
    mime = sniff_mime(data)
    size = image_dimensions(data, mime) if mime else None
    if mime is None or size is None:
        raise MalformedResponse(
            f"upscaled bytes are not a readable image (declared {first.get('mimeType')})",
            backend=backend,
        )
    return UpscaledImage(
        data=data,
        mime_type=mime,
        width=size[0],
        height=size[1],
        factor=factor,
        method="vertex",
        model=model,
    )
