"""Hard bounds on what upstream and input files can cost us: time, memory, broken images, junk.

The misbehaving servers are a few lines of raw HTTP on 127.0.0.1 written here, because each
does one thing the emulator never would: trickle a body, send a gzip bomb, serve half a PNG or
a thumbnail. Assertions are on error types; the only clock assertions are the bounds the issue
sets ("cut within the retry deadline"), with slack for a busy two-core machine.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import json
import re
import struct
import sys
import textwrap
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image
from pydantic import ValidationError

from bananaflow import errors, generation, yamlio
from bananaflow.backends import create_backend, generate_with_retries
from bananaflow.config import RetrySettings, Settings, load_settings
from bananaflow.errors import ConfigError, InputError, MalformedResponse, RequestTimedOut
from bananaflow.expand import load_batch
from bananaflow.generation import ImageRequest

API_KEY = "test-key-for-bounds"

# --------------------------------------------------------------------------- a tiny HTTP server

Handler = Callable[[asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def serve(*handlers: Handler) -> AsyncIterator[str]:
    """Answer the n-th request with ``handlers[n]`` (the last one repeats); yields the base URL."""
    calls = 0
    tasks: set[asyncio.Task[None]] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            while True:  # keep-alive: one connection may carry several requests
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length:\s*(\d+)", head)
                await reader.readexactly(int(length.group(1)) if length else 0)
                handler = handlers[min(calls, len(handlers) - 1)]
                calls += 1
                await handler(writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def head(length: int, *extra: str) -> bytes:
    lines = ["HTTP/1.1 200 OK", "content-type: application/json", f"content-length: {length}"]
    return ("\r\n".join([*lines, *extra]) + "\r\n\r\n").encode()


def json_answer(payload: dict[str, Any]) -> Handler:
    body = json.dumps(payload).encode()

    async def send(writer: asyncio.StreamWriter) -> None:
        writer.write(head(len(body)) + body)
        await writer.drain()

    return send


def image_answer(data: bytes) -> Handler:
    part = {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(data).decode()}}
    return json_answer(
        {"candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP"}]}
    )


def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (30, 90, 200)).save(buf, "PNG")
    return buf.getvalue()


def settings(url: str, **generate: Any) -> Settings:
    return Settings.model_validate(
        {"backends": {"aistudio": {"base_url": url, "api_key": API_KEY}}, "generate": generate}
    )


# --------------------------------------------------------------------------- 1. trickle


def trickle(total: int, every_s: float) -> Handler:
    """Headers at once, then one byte of body per ``every_s``: never silent long enough for a
    read timeout, and ``total`` bytes take ``total * every_s`` seconds."""

    async def send(writer: asyncio.StreamWriter) -> None:
        writer.write(head(total))
        for _ in range(total):
            await writer.drain()
            await asyncio.sleep(every_s)
            writer.write(b" ")
        await writer.drain()

    return send


@pytest.mark.anyio
async def test_a_trickled_body_is_cut_at_the_retry_deadline() -> None:
    deadline_s = 5.0
    async with serve(trickle(total=240, every_s=0.5)) as url:  # 2 min if nothing cuts it
        s = settings(
            url,
            timeouts={"read_s": {"1K": 2, "2K": 2, "4K": 2}},
            retry={"deadline_s": deadline_s, "initial_delay_s": 0.1, "jitter": False},
        )
        backend = create_backend("aistudio", s)
        started = time.monotonic()
        with pytest.raises(RequestTimedOut) as info:
            await generate_with_retries(backend, ImageRequest(prompt="x"), s.generate.retry)
        elapsed = time.monotonic() - started
        await backend.aclose()
    print(f"trickle cut after {elapsed:.2f}s (retry.deadline_s {deadline_s})")
    assert info.value.retryable and "retry.deadline_s" in str(info.value)
    # Cut at the deadline (5.0 s measured); the bound is loose so a loaded machine cannot fail
    # it, yet far below the 2 minutes an uncut trickle takes.
    assert elapsed < deadline_s + 30


@pytest.mark.anyio
async def test_one_attempt_is_bounded_by_connect_plus_read_even_without_a_deadline() -> None:
    async with serve(trickle(total=240, every_s=0.5)) as url:
        s = settings(url, timeouts={"connect_s": 1, "read_s": {"1K": 1, "2K": 1, "4K": 1}})
        backend = create_backend("aistudio", s)
        started = time.monotonic()
        with pytest.raises(RequestTimedOut) as info:
            await backend.generate(ImageRequest(prompt="x"))
        elapsed = time.monotonic() - started
        await backend.aclose()
    assert "connect 1.0s + read 1.0s" in str(info.value)
    assert elapsed < 2 + 30  # 2 s measured; an uncut trickle takes 2 minutes


# --------------------------------------------------------------------------- 2. gzip bomb

_JSON_PREFIX = b'{"candidates":[{"content":{"parts":[{"inlineData":{"data":"'


@functools.cache
def gzip_bomb(mib: int = 1024) -> bytes:
    """A valid gzip body of ~1 MiB inflating to ``mib`` MiB, built in about a second.

    After a full flush deflate restarts from an empty window, so every further identical
    megabyte compresses to the same bytes: compress two, repeat the second, and write the
    trailer (CRC and length of everything) by hand.
    """
    block = b"A" * (1 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    first = c.compress(_JSON_PREFIX + block) + c.flush(zlib.Z_FULL_FLUSH)
    repeat = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(_JSON_PREFIX + block)
    for _ in range(mib - 1):
        crc = zlib.crc32(block, crc)
    size = len(_JSON_PREFIX) + mib * len(block)
    trailer = c.flush()[:-8] + struct.pack("<II", crc, size & 0xFFFFFFFF)
    return first + repeat * (mib - 1) + trailer


def streamed_gzip(body: bytes) -> Handler:
    async def send(writer: asyncio.StreamWriter) -> None:
        writer.write(head(len(body), "content-encoding: gzip"))
        for i in range(0, len(body), 64 * 1024):
            writer.write(body[i : i + 64 * 1024])
            await writer.drain()

    return send


_CLIENT = textwrap.dedent(
    """
    import asyncio, json, resource, sys, time
    from bananaflow.backends import create_backend
    from bananaflow.config import Settings
    from bananaflow.generation import ImageRequest

    async def main(url: str) -> None:
        settings = Settings.model_validate(
            {"backends": {"aistudio": {"base_url": url, "api_key": "test-key-for-bounds"}}}
        )
        backend = create_backend("aistudio", settings)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.monotonic()
        try:
            await backend.generate(ImageRequest(prompt="x"))
            outcome = "an image"
        except Exception as e:
            outcome = type(e).__name__
        seconds = time.monotonic() - started
        await backend.aclose()
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(json.dumps({"outcome": outcome, "peak_rss_growth_mb": grown / 1024,
                          "seconds": seconds}))

    asyncio.run(main(sys.argv[1]))
    """
)


@pytest.mark.anyio
async def test_a_gzip_bomb_is_refused_without_inflating_it() -> None:
    """The client runs in a child process so its peak RSS is its own, not pytest's."""
    body = gzip_bomb()
    assert len(body) < 1.1 * 1024 * 1024
    async with serve(streamed_gzip(body)) as url:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _CLIENT, url, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await child.communicate()
    result = json.loads(out)
    print("gzip bomb (1 MiB -> 1 GiB):", result)
    assert result["outcome"] == "ResponseTooLarge"
    assert result["peak_rss_growth_mb"] < 300


