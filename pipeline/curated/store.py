"""The versioned store of a curated dataset: version roots behind the pointer, and their cleanup.

Under the curated folder (``<output>/<dataset_id>/curated/``) each version is a whole LeRobot v3.0 root
(``v000001/``...) and ``current.json`` names the current one (:mod:`pipeline.curated.pointer`, the
reader's side). :class:`VersionStore` lists the folder, removes what no reader can reach any more and
replaces the pointer; :class:`VersionRoot` is one version: what its ``info.json`` commits to
(:class:`Committed`) and the protocol's writes, each one atomic (``pipeline.atomic``). The order of those
writes is the builder's (:mod:`pipeline.curated.builder`); ``docs/publishing.md`` explains it.
"""

from __future__ import annotations

import json
import logging
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from lerobot.datasets.utils import (
    DEFAULT_EPISODES_PATH,
    DEFAULT_TASKS_PATH,
    EPISODES_DIR,
    INFO_PATH,
    STATS_PATH,
    DatasetInfo,
)

from pipeline.atomic import put_file, remove, step, touching, write_bytes
from pipeline.curated.packers import FileIndex, next_index
from pipeline.curated.pointer import Pointer, pointer_age_s, read_pointer, version_number
from pipeline.curated.source import row_stats
from pipeline.layout import POINTER_FILE, PROGRESS_FILE
from pipeline.storage import ensure_under, filesystem_for, join_uri

logger = logging.getLogger(__name__)

# Extra columns of the curated episodes index (lerobot ignores them): where each episode came from.
SOURCE_EPISODE = "topreward/source_episode_index"
SOURCE_FINGERPRINT = "topreward/source_fingerprint"
# Files that are replaced in place (one atomic step each) rather than added under fresh names.
SINGLE_FILES = (INFO_PATH, STATS_PATH, DEFAULT_TASKS_PATH, PROGRESS_FILE)


@dataclass(frozen=True)
class Placed:
    """One episode of the curated dataset: where it came from and where it sits now."""

    source: int
    fingerprint: str
    index: int
    from_index: int
    length: int
    stats: dict[str, dict[str, np.ndarray]]


@dataclass(frozen=True)
class Starts:
    """Where new files begin: after every file the published version references."""

    data: FileIndex
    videos: dict[str, FileIndex]
    episodes_after: FileIndex | None  # the last published episodes file; None: start at (0, 0)

    @classmethod
    def fresh(cls, cameras: list[str]) -> Starts:
        """The first files of a new version."""
        return cls((0, 0), {key: (0, 0) for key in cameras}, None)


def _max_index(rows: list[dict[str, Any]], prefix: str) -> FileIndex:
    return max((row[f"{prefix}/chunk_index"], row[f"{prefix}/file_index"]) for row in rows)


@dataclass
class Committed:
    """The version of the curated dataset its ``info.json`` names, read back from the destination."""

    info: DatasetInfo
    rows: list[dict[str, Any]]
    tasks: pd.DataFrame

    @property
    def cameras(self) -> list[str]:
        """Its video features."""
        return [key for key, ft in self.info.features.items() if ft["dtype"] == "video"]

    def placed(self) -> list[Placed]:
        """Its episodes, in order."""
        return [
            Placed(
                row[SOURCE_EPISODE],
                row[SOURCE_FINGERPRINT],
                row["episode_index"],
                row["dataset_from_index"],
                row["length"],
                row_stats(row),
            )
            for row in self.rows
        ]

    def referenced(self) -> set[str]:
        """Every data, video and episodes file its episodes point at."""
        files = set()
        for row in self.rows:
            files.add(
                self.info.data_path.format(
                    chunk_index=row["data/chunk_index"], file_index=row["data/file_index"]
                )
            )
            files.add(
                DEFAULT_EPISODES_PATH.format(
                    chunk_index=row["meta/episodes/chunk_index"], file_index=row["meta/episodes/file_index"]
                )
            )
            for key in self.cameras:
                files.add(
                    self.info.video_path.format(
                        video_key=key,
                        chunk_index=row[f"videos/{key}/chunk_index"],
                        file_index=row[f"videos/{key}/file_index"],
                    )
                )
        return files

    def starts(self) -> Starts:
        """Fresh file indices after everything this version references."""
        size = self.info.chunks_size
        return Starts(
            next_index(_max_index(self.rows, "data"), size),
            {key: next_index(_max_index(self.rows, f"videos/{key}"), size) for key in self.cameras},
            _max_index(self.rows, "meta/episodes"),
        )


def _is_episodes_file(relative: str) -> bool:
    return posixpath.dirname(posixpath.dirname(relative)) == EPISODES_DIR and relative.endswith(".parquet")


