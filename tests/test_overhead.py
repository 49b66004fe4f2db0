"""Orchestration overhead: no re-encode when Google already encoded; fewer task runs for big runs.

Core level first (the lossless metadata edit, when the master already is the derivative), then
one flow run under a real Prefect against the loopback emulator: Vertex answers JPEG at the
asked quality, the compress step only rewrites metadata, and a per-job run still shows one task
run per job with its failure.
"""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from bananaflow import jpegmeta
from bananaflow.config import CompressSettings
from bananaflow.imaging import derivatives, jpeg_quality, passthrough, read_digital_source_type

GPS_IFD = 0x8825


def _jpeg(quality: int = 85, *, metadata: bool = True, mode: str = "RGB") -> bytes:
    im = Image.effect_mandelbrot((320, 240), (-2, -1.5, 1, 1.5), 60).convert(mode)
    kw: dict[str, object] = {"quality": quality}
    if metadata:
        exif = Image.Exif()
        exif[0x010F] = "CameraMaker"
        exif[GPS_IFD] = {1: "N", 2: (52.0, 31.0, 0.0)}
        kw |= {"exif": exif.tobytes(), "icc_profile": b"\0" * 128, "comment": b"secret note"}
    buf = io.BytesIO()
    im.save(buf, "JPEG", **kw)
    data = buf.getvalue()
    if metadata:  # an APP13 (Photoshop/IPTC) block as a camera or editor would leave it
        app13 = jpegmeta.Segment(0xED, b"Photoshop 3.0\x00" + b"8BIM" + b"\0" * 20)
        data = data[:2] + app13.encode() + data[2:]
    return data


