"""Success and refusal bodies, camelCase, in the shapes of google-image-apis.md §1.6, §1.7, §2.4.

Clients must scan every part (a text part usually comes first), skip thought parts (the Pro
model's interim images come before the final one), and read refusals from HTTP-200 bodies, so
the bodies here include those features on purpose. The service tier that served a call is in
``usageMetadata``: ``serviceTier`` on AI Studio (as live answers carry it, also in the
``x-gemini-service-tier`` header), ``trafficType`` on Vertex.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bananaflow.emulator.catalog import ImageModel, OtherModel
from bananaflow.emulator.messages import MSG_IMAGE_SAFETY
from bananaflow.emulator.routing import Route

CHATTER = "Here is your image."
THOUGHT = "**Composing the scene**\nPlanning layout, lighting and colour for the requested image."
NO_IMAGE_TEXT = (
    "I can't create that image right now. I can describe it instead, or you can try "
    "rephrasing the request."
)
BLOCK_MESSAGE = (
    "The prompt could not be submitted. This prompt contains sensitive words that violate "
    "Google's Responsible AI practices. Try rephrasing the prompt."
)


@dataclass(frozen=True)
class Meta:
    """Per-answer identifiers and token counts shared by every body shape."""

    route: Route
    response_id: str
    text_tokens: int
    thoughts_tokens: int = 0
    image_inputs: int = 0
    image_input_tokens: int = 258
    traffic_type: str = "ON_DEMAND"
    service_tier: str = "standard"

    @property
    def prompt_tokens(self) -> int:
        return self.text_tokens + self.image_inputs * self.image_input_tokens

    def top(self) -> dict[str, Any]:
        out: dict[str, Any] = {"modelVersion": self.route.model, "responseId": self.response_id}
        if self.route.backend == "vertex":
            out["createTime"] = (
                datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
            )
        return out

    def usage(self, output_tokens: int = 0, modality: str = "IMAGE") -> dict[str, Any]:
        prompt_details = [{"modality": "TEXT", "tokenCount": self.text_tokens}]
        if self.image_inputs:
            prompt_details.append(
                {"modality": "IMAGE", "tokenCount": self.image_inputs * self.image_input_tokens}
            )
        usage: dict[str, Any] = {
            "promptTokenCount": self.prompt_tokens,
            "totalTokenCount": self.prompt_tokens + output_tokens + self.thoughts_tokens,
            "promptTokensDetails": prompt_details,
        }
        if output_tokens:
            usage["candidatesTokenCount"] = output_tokens
            usage["candidatesTokensDetails"] = [
                {"modality": modality, "tokenCount": output_tokens}
            ]
        if self.thoughts_tokens:
            usage["thoughtsTokenCount"] = self.thoughts_tokens
        if self.route.backend == "vertex":
            usage["trafficType"] = self.traffic_type
        else:
            usage["serviceTier"] = self.service_tier
        return usage


_HARM_CATEGORIES = (
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
)


def safety_ratings(seed: str, *, blocked: str | None = None) -> list[dict[str, Any]]:
    """Vertex's per-candidate ratings (probability and severity, with scores), §2.4.

    Scores are small and stable per request; ``blocked`` marks one category as the reason.
    """
    out: list[dict[str, Any]] = []
    for i, category in enumerate(_HARM_CATEGORIES):
        digest = hashlib.sha256(f"{seed}\x00{category}".encode()).digest()
        p_score = round(digest[0] / 255 * 0.2, 6)
        s_score = round(digest[1] / 255 * 0.15, 6)
        rating: dict[str, Any] = {
            "category": category,
            "probability": "NEGLIGIBLE",
            "probabilityScore": p_score,
            "severity": "HARM_SEVERITY_NEGLIGIBLE",
            "severityScore": s_score,
        }
        if blocked is not None and i == 0:
            rating.update(
                probability="HIGH",
                probabilityScore=0.93,
                severity="HARM_SEVERITY_HIGH",
                severityScore=0.88,
                blocked=True,
            )
        out.append(rating)
    return out


def signature(seed: str, n: int) -> str:
    """An opaque, stable thoughtSignature (base64 on the wire, as Google sends it)."""
    digest = hashlib.sha256(f"{seed}\x00{n}".encode()).digest()
    return base64.b64encode(b"\x12\x0a" + digest + hashlib.sha256(digest).digest()).decode()


def image_body(
    meta: Meta,
    *,
    image_b64: str,
    mime: str,
    output_tokens: int,
    want_text: bool,
    include_thoughts: bool,
    seed: str,
    thought_images: tuple[tuple[str, str], ...] = (),
) -> dict[str, Any]:
    """Parts in Google's order: thoughts (text summary only when asked for; interim images
    whenever the model drew them), then the signed chatter text, then the signed image.

    ``thought_images`` are ``(base64, mime)`` pairs; thought parts never carry a signature.
    """
    parts: list[dict[str, Any]] = []
    if include_thoughts and meta.thoughts_tokens:
        parts.append({"text": THOUGHT, "thought": True})
    for data, thought_mime in thought_images:
        parts.append({"inlineData": {"mimeType": thought_mime, "data": data}, "thought": True})
    if want_text:
        parts.append({"text": CHATTER, "thoughtSignature": signature(seed, 0)})
    image = {"mimeType": mime, "data": image_b64}
    parts.append({"inlineData": image, "thoughtSignature": signature(seed, 1)})
    candidate: dict[str, Any] = {
        "content": {"role": "model", "parts": parts},
        "finishReason": "STOP",
        "index": 0,
    }
    if meta.route.backend == "vertex":
        candidate["safetyRatings"] = safety_ratings(seed)
    return {
        "candidates": [candidate],
        "usageMetadata": meta.usage(output_tokens),
        **meta.top(),
    }


def text_body(meta: Meta, text: str, output_tokens: int) -> dict[str, Any]:
    return {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": text}]},
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": meta.usage(output_tokens, modality="TEXT"),
        **meta.top(),
    }


def no_image_text_body(meta: Meta, seed: str) -> dict[str, Any]:
    """HTTP 200, finishReason STOP, and only a text part: the model talked instead of drawing."""
    body = text_body(meta, NO_IMAGE_TEXT, 24)
    body["candidates"][0]["content"]["parts"][0]["thoughtSignature"] = signature(seed, 0)
    return body


def refusal_body(meta: Meta, reason: str) -> dict[str, Any]:
    """``IMAGE_SAFETY`` (with finishMessage), ``NO_IMAGE``, or a blocked prompt (no candidates)."""
    if reason == "PROMPT_BLOCKED":
        feedback: dict[str, Any] = {
            "blockReason": "SAFETY",
            "safetyRatings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "HIGH"}],
        }
        if meta.route.backend == "vertex":
            feedback["blockReasonMessage"] = BLOCK_MESSAGE
        return {"promptFeedback": feedback, "usageMetadata": meta.usage(), **meta.top()}
    candidate: dict[str, Any] = {"content": {}, "finishReason": reason, "index": 0}
    if reason == "IMAGE_SAFETY":
        candidate["finishMessage"] = MSG_IMAGE_SAFETY
    if meta.route.backend == "vertex":
        candidate["safetyRatings"] = safety_ratings(
            meta.response_id, blocked=reason if reason == "IMAGE_SAFETY" else None
        )
    return {"candidates": [candidate], "usageMetadata": meta.usage(), **meta.top()}


def upscale_body(image_b64: str, mime: str) -> dict[str, Any]:
    return {"predictions": [{"bytesBase64Encoded": image_b64, "mimeType": mime}]}


def _methods(model: ImageModel | OtherModel) -> list[str]:
    if isinstance(model, OtherModel):
        return list(model.methods)
    return ["generateContent", "countTokens", "batchGenerateContent"]


def aistudio_model(model: ImageModel | OtherModel, name: str) -> dict[str, Any]:
    """A ``google.ai.generativelanguage`` Model resource, as ``GET /v1beta/models/{m}`` sends it."""
    out: dict[str, Any] = {
        "name": f"models/{name}",
        "version": model.version,
        "displayName": model.display_name,
        "description": model.description,
        "inputTokenLimit": model.input_token_limit,
        "outputTokenLimit": model.output_token_limit,
        "supportedGenerationMethods": _methods(model),
    }
    if isinstance(model, ImageModel) or model.kind == "text":
        out.update(temperature=1.0, topP=0.95, topK=64, maxTemperature=2.0)
    if (isinstance(model, ImageModel) and model.thinks) or (
        isinstance(model, OtherModel) and model.kind == "text"
    ):
        out["thinking"] = True
    return out


def vertex_model(model: ImageModel | OtherModel, name: str) -> dict[str, Any]:
    """A Vertex PublisherModel resource (``GET .../publishers/google/models/{m}``)."""
    return {
        "name": f"publishers/google/models/{name}",
        "versionId": "001",
        "openSourceCategory": "PROPRIETARY",
        "launchStage": model.launch_stage,
        "versionState": "VERSION_STATE_STABLE",
        "publisherModelTemplate": (
            f"projects/{{project}}/locations/{{location}}/publishers/google/models/{name}"
        ),
    }


def dumps(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def frame(body: Any, *, stream: bool, sse: bool) -> tuple[bytes, str]:
    """Serialize for the operation: plain JSON, an SSE event, or a JSON array (streams w/o SSE)."""
    if stream and sse:
        # Live Gemini ends each event with CRLF CRLF; SDKs split on any blank line.
        return b"data: " + dumps(body) + b"\r\n\r\n", "text/event-stream"
    if stream:
        return b"[" + dumps(body) + b"]", "application/json; charset=UTF-8"
    return dumps(body), "application/json; charset=UTF-8"
