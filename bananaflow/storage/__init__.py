"""Object storage behind one small interface: local directories, ``memory://`` and ``gs://``.

- ``store``: the store itself, create-only writes made atomic per backend;
- ``urls``: which URLs are stores, and how one is shown without secrets;
- ``names``: object names, relative and expanded from the upload template;
- ``retry``: remote outages retried within a deadline, final answers not.
"""

from bananaflow.storage.names import check_relative, object_name
from bananaflow.storage.retry import is_transient_storage_error, retry_transient
from bananaflow.storage.store import PutResult, StorageConflict, StorageFull, Store, open_store
from bananaflow.storage.urls import redact_url

__all__ = [
    "PutResult",
    "StorageConflict",
    "StorageFull",
    "Store",
    "check_relative",
    "is_transient_storage_error",
    "object_name",
    "open_store",
    "redact_url",
    "retry_transient",
]
