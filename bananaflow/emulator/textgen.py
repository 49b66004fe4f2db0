"""The text models' stand-in: a deterministic "rewrite" of the last user text.

Callers use a text model to enrich prompts; tests need the result to be predictable, so the
answer is the text plus one descriptive suffix picked by the text's hash. Put instructions in
``systemInstruction`` and the bare prompt in the last user turn: only that turn is rewritten.
"""

from __future__ import annotations

import hashlib

SUFFIXES: tuple[str, ...] = (
    "cinematic lighting, shallow depth of field, rich detail",
    "soft natural light, balanced composition, high detail",
    "golden hour glow, gentle shadows, crisp focus",
    "studio lighting, clean background, sharp textures",
    "vivid colours, dramatic contrast, wide-angle view",
    "muted palette, overcast light, fine film grain",
)


def rewrite(text: str) -> str:
    base = " ".join(text.split()).rstrip(" .,;")
    if not base:
        return ""
    pick = int.from_bytes(hashlib.sha256(base.encode("utf-8")).digest()[:4], "big")
    return f"{base}, {SUFFIXES[pick % len(SUFFIXES)]}"


def count_tokens(text: str) -> int:
    """A stable stand-in for a tokenizer (~1.3 tokens per word)."""
    return max(1, round(len(text.split()) * 1.3))
