"""Writing published files so that a reader never sees a missing or half-written one.

The single-file rule: a file is replaced in one step, never deleted first. On local disk the new bytes go
to a hidden temporary name in the same folder (``.<name>.<uuid>.tmp``: no reader's glob matches it) and
``os.replace`` renames it over the old file, which POSIX makes atomic. On S3 and GCS an object PUT is
atomic (a reader gets the old object or the new one, never a mix), so the bytes are written straight to
the final key: a temporary object there would only add a copy and a delete.

Every write and delete logs a ``publish step`` line at DEBUG with a stable name (see ``docs/publishing.md``);
the fault-injection tests kill the publisher at chosen steps by watching those lines.

:class:`FileError` ties an exception to the file it happened on, so a failed publish names the file.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from pipeline.storage import filesystem_for

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".tmp"


class FileError(RuntimeError):
    """An operation on one file failed; ``str()`` is ``"<uri>: <ExceptionType>: <reason>"``."""

    def __init__(self, uri: str, reason: str) -> None:
        super().__init__(f"{uri}: {reason}")
        self.uri, self.reason = uri, reason


@contextmanager
def touching(uri: str) -> Iterator[None]:
    """Re-raises any exception of the block as a :class:`FileError` naming ``uri``.

    Exceptions that already name their file (``FileError``, or anything whose message starts with
    ``uri``) pass through unchanged.
    """
    try:
        yield
    except FileError:
        raise
    except Exception as err:
        if str(err).startswith(uri):
            raise
        raise FileError(uri, f"{type(err).__name__}: {err}") from err


def step(name: str, uri: str) -> None:
    """Records one step of the publishing protocol (a DEBUG line: ``publish step <name> <uri>``)."""
    log.debug("publish step %s %s", name, uri)


def is_local(fs: AbstractFileSystem) -> bool:
    """Whether ``fs`` is the local disk (where a rename is atomic and an object PUT does not exist)."""
    return isinstance(fs, LocalFileSystem)


def _local_temp(path: str) -> str:
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{uuid.uuid4().hex}{TEMP_SUFFIX}")


def write_bytes(data: bytes, uri: str, storage_options: dict[str, Any], *, name: str = "write") -> int:
    """Replaces ``uri`` with ``data`` in one step; does nothing when the file already holds those bytes.

    Skipping identical content keeps a republished file's mtime (and avoids a PUT), so an unchanged
    output looks unchanged to every reader and to ``rsync``-style copies.

    Returns:
        The bytes written: ``len(data)``, or 0 when the file already held them.
    """
    fs, path = filesystem_for(uri, storage_options)
    with touching(uri):
        fs.invalidate_cache(path)
        if fs.exists(path) and fs.size(path) == len(data) and fs.cat_file(path) == data:
            return 0
        if is_local(fs):
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            temp = _local_temp(path)
            try:
                with open(temp, "wb") as f:
                    f.write(data)
                os.replace(temp, path)
            finally:
                if os.path.exists(temp):
                    os.unlink(temp)
        else:
            fs.pipe_file(path, data)
    step(name, uri)
    return len(data)


def parquet_bytes(table: pa.Table) -> bytes:
    """A table's parquet encoding; no timestamps are written, so equal tables give equal bytes."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def write_parquet(table: pa.Table, uri: str, storage_options: dict[str, Any]) -> int:
    """Replaces the parquet file at ``uri`` in one step (see :func:`write_bytes`)."""
    return write_bytes(parquet_bytes(table), uri, storage_options, name="write")


def put_file(local: Path, uri: str, storage_options: dict[str, Any], *, name: str = "put") -> int:
    """Copies a finished local file to ``uri`` in one step; returns the bytes written."""
    fs, path = filesystem_for(uri, storage_options)
    with touching(uri):
        if is_local(fs):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            temp = _local_temp(path)
            try:
                fs.put_file(str(local), temp)
                os.replace(temp, path)
            finally:
                if os.path.exists(temp):
                    os.unlink(temp)
        else:
            fs.put_file(str(local), path)
    step(name, uri)
    return local.stat().st_size


def remove(uris: list[str], storage_options: dict[str, Any], *, name: str = "remove") -> None:
    """Deletes files one by one (each a step, so a kill can land between two of them)."""
    for uri in uris:
        fs, path = filesystem_for(uri, storage_options)
        with touching(uri):
            fs.rm_file(path)
        step(name, uri)
