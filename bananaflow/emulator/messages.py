"""Google's error envelopes and the verbatim texts the emulator answers with.

Clients parse these bodies to classify failures (quota vs billing vs per-day, expired token vs bad
credentials), so the shapes and texts are copied from real responses
(../shared/reference/google-image-apis.md §5) rather than invented. Every handler raises
``ApiError`` and one place turns it into a response, so a body can't drift between routes.
"""

from __future__ import annotations

from typing import Any

from bananaflow.emulator.catalog import ALL_RATIOS, SUPPORTED_SIZES_TEXT

STATUS_NAMES: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    # No canonical code means "wrong HTTP method"; Google's transcoding layer calls it
    # UNIMPLEMENTED (grpc-gateway's routing error), and the HTTP status says 405.
    405: "UNIMPLEMENTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

AISTUDIO_SERVICE = "generativelanguage.googleapis.com"
VERTEX_SERVICE = "aiplatform.googleapis.com"

MSG_UNREGISTERED = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)
MSG_KEY_INVALID = "API key not valid. Please pass a valid API key."
MSG_CREDENTIALS_MISSING = (
    "Request is missing required authentication credential. Expected OAuth 2 access token, "
    "login cookie or other valid authentication credential. "
    "See https://developers.google.com/identity/sign-in/web/devconsole-project."
)
MSG_BAD_CREDENTIALS = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential. "
    "See https://developers.google.com/identity/sign-in/web/devconsole-project."
)
MSG_BAD_ROLE = "Please use a valid role: user, model."
MSG_EMPTY_INPUT = "Request has empty input."
MSG_NO_CONTENTS = "* GenerateContentRequest.contents: contents is not specified\n"
MSG_MULTI_CANDIDATES = "Multiple candidates is not enabled for this model"
MSG_ROUTE_NOT_FOUND = "Requested entity was not found."
MSG_METHOD_NOT_ALLOWED = "Method Not Allowed"
MSG_PT_EXCEEDED = "Too many requests. Exceeded the Provisioned Throughput."
MSG_MISSING_SIGNATURE = (
    "Image part is missing a thought_signature in content position {content}, "
    "part position {part}."
)
MSG_VERTEX_429 = (
    "Resource exhausted. Please try again later. Please refer to "
    "https://cloud.google.com/vertex-ai/generative-ai/docs/error-code-429 for more details."
)
MSG_BILLING = (
    "Your prepayment credits are depleted. Please go to AI Studio at https://ai.studio/projects "
    "to manage your project and billing. If you believe this is an error, contact support."
)
BATCH_QUOTA_METRIC = "generativelanguage.googleapis.com/batch_enqueued_tokens_per_model"
MSG_CONCURRENCY = "Resource has been exhausted (e.g. check quota)."
MSG_500_AISTUDIO = (
    "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting"
)
MSG_500_VERTEX = "Internal error encountered."
MSG_503 = "The service is currently unavailable."
MSG_504 = "Deadline expired before operation could complete."
MSG_IMAGE_SAFETY = (
    "Unable to show the generated image. The image was filtered out because it violated "
    "Google's Generative AI Prohibited Use policy. You will not be charged for blocked images. "
    "Try rephrasing the prompt..."
)
# Google's front end answers 502 with an HTML page, not a JSON envelope; clients must cope.
HTML_502 = (
    "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n"
    "  <title>Error 502 (Server Error)!!1</title>\n"
    "  <p><b>502.</b> <ins>That’s an error.</ins>\n"
    "  <p>The server encountered a temporary error and could not complete your request."
    "<p>Please try again in 30 seconds.  <ins>That’s all we know.</ins>\n"
)

RPM_QUOTA_ID = "GenerateRequestsPerMinutePerProjectPerModel"
RPD_QUOTA_ID = "GenerateRequestsPerDayPerProjectPerModel"


class ApiError(Exception):
    """An error answer: HTTP status, JSON (or text) body and extra headers."""

    def __init__(
        self,
        status: int,
        body: dict[str, Any] | str,
        headers: dict[str, str] | None = None,
        media_type: str = "application/json",
    ):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.media_type = media_type


