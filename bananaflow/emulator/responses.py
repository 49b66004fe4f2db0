"""Success and refusal bodies, camelCase, in the shapes of google-image-apis.md §1.6, §1.7, §2.4.

Clients must scan every part (a text part usually comes first), accept thought parts, and read
refusals from HTTP-200 bodies, so the bodies here include those features on purpose.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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
    prompt_tokens: int
    thoughts_tokens: int = 0
    image_inputs: int = 0

    def top(self) -> dict[str, Any]:
        out: dict[str, Any] = {"modelVersion": self.route.model, "responseId": self.response_id}
        if self.route.backend == "vertex":
            out["createTime"] = (
                datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
            )
        return out

    def usage(self, output_tokens: int = 0, modality: str = "IMAGE") -> dict[str, Any]:
        text_tokens = self.prompt_tokens - 258 * self.image_inputs
        prompt_details = [{"modality": "TEXT", "tokenCount": text_tokens}]
        if self.image_inputs:
            prompt_details.append({"modality": "IMAGE", "tokenCount": 258 * self.image_inputs})
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
            usage["trafficType"] = "ON_DEMAND"
        else:
            usage["serviceTier"] = "standard"
        return usage


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
) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if include_thoughts and meta.thoughts_tokens:
        parts.append({"text": THOUGHT, "thought": True})
    if want_text:
        parts.append({"text": CHATTER, "thoughtSignature": signature(seed, 0)})
    image = {"mimeType": mime, "data": image_b64}
    parts.append({"inlineData": image, "thoughtSignature": signature(seed, 1)})
    return {
        "candidates": [
            {
                "content": {"role": "model", "parts": parts},
                "finishReason": "STOP",
                "index": 0,
            }
        ],
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
    return {"candidates": [candidate], "usageMetadata": meta.usage(), **meta.top()}


def upscale_body(image_b64: str, mime: str) -> dict[str, Any]:
    return {"predictions": [{"bytesBase64Encoded": image_b64, "mimeType": mime}]}


def dumps(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def frame(body: Any, *, stream: bool, sse: bool) -> tuple[bytes, str]:
    """Serialize for the operation: plain JSON, an SSE event, or a JSON array (streams w/o SSE)."""
    if stream and sse:
        return b"data: " + dumps(body) + b"\n\n", "text/event-stream"
    if stream:
        return b"[" + dumps(body) + b"]", "application/json; charset=UTF-8"
    return dumps(body), "application/json; charset=UTF-8"
