"""Vertex credentials: loading them with clear config errors, and refreshing them async-safely.

google-auth is synchronous (its token refresh is a blocking ``requests`` POST), so the refresh
runs in a worker thread, never on the event loop. One refresh at a time: an ``asyncio.Lock`` per
event loop keeps twenty concurrent requests from all POSTing to the token endpoint when the token
expires, and a thread lock protects the credentials object across loops (Prefect may run tasks
on several). After a 401 only the coroutine whose token is still the current one refreshes; the
others reuse the new token.
"""

from __future__ import annotations

import asyncio
import json
import threading
import weakref
from pathlib import Path

import anyio.to_thread
import google.auth
import google.auth.credentials
import google.auth.crypt
import google.auth.exceptions
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.oauth2 import service_account
from pydantic import SecretStr

from bananaflow.config import VertexSettings
from bananaflow.errors import AuthError, ConfigError, Unavailable
from bananaflow.redact import redact

SCOPES: tuple[str, ...] = ("https://www.googleapis.com/auth/cloud-platform",)

_FIELD = "backends.vertex.credentials_file"
_ADC_FIX = (
    "export GOOGLE_APPLICATION_CREDENTIALS=/path/to/service-account.json, set "
    "backends.vertex.credentials_file, or run `gcloud auth application-default login`"
)
_SA_FIX = "download a service-account JSON key (IAM > Service accounts > Keys) and point to it"

__all__ = [
    "SCOPES",
    "TokenSource",
    "load_credentials",
    "service_account_credentials",
    "service_account_problem",
]


def load_credentials(
    vertex: VertexSettings,
    credentials: google.auth.credentials.Credentials | None = None,
) -> google.auth.credentials.Credentials:
    """Explicit credentials, else the service-account file, else Application Default Credentials.

    Raises :class:`ConfigError` naming the setting to fix; never makes a network call (the first
    token is fetched lazily by :class:`TokenSource`).
    """
    if credentials is not None:
        return google.auth.credentials.with_scopes_if_required(credentials, list(SCOPES))
    if vertex.credentials_info is not None:
        field = "backends.vertex." + (
            "credentials_block" if vertex.credentials_block else "credentials_info"
        )
        return service_account_credentials(vertex.credentials_info, field)
    if vertex.credentials_file is not None:
        return _from_service_account_file(Path(vertex.credentials_file))
    return _from_adc()


def _from_service_account_file(path: Path) -> google.auth.credentials.Credentials:
    path = path.expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            _FIELD,
            f"file {path} does not exist",
            fix=f"{_SA_FIX}, or unset it to use Application Default Credentials",
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(
            _FIELD, f"cannot read {path} ({e.__class__.__name__})", fix="check path and permissions"
        ) from None
    return _from_info(text, _FIELD, str(path))


def service_account_credentials(info: SecretStr, field: str) -> service_account.Credentials:
    """Credentials from a service-account key's JSON text (a Prefect block's, typically).

    ``field`` is the setting the error names; the key itself is never quoted.
    """
    return _from_info(info.get_secret_value(), field, "the service-account key")


def service_account_problem(text: str) -> str | None:
    """What makes ``text`` unusable as a service-account key, or None; never quotes the key."""
    try:
        info = json.loads(text)
    except ValueError:
        return "is not JSON"
    kind = info.get("type") if isinstance(info, dict) else None
    if kind != "service_account":
        return f"is not a service-account key (type is {kind!r})"
    missing = [k for k in ("client_email", "private_key", "token_uri") if not info.get(k)]
    if missing:
        return f"lacks {', '.join(missing)}"
    return None


def _from_info(text: str, field: str, what: str) -> service_account.Credentials:
    problem = service_account_problem(text)
    if problem:
        fix = _SA_FIX
        if "type is" in problem and field == _FIELD:
            fix += "; for gcloud user credentials unset credentials_file and use ADC"
        raise ConfigError(field, f"{what} {problem}", fix=fix)
    try:
        return _credentials(json.loads(text))
    except (ValueError, TypeError, KeyError) as e:
        # The exception text is not shown: it could quote part of the key material.
        raise ConfigError(
            field, f"{what} holds an unusable private key ({e.__class__.__name__})", fix=_SA_FIX
        ) from None


