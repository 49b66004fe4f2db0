"""Layered config: YAML < env < flags, and errors that name the field, the source and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from bananaflow.config import load_settings
from bananaflow.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_shipped_configs_load_and_differ_only_in_data() -> None:
    local, dev, prod = (load_settings(n, environ={}) for n in ("local", "dev", "prod"))
    assert local.emulator.embedded and not dev.emulator.embedded and not prod.emulator.embedded
    assert (dev.stage, prod.stage) == ("dev", "prod")
    assert prod.storage.url.startswith("gs://")
    assert prod.route.fallback == ["aistudio"]


def test_env_beats_yaml_and_flags_beat_env(tmp_path: Path) -> None:
    cfg = write(tmp_path, "generate:\n  image_size: 1K\ncompress:\n  quality: 70\n")
    env = {"BANANAFLOW_GENERATE__IMAGE_SIZE": "2K", "BANANAFLOW_COMPRESS__QUALITY": "60"}
    s = load_settings(cfg, {"generate.image_size": "4K"}, environ=env)
    assert s.generate.image_size == "4K"
    assert s.compress.quality == 60


def test_unknown_key_names_field_file_and_fix(tmp_path: Path) -> None:
    cfg = write(tmp_path, "compress:\n  qualty: 70\n")
    with pytest.raises(ConfigError) as e:
        load_settings(cfg, environ={})
    msg = str(e.value)
    assert "compress.qualty" in msg and str(cfg) in msg and "spelling" in msg
    assert "\n" not in msg


def test_wrong_type_from_env_names_the_variable(tmp_path: Path) -> None:
    cfg = write(tmp_path, "stage: dev\n")
    with pytest.raises(ConfigError) as e:
        load_settings(cfg, environ={"BANANAFLOW_COMPRESS__QUALITY": "very high"})
    assert "compress.quality" in str(e.value)
    assert "env BANANAFLOW_COMPRESS__QUALITY" in str(e.value)


def test_bad_literal_from_flag_lists_allowed_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(write(tmp_path, ""), {"stage": "staging"}, environ={})
    assert "flag --stage" in str(e.value) and "'dev' or 'prod'" in str(e.value)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml", environ={})
    with pytest.raises(ConfigError, match="not valid YAML at line 2"):
        load_settings(write(tmp_path, "stage: dev\n  bad: [\n"), environ={})
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(write(tmp_path, "- a\n- b\n"), environ={})


def test_google_credential_variables_fill_credentials(tmp_path: Path) -> None:
    s = load_settings(
        write(tmp_path, "stage: prod\n"),
        environ={"GEMINI_API_KEY": "k-123", "GOOGLE_CLOUD_PROJECT": "proj-9"},
    )
    assert s.backends.aistudio.api_key is not None
    assert s.backends.aistudio.api_key.get_secret_value() == "k-123"
    assert "k-123" not in repr(s) and "k-123" not in s.model_dump_json()
    assert s.backends.vertex.project == "proj-9"


def test_vertex_endpoint_global_and_regional() -> None:
    s = load_settings("prod", environ={})
    assert s.backends.vertex.endpoint() == "https://aiplatform.googleapis.com"
    s2 = load_settings("prod", {"backends.vertex.location": "europe-west4"}, environ={})
    assert s2.backends.vertex.endpoint() == "https://europe-west4-aiplatform.googleapis.com"


# --------------------------------------------------------------------------- numbers

BAD_NUMBERS = [
    ("generate: {timeouts: {read_s: {1K: 0}}}", "generate.timeouts.read_s.1K", "number above 0"),
    ("generate: {timeouts: {connect_s: .inf}}", "generate.timeouts.connect_s", "finite number"),
    ("generate:\n  retry:\n    deadline_s: .nan\n", "generate.retry.deadline_s", "finite number"),
    ("generate:\n  retry:\n    max_delay_s: .inf\n", "generate.retry.max_delay_s", "finite number"),
    ("generate:\n  max_response_mb: 0\n", "generate.max_response_mb", "number above 0"),
    ("compress:\n  thumbnails: [256, 0]\n", "compress.thumbnails.1", "number above 0"),
    ("prices:\n  m: {1K: -0.1}\n", "prices.m.1K", "number of at least 0"),
    ("prices:\n  m: {4K: .inf}\n", "prices.m.4K", "finite number"),
    ("budget:\n  max_usd: .inf\n", "budget.max_usd", "finite number"),
    ("emulator:\n  time_scale: .inf\n", "emulator.time_scale", "finite number"),
    (
        "emulator:\n  profiles:\n    vertex:\n      latency_s: {1K: [-1, 2]}\n",
        "emulator.profiles.vertex.latency_s.1K.0",
        "number of at least 0",
    ),
    (
        "emulator:\n  profiles:\n    aistudio:\n      latency_s: {1K: [1, 2]}\n"
        "      requests_per_minute: 0\n",
        "emulator.profiles.aistudio.requests_per_minute",
        "number of at least 1",
    ),
    (
        "emulator:\n  profiles:\n    aistudio:\n      latency_s: {1K: [1, 2]}\n"
        "      error_rates: {503: 1.5}\n",
        "emulator.profiles.aistudio.error_rates.503",
        "number of at most 1",
    ),
]


@pytest.mark.parametrize(("text", "field", "fix"), BAD_NUMBERS, ids=[b[1] for b in BAD_NUMBERS])
def test_impossible_numbers_name_the_field_and_the_fix(
    tmp_path: Path, text: str, field: str, fix: str
) -> None:
    cfg = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_settings(cfg, environ={})
    msg = str(e.value)
    assert e.value.field == field and str(cfg) in msg and f"Fix: use a {fix}" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("value", ["inf", "nan", "-1"])
def test_a_budget_from_env_must_be_a_finite_amount(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(write(tmp_path, ""), environ={"BANANAFLOW_BUDGET__MAX_USD": value})
    assert e.value.field == "budget.max_usd"
    assert "env BANANAFLOW_BUDGET__MAX_USD" in str(e.value)


def test_a_zero_budget_still_means_spend_nothing(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, "budget:\n  max_usd: 0\n"), environ={})
    assert s.budget.max_usd == 0
    assert load_settings(write(tmp_path, "emulator:\n  time_scale: 0\n"), environ={})