class VersionRoot:
    """One version's root: what is there, and the protocol's writes (each one atomic)."""

    def __init__(self, uri: str, storage_options: dict[str, Any] | None) -> None:
        self.uri, self.options = uri, dict(storage_options or {})
        self.fs, self.root = filesystem_for(uri, self.options)
        self.bytes_written = 0
        self.video_bytes_written = 0

    def file_uri(self, relative: str) -> str:
        """The URI of a file of the dataset; refuses a path (e.g. from a source template) that escapes."""
        return ensure_under(join_uri(self.uri, relative), self.uri)

    def read(self, relative: str) -> bytes:
        """A file's bytes."""
        with touching(self.file_uri(relative)):
            return self.fs.cat_file(posixpath.join(self.root, relative))

    def committed(self, files: set[str]) -> Committed | None:
        """The version ``info.json`` names, or None when there is none or it does not hold together."""
        if INFO_PATH not in files:
            return None
        info = DatasetInfo.from_dict(json.loads(self.read(INFO_PATH)))
        tables = []
        for relative in sorted(filter(_is_episodes_file, files)):
            with touching(self.file_uri(relative)):
                tables.append(pq.read_table(pa.BufferReader(self.read(relative))))
        if not tables:
            return None
        table = pa.concat_tables(tables, promote_options="default")
        # Episodes files of a publish cut short before its info.json hold only episodes beyond the total.
        table = table.filter(pc.less(table["episode_index"], info.total_episodes)).sort_by("episode_index")
        rows = table.to_pylist()
        if [row["episode_index"] for row in rows] != list(range(info.total_episodes)) or sum(
            row["length"] for row in rows
        ) != info.total_frames:
            logger.warning("%s: episodes index and info.json disagree; writing a new version", self.uri)
            return None
        with touching(self.file_uri(DEFAULT_TASKS_PATH)):
            tasks = pd.read_parquet(pa.BufferReader(self.read(DEFAULT_TASKS_PATH)))
        tasks.index.name = "task"
        used = {task for row in rows for task in row["tasks"]}
        return Committed(info, rows, tasks[tasks.index.isin(used)])

    def remove_unreferenced(self, committed: Committed, files: set[str]) -> None:
        """Removes the leftovers of an append cut short: files the committed version does not reference.

        No reader of this version reaches them (they are not referenced, and extra episodes files only
        add rows past its total).
        """
        keep = committed.referenced() | set(SINGLE_FILES)
        self.remove(sorted(files - keep), name="cleanup")

    def put(self, local: Path, relative: str) -> None:
        """Uploads a finished local file under a fresh name."""
        size = put_file(local, self.file_uri(relative), self.options, name="new-file")
        self.bytes_written += size
        if relative.endswith(".mp4"):
            self.video_bytes_written += size

    def write(self, data: bytes, relative: str) -> None:
        """Replaces a single file in one step (unchanged bytes are not rewritten)."""
        self.bytes_written += write_bytes(data, self.file_uri(relative), self.options)

    def remove(self, relatives: list[str], name: str) -> None:
        """Deletes files, one step each."""
        remove([self.file_uri(relative) for relative in sorted(relatives)], self.options, name=name)


class VersionStore:
    """The curated folder: versions of the dataset behind the pointer (:mod:`pipeline.curated.pointer`)."""

    def __init__(self, uri: str, storage_options: dict[str, Any] | None) -> None:
        self.uri, self.options = uri, dict(storage_options or {})
        self.fs, self.root = filesystem_for(uri, self.options)
        self.pointer = read_pointer(uri, self.options)
        self.bytes_written = 0

    @property
    def current(self) -> str | None:
        """The folder of the version the pointer names."""
        return self.pointer.root if self.pointer else None

    def version(self, folder: str) -> VersionRoot:
        """One version's root."""
        return VersionRoot(ensure_under(join_uri(self.uri, folder), self.uri), self.options)

    def entries(self) -> dict[str, set[str]]:
        """Every file under the folder, grouped by its first path segment (a version folder or a file)."""
        self.fs.invalidate_cache(self.root)
        with touching(self.uri):
            found = self.fs.find(self.root) if self.fs.exists(self.root) else []
        grouped: dict[str, set[str]] = {}
        for path in found:
            top, _, rest = posixpath.relpath(path, self.root).partition("/")
            grouped.setdefault(top, set()).add(rest)
        return grouped

    def clean(self, entries: dict[str, set[str]], keep_superseded_s: float) -> list[str]:
        """Removes what no reader can reach any more; returns the superseded versions it still keeps.

        Superseded versions (named by an earlier pointer) are removed once the pointer has named another
        one for ``keep_superseded_s`` (readers resolve it once and may still be reading them); anything
        else outside the current version (a version cut short before the pointer named it, a stray
        temporary file) is removed now.
        """
        last = self.pointer.version if self.pointer else 0
        superseded, abandoned = [], []
        for top in sorted(entries):
            if top in (POINTER_FILE, self.current):
                continue
            number = version_number(top)
            (superseded if number is not None and number <= last else abandoned).append(top)
        if superseded and keep_superseded_s > 0 and pointer_age_s(self.uri, self.options) < keep_superseded_s:
            kept, superseded = superseded, []
        else:
            kept = []
        for top in superseded + abandoned:
            uri = ensure_under(join_uri(self.uri, top), self.uri)
            with touching(uri):
                self.fs.rm(posixpath.join(self.root, top), recursive=True)
            step("cleanup", uri)
        return kept

    def point_at(self, pointer: Pointer) -> None:
        """Replaces the pointer in one step: from now on readers resolve to ``pointer.root``."""
        uri = join_uri(self.uri, POINTER_FILE)
        self.bytes_written += write_bytes(pointer.to_json(), uri, self.options, name="pointer")
        self.pointer = pointer
