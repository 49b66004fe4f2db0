"""Backend choice per job: precedence, fallback lists, reasons, and which failures may fall back."""

from __future__ import annotations

import inspect

import pytest

from bananaflow import errors
from bananaflow.config import RouteSettings, load_settings
from bananaflow.errors import (
    AuthError,
    BackendError,
    BadImage,
    BadRequest,
    ConfigError,
    InputError,
    MalformedResponse,
    NotFound,
    QuotaExceeded,
    Refused,
    RequestTimedOut,
    ResponseTooLarge,
    Shed,
    Unavailable,
    Unsupported,
)
from bananaflow.expand import ImageJob
from bananaflow.generation import BackendName
from bananaflow.routing import route, should_fall_back


def make_job(backend: BackendName | None = None) -> ImageJob:
    return ImageJob(
        job_id="0123456789abcdef",
        spec_id="s",
        prompt="a lighthouse",
        original_prompt="a lighthouse",
        aspect_ratio="1:1",
        image_size="1K",
        backend=backend,
    )


def test_stage_defaults_without_fallback() -> None:
    settings = RouteSettings()
    dev = route(make_job(), "dev", settings)
    prod = route(make_job(), "prod", settings)
    assert dev.backends == ["aistudio"] and prod.backends == ["vertex"]
    assert dev.reason == "stage dev → aistudio (route.stages)"
    assert prod.reason == "stage prod → vertex (route.stages)"
    assert dev.job_id == "0123456789abcdef"


def test_shipped_prod_config_falls_back_to_aistudio() -> None:
    settings = load_settings("prod", environ={})
    decision = route(make_job(), settings.stage, settings.route)
    assert decision.backends == ["vertex", "aistudio"]
    assert decision.reason == (
        "stage prod → vertex (route.stages); fallback: aistudio (route.fallback)"
    )
    dev = load_settings("dev", environ={})
    assert route(make_job(), dev.stage, dev.route).backends == ["aistudio"]


def test_fallback_never_repeats_the_primary() -> None:
    settings = RouteSettings(fallback=["vertex", "aistudio"])
    assert route(make_job(), "prod", settings).backends == ["vertex", "aistudio"]
    assert route(make_job(), "dev", settings).backends == ["aistudio", "vertex"]
    only_self = RouteSettings(fallback=["aistudio"])
    decision = route(make_job(), "dev", only_self)
    assert decision.backends == ["aistudio"] and "fallback" not in decision.reason


@pytest.mark.parametrize(
    ("job_backend", "run_override", "config_override", "expected", "reason"),
    [
        ("aistudio", "vertex", "vertex", "aistudio", "job override → aistudio"),
        (None, "aistudio", "vertex", "aistudio", "run override → aistudio"),
        (None, None, "aistudio", "aistudio", "config override → aistudio (route.override)"),
        (None, None, None, "vertex", "stage prod → vertex (route.stages)"),
    ],
)
def test_precedence(
    job_backend: BackendName | None,
    run_override: BackendName | None,
    config_override: BackendName | None,
    expected: BackendName,
    reason: str,
) -> None:
    settings = RouteSettings(override=config_override)
    decision = route(make_job(job_backend), "prod", settings, run_override)
    assert decision.backends == [expected]
    assert decision.reason == reason


def test_fallback_applies_after_an_override_too() -> None:
    settings = RouteSettings(fallback=["vertex"])
    decision = route(make_job("aistudio"), "prod", settings)
    assert decision.backends == ["aistudio", "vertex"]
    assert decision.reason == "job override → aistudio; fallback: vertex (route.fallback)"


def test_stage_without_a_backend_is_a_config_error() -> None:
    settings = RouteSettings(stages={"dev": "aistudio"})
    with pytest.raises(ConfigError) as info:
        route(make_job(), "prod", settings)
    assert info.value.field == "route.stages.prod"
    # An override still routes: the stage table is only the last resort.
    assert route(make_job(), "prod", settings, "vertex").backends == ["vertex"]


EXPECTED_FALLBACK: dict[type[BackendError], bool] = {
    BackendError: False,
    QuotaExceeded: True,  # per-minute quota, as constructed below
    Unavailable: True,
    RequestTimedOut: True,
    MalformedResponse: True,
    BadImage: True,  # half a PNG or the wrong size: another attempt may get a whole one
    ResponseTooLarge: False,  # a bomb stays a bomb
    BadRequest: False,
    AuthError: False,
    NotFound: False,
    Refused: False,
    Shed: False,  # goes to route.delivery_fallback on the same backend instead
    Unsupported: False,
}


def build(cls: type[BackendError]) -> BackendError:
    if cls is Refused:
        return Refused("declined", reason="IMAGE_SAFETY", backend="vertex")
    if cls is Shed:
        return Shed(Unavailable("no flex capacity", backend="vertex", status=503))
    return cls("boom", backend="vertex", status=500)


def test_every_backend_error_class_has_a_verdict() -> None:
    classes = {
        obj
        for obj in vars(errors).values()
        if inspect.isclass(obj) and issubclass(obj, BackendError)
    }
    assert classes == set(EXPECTED_FALLBACK), "classify new error classes in EXPECTED_FALLBACK"


@pytest.mark.parametrize("cls", list(EXPECTED_FALLBACK), ids=lambda c: c.__name__)
def test_should_fall_back_per_error_class(cls: type[BackendError]) -> None:
    assert should_fall_back(build(cls)) is EXPECTED_FALLBACK[cls]


def test_quota_per_day_or_billing_never_falls_back() -> None:
    assert should_fall_back(QuotaExceeded("rpm", retry_after=3.0)) is True
    assert should_fall_back(QuotaExceeded("rpd", per_day=True)) is False
    assert should_fall_back(QuotaExceeded("billing", billing=True)) is False


def test_refusal_never_falls_back_even_if_marked_retryable() -> None:
    refused = Refused("declined", reason="IMAGE_SAFETY")
    refused.retryable = True
    assert should_fall_back(refused) is False


@pytest.mark.parametrize(
    "error",
    [
        ValueError("x"),
        TimeoutError(),
        ConfigError("f", "p"),
        InputError("f", "p"),
        KeyboardInterrupt(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_non_backend_errors_never_fall_back(error: BaseException) -> None:
    assert should_fall_back(error) is False
