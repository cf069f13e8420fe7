"""Every path is a URI resolved through fsspec: ``s3://`` (s3fs), ``gs://`` (gcsfs), ``file://`` or local.

Credentials and endpoints come from ``storage_options`` or the backends' standard environment/config;
they are passed to fsspec and never formatted into messages. :func:`redact` is the last line of defence
for text built from third-party exceptions.
"""

from __future__ import annotations

import json
import logging
import posixpath
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import fsspec
from fsspec import AbstractFileSystem

log = logging.getLogger(__name__)

# Option names whose values are secrets in s3fs/gcsfs/adlfs-style storage options.
_SECRET_MARKERS = ("key", "secret", "token", "password", "credential", "session")


def filesystem_for(
    uri: str, storage_options: Mapping[str, Any] | None = None
) -> tuple[AbstractFileSystem, str]:
    """Resolves a URI to its filesystem and the path that filesystem understands.

    fsspec caches filesystem instances by their arguments, so calling this per file in a worker reuses
    one client (and its connection pool) per set of options.

    Args:
        uri: ``s3://bucket/key``, ``gs://bucket/key``, ``file:///abs/path`` or a local path.
        storage_options: Backend options, e.g. ``{"endpoint_url": ...}`` for an S3-compatible store.

    Returns:
        ``(fs, path)`` where ``path`` has no protocol.
    """
    return fsspec.core.url_to_fs(uri, **dict(storage_options or {}))


def join_uri(base: str, *parts: str) -> str:
    """Joins path segments onto a URI with ``/``, keeping the base's protocol.

    Args:
        base: A URI or local path; a trailing ``/`` is ignored.
        *parts: Relative segments; leading and trailing ``/`` are ignored, empty ones skipped.

    Returns:
        The joined URI.
    """
    segments = [part.strip("/") for part in parts if part.strip("/")]
    if not segments:
        return base.rstrip("/") or base
    return base.rstrip("/") + "/" + "/".join(segments)


def redact(text: str, storage_options: Mapping[str, Any] | None) -> str:
    """Replaces every secret-looking option value that occurs in ``text`` with ``***``.

    Args:
        text: A message about to be recorded (an error string, a log line).
        storage_options: The options that may have leaked into it (nested mappings are searched too).

    Returns:
        ``text`` without those values.
    """
    for name, value in (storage_options or {}).items():
        if isinstance(value, Mapping):
            text = redact(text, value)  # e.g. s3fs client_kwargs={"aws_secret_access_key": ...}
        elif isinstance(value, str) and len(value) >= 4 and any(m in name.lower() for m in _SECRET_MARKERS):
            text = text.replace(value, "***")
    return text


def upload_dataset(local_root: str | Path, fs: Any, uri: str) -> str:
    """Uploads a dataset folder to an fsspec filesystem so that ``uri`` becomes the dataset root.

    Args:
        local_root: Local dataset folder (the one holding ``meta/``).
        fs: An fsspec filesystem, e.g. ``s3fs.S3FileSystem``.
        uri: Destination root, with or without protocol (``s3://bucket/prefix`` or ``bucket/prefix``).

    Returns:
        ``uri``, unchanged.

    Raises:
        RuntimeError: If a local file is not found at the same relative path under ``uri`` afterwards.
    """
    local_root = Path(local_root)
    remote_root = fs._strip_protocol(uri).rstrip("/")
    # The trailing slash makes fsspec copy the folder's contents into remote_root. Without it, a put into
    # a prefix that already exists nests the folder one level down (cp -r semantics): remote_root/<name>/.
    fs.put(f"{local_root}/", remote_root, recursive=True)
    fs.invalidate_cache(remote_root)
    local = {path.relative_to(local_root).as_posix() for path in local_root.rglob("*") if path.is_file()}
    remote = {posixpath.relpath(path, remote_root) for path in fs.find(remote_root)}
    missing = sorted(local - remote)
    if missing:
        raise RuntimeError(f"{len(missing)} files missing under {uri} after upload, e.g. {missing[:3]}")
    return uri


# Written at the root of every output.uri: the catalog never lists a folder under it as a source dataset.
OUTPUT_MARKER = "_topreward_output.json"


def normalize_uri(uri: str) -> str:
    """A URI with ``.``/``..`` segments resolved and no trailing ``/``; local paths made absolute.

    Raises:
        ValueError: the path climbs above its bucket (``s3://b/../x``) or is empty.
    """
    protocol, sep, path = uri.partition("://")
    if not sep:
        return Path(uri).expanduser().resolve().as_posix()
    if protocol == "file":
        return "file://" + Path(path).resolve().as_posix()
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if len(parts) <= 1:
                raise ValueError(f"{uri}: '..' climbs above the bucket")
            parts.pop()
        else:
            parts.append(part)
    if not parts:
        raise ValueError(f"{uri}: no bucket or path")
    return f"{protocol}://" + "/".join(parts)


# Schemes naming the same store as another one. s3a:// and s3n:// are Hadoop's names for S3 (Spark users
# pass them); gcs:// is gcsfs's second name for gs://.
_SCHEME_ALIASES = {"s3a": "s3", "s3n": "s3", "gcs": "gs"}


