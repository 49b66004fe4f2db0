"""``fileData`` parts fetched before a generateContent is parsed, as Google reads them itself.

AI Studio takes a Files API uri (``…/v1beta/files/<id>``): the emulator reads its own Files API
store, and an unknown or expired file is the 403 ``files.get`` answers (the same text for
generateContent is UNVERIFIED). Vertex takes ``gs://`` objects: read from the GCS API at
``emulator.batch.gcs_endpoint`` (a GCS emulator in tests); a missing object is a 400 (status and
text UNVERIFIED). Without an endpoint a ``gs://`` part is acknowledged without its pixels, as
before. Fetched bytes go to ``validation.parse_generate``, which draws them as thumbnails.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from bananaflow.emulator import messages as msg
from bananaflow.emulator.routing import Route
from bananaflow.emulator.state import EmulatorState

_FILES_MARK = "/files/"


def _file_uris(body: Any) -> list[str]:
    """Every image ``fileData`` uri in the turns (camelCase or snake_case; malformed shapes are
    left for the parser to refuse)."""
    contents = body.get("contents") if isinstance(body, dict) else None
    uris: list[str] = []
    for content in contents if isinstance(contents, list) else []:
        parts = content.get("parts") if isinstance(content, dict) else None
        for part in parts if isinstance(parts, list) else []:
            fd = (part.get("fileData") or part.get("file_data")) if isinstance(part, dict) else None
            if not isinstance(fd, dict):
                continue
            uri = fd.get("fileUri") or fd.get("file_uri")
            mime = str(fd.get("mimeType") or fd.get("mime_type") or "")
            if isinstance(uri, str) and mime.startswith("image/") and uri not in uris:
                uris.append(uri)
    return uris


def _files_api_bytes(state: EmulatorState, uri: str) -> bytes:
    name = "files/" + uri.rpartition(_FILES_MARK)[2] if _FILES_MARK in uri else uri
    found = state.asyncs.live_file(name)
    if found is None:
        raise msg.error(
            403, f"You do not have permission to access the File {name} or it may not exist."
        )
    return found.data


async def _gcs_bytes(endpoint: str, uri: str) -> bytes:
    bucket, _, obj = uri.removeprefix("gs://").partition("/")
    if not bucket or not obj:
        raise msg.bad_request(f"Invalid Cloud Storage URI: {uri}")
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.get(
            f"{endpoint.rstrip('/')}/storage/v1/b/{bucket}/o/{quote(obj, safe='')}",
            params={"alt": "media"},
        )
    if r.status_code == 404:
        raise msg.bad_request(f"Cannot fetch content from the provided URL: {uri} not found.")
    if not r.is_success:
        raise msg.error(500, f"Cannot read {uri}: HTTP {r.status_code}.")
    return r.content


async def fetch_files(state: EmulatorState, route: Route, body: Any) -> dict[str, bytes]:
    """The bytes of each image ``fileData`` uri of ``body`` the route's backend can read."""
    found: dict[str, bytes] = {}
    endpoint = state.settings.batch.gcs_endpoint
    for uri in _file_uris(body):
        if route.backend == "aistudio":
            found[uri] = _files_api_bytes(state, uri)
        elif uri.startswith("gs://") and endpoint:
            found[uri] = await _gcs_bytes(endpoint, uri)
    return found
