"""The Gemini Files API: resumable upload, get, list, delete and download of batch files.

Upload is Google's two-step resumable protocol (batch-and-model-tiers.md §2.1): ``start``
answers with an ``x-goog-upload-url``, then ``upload, finalize`` (or ``upload`` chunks first)
sends the bytes at the announced offsets. Every answer to the upload URL carries
``x-goog-upload-status``: the SDK retries three times when it is missing. Objects expire after
``emulator.batch.file_ttl_s``; only generated files (batch output) may be downloaded.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from bananaflow.emulator import messages as msg
from bananaflow.emulator import responses as resp
from bananaflow.emulator.asynccall import logged_call, state_of
from bananaflow.emulator.auth import api_key_of
from bananaflow.emulator.batchstate import AsyncStore, StoredFile, UploadSession
from bananaflow.emulator.pipeline import error_response, received_url

VERSIONS = ("v1", "v1beta")
MAX_FILE_BYTES = 2 * 1024**3


def store_of(request: Request) -> AsyncStore:
    return state_of(request).asyncs


def base_url(request: Request) -> str:
    host = request.headers.get("host") or "emulator"
    return f"{request.url.scheme}://{host}"


def check_key(request: Request) -> None:
    """AI Studio authentication, as for generateContent."""
    key = api_key_of(request)
    if key is None:
        raise msg.missing_key()
    if key not in state_of(request).settings.api_keys:
        raise msg.invalid_key(msg.AISTUDIO_SERVICE)


def check_version(version: str) -> None:
    if version not in VERSIONS:
        raise msg.route_not_found()


def json_response(body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        resp.dumps(body), 200, headers=headers, media_type="application/json; charset=UTF-8"
    )


def camel_or_snake(obj: dict[str, Any], camel: str, snake: str) -> Any:
    return obj.get(camel, obj.get(snake))


def page_params(request: Request, default_size: int) -> tuple[int, int]:
    """(pageSize, offset); the page token is the next offset, opaque to clients."""
    try:
        size = int(request.query_params.get("pageSize") or default_size)
        start = int(request.query_params.get("pageToken") or 0)
    except ValueError:
        raise msg.bad_request("Invalid pageSize or pageToken.") from None
    return max(1, size), max(0, start)


def new_file(
    store: AsyncStore,
    request: Request,
    *,
    name: str,
    display_name: str,
    mime_type: str,
    data: bytes,
    source: str,
) -> StoredFile:
    now = time.time()
    ttl = state_of(request).settings.batch.file_ttl_s
    f = StoredFile(name, display_name, mime_type, data, now, now + ttl, source)
    store.files[name] = f
    return f


def _logged(request: Request, operation: str) -> Any:
    return state_of(request).begin(
        method=request.method,
        url=received_url(request),
        backend="aistudio",
        operation=operation,
        model=None,
        generation=False,
        api=False,
    )


async def upload(request: Request) -> Response:
    """``POST /upload/{version}/files``: start a session, or send (and finalize) its bytes."""
    state = state_of(request)
    call = _logged(request, "files.upload")
    try:
        check_version(request.path_params["version"])
        command = request.headers.get("x-goog-upload-command", "").replace(" ", "").lower()
        if command == "start":
            check_key(request)  # the session URL is the credential after this, as at Google
            out = await _start(request)
        else:
            out = await _chunk(request, set(command.split(",")))
        state.asyncs.save()
        state.decide(call, 200, "ok")
        return out
    except msg.ApiError as err:
        state.decide(call, err.status, str(err.status))
        err.headers.setdefault("x-goog-upload-status", "final")
        return error_response(err)
    finally:
        state.end(call)


async def _start(request: Request) -> Response:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise msg.invalid_json("Unexpected token.") from None
    meta = body.get("file") if isinstance(body, dict) else None
    meta = meta if isinstance(meta, dict) else {}
    size_text = request.headers.get("x-goog-upload-header-content-length") or camel_or_snake(
        meta, "sizeBytes", "size_bytes"
    )
    try:
        size = int(size_text or 0)
    except ValueError:
        raise msg.bad_request("Invalid X-Goog-Upload-Header-Content-Length.") from None
    if size > MAX_FILE_BYTES:
        raise msg.bad_request("File size exceeds the 2 GB limit.")
    mime = (
        request.headers.get("x-goog-upload-header-content-type")
        or camel_or_snake(meta, "mimeType", "mime_type")
        or "application/octet-stream"
    )
    wanted = meta.get("name")
    file_id = wanted.split("/", 1)[-1] if isinstance(wanted, str) and wanted else None
    upload_id = secrets.token_hex(12)
    store_of(request).uploads[upload_id] = UploadSession(
        display_name=str(camel_or_snake(meta, "displayName", "display_name") or ""),
        mime_type=str(mime),
        size=size,
        file_id=file_id,
    )
    version = request.path_params["version"]
    url = f"{base_url(request)}/upload/{version}/files?upload_id={upload_id}"
    return Response(b"", 200, headers={"x-goog-upload-url": url, "x-goog-upload-status": "active"})


async def _chunk(request: Request, command: set[str]) -> Response:
    store = store_of(request)
    upload_id = request.query_params.get("upload_id", "")
    session = store.uploads.get(upload_id)
    if session is None or "upload" not in command:
        raise msg.error(404, "Upload session not found or command not supported.")
    offset_text = request.headers.get("x-goog-upload-offset", "0")
    if not offset_text.isdigit() or int(offset_text) != len(session.received):
        raise msg.bad_request(
            f"Invalid X-Goog-Upload-Offset {offset_text}; expected {len(session.received)}."
        )
    session.received += await request.body()
    if len(session.received) > session.size > 0:
        raise msg.bad_request("More bytes than announced in X-Goog-Upload-Header-Content-Length.")
    if "finalize" not in command:
        return Response(b"", 200, headers={"x-goog-upload-status": "active"})
    del store.uploads[upload_id]
    file_id = session.file_id or secrets.token_hex(6)
    f = new_file(
        store,
        request,
        name=f"files/{file_id}",
        display_name=session.display_name,
        mime_type=session.mime_type,
        data=bytes(session.received),
        source="UPLOADED",
    )
    store.uploaded += 1
    version = request.path_params["version"]
    return json_response(
        {"file": f.resource(base_url(request), version)}, {"x-goog-upload-status": "final"}
    )


async def _answer(request: Request, operation: str, handler: Callable[[], Response]) -> Response:
    def check() -> None:
        check_key(request)
        check_version(request.path_params["version"])

    async def answer() -> Response:
        return handler()

    return await logged_call(
        request, backend="aistudio", operation=operation, check=check, handler=answer
    )


def _not_found(name: str) -> msg.ApiError:
    return msg.error(
        403, f"You do not have permission to access the File {name} or it may not exist."
    )


async def file_item(request: Request) -> Response:
    """``GET|DELETE /{version}/files/{id}``, and ``GET …/files/{id}:download?alt=media``."""
    fid, _, verb = request.path_params["fid"].partition(":")
    if verb == "download":
        return await download(request)
    if verb:
        return error_response(msg.route_not_found())
    name = f"files/{fid}"
    store = store_of(request)

    def handle() -> Response:
        f = store.live_file(name)
        if f is None:
            raise _not_found(name)
        if request.method == "DELETE":
            del store.files[name]
            return json_response({})
        return json_response(f.resource(base_url(request), request.path_params["version"]))

    return await _answer(request, f"files.{request.method.lower()}", handle)


async def list_files(request: Request) -> Response:
    """``GET /{version}/files?pageSize=&pageToken=`` (the token is the next offset)."""
    store = store_of(request)

    def handle() -> Response:
        size, start = page_params(request, 10)
        live = [f for n in list(store.files) if (f := store.live_file(n)) is not None]
        page = live[start : start + size]
        body: dict[str, Any] = {
            "files": [f.resource(base_url(request), request.path_params["version"]) for f in page]
        }
        if start + size < len(live):
            body["nextPageToken"] = str(start + size)
        return json_response(body)

    return await _answer(request, "files.list", handle)


async def download(request: Request) -> Response:
    """The bytes of a generated file (both the documented and the SDK's path)."""
    fid = request.path_params["fid"].partition(":")[0]
    name = f"files/{fid}"
    store = store_of(request)

    def handle() -> Response:
        if request.query_params.get("alt") != "media":
            raise msg.bad_request("Download requires alt=media.")
        f = store.live_file(name)
        if f is None:
            raise _not_found(name)
        if f.source != "GENERATED":
            raise msg.bad_request("Only generated files can be downloaded.")
        return Response(f.data, 200, media_type=f.mime_type)

    return await _answer(request, "files.download", handle)
