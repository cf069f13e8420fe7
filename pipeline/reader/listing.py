"""Literal listings of object storage, and the identity of each listed object.

Names that come from storage (dataset folders, files) are never handed to ``fs.glob``: a folder called
``pick[1]`` or ``pick*`` is a pattern to glob and would read a neighbour's files. Everything here lists
a folder (``fs.ls`` / ``fs.find``) and filters the names in Python.
"""

from __future__ import annotations

import posixpath
from typing import Any

from fsspec import AbstractFileSystem

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


def list_files(fs: AbstractFileSystem, folder: str, maxdepth: int | None = None) -> dict[str, dict[str, Any]]:
    """Every file below ``folder``, by its path relative to ``folder``, with its listing entry.

    One recursive listing (a single paged prefix listing on s3fs and gcsfs); ``folder`` is taken
    literally. A missing folder lists as empty.

    Args:
        fs: The filesystem holding ``folder``.
        folder: A path as ``fs`` understands it (no protocol).
        maxdepth: Folder levels to descend (1: the folder's own files); ``None`` for all.

    Returns:
        ``{relative path: info}``, sorted by relative path.
    """
    base = folder.rstrip("/")
    found = fs.find(base, maxdepth=maxdepth, withdirs=False, detail=True)
    files = {}
    for name, info in found.items():
        name = name.rstrip("/")
        # fs.find returns the path itself when it is a file, and never anything outside it.
        if info.get("type", "file") == "file" and name.startswith(base + "/"):
            files[name[len(base) + 1 :]] = info
    return dict(sorted(files.items()))


def list_folder(fs: AbstractFileSystem, folder: str) -> list[dict[str, Any]]:
    """The entries (files and sub-folders) directly in ``folder``, taken literally; ``[]`` if absent.

    Args:
        fs: The filesystem holding ``folder``.
        folder: A path as ``fs`` understands it (no protocol).

    Returns:
        Listing entries sorted by name, each with ``name`` (no trailing ``/``) and ``type``.
    """
    base = folder.rstrip("/")
    try:
        entries = fs.ls(base, detail=True)
    except FileNotFoundError:
        return []
    inside = [
        {**entry, "name": entry["name"].rstrip("/")}
        for entry in entries
        if posixpath.dirname(entry["name"].rstrip("/")) == base
    ]
    return sorted(inside, key=lambda entry: entry["name"])
