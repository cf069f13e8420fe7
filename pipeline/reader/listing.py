"""The identity of each listed object: what tells one stored version of a file from the next.

Listings themselves are literal (``pipeline.storage.list_files`` / ``list_folder``): names that come
from storage are never handed to ``fs.glob``.
"""

from __future__ import annotations

from typing import Any

# What identifies one stored version of an object, per backend, in order of preference. Each changes
# when the object is rewritten with other bytes and is reported by the backend's listing itself:
# gcsfs: ``generation`` (a new one per write; ``md5Hash`` for listings without it); s3fs: ``ETag``
# (the content's MD5, or a digest of the part digests for multipart uploads); other stores' ``etag``;
# local disk: ``mtime`` (with the size, as rsync compares files).
_IDENTITY_KEYS = ("generation", "md5Hash", "ETag", "etag", "mtime")


def object_identity(info: dict[str, Any]) -> str:
    """A short text identifying one stored version of an object, from its fsspec listing entry.

    Args:
        info: One entry of ``fs.find(..., detail=True)`` / ``fs.ls(..., detail=True)`` from s3fs, gcsfs
            or the local filesystem.

    Returns:
        ``"size=<bytes>;<key>=<value>"`` with the first of generation, md5Hash, ETag, etag, mtime the
        entry has; ``"size=<bytes>"`` when it has none of them.
    """
    parts = [f"size={info.get('size')}"]
    for key in _IDENTITY_KEYS:
        value = info.get(key)
        if value not in (None, ""):
            parts.append(f"{key}={value}")
            break
    return ";".join(parts)