def test_an_oversized_answer_is_typed_and_not_retried() -> None:
    err = errors.ResponseTooLarge("too big", backend="aistudio")
    assert isinstance(err, MalformedResponse) and not err.retryable
    assert Settings().generate.max_response_mb == 96


# --------------------------------------------------------------------------- 3. broken masters


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("model", "bad"),
    [
        ("gemini-3-pro-image", png(1024, 1024)[:3000]),  # half a PNG: the header still reads
        ("gemini-3-pro-image", png(16, 16)),  # a thumbnail for a 1K job
        ("gemini-3-pro-image", png(1024, 768)),  # the wrong ratio
        ("gemini-2.5-flash-image", png(16, 16)),  # no table, but far too small
        ("gemini-2.5-flash-image", png(1024, 512)),  # no table, but not 1:1
    ],
    ids=["half-png", "16x16-pro", "wrong-ratio-pro", "16x16-flash", "wrong-ratio-flash"],
)
async def test_a_broken_master_is_a_retryable_bad_image_and_never_returned(
    model: str, bad: bytes
) -> None:
    policy = RetrySettings(initial_delay_s=0.01, jitter=False, max_attempts=3)
    request = ImageRequest(prompt="x", model=model)
    answers = [image_answer(bad), image_answer(bad), image_answer(png(1024, 1024))]
    async with serve(*answers) as url:
        backend = create_backend("aistudio", settings(url))
        with pytest.raises(MalformedResponse) as info:
            await backend.generate(request)
        image = await generate_with_retries(backend, request, policy)  # bad, then good
        await backend.aclose()
    assert type(info.value).__name__ == "BadImage" and info.value.retryable
    assert info.value.kind == MalformedResponse.kind
    assert (image.width, image.height, image.attempts) == (1024, 1024, 2)