def envelope(code: int, message: str, details: list[dict[str, Any]] | None = None) -> dict:
    err: dict[str, Any] = {"code": code, "message": message, "status": STATUS_NAMES[code]}
    if details:
        err["details"] = details
    return {"error": err}


def error(code: int, message: str, details: list[dict[str, Any]] | None = None) -> ApiError:
    return ApiError(code, envelope(code, message, details))


def bad_request(message: str) -> ApiError:
    return error(400, message)


def proto_duration(seconds: float) -> str:
    """google.protobuf.Duration JSON form: ``"34s"``, ``"0.34s"`` (never negative)."""
    seconds = max(0.0, seconds)
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"{text or '0'}s"


def unknown_field(name: str, where: str) -> ApiError:
    return unknown_fields([(name, where)])


def _unknown_text(name: str, where: str) -> str:
    at = f" at '{where}'" if where else ""
    return f'Invalid JSON payload received. Unknown name "{name}"{at}: Cannot find field.'


def unknown_fields(found: list[tuple[str, str]]) -> ApiError:
    """Every unknown name in the body: one message line and one violation each.

    A top-level field has no ``field`` in its violation (Google omits the key rather than
    sending an empty path), a nested one names its parent message's path.
    """
    violations: list[dict[str, str]] = []
    for name, where in found:
        violation = {"field": where} if where else {}
        violation["description"] = _unknown_text(name, where)
        violations.append(violation)
    message = "\n".join(v["description"] for v in violations)
    details = [
        {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": violations}
    ]
    return error(400, message, details)


def invalid_json(detail: str) -> ApiError:
    return bad_request(f"Invalid JSON payload received. {detail}")


def bad_aspect_ratio(value: object) -> ApiError:
    return bad_request(
        f"Unsupported aspect ratio '{value}'. Supported values are: {', '.join(ALL_RATIOS)}."
    )


def ratio_not_for_model(value: str) -> ApiError:
    return bad_request(f"Aspect ratio {value} is not supported for this model")


def size_not_for_model(value: str) -> ApiError:
    """Same form as the verified ratio text; the exact wording for sizes is UNVERIFIED."""
    return bad_request(f"Image size {value} is not supported for this model")


def missing_signature(content: int, part: int) -> ApiError:
    """Positions are 1-based, as Google prints them ("content position 2, part position 1")."""
    return bad_request(MSG_MISSING_SIGNATURE.format(content=content, part=part))


def route_not_found() -> ApiError:
    return error(404, MSG_ROUTE_NOT_FOUND)


def method_not_allowed(allowed: tuple[str, ...]) -> ApiError:
    err = error(405, MSG_METHOD_NOT_ALLOWED)
    if allowed:
        err.headers["allow"] = ", ".join(allowed)
    return err


def provisioned_throughput_exceeded() -> ApiError:
    return error(429, MSG_PT_EXCEEDED)


def bad_image_size(value: object) -> ApiError:
    return bad_request(
        f"Unsupported image_size '{value}'. Supported values are: {SUPPORTED_SIZES_TEXT}."
    )


def model_not_found(backend: str, version: str, model: str, method: str, path: str) -> ApiError:
    if backend == "aistudio":
        message = (
            f"models/{model} is not found for API version {version}, or is not supported for "
            f"{method}. Call ListModels to see the list of available models and their "
            "supported methods."
        )
    else:
        message = (
            f"Publisher Model `{path}` was not found or your project does not have access to "
            "it. Please ensure you are using a valid model version. For more information, see: "
            "https://cloud.google.com/vertex-ai/generative-ai/docs/learn/model-versions"
        )
    return error(404, message)


def missing_key() -> ApiError:
    return error(403, MSG_UNREGISTERED)


def invalid_key(service: str) -> ApiError:
    return error(
        400,
        MSG_KEY_INVALID,
        [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": service},
            },
            {
                "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                "locale": "en-US",
                "message": MSG_KEY_INVALID,
            },
        ],
    )