def canonical_uri(uri: str) -> str:
    """One spelling per location, for deciding whether two URIs overlap; never used to open a file.

    :func:`normalize_uri`, then: the scheme lower-cased; ``s3a://`` and ``s3n://`` become ``s3://``,
    ``gcs://`` becomes ``gs://``; ``file://<path>`` and a plain path become the same absolute, resolved
    local path (no scheme). Files are still opened through the URI the user gave.

    Raises:
        ValueError: as :func:`normalize_uri`.
    """
    scheme, sep, rest = uri.partition("://")
    if sep:
        scheme = scheme.lower()
        if scheme in ("file", "local"):
            # Resolved like a plain path: the same folder must compare equal however it is spelt.
            return normalize_uri(rest or "/")
        uri = f"{_SCHEME_ALIASES.get(scheme, scheme)}://{rest}"
    return normalize_uri(uri)


def is_under(uri: str, base_uri: str) -> bool:
    """Whether ``uri`` is ``base_uri`` itself or inside it, compared in :func:`canonical_uri` form.

    So ``file:///data/x`` is inside ``/data``, and ``s3a://b/src/out`` inside ``s3://b/src``. A URI that
    climbs above its bucket is inside nothing.
    """
    try:
        uri, base = canonical_uri(uri), canonical_uri(base_uri)
    except ValueError:
        return False
    return uri == base or uri.startswith(base.rstrip("/") + "/")


def ensure_under(uri: str, base_uri: str) -> str:
    """Returns ``uri`` when it stays under ``base_uri``; every written output path goes through this.

    Raises:
        ValueError: ``uri`` escapes ``base_uri`` (e.g. a dataset id with ``..`` in it).
    """
    if not is_under(uri, base_uri):
        raise ValueError(f"refusing to write {uri}: it is not under the output {base_uri}")
    return uri


def storage_retry_options(uri: str, storage_options: Mapping[str, Any], attempts: int) -> dict[str, Any]:
    """``storage_options`` with the backend's own retry-with-backoff set to ``attempts`` tries.

    s3fs: botocore's standard retry mode (backoff with jitter on 5xx, throttling and connection errors)
    via ``config_kwargs``, on top of s3fs's own retries of dropped connections. gcsfs retries 5xx and
    connection errors with backoff by itself (6 tries); it takes no per-instance setting. Values the
    user set explicitly are kept.
    """
    options = dict(storage_options)
    if canonical_uri(uri).startswith("s3://"):
        config_kwargs = dict(options.get("config_kwargs") or {})
        # botocore's ``max_attempts`` counts retries after the first request; ``total_max_attempts``
        # counts every request, which is what ``retry.storage_attempts`` promises.
        config_kwargs.setdefault("retries", {"total_max_attempts": attempts, "mode": "standard"})
        options["config_kwargs"] = config_kwargs
    return options


def with_storage_retries(cfg: Any) -> Any:
    """The run config with ``retry.storage_attempts`` applied to the source and output storage options."""
    from dataclasses import replace

    attempts = cfg.retry.storage_attempts
    first_source = cfg.source.uris[0] if cfg.source.uris else ""
    source = replace(
        cfg.source, storage_options=storage_retry_options(first_source, cfg.source.storage_options, attempts)
    )
    output = replace(
        cfg.output,
        storage_options=storage_retry_options(cfg.output.uri, cfg.output.storage_options, attempts),
    )
    return replace(cfg, source=source, output=output)


def forget_listings(fs: AbstractFileSystem, path: str) -> None:
    """Drops every listing ``fs`` has cached at, above or below ``path`` (a path as ``fs`` understands it).

    fsspec keeps one filesystem instance per thread and set of options, listings cached in it, and a
    thread pool's new thread can be handed a finished thread's instance. ``invalidate_cache(path)`` keeps
    the sub-folders' entries, and s3fs opens a file with the ETag its cache holds, so a file rewritten
    since an earlier listing would be refused by the store (``FileExpired``) instead of read as it is now.
    """
    base = path.rstrip("/")
    fs.invalidate_cache(base)  # the path itself and its parents
    inside = f"{base}/"
    for key in [key for key in list(fs.dircache) if key.startswith(inside)]:
        fs.dircache.pop(key, None)


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


def read_json_files(folder_uri: str, suffix: str, storage_options: Mapping[str, Any]) -> list[Any]:
    """The parsed JSON files directly in a folder whose names end with ``suffix``, by name; ``[]`` if absent.

    The folder is listed literally (:func:`list_folder`): a folder or file name holding ``[``, ``*`` or
    ``?`` is never read as a glob pattern. The listing cache is dropped first: fsspec shares filesystem
    instances per process, and another run in the same process may have listed this folder before. A
    file that is not JSON (cut short by a crash, a bad disk) is skipped with a warning naming it: one
    broken record must not hide all the others.
    """
    fs, folder = filesystem_for(folder_uri, storage_options)
    folder = folder.rstrip("/")
    forget_listings(fs, folder)
    found = []
    for entry in list_folder(fs, folder):
        if entry["type"] != "file" or not posixpath.basename(entry["name"]).endswith(suffix):
            continue
        try:
            found.append(json.loads(fs.cat_file(entry["name"])))
        except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
            log.warning("skipping %s: not JSON (%s)", fs.unstrip_protocol(entry["name"]), err)
    return found