@pytest.mark.anyio
async def test_a_broken_master_on_every_attempt_fails_as_bad_image() -> None:
    policy = RetrySettings(initial_delay_s=0.01, jitter=False, max_attempts=2)
    async with serve(image_answer(png(1024, 1024)[:-12])) as url:  # IEND missing
        backend = create_backend("aistudio", settings(url))
        with pytest.raises(MalformedResponse) as info:
            await generate_with_retries(backend, ImageRequest(prompt="x"), policy)
        await backend.aclose()
    assert type(info.value).__name__ == "BadImage" and "cut short" in str(info.value)
    assert info.value.attempts == 2  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- 6. YAML aliases


def laughs(levels: int) -> str:
    """One prompt whose text is nine aliases per level deep: 9**levels strings from ~300 bytes.

    The text must be a string, so before the fix the error message quoted (``repr``) it all.
    """
    lists = ["&a0 [lol,lol,lol,lol,lol,lol,lol,lol,lol]"]
    lists += [f"&a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "- text: [" + ",\n    ".join(lists) + "]\n"


def test_an_alias_bomb_batch_file_fails_fast_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text(laughs(8))  # 43 million strings once expanded
    tracemalloc.start()
    cpu = time.process_time()
    try:
        with pytest.raises(InputError) as info:
            load_batch(path)
        cpu = time.process_time() - cpu
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    msg = str(info.value)
    assert str(path) in msg and "aliases are limited" in msg and "\n" not in msg
    assert cpu < 2 and peak < 20 * 1024 * 1024


def test_an_alias_bomb_config_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("expand:\n  presets:\n" + laughs(7).replace("- text:", "    x:"))
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert str(path) in str(info.value) and "aliases are limited" in str(info.value)


def test_an_anchor_inside_itself_is_refused() -> None:
    with pytest.raises(yaml.YAMLError, match="aliases are limited"):
        yamlio.load_yaml("a: &x [1, *x]\n")


def test_ordinary_anchors_and_aliases_still_load(tmp_path: Path) -> None:
    first = "- {text: item 0, presets: &common [catalogue, print]}\n"
    rest = "".join(f"- {{text: item {i}, presets: *common}}\n" for i in range(1, 2000))
    path = tmp_path / "batch.yaml"
    path.write_text(first + rest)
    specs = load_batch(path)
    assert len(specs) == 2000 and specs[-1].presets == ["catalogue", "print"]
    assert yamlio.load_yaml("base: &b {ratio: 16:9}\nother:\n  <<: *b\n") == {
        "base": {"ratio": "16:9"},
        "other": {"ratio": "16:9"},
    }


def test_shipped_configs_still_load() -> None:
    for name in ("local", "dev", "prod"):
        load_settings(name, environ={})


# --------------------------------------------------------------------------- 7. blank prompts

INVISIBLE = ["\u200b", "\u200c\u200d", "\u2060", "\ufeff", "\u00ad", " \u200b\t\n", "\u3000"]


@pytest.mark.parametrize("prompt", INVISIBLE)
def test_an_invisible_prompt_is_blank(prompt: str) -> None:
    assert generation.is_blank_text(prompt)
    with pytest.raises(ValidationError, match="prompt is blank"):
        ImageRequest(prompt=prompt)


@pytest.mark.parametrize("prompt", ["a", "\u200ba\u200b", "é", "猫", "🍌"])
def test_a_visible_character_is_enough(prompt: str) -> None:
    assert not generation.is_blank_text(prompt)
    assert ImageRequest(prompt=prompt).prompt == prompt


@pytest.mark.anyio
async def test_rewriting_an_invisible_prompt_fails_before_any_request() -> None:
    backend = create_backend("aistudio", settings("http://127.0.0.1:9"))  # nothing listens
    with pytest.raises(InputError, match="blank"):
        await backend.rewrite_prompt("\u200b\u2060")
    await backend.aclose()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