def unauthenticated(reason: str | None, method: str) -> ApiError:
    """401 as Google's front end sends it, with the ``WWW-Authenticate`` challenge."""
    message = MSG_CREDENTIALS_MISSING if reason == "CREDENTIALS_MISSING" else MSG_BAD_CREDENTIALS
    details = None
    if reason:
        details = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
                "metadata": {
                    "service": VERTEX_SERVICE,
                    "method": f"google.cloud.aiplatform.v1.PredictionService.{method}",
                },
            }
        ]
    err = error(401, message, details)
    err.headers["www-authenticate"] = 'Bearer realm="https://accounts.google.com/"'
    if reason == "ACCESS_TOKEN_EXPIRED":
        err.headers["www-authenticate"] += ', error="invalid_token"'
    return err


def permission_denied(project: str, location: str, model: str) -> ApiError:
    resource = f"projects/{project}/locations/{location}/publishers/google/models/{model}"
    return error(
        403,
        f"Permission 'aiplatform.endpoints.predict' denied on resource "
        f"'//aiplatform.googleapis.com/{resource}' (or it may not exist).",
        [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "IAM_PERMISSION_DENIED",
                "domain": VERTEX_SERVICE,
                "metadata": {"permission": "aiplatform.endpoints.predict", "resource": resource},
            }
        ],
    )


def aistudio_quota(
    model: str, limit: int, retry_delay_s: float | None, *, per_day: bool = False
) -> ApiError:
    """Gemini API 429: QuotaFailure, and RetryInfo only when waiting helps (not per day)."""
    metric = "generativelanguage.googleapis.com/generate_requests_per_model"
    if per_day:
        metric += "_per_day"
    message = (
        "You exceeded your current quota, please check your plan and billing details. For more "
        "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. "
        "To monitor your current usage, head to: https://ai.dev/rate-limit. \n"
        f"* Quota exceeded for metric: {metric}, limit: {limit}, model: {model}"
    )
    if retry_delay_s is not None:
        message += f"\nPlease retry in {max(0.0, retry_delay_s):.9f}s."
    details: list[dict[str, Any]] = [
        {
            "@type": "type.googleapis.com/google.rpc.Help",
            "links": [
                {
                    "description": "Learn more about Gemini API quotas",
                    "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                }
            ],
        },
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [
                {
                    "quotaMetric": metric,
                    "quotaId": RPD_QUOTA_ID if per_day else RPM_QUOTA_ID,
                    "quotaDimensions": {"location": "global", "model": model},
                    "quotaValue": str(limit),
                }
            ],
        },
    ]
    if retry_delay_s is not None:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": proto_duration(retry_delay_s),
            }
        )
    return error(429, message, details)


def aistudio_busy(retry_delay_s: float) -> ApiError:
    """Too many requests in flight: retryable soon, so it carries RetryInfo but no QuotaFailure."""
    return error(
        429,
        MSG_CONCURRENCY,
        [
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": proto_duration(retry_delay_s),
            }
        ],
    )


def batch_quota(backend: str, model: str) -> ApiError:
    """A batch create refused: too many batch jobs (or enqueued tokens) already waiting.

    AI Studio names the quota (QuotaFailure) but gives no RetryInfo: only running batches
    ending frees it (batch-and-model-tiers.md §1.6). Vertex answers its plain 429.
    """
    if backend == "vertex":
        return vertex_quota()
    message = (
        "You exceeded your current quota for batch requests; wait for running batch jobs to "
        f"finish. * Quota exceeded for metric: {BATCH_QUOTA_METRIC}, model: {model}"
    )
    violation = {
        "quotaMetric": BATCH_QUOTA_METRIC,
        "quotaId": "BatchEnqueuedTokensPerModel",
        "quotaDimensions": {"model": model},
    }
    details = [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [violation]}]
    return error(429, message, details)


def vertex_quota() -> ApiError:
    """Vertex DSQ 429: a plain message and no details, whatever the cause."""
    return error(429, MSG_VERTEX_429)


def billing_quota() -> ApiError:
    return error(429, MSG_BILLING)


def internal(backend: str) -> ApiError:
    return error(500, MSG_500_AISTUDIO if backend == "aistudio" else MSG_500_VERTEX)


def unavailable() -> ApiError:
    return error(503, MSG_503)


def deadline() -> ApiError:
    return error(504, MSG_504)


def bad_gateway() -> ApiError:
    return ApiError(502, HTML_502, media_type="text/html; charset=UTF-8")
