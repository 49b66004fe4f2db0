"""What every peer is asked to do: the prompts, the platform profiles, the output format.

Random faults are off (no hangs, no 5xx, no refusals) so that the figures measure speed; the
quotas and latencies are the measured platform numbers of
``../shared/reference/platform-measurements.md``, compressed by the emulator's time scale.
Client-side waits (retry backoff) are compressed by the same scale, so that no peer is
penalised for waiting in real seconds against an emulator that runs in scaled ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from bananaflow.config import BackendProfile, EmulatorSettings, RefusalSettings

BackendName = Literal["aistudio", "vertex"]
MODEL = "gemini-3-pro-image"
RATIO = "1:1"
JPEG_QUALITY = 85
_SUBJECTS = ("ceramic mug", "leather boot", "glass vase", "desk lamp", "linen shirt", "teapot")
_SETTINGS = ("walnut table", "white seamless", "concrete floor", "sunlit window", "marble slab")


@dataclass(frozen=True)
class Profile:
    """One platform's quota as the benchmark applies it (emulator and clients alike)."""

    name: str
    backend: BackendName
    stage: Literal["dev", "prod"]
    rpm: int
    concurrency: int
    time_scale: float

    @property
    def window_s(self) -> float:
        return 60.0 * self.time_scale


AISTUDIO_RPM, AISTUDIO_CONCURRENCY = 60, 5
VERTEX_RPM, VERTEX_CONCURRENCY = 300, 20


def prompts(n: int, tag: str) -> list[str]:
    """Distinct, deterministic prompts (distinct images; the tag keeps sets apart)."""
    return [
        f"{tag} {i:04d}: a {_SUBJECTS[i % len(_SUBJECTS)]} on a "
        f"{_SETTINGS[(i // len(_SUBJECTS)) % len(_SETTINGS)]}, product photo, soft light"
        for i in range(n)
    ]


def _quiet(profile: BackendProfile, **update: Any) -> BackendProfile:
    """The platform profile with every random fault switched off."""
    off: dict[str, Any] = {"hang_rate": 0.0, "error_rates": {}}
    if "fault_rates" in BackendProfile.model_fields:
        off["fault_rates"] = {}
    return profile.model_copy(update={**off, **update})


def emulator_settings(time_scale: float, **profile_updates: dict[str, Any]) -> EmulatorSettings:
    """Both platforms' measured profiles, faults off, at ``time_scale``; per-backend updates."""
    defaults = EmulatorSettings()
    profiles = {
        name: _quiet(p, **profile_updates.get(name, {})) for name, p in defaults.profiles.items()
    }
    return EmulatorSettings(
        time_scale=time_scale,
        seed=11,
        profiles=profiles,
        refusals=RefusalSettings(image_safety_rate=0.0, no_image_rate=0.0),
        image_cache_size=4096,
    )


def warm_items(backend: str, texts: list[str], size: str) -> list[list[str]]:
    return [[backend, MODEL, text, RATIO, size] for text in texts]


def bananaflow_config(
    path: Path,
    profile: Profile,
    out_dir: Path,
    *,
    image_size: str = "1K",
    jobs_in_flight: int | None = None,
) -> Path:
    """A bananaflow config for one run: embedded (attached) emulator, JPEG q85, no thumbnails.

    No thumbnails because the peers write one file per prompt; masters stay on (the default),
    as they are what makes a re-run free.
    """
    scale = profile.time_scale or 0.001
    cfg: dict[str, Any] = {
        "stage": profile.stage,
        "emulator": {"embedded": True},
        "backends": {
            profile.backend: {
                "requests_per_minute": profile.rpm,
                "concurrency": profile.concurrency,
            }
        },
        "generate": {
            "aspect_ratio": RATIO,
            "image_size": image_size,
            "retry": {"initial_delay_s": 1.0 * scale, "max_delay_s": 60.0 * scale},
        },
        "compress": {"format": "jpeg", "quality": JPEG_QUALITY, "thumbnails": []},
        "storage": {"url": out_dir.as_uri()},
    }
    if jobs_in_flight:
        cfg["generate"]["concurrency"] = jobs_in_flight
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path
