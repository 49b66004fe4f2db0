"""Typed errors: every failure a user can meet has a class, a readable message and a retry verdict.

Backends translate Google's ``google.rpc.Status`` envelopes and HTTP-200 refusals into these, so
the retry policy, the router's fallback and the manifest all reason about one vocabulary instead
of status codes. Messages never contain credentials: callers pass every upstream string through
:func:`bananaflow.redact.redact` with their secrets, and backend errors re-apply its generic
patterns to message, status and refusal text as a last line of defence.
"""

from __future__ import annotations

from bananaflow.redact import redact, redact_optional


class BananaflowError(Exception):
    """Base class; ``str(err)`` is the one line shown to the user."""


class ConfigError(BananaflowError):
    """Invalid configuration: names the field, where it came from and how to fix it."""

    def __init__(self, field: str, problem: str, *, source: str | None = None, fix: str = ""):
        self.field = field
        self.problem = problem
        self.source = source
        self.fix = fix
        where = f" in {source}" if source else ""
        hint = f" Fix: {fix}" if fix else ""
        super().__init__(f"config error: {field}{where}: {problem}.{hint}")


class InputError(BananaflowError):
    """A request or prompt spec that would be rejected; raised before any money is spent."""

    def __init__(self, field: str, problem: str, *, fix: str = ""):
        self.field = field
        self.problem = problem
        self.fix = fix
        hint = f" Fix: {fix}" if fix else ""
        super().__init__(f"invalid {field}: {problem}.{hint}")


class BackendError(BananaflowError):
    """A call to a Google backend (or its emulator) failed.

    ``retryable`` is the single source of truth for the retry policy and for the router's
    fallback list: only retryable failures ever move a job to the next backend.
    """

    retryable: bool = False
    kind: str = "error"

    def __init__(
        self,
        message: str,
        *,
        backend: str = "",
        status: int | None = None,
        status_name: str | None = None,
    ):
        message = redact(message)
        status_name = redact_optional(status_name)
        self.backend = backend
        self.status = status
        self.status_name = status_name
        prefix = f"{backend}: " if backend else ""
        code = f" (HTTP {status} {status_name or ''})".rstrip() if status else ""
        if code and not code.endswith(")"):
            code += ")"
        super().__init__(f"{prefix}{self.kind}: {message}{code}")
        self.message = message


class QuotaExceeded(BackendError):
    """429 RESOURCE_EXHAUSTED.

    Per-minute quota is worth waiting for (``retry_after`` from ``RetryInfo.retryDelay`` when the
    server gives one). A per-day quota or a billing 429 (no details) is not: retrying only burns
    time until midnight Pacific or until someone adds credit.
    """

    kind = "quota exceeded"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        per_day: bool = False,
        billing: bool = False,
        quota_id: str | None = None,
        **kw,
    ):
        super().__init__(message, **kw)
        self.retry_after = retry_after
        self.per_day = per_day
        self.billing = billing
        self.quota_id = quota_id
        self.retryable = not (per_day or billing)


class Unavailable(BackendError):
    """500/502/503/504 or a dropped connection: transient on Google's side."""

    kind = "unavailable"
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kw):
        super().__init__(message, **kw)
        self.retry_after = retry_after


class RequestTimedOut(BackendError):
    """The client's own timeout fired (connect or read); the request may hang server-side."""

    kind = "timeout"
    retryable = True


class MalformedResponse(BackendError):
    """HTTP 200 whose body could not be used (truncated JSON, bad base64, no image bytes).

    Retryable: these are transport or front-end glitches, not a verdict on the prompt.
    """

    kind = "malformed response"
    retryable = True


class BadImage(MalformedResponse):
    """HTTP 200 whose image is cut short, unreadable, or not the size that was asked for.

    Kept a :class:`MalformedResponse` (same kind, retryable): a half-delivered or placeholder
    image is a delivery glitch, and storing it would record a broken master as paid and good.
    """


class ResponseTooLarge(MalformedResponse):
    """The body grew past ``generate.max_response_mb`` while being read (a decompression bomb).

    Not retryable: no legitimate answer is that large, so a retry would only pull another
    hundred megabytes of the same.
    """

    retryable = False


class BadRequest(BackendError):
    """400 INVALID_ARGUMENT / FAILED_PRECONDITION: the request itself is wrong."""

    kind = "bad request"


class AuthError(BackendError):
    """401/403, or credentials that cannot produce a token."""

    kind = "auth error"


class NotFound(BackendError):
    """404: usually a model id that was retired or mistyped (ids churn; keep them in config)."""

    kind = "not found"


class Refused(BackendError):
    """HTTP 200 without an image: the model declined (safety, NO_IMAGE, blocked prompt).

    Never retried and never moved to another backend: the same prompt would be refused again
    and a refusal is not billed, a retry might be.
    """

    kind = "refused"

    def __init__(self, message: str, *, reason: str, finish_message: str | None = None, **kw):
        super().__init__(message, **kw)
        self.reason = redact(reason)
        self.finish_message = redact_optional(finish_message)


class Shed(BackendError):
    """Google shed a flex call (no capacity now) and a fallback delivery is configured.

    Not retried: retrying a shed tier right away mostly meets the same shortage, and the job
    has somewhere else to go (``route.delivery_fallback``). Wraps the status that said so.
    """

    kind = "shed"

    def __init__(self, cause: BackendError) -> None:
        super().__init__(
            cause.message,
            backend=cause.backend,
            status=cause.status,
            status_name=cause.status_name,
        )


class Unsupported(BackendError):
    """The backend has no such capability (e.g. upscale on AI Studio)."""

    kind = "unsupported"
