"""Which URLs are stores, parsed and validated up front, and shown without credentials.
"""

from __future__ import annotations

import os
import re

import fsspec

from bananaflow.errors import InputError
from bananaflow.storage.names import check_relative

_LOCAL = ("file", "local")
_GCS = ("gs", "gcs")
# Other writable bucket-style object stores, handled through plain fsspec when their package is
# installed (best effort: no object metadata, create-only via exclusive open). Read-only or
# host-style schemes (http, zip, github, sftp, ...) are refused up front.
_OBJECT_STORES = ("s3", "s3a", "az", "abfs", "abfss", "oss")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_URL_FIX = "use file:///abs/dir, a local path like ./output, memory://name or gs://bucket/prefix"


def redact_url(url: str) -> str:
    """The URL without userinfo or query string, so errors never echo credentials."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    host, slash, tail = rest.partition("/")
    host = host.rpartition("@")[2]
    return f"{scheme}://{host}{slash}{tail.split('?', 1)[0]}"


def _bad_url(url: str, problem: str) -> InputError:
    return InputError("storage.url", f"{redact_url(url)}: {problem}", fix=_URL_FIX)


def parse_url(url: str) -> tuple[str, str]:
    """(protocol, root) where root is the fsspec path of the store's top directory/prefix."""
    if not isinstance(url, str) or not url.strip():
        raise _bad_url(str(url), "empty storage URL")
    url = url.strip()
    if "::" in url:
        raise _bad_url(url, "chained fsspec URLs are not supported")
    if "://" not in url:
        return "file", os.path.abspath(os.path.expanduser(url))
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if not _SCHEME.match(scheme):
        raise _bad_url(url, f"malformed scheme {scheme!r}")
    if "?" in rest or "#" in rest:
        raise _bad_url(url, "query strings and fragments are not supported")
    if scheme in _LOCAL:
        rest = rest[len("localhost") :] if rest.startswith("localhost/") else rest
        if not rest:
            raise _bad_url(url, "no directory given")
        return "file", os.path.abspath(os.path.expanduser(rest))
    if scheme == "memory":
        return "memory", "/" + rest.strip("/")
    if scheme in _GCS:
        bucket, _, prefix = rest.partition("/")
        if "@" in bucket or not _BUCKET.match(bucket):
            raise _bad_url(url, f"invalid bucket name {bucket.rpartition('@')[2]!r}")
        prefix = prefix.strip("/")
        if prefix:
            check_relative(prefix, field="storage.url")
        return "gs", f"{bucket}/{prefix}" if prefix else bucket
    if scheme not in _OBJECT_STORES:
        known = scheme in fsspec.available_protocols()
        raise _bad_url(url, f"{'unsupported' if known else 'unknown'} scheme {scheme!r}")
    try:
        cls = fsspec.get_filesystem_class(scheme)
    except ValueError:
        raise _bad_url(url, f"unknown scheme {scheme!r}") from None
    except ImportError as e:
        raise _bad_url(
            url, f"scheme {scheme!r} needs a package that is not installed ({e})"
        ) from None
    root = cls._strip_protocol(url)
    return scheme, root.rstrip("/") if isinstance(root, str) else str(root)