def _pixels(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def _non_app(data: bytes) -> tuple[list[jpegmeta.Segment], bytes]:
    segments, rest = jpegmeta.split(data)
    return [s for s in segments if not (0xE0 <= s.marker <= 0xEF or s.marker == 0xFE)], rest


def test_metadata_edit_is_lossless_outside_the_app_segments() -> None:
    source = _jpeg()
    out = jpegmeta.edit(source, strip=True, xmp=lambda _old: b"<x:xmpmeta/>")

    assert _non_app(out) == _non_app(source)  # tables, frame, scan: byte for byte
    assert ImageChops.difference(_pixels(out).convert("RGB"), _pixels(source)).getbbox() is None
    markers = [s.marker for s in jpegmeta.split(out)[0]]
    assert 0xFE not in markers and 0xED not in markers  # comment and IPTC block gone
    im = Image.open(io.BytesIO(out))
    assert not im.getexif() and im.info.get("icc_profile") == b"\0" * 128  # EXIF/GPS gone
    assert jpegmeta.xmp_packet(out) == b"<x:xmpmeta/>"


def test_keeping_metadata_merges_the_source_type_into_the_source_xmp() -> None:
    source = jpegmeta.edit(_jpeg(), strip=False, xmp=lambda _old: b"<provider-xmp/>")
    seen: list[bytes | None] = []

    def merge(old: bytes | None) -> bytes:
        seen.append(old)
        return b"<merged/>"

    out = jpegmeta.edit(source, strip=False, xmp=merge)
    assert seen == [b"<provider-xmp/>"]
    assert jpegmeta.xmp_packet(out) == b"<merged/>"
    assert Image.open(io.BytesIO(out)).getexif()[0x010F] == "CameraMaker"
    assert [s.marker for s in jpegmeta.split(out)[0]].count(0xE1) == 2  # EXIF + one XMP


@pytest.mark.parametrize(
    "data",
    [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe1\x00", b"\xff\xd8\xff\xe1\xff\xff\x00\x00"],
)
def test_malformed_headers_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        jpegmeta.split(data)


def test_quality_is_read_from_the_quantisation_tables() -> None:
    for q in (40, 75, 85, 95):
        assert jpeg_quality(list(Image.open(io.BytesIO(_jpeg(q))).quantization[0])) == q


def test_a_jpeg_master_at_the_target_quality_is_published_as_it_is() -> None:
    master = _jpeg(85)
    main, thumbs = derivatives(master, CompressSettings(format="jpeg", quality=85, thumbnails=[64]))

    assert main.method == "passthrough" and main.quality == 85
    assert _non_app(main.data)[1] == jpegmeta.split(master)[1]
    assert read_digital_source_type(main.data).endswith("trainedAlgorithmicMedia")
    assert not Image.open(io.BytesIO(main.data)).getexif()
    assert (thumbs[0].width, thumbs[0].height) == (64, 48) and thumbs[0].method == "encode"


@pytest.mark.parametrize(
    ("master", "settings"),
    [
        (_jpeg(95), CompressSettings(format="jpeg", quality=80)),  # re-encoding makes it smaller
        (_jpeg(85), CompressSettings(format="webp", quality=85)),  # another format
        (_jpeg(85), CompressSettings(format="jpeg", quality=85, max_bytes=2000)),  # over budget
        (_jpeg(85, mode="CMYK", metadata=False), CompressSettings(format="jpeg")),
    ],
    ids=["higher-quality", "webp", "byte-budget", "cmyk"],
)
def test_otherwise_the_master_is_encoded(master: bytes, settings: CompressSettings) -> None:
    assert passthrough(master, settings) is None


@pytest.mark.usefixtures("prefect_api")
def test_vertex_jpeg_is_published_without_an_encode_and_jobs_stay_rows(emu, make_config):
    """One grouped flow run on prod (Vertex, two jobs per task run): every master arrives as
    JPEG at q80 and is published as is; the refused job is still its own manifest row, and
    its group's task run is failed with the job's reason."""
    from prefect import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    from bananaflow.flows.generate import generate_images
    from bananaflow.parameters import GenerateParameters

    config, _ = make_config(stage="prod", generate={"task_runs": "grouped", "jobs_per_task_run": 2})
    prompts = ["a studio shot of a kettle", "a forbidden scene", "a teapot on oak"]
    summary = asyncio.run(generate_images(GenerateParameters(config=config, prompts=prompts)))

    assert [r.prompt for r in summary.rows] == prompts
    by_prompt = {r.prompt: r for r in summary.rows}
    refused = by_prompt["a forbidden scene"]
    assert refused.status == "refused" and "IMAGE_SAFETY" in (refused.error or "")
    for prompt in (prompts[0], prompts[2]):
        row = by_prompt[prompt]
        assert row.status == "uploaded" and row.backend == "vertex"
        assert row.compress_method == "passthrough" and row.quality == 80
        assert set(row.step_s) == {"generate", "compress", "upload"}
        master = Path(row.master_uri.removeprefix("file://")).read_bytes()
        published = Path(row.uri.removeprefix("file://")).read_bytes()
        assert master[:3] == b"\xff\xd8\xff"  # Vertex encoded it (imageOutputOptions)
        assert jpegmeta.split(published)[1] == jpegmeta.split(master)[1]
        assert read_digital_source_type(published).endswith("trainedAlgorithmicMedia")

    first, last = by_prompt[prompts[0]].job_id, by_prompt[prompts[2]].job_id
    names = [f"jobs-{first}-and-1-more", f"job-{last}"]

    async def task_runs() -> dict[str, tuple[str, str]]:
        async with get_client() as client:
            runs = await client.read_task_runs(
                task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=names))
            )
        return {r.name: (r.state_type.value, r.state.message or "") for r in runs if r.state}

    # Task-run states reach the server as events, recorded after the flow returns: wait for
    # both final states (a hang guard, not a timing assertion).
    deadline = time.monotonic() + 120
    states = asyncio.run(task_runs())
    while not all(states.get(n, ("",))[0] in ("COMPLETED", "FAILED") for n in names):
        assert time.monotonic() < deadline, states
        time.sleep(0.2)
        states = asyncio.run(task_runs())
    assert states[names[1]][0] == "COMPLETED"
    assert states[names[0]][0] == "FAILED" and refused.job_id in states[names[0]][1]


@pytest.mark.parametrize(
    ("over", "n_jobs", "group"),
    [
        ({}, 50, 0),  # auto: small runs keep a task run per step
        ({}, 51, 25),  # auto: above per_step_max_jobs, grouped
        ({"jobs_per_task_run": 1}, 51, 1),  # a task run per job
        ({"task_runs": "per_step"}, 10_000, 0),
        ({"task_runs": "grouped"}, 1, 25),
    ],
)
def test_task_run_granularity_follows_the_settings(over: dict, n_jobs: int, group: int) -> None:
    from bananaflow.config import GenerateSettings, Settings
    from bananaflow.render import jobs_per_task_run

    settings = Settings(generate=GenerateSettings(**over))
    assert jobs_per_task_run(settings, n_jobs) == group