def _credentials(info: dict[str, str]) -> service_account.Credentials:
    """``Credentials.from_service_account_info`` without its RSA key validation.

    cryptography's check of the key's arithmetic took 88 ms of CPU at the start of every run
    (more than the rest of ``open_context``); it guards against signing with a corrupted key
    handed over by someone else. The key here is the user's own, issued by Google: a damaged
    one still fails to parse here, or is refused at the token endpoint (an ``AuthError``).
    """
    pem = info["private_key"]
    if not isinstance(pem, str):
        raise TypeError("private_key is not text")
    key = serialization.load_pem_private_key(
        pem.encode(), password=None, unsafe_skip_rsa_key_validation=True
    )
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("not an RSA key")
    # google-auth's own step after making the signer: every field of the info it reads
    # (project, universe domain, trust boundary) is read the way from_service_account_info does.
    signer = google.auth.crypt.RSASigner(key, key_id=info.get("private_key_id"))
    return service_account.Credentials._from_signer_and_info(signer, info, scopes=list(SCOPES))


def _from_adc() -> google.auth.credentials.Credentials:
    try:
        creds, _project = google.auth.default(scopes=list(SCOPES))
    except google.auth.exceptions.DefaultCredentialsError as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else "not found"
        raise ConfigError(
            _FIELD,
            f"no Application Default Credentials ({first_line})",
            source="GOOGLE_APPLICATION_CREDENTIALS / gcloud ADC",
            fix=_ADC_FIX,
        ) from None
    return creds


def _refresh_error_text(err: Exception) -> str:
    """google-auth puts (message, response_body) in args; the message is enough.

    It is the token endpoint's own words, which may quote the assertion or a token back.
    """
    first = err.args[0] if err.args else err.__class__.__name__
    text = redact(str(first).strip()) or err.__class__.__name__
    return text[:300]


class TokenSource:
    """Bearer tokens from google-auth credentials, refreshed off the event loop."""

    def __init__(
        self, credentials: google.auth.credentials.Credentials, *, backend: str = "vertex"
    ) -> None:
        self.credentials = credentials
        self.backend = backend
        self.refreshes = 0
        self._thread_lock = threading.Lock()
        self._loop_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        # Imported here: google-auth's requests transport pulls in requests and urllib3 (~0.1 s
        # of CPU), which only a Vertex run needs, and every flow process imports this module.
        import google.auth.transport.requests

        self._request = google.auth.transport.requests.Request()

    def _lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._loop_locks.get(loop)
        if lock is None:
            lock = self._loop_locks[loop] = asyncio.Lock()
        return lock

    def _current(self) -> str | None:
        creds = self.credentials
        return creds.token if creds.valid and creds.token else None

    async def token(self) -> str:
        """A valid token, refreshing first when missing or about to expire."""
        token = self._current()
        if token:
            return token
        async with self._lock():
            token = self._current()
            if not token:
                await anyio.to_thread.run_sync(self._refresh_blocking)
                token = self._current() or self.credentials.token
        if not token:
            raise AuthError("credentials produced no access token", backend=self.backend)
        return token

    async def refresh_after_rejection(self, rejected: str) -> str:
        """After a 401: refresh once, unless another request already replaced that token."""
        async with self._lock():
            if self.credentials.token == rejected or not self._current():
                await anyio.to_thread.run_sync(self._refresh_blocking)
        token = self.credentials.token
        if not token:
            raise AuthError("credentials produced no access token", backend=self.backend)
        return token

    def _refresh_blocking(self) -> None:
        with self._thread_lock:
            try:
                self.credentials.refresh(self._request)
            except google.auth.exceptions.RefreshError as e:
                if getattr(e, "retryable", False):
                    # google-auth already retried a 5xx/429 from the token endpoint; it is
                    # still Google's outage, not bad credentials, so the job's policy retries.
                    raise Unavailable(
                        f"token endpoint failed: {_refresh_error_text(e)}", backend=self.backend
                    ) from None
                raise AuthError(
                    f"could not get an access token: {_refresh_error_text(e)}",
                    backend=self.backend,
                ) from None
            except google.auth.exceptions.TransportError as e:
                # Connection refused/reset on the way to the token endpoint: transient.
                raise Unavailable(
                    f"token endpoint unreachable: {_refresh_error_text(e)}", backend=self.backend
                ) from None
            except google.auth.exceptions.GoogleAuthError as e:
                raise AuthError(
                    f"credentials cannot be refreshed: {_refresh_error_text(e)}",
                    backend=self.backend,
                ) from None
            self.refreshes += 1

    def close(self) -> None:
        session = getattr(self._request, "session", None)
        if session is not None:
            session.close()
