"""The curated dataset's pointer: the one file that names the current version.

A published curated dataset is a folder of versions and a pointer naming the current one::

    <output>/<dataset_id>/curated/
      current.json   {"root": "v000002", "version": 2}    (root null: no episode is selected)
      v000001/       a superseded version, removed by a later publish (``publish.keep_superseded_s``)
      v000002/       the current LeRobot v3.0 dataset: LeRobotDataset(repo_id, root=...) opens it

Readers resolve the pointer **once** (:func:`resolve_curated`, one small GET) and open the root it names;
every file that root needs was written before the pointer named it, and it is not removed while a reader
can still be using it. The pointer is a single file replaced in one step (``pipeline.atomic``), so a
reader gets the old version or the new one, on local disk, S3 and GCS alike. See ``docs/publishing.md``.

This module imports nothing heavy (no PyAV, LeRobot, torch or Ray): ``jobs.pull`` and the report use it.
The writing side is :mod:`pipeline.curated.store`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pipeline.atomic import touching
from pipeline.layout import POINTER_FILE
from pipeline.storage import filesystem_for, join_uri

_VERSION_NAME = re.compile(r"^v(\d{6})$")


@dataclass(frozen=True)
class Pointer:
    """What ``current.json`` says.

    Attributes:
        version: The number of the last version made (0 before the first one).
        root: The current version's folder under ``curated/``, None when no episode is selected.
    """

    version: int
    root: str | None

    def to_json(self) -> bytes:
        """The file's bytes (sorted keys: the same pointer, the same bytes)."""
        return json.dumps({"root": self.root, "version": self.version}, sort_keys=True).encode()

    def next_root(self) -> str:
        """The folder of the version after this one (deterministic: a redone publish reuses it)."""
        return version_folder(self.version + 1)


def version_folder(number: int) -> str:
    """The folder name of version ``number`` (``v000001``...)."""
    return f"v{number:06d}"


def version_number(name: str) -> int | None:
    """The number of a version folder name, None for anything else."""
    found = _VERSION_NAME.match(name)
    return int(found.group(1)) if found else None


def read_pointer(curated_uri: str, storage_options: dict[str, Any]) -> Pointer | None:
    """The pointer under ``curated_uri``, None when nothing was ever published there."""
    uri = join_uri(curated_uri, POINTER_FILE)
    fs, path = filesystem_for(uri, storage_options)
    with touching(uri):
        try:
            raw = json.loads(fs.cat_file(path))
        except FileNotFoundError:
            return None
        return Pointer(int(raw["version"]), raw["root"])


def pointer_age_s(curated_uri: str, storage_options: dict[str, Any]) -> float:
    """Seconds since the pointer was last replaced: how long the versions it superseded have been unused
    by new readers (infinite when there is no pointer: no reader can resolve to them)."""
    uri = join_uri(curated_uri, POINTER_FILE)
    fs, path = filesystem_for(uri, storage_options)
    with touching(uri):
        try:
            modified = fs.modified(path)
        except FileNotFoundError:
            return math.inf
    if modified.tzinfo is None:  # fsspec's local filesystem answers in naive UTC
        modified = modified.replace(tzinfo=UTC)
    return (datetime.now(UTC) - modified).total_seconds()


def resolve_curated(curated_uri: str, storage_options: dict[str, Any] | None = None) -> str | None:
    """The root of the current curated version (open it with ``LeRobotDataset(repo_id, root=...)``), or
    None when no episode is selected or nothing was published.

    Resolve once per read: the root stays complete and unchanged except for appended episodes (which a
    reader that already read its ``meta/info.json`` does not see) until it is superseded and removed.
    """
    pointer = read_pointer(curated_uri, dict(storage_options or {}))
    if pointer is None or pointer.root is None:
        return None
    return join_uri(curated_uri, pointer.root)
