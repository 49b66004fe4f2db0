"""The one redactor for text that comes from upstream (Google, a proxy, the token endpoint).

Servers should never echo credentials, but a refusal that quotes the prompt, a proxy error page
that dumps the request headers, or a token endpoint that repeats the assertion all do, and
whatever lands in an exception ends up in the manifest, the logs and the terminal. So every
upstream string passes through :func:`redact` before it becomes part of an error or a record:
the caller's own secrets are removed verbatim (they may look like anything), then anything
shaped like a Google credential is removed by pattern (a key we were never given is still a
key).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["MASK", "redact", "redact_optional"]

MASK = "[redacted]"

# Shorter strings are too likely to occur by chance in ordinary text to be replaced blindly.
_MIN_SECRET_LEN = 4

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # PEM private keys; an unterminated block (message cut at a length limit) goes to the end.
    (
        re.compile(
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?:.*?-----END [A-Z0-9 ]*PRIVATE KEY-----|.*)",
            re.DOTALL,
        ),
        MASK,
    ),
    # "private_key": "..." in a service-account JSON (also single-quoted, as in a Python repr).
    (
        re.compile(r"""(["']private_key["']\s*:\s*)(["'])(?:\\.|(?!\2).)*\2?""", re.DOTALL),
        r"\1\2" + MASK + r"\2",
    ),
    (re.compile(r"AIza[0-9A-Za-z_-]{35}"), MASK),  # Google API keys
    (re.compile(r"ya29\.[0-9A-Za-z_.~+/=-]+"), MASK),  # Google OAuth access tokens
    # Bearer credentials; eight characters at least, so "the bearer of" stays prose.
    (re.compile(r"(?i)\b(bearer\s+)[0-9A-Za-z_.~+/=-]{8,}"), r"\1" + MASK),
    # key=..., api_key=..., access_token=... in URLs and form bodies.
    (
        re.compile(r"(?i)(?<![0-9A-Za-z_])((?:api[_-]?)?key|access_token|token)=[^&\s\"'#<>]+"),
        r"\1=" + MASK,
    ),
)


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` without the given secrets (verbatim) and without anything credential-shaped."""
    known = (s for s in secrets if s and len(s) >= _MIN_SECRET_LEN)
    for secret in sorted(known, key=len, reverse=True):  # a secret containing another goes first
        text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_optional(text: str | None, secrets: Iterable[str | None] = ()) -> str | None:
    """:func:`redact` for optional fields of a response (``None`` stays ``None``)."""
    return None if text is None else redact(text, secrets)
