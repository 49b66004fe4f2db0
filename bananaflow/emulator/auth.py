"""API keys for the Gemini API, OAuth bearer tokens for Vertex, and the ``/token`` grant.

The token endpoint does what oauth2.googleapis.com does for a service-account JWT grant, minus
the signature check: the point is to drive google-auth's real refresh path, not to prove
identity. Tokens are random, remembered only here, and never logged.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from dataclasses import dataclass

from starlette.requests import Request

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_LIFETIME_S = 3599  # google-auth treats < 225 s as already expired; Google answers 3599


class TokenGrantError(Exception):
    """An OAuth error answer: ``{"error": code, "error_description": ...}`` with HTTP 400."""

    def __init__(self, code: str, description: str):
        super().__init__(description)
        self.code = code
        self.description = description


@dataclass
class _Issued:
    expires_at: float
    revoked: bool = False


class TokenStore:
    """Issued bearer tokens. Lifetimes are wall-clock: google-auth's idea of expiry is too."""

    DEFAULT_PREFIX = "ya29.emulator-"

    def __init__(self) -> None:
        self._tokens: dict[str, _Issued] = {}
        self.issued = 0
        # Secret scans set a canary marker here, so a leaked token is findable by grep.
        self.prefix = self.DEFAULT_PREFIX

    def issue(self) -> str:
        token = self.prefix + secrets.token_urlsafe(32)
        self._tokens[token] = _Issued(time.monotonic() + TOKEN_LIFETIME_S)
        self.issued += 1
        return token

    def check(self, token: str) -> str | None:
        """None when valid, else the ErrorInfo reason to answer with (or "" for no details)."""
        issued = self._tokens.get(token)
        if issued is None:
            return ""
        if issued.revoked or time.monotonic() >= issued.expires_at:
            return "ACCESS_TOKEN_EXPIRED"
        return None

    def age(self, token: str) -> float:
        """Seconds since ``token`` was issued (0 for a token this store never issued)."""
        issued = self._tokens.get(token)
        if issued is None:
            return 0.0
        return time.monotonic() - (issued.expires_at - TOKEN_LIFETIME_S)

    def revoke(self, token: str) -> None:
        if token in self._tokens:
            self._tokens[token].revoked = True


def _b64url_json(segment: str) -> dict:
    padded = segment + "=" * (-len(segment) % 4)
    value = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    if not isinstance(value, dict):
        raise ValueError("not an object")
    return value


def check_jwt_grant(grant_type: str | None, assertion: str | None) -> dict:
    """Validate a JWT-bearer grant's shape and claims; return the claims."""
    if grant_type != JWT_GRANT:
        raise TokenGrantError("unsupported_grant_type", f"Invalid grant_type: {grant_type or ''}")
    parts = (assertion or "").split(".")
    if len(parts) != 3 or not all(parts):
        raise TokenGrantError("invalid_grant", "Invalid JWT: assertion is not a JWT.")
    try:
        header = _b64url_json(parts[0])
        claims = _b64url_json(parts[1])
    except (ValueError, UnicodeError, binascii.Error):
        raise TokenGrantError("invalid_grant", "Invalid JWT Signature.") from None
    if not header.get("alg"):
        raise TokenGrantError("invalid_grant", "Invalid JWT: no signing algorithm.")
    if not claims.get("iss"):
        raise TokenGrantError("invalid_grant", "Invalid JWT: No issuer (iss) claim.")
    iat, exp = claims.get("iat"), claims.get("exp")
    if not isinstance(iat, int | float) or not isinstance(exp, int | float) or exp - iat > 3600:
        raise TokenGrantError(
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
            "timeframe. Check your iat and exp values in the JWT claim.",
        )
    return claims


def api_key_of(request: Request) -> str | None:
    """The key from ``x-goog-api-key`` or ``?key=`` (Google accepts both)."""
    return request.headers.get("x-goog-api-key") or request.query_params.get("key")


def bearer_of(request: Request) -> str | None:
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
