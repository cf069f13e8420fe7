"""The versioned store of a curated dataset: version roots behind the pointer, and their cleanup.

Under the curated folder (``<output>/<dataset_id>/curated/``) each version is a whole LeRobot v3.0 root
(``v000001/``...) and ``current.json`` names the current one (:mod:`pipeline.curated.pointer`, the
reader's side). :class:`VersionStore` lists the folder, removes what no reader can reach any more and
replaces the pointer; :class:`VersionRoot` is one version: what its ``info.json`` commits to
(:class:`Committed`, read as a narrow index: a few integer columns per episode, never the stats) and the
protocol's writes, each one atomic (``pipeline.atomic``). The order of those writes is the builder's
(:mod:`pipeline.curated.builder`); ``docs/publishing.md`` explains it.

A version's episodes form **runs**: the episodes one publish wrote together, in files of their own
(every kind of file starts fresh at a run's first episode). Each episodes row records its run (its first
episode) and the run's compaction level, which is how :mod:`pipeline.curated.builder` packs small runs
into larger ones without rewriting the others.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.atomic import is_local, put_file, remove, step, touching, write_bytes
from pipeline.curated.packers import FileIndex, next_index
from pipeline.curated.pointer import Pointer, pointer_age_s, read_pointer, version_number
from pipeline.curated.source import row_stats
from pipeline.curated.v30 import (
    DEFAULT_TASKS_PATH,
    EPISODES_DIR,
    INFO_PATH,
    STATS_PATH,
    Layout,
    Stats,
    StatsSum,
    episodes_file,
    stats_to_numpy,
)
from pipeline.layout import POINTER_FILE, PROGRESS_FILE
from pipeline.storage import ensure_under, filesystem_for, forget_listings, join_uri

logger = logging.getLogger(__name__)

# Extra columns of the curated episodes index (lerobot ignores them): where each episode came from, and
# the run it was written in (its first episode) with the run's compaction level.
SOURCE_EPISODE = "topreward/source_episode_index"
SOURCE_FINGERPRINT = "topreward/source_fingerprint"
RUN = "topreward/run"
RUN_LEVEL = "topreward/run_level"
# (chunk, file) indices as one integer, chunk * _FILE_KEY + file: file indices stay below chunks_size,
# far below this.
_FILE_KEY = 1 << 32
# Files that are replaced in place (one atomic step each) rather than added under fresh names.
SINGLE_FILES = (INFO_PATH, STATS_PATH, DEFAULT_TASKS_PATH, PROGRESS_FILE)
# The episodes index columns an append reads back: what the version holds and where, never the stats.
_INDEX_COLUMNS = (
    "episode_index", "tasks", "length", "dataset_from_index", "data/chunk_index", "data/file_index",
    "meta/episodes/chunk_index", "meta/episodes/file_index", SOURCE_EPISODE, SOURCE_FINGERPRINT, RUN,
    RUN_LEVEL,
)  # fmt: skip


@dataclass(frozen=True)
class Placed:
    """Episodes of the curated dataset: where they came from and where they sit now (columns, one entry
    per episode in curated order)."""

    source: np.ndarray
    fingerprint: list[str]
    index: np.ndarray
    from_index: np.ndarray
    length: np.ndarray

    @classmethod
    def empty(cls) -> Placed:
        """No episode."""
        none = np.zeros(0, dtype=np.int64)
        return cls(none, [], none, none, none)

    def __len__(self) -> int:
        return len(self.fingerprint)

    @property
    def frames(self) -> int:
        """Frames of these episodes."""
        return int(self.length.sum())

    def pairs(self) -> list[tuple[int, str]]:
        """(source episode, fingerprint) of each episode."""
        return list(zip(self.source.tolist(), self.fingerprint, strict=True))

    def head(self, count: int) -> Placed:
        """The first ``count`` episodes."""
        return Placed(
            self.source[:count],
            self.fingerprint[:count],
            self.index[:count],
            self.from_index[:count],
            self.length[:count],
        )

    def __add__(self, other: Placed) -> Placed:
        return Placed(
            np.concatenate([self.source, other.source]),
            self.fingerprint + other.fingerprint,
            np.concatenate([self.index, other.index]),
            np.concatenate([self.from_index, other.from_index]),
            np.concatenate([self.length, other.length]),
        )


@dataclass(frozen=True)
class Run:
    """Episodes ``[start, stop)`` written together into files of their own, at a compaction level."""

    start: int
    stop: int
    level: int


@dataclass(frozen=True)
class Starts:
    """Where new files begin: after every file the kept episodes reference."""

    data: FileIndex
    videos: dict[str, FileIndex]
    episodes: FileIndex

    @classmethod
    def fresh(cls, cameras: list[str]) -> Starts:
        """The first files of a new version."""
        return cls((0, 0), {key: (0, 0) for key in cameras}, (0, 0))


@dataclass
class Committed:
    """The version of the curated dataset its ``info.json`` names, read back from the destination.

    Attributes:
        info: Its ``info.json``.
        index: Its episodes index, narrow (no stats, one row per committed episode, in order), with each
            camera's ``videos/<key>/chunk_index`` / ``file_index``.
        tasks: Task texts by task index (those the committed episodes use).
        schema: The schema of its episodes files: appended ones are written with it.
        stored_tasks: Task texts by task index as ``tasks.parquet`` holds them (more than ``tasks`` after
            an append stopped before its ``info.json``).
    """

    info: dict[str, Any]
    index: pa.Table
    tasks: list[str]
    schema: pa.Schema
    stored_tasks: list[str]

    @property
    def layout(self) -> Layout:
        """Its storage settings and path templates."""
        info = self.info
        return Layout(
            info["chunks_size"],
            info["data_files_size_in_mb"],
            info["video_files_size_in_mb"],
            info["data_path"],
            info.get("video_path") or Layout().video_path,
        )

    @property
    def cameras(self) -> list[str]:
        """Its video features."""
        return [key for key, ft in self.info["features"].items() if ft["dtype"] == "video"]

    @property
    def episodes(self) -> int:
        """Episodes it holds."""
        return self.index.num_rows

    def column(self, name: str, stop: int | None = None) -> np.ndarray:
        """One integer column of the index (of its first ``stop`` episodes)."""
        values = self.index[name].to_numpy()
        return values if stop is None else values[:stop]

    def placed(self) -> Placed:
        """Its episodes, in order."""
        return Placed(
            self.column(SOURCE_EPISODE),
            self.index[SOURCE_FINGERPRINT].to_pylist(),
            self.column("episode_index"),
            self.column("dataset_from_index"),
            self.column("length"),
        )

    def runs(self) -> list[Run]:
        """Its runs, in order."""
        starts, levels = self.column(RUN), self.column(RUN_LEVEL)
        bounds = np.flatnonzero(np.diff(starts)) + 1
        firsts = np.concatenate([[0], bounds]).astype(np.int64)
        stops = np.append(bounds, starts.size).astype(np.int64)
        return [Run(int(a), int(b), int(levels[a])) for a, b in zip(firsts, stops, strict=True)]

    def _files(self, kind: str, stop: int | None = None, start: int = 0) -> list[FileIndex]:
        """The distinct ``(chunk, file)`` of one kind of file that episodes ``start`` to ``stop`` are in."""
        chunks = self.column(f"{kind}/chunk_index", stop)[start:]
        files = self.column(f"{kind}/file_index", stop)[start:]
        # One integer per (chunk, file), in the same order: a 1-D unique is a fraction of a 2-D one's
        # cost, which an append paid several times over every episode of the version.
        keys = np.unique(chunks.astype(np.int64) * _FILE_KEY + files.astype(np.int64))
        return [(int(key // _FILE_KEY), int(key % _FILE_KEY)) for key in keys]

    def referenced(self, stop: int | None = None) -> set[str]:
        """Every data, video and episodes file its (first ``stop``) episodes point at."""
        layout = self.layout
        files = {layout.data_file(index) for index in self._files("data", stop)}
        files |= {episodes_file(index) for index in self._files("meta/episodes", stop)}
        for key in self.cameras:
            files |= {layout.video_file(key, index) for index in self._files(f"videos/{key}", stop)}
        return files

    def shares_files(self, stop: int) -> bool:
        """Whether an episode from ``stop`` on is in a file that an episode before it is in: the first
        ``stop`` episodes cannot then be kept as whole files."""
        if stop in (0, self.episodes):
            return False
        kinds = ["data", "meta/episodes", *(f"videos/{key}" for key in self.cameras)]
        return any(set(self._files(kind, stop)) & set(self._files(kind, None, stop)) for kind in kinds)

    def starts(self, stop: int) -> Starts:
        """Fresh file indices after every file its first ``stop`` episodes reference."""
        if stop == 0:
            return Starts.fresh(self.cameras)
        size = self.info["chunks_size"]
        return Starts(
            next_index(self._files("data", stop)[-1], size),
            {key: next_index(self._files(f"videos/{key}", stop)[-1], size) for key in self.cameras},
            next_index(self._files("meta/episodes", stop)[-1], size),
        )


def _summed(base: Stats | None, episodes: list[Stats]) -> Stats:
    """``base`` plus ``episodes`` as an append adds them (:class:`~pipeline.curated.v30.StatsSum`), so that
    stats completed after a stopped publish have the bits the whole publish would have written."""
    total = StatsSum(base)
    for stats in episodes:
        total.add(stats)
    return total.result()


def _is_episodes_file(relative: str) -> bool:
    return posixpath.dirname(posixpath.dirname(relative)) == EPISODES_DIR and relative.endswith(".parquet")


class VersionRoot:
    """One version's root: what is there, and the protocol's writes (each one atomic)."""

    def __init__(self, uri: str, storage_options: dict[str, Any] | None) -> None:
        self.uri, self.options = uri, dict(storage_options or {})
        self.fs, self.root = filesystem_for(uri, self.options)
        self.bytes_written = 0
        self.video_bytes_written = 0
        self.bytes_carried = 0

    def file_uri(self, relative: str) -> str:
        """The URI of a file of the dataset; refuses a path (e.g. from a source template) that escapes."""
        return ensure_under(join_uri(self.uri, relative), self.uri)

    def _path(self, relative: str) -> str:
        return posixpath.join(self.root, relative)

    def read(self, relative: str) -> bytes:
        """A file's bytes."""
        with touching(self.file_uri(relative)):
            return self.fs.cat_file(self._path(relative))

    def committed(self, files: set[str]) -> Committed | None:
        """The version ``info.json`` names, or None when there is none or it cannot be appended to (it
        does not hold together, or predates runs).

        Reads ``info.json``, ``tasks.parquet`` and the narrow columns of the episodes files (their footers
        and a few integer columns; the files are never replaced, so ranged reads are safe).
        """
        if INFO_PATH not in files:
            return None
        info = json.loads(self.read(INFO_PATH))
        tables, schema = [], None
        for relative in sorted(filter(_is_episodes_file, files)):
            table, file_schema = self._index_file(relative, info)
            if table is None:
                logger.info("%s: episodes index predates compaction runs; writing a new version", self.uri)
                return None
            schema = schema or file_schema
            tables.append(table)
        if not tables:
            return None
        table = pa.concat_tables(tables, promote_options="default")
        # Episodes files of a publish cut short before its info.json hold only episodes beyond the total.
        total_episodes, total_frames = info["total_episodes"], info["total_frames"]
        table = table.filter(pc.less(table["episode_index"], total_episodes)).sort_by("episode_index")
        if (
            table["episode_index"].to_pylist() != list(range(total_episodes))
            or (pc.sum(table["length"]).as_py() or 0) != total_frames
        ):
            logger.warning("%s: episodes index and info.json disagree; writing a new version", self.uri)
            return None
        with touching(self.file_uri(DEFAULT_TASKS_PATH)):
            names = pq.read_table(pa.BufferReader(self.read(DEFAULT_TASKS_PATH)))
        by_index = dict(zip(names["task_index"].to_pylist(), names["task"].to_pylist(), strict=True))
        used = set(pc.unique(pc.list_flatten(table["tasks"])).to_pylist())
        stored = [by_index[i] for i in sorted(by_index)]
        tasks = [name for name in stored if name in used]
        return Committed(info, table.drop_columns(["tasks"]).combine_chunks(), tasks, schema, stored)

    def _index_file(self, relative: str, info: dict[str, Any]) -> tuple[pa.Table | None, pa.Schema]:
        """The narrow columns of one episodes file (None when it has no run columns), and its schema."""
        cameras = [key for key, ft in info["features"].items() if ft["dtype"] == "video"]
        columns = [*_INDEX_COLUMNS]
        columns += [f"videos/{key}/{name}" for key in cameras for name in ("chunk_index", "file_index")]
        with touching(self.file_uri(relative)), self.fs.open(self._path(relative), "rb") as f:
            parquet = pq.ParquetFile(f)
            schema = parquet.schema_arrow
            if RUN not in schema.names:
                return None, schema
            return parquet.read(columns=columns), schema

    def episode_stats(self, committed: Committed, start: int) -> list[Stats]:
        """The stored per-episode stats of committed episodes ``start`` and on, in order (read only from
        the episodes files that hold them)."""
        chunks, files = (
            committed.column("meta/episodes/chunk_index"),
            committed.column("meta/episodes/file_index"),
        )
        wanted = sorted({(int(c), int(f)) for c, f in zip(chunks[start:], files[start:], strict=True)})
        found: dict[int, Stats] = {}
        for index in wanted:
            relative = episodes_file(index)
            with touching(self.file_uri(relative)), self.fs.open(self._path(relative), "rb") as f:
                parquet = pq.ParquetFile(f)
                columns = [name for name in parquet.schema_arrow.names if name.startswith("stats/")]
                table = parquet.read(columns=["episode_index", *columns])
            table = table.filter(pc.greater_equal(table["episode_index"], start))
            table = table.filter(pc.less(table["episode_index"], committed.episodes))
            found |= {int(row["episode_index"]): row_stats(row) for row in table.to_pylist()}
        return [found[episode] for episode in range(start, committed.episodes)]

    def stats(self) -> Stats | None:
        """Its ``stats.json``, None when there is none."""
        uri = self.file_uri(STATS_PATH)
        with touching(uri):
            try:
                raw = self.fs.cat_file(self._path(STATS_PATH))
            except FileNotFoundError:
                return None
            return stats_to_numpy(json.loads(raw))

    def running_stats(self, committed: Committed) -> Stats:
        """The aggregated stats of the committed episodes, without reading every episode's stats.

        ``stats.json`` covers the frames its ``index`` feature counts. An append writes it right after
        its ``info.json`` (the commit point), so it covers either every committed episode or, after a
        publish stopped between the two, every episode but the last publish's: those few are then
        aggregated onto it, as that publish did. Anything else (a version from before this scheme)
        aggregates every committed episode's stored stats.
        """
        found = self.stats()
        lengths = committed.column("length")
        ends = np.cumsum(lengths)
        covered = int(found["index"]["count"][0]) if found and "index" in found else -1
        if covered == (int(ends[-1]) if ends.size else 0):
            return found
        missing = np.flatnonzero(ends == covered)
        if missing.size:
            start = int(missing[0]) + 1
            logger.info("%s: stats.json lacks episodes %d and on; aggregating them onto it", self.uri, start)
            return _summed(found, self.episode_stats(committed, start))
        logger.warning("%s: stats.json does not match the committed episodes; aggregating all", self.uri)
        return _summed(None, self.episode_stats(committed, 0))

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

    def carry(self, other: VersionRoot, relative: str) -> None:
        """Gives this version ``other``'s published file under the same name without sending its bytes:
        a hard link on local disk (a copy where links are refused), a copy inside the store elsewhere
        (S3 CopyObject, GCS rewrite)."""
        source, target = other._path(relative), self._path(relative)
        with touching(self.file_uri(relative)):
            if is_local(self.fs):
                os.makedirs(os.path.dirname(target), exist_ok=True)
                try:
                    os.link(source, target)
                except OSError:  # another filesystem, or one without hard links
                    shutil.copyfile(source, target)
            else:
                self.fs.copy(source, target)
        step("new-file", self.file_uri(relative))
        self.bytes_carried += self.fs.size(target)

    def write(self, data: bytes, relative: str, name: str = "write") -> None:
        """Replaces a single file in one step (unchanged bytes are not rewritten)."""
        self.bytes_written += write_bytes(data, self.file_uri(relative), self.options, name=name)

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
        forget_listings(self.fs, self.root)
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

    def discard(self, folder: str) -> None:
        """Removes a version folder no pointer has named (what a write given up in this call left)."""
        uri = ensure_under(join_uri(self.uri, folder), self.uri)
        path = posixpath.join(self.root, folder)
        with touching(uri):
            self.fs.invalidate_cache(path)
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)
                step("cleanup", uri)

    def point_at(self, pointer: Pointer) -> None:
        """Replaces the pointer in one step: from now on readers resolve to ``pointer.root``."""
        uri = join_uri(self.uri, POINTER_FILE)
        self.bytes_written += write_bytes(pointer.to_json(), uri, self.options, name="pointer")
        self.pointer = pointer
