"""The read side of curation: the source dataset's metadata, data rows and video packets, through fsspec.

A source is a LeRobot dataset of codebase v3.0 (packed files) or v2.1 (one data file and one mp4 per
episode and camera). Its metadata comes from the shared reader (:func:`pipeline.reader.read_dataset`):
``info.json``, the cameras, and the chosen episodes' lengths, tasks, data files and video spans, as the
reader's :class:`~pipeline.reader.SourceEpisode` records. What only curation needs is read here, from
literal paths and listings: the tasks table (``meta/tasks.parquet`` / ``meta/tasks.jsonl``), the
per-episode stats (the v3.0 episodes index's ``stats/*`` columns / ``meta/episodes_stats.jsonl``), the
episodes' data rows and their video packets.
"""

from __future__ import annotations

import copy
import json
import math
import posixpath
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.atomic import touching
from pipeline.curated.v30 import (
    DEFAULT_TASKS_PATH,
    LEGACY_EPISODES_STATS_PATH,
    LEGACY_TASKS_PATH,
    Layout,
    Stats,
    stats_to_numpy,
    unflatten,
)
from pipeline.reader import (
    EPISODES_DIR,
    V21,
    DatasetMeta,
    MetadataError,
    SourceEpisode,
    read_dataset,
)
from pipeline.reader.dataset import episodes_index_files
from pipeline.reader.rowgroups import row_groups_with, scan
from pipeline.storage import filesystem_for, join_uri

__all__ = ["CurationError", "Source", "SourceEpisode", "row_stats"]

# Picks the row groups of a parquet file that hold the wanted values of a column (pipeline.reader.rowgroups).
_Select = Callable[[pq.FileMetaData, str, set[int]], list[int]]
# Source stats are unpacked from their columns this many episodes at a time.
_STATS_CHUNK = 256


class CurationError(ValueError):
    """The selection or the source dataset cannot be curated; the message names the file and episode."""


def row_stats(row: dict[str, Any]) -> Stats:
    """The per-episode stats of a v3.0 episodes-index row (its flattened ``stats/...`` columns; a column
    another index file has and this row's file has not is null and left out)."""
    stats = {
        key.removeprefix("stats/"): v for key, v in row.items() if key.startswith("stats/") and v is not None
    }
    return stats_to_numpy(unflatten(stats))


@dataclass(frozen=True)
class _DataFile:
    """One data parquet of the source, with each episode's row positions (found once per file)."""

    path: str
    table: pa.Table
    rows: dict[int, np.ndarray]

    @classmethod
    def of(cls, path: str, table: pa.Table) -> _DataFile:
        """Groups the file's rows by ``episode_index`` in one pass (positions in file order), so each
        episode's rows are found without filtering the whole file again."""
        episodes = table["episode_index"].to_numpy()
        order = np.argsort(episodes, kind="stable")
        found, starts = np.unique(episodes[order], return_index=True)
        groups = np.split(order, starts[1:]) if found.size else []
        return cls(path, table, {int(episode): rows for episode, rows in zip(found, groups, strict=True)})

    def episode_rows(self, episode_index: int) -> pa.Table:
        """The rows whose ``episode_index`` is ``episode_index``, in file order."""
        rows = self.rows.get(episode_index)
        if rows is None or rows.size == 0:
            return self.table.slice(0, 0)
        if rows[-1] - rows[0] + 1 == rows.size:  # contiguous, as LeRobot writes them: no copy
            return self.table.slice(int(rows[0]), int(rows.size))
        return self.table.take(pa.array(rows))


class Source:
    """Read side: metadata, data rows and video packets of the chosen episodes of the source dataset.

    Metadata: :attr:`info`, :attr:`cameras`, :meth:`video_keys`, :meth:`task_names`, :meth:`episodes`,
    :meth:`tasks`, :meth:`stats`. Data: :meth:`data_rows`, :meth:`packets`.

    Episodes are visited in source order, so consecutive episodes share a packed file; the last data file
    and one open video container per camera are kept to avoid re-reading them for every episode.
    """

    def __init__(self, uri: str, storage_options: dict[str, Any] | None, episodes: list[int]) -> None:
        """Reads the source's metadata for the chosen ``episodes``.

        Raises:
            CurationError: The dataset's metadata cannot be used, or a chosen episode is not in it or
                cannot be used; the message names the file and the reason.
        """
        self.uri = uri
        self.fs, self.root = filesystem_for(uri, storage_options)
        self._footers: dict[str, pq.FileMetaData] = {}
        try:
            # Only the index rows of the chosen episodes (the catalog read and checked the whole index),
            # each footer parsed once for the reader's columns and the stats.
            self._meta = read_dataset(
                uri,
                storage_options,
                all_cameras=True,
                episodes=episodes,
                partial_index=True,
                footers=self._footers,
            )
        except MetadataError as err:
            raise CurationError(str(err)) from err
        # info.json, on a copy: the reader's record stays as it was read.
        self.info: dict[str, Any] = copy.deepcopy(self._meta.info)
        self.layout = Layout.of(self.info)
        self.cameras = list(self._meta.video_keys)
        self._episodes = _chosen(self._meta, episodes)
        self._read_stats({episode.episode_index for episode in self._episodes})
        self._videos: dict[str, tuple[str, ExitStack, av.container.InputContainer]] = {}
        self._data: _DataFile | None = None
        self._in_file: dict[str, set[int]] = {}
        self._frames_in_file: dict[str, int] = {}  # rows the chosen episodes have in each data file
        for episode in self._episodes:
            self._in_file.setdefault(episode.data_path, set()).add(episode.episode_index)
            self._frames_in_file[episode.data_path] = (
                self._frames_in_file.get(episode.data_path, 0) + episode.length
            )

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        for _, opened, _ in self._videos.values():
            opened.close()

    # Files -----------------------------------------------------------------------------------------

    def _path(self, relative: str) -> str:
        return posixpath.join(self.root, relative)

    def file_uri(self, relative: str) -> str:
        """The URI of a file of the source, as error messages name it."""
        return join_uri(self.uri, relative)

    def _parquet(self, relative: str, columns: list[str] | None = None) -> pa.Table:
        with touching(self.file_uri(relative)), self.fs.open(self._path(relative), "rb") as f:
            return pq.read_table(f, columns=columns)

    def _jsonl(self, relative: str) -> list[dict[str, Any]]:
        with touching(self.file_uri(relative)):
            # As the reader does: a stray non-UTF-8 byte costs its character, not the dataset.
            text = self.fs.cat_file(self._path(relative)).decode("utf-8", errors="replace")
            return [json.loads(line) for line in text.splitlines() if line.strip()]

    # Metadata --------------------------------------------------------------------------------------

    def video_keys(self, wanted: list[str] | None) -> list[str]:
        """The source's video features, or the ``wanted`` subset of them (in the source's order)."""
        unknown = sorted(set(wanted or ()) - set(self.cameras))
        if unknown:
            raise CurationError(f"{self.uri}: no video feature {unknown}; it has {self.cameras}")
        return list(self.cameras) if wanted is None else [key for key in self.cameras if key in wanted]

    @cached_property
    def _task_table(self) -> dict[int, str]:
        if self._meta.codebase_version == V21:
            return {row["task_index"]: row["task"] for row in self._jsonl(LEGACY_TASKS_PATH)}
        tasks = self._parquet(DEFAULT_TASKS_PATH)
        # LeRobot writes a pandas frame indexed by the task text: the index is stored as a column.
        indexed = (tasks.schema.pandas_metadata or {}).get("index_columns") or []
        column = (
            "task" if "task" in tasks.column_names else next((c for c in indexed if isinstance(c, str)), None)
        )
        if column is None or "task_index" not in tasks.column_names:
            raise CurationError(f"{self.file_uri(DEFAULT_TASKS_PATH)}: no task and task_index columns")
        names, indices = tasks[column].to_pylist(), tasks["task_index"].to_pylist()
        return {int(index): str(task) for task, index in zip(names, indices, strict=True)}

    def task_names(self) -> dict[int, str]:
        """Task index -> task string, as the source's tasks table has them."""
        return dict(self._task_table)

    def episodes(self) -> list[SourceEpisode]:
        """The chosen episodes, in the order they were given."""
        return list(self._episodes)

    def tasks(self, episode: SourceEpisode) -> list[str]:
        """The episode's task texts as the source's tasks table spells them.

        The reader strips task texts (they are prompts); the curated dataset keeps the source's own,
        since its tasks table and a later append match episodes to tasks by the exact text.
        """
        return [self._task_texts.get(task, task) for task in episode.tasks]

    @cached_property
    def _task_texts(self) -> dict[str, str]:
        """Stripped text -> the tasks table's text; a text that is its own stripped form wins."""
        texts: dict[str, str] = {}
        for name in self._task_table.values():
            texts.setdefault(name.strip(), name)
        return texts | {name: name for name in self._task_table.values() if name == name.strip()}

    def stats(self, episode: SourceEpisode) -> Stats:
        """The episode's per-feature stats, as the source stores them.

        v3.0 stats stay columns (about 2.4 kB an episode) until asked for, then are unpacked
        ``_STATS_CHUNK`` rows at a time: episodes are visited in order, so memory holds one chunk.
        """
        index = episode.episode_index
        if self._v21_stats is not None:
            return self._v21_stats[index]
        if index not in self._stats_chunk:
            start = self._stats_rows[index]
            rows = self._stats_table.slice(start, _STATS_CHUNK).to_pylist()
            self._stats_chunk = {int(row["episode_index"]): row_stats(row) for row in rows}
        return self._stats_chunk[index]

    def _read_stats(self, wanted: set[int]) -> None:
        """Reads the chosen episodes' stats: v3.0 ``stats/*`` index columns, v2.1 ``episodes_stats.jsonl``.

        Raises:
            CurationError: An episode has none.
        """
        self._v21_stats: dict[int, Stats] | None = None
        self._stats_chunk: dict[int, Stats] = {}
        if self._meta.codebase_version == V21:
            rows = {row["episode_index"]: row["stats"] for row in self._jsonl(LEGACY_EPISODES_STATS_PATH)}
            self._v21_stats = {index: stats_to_numpy(rows[index]) for index in wanted if index in rows}
            found, where = set(self._v21_stats), LEGACY_EPISODES_STATS_PATH
        else:
            # The files the reader just listed and opened (their footers): listing them again would cost
            # an object store one more request.
            files = sorted(self._footers) or episodes_index_files(self.fs, self.root)
            table = self._v30_stats(files, wanted, row_groups_with)
            if wanted - set(table["episode_index"].to_pylist()):
                table = self._v30_stats(files, wanted, scan)  # groups out of episode order
            found = set(table["episode_index"].to_pylist())
            if found:
                # In the order episodes are visited (the order they were given): chunks follow the copy.
                position = {episode.episode_index: i for i, episode in enumerate(self._episodes)}
                order = np.argsort([position[e] for e in table["episode_index"].to_pylist()], kind="stable")
                table = table.take(pa.array(order))
                self._stats_table = table
                self._stats_rows = {e: row for row, e in enumerate(table["episode_index"].to_pylist())}
            where = EPISODES_DIR
        missing = sorted(wanted - found)
        if missing:
            raise CurationError(f"{self.file_uri(where)}: no stats for episodes {missing}")

    def _v30_stats(self, files: list[str], wanted: set[int], select: _Select) -> pa.Table:
        """The ``episode_index`` and ``stats/*`` columns of the episodes index files' rows of ``wanted``
        episodes.

        Only the row groups ``select`` finds for them are read (LeRobot writes a few episodes per row
        group, with min/max statistics): publishing one new episode reads its stats, not every one.
        """
        tables = []
        for relative in files:
            with touching(self.file_uri(relative)), self.fs.open(self._path(relative), "rb") as f:
                parquet = pq.ParquetFile(f, metadata=self._footers.get(relative))
                self._footers[relative] = parquet.metadata
                # In the file's column order: the stats keep it into the curated episodes index.
                columns = [name for name in parquet.schema_arrow.names if name.startswith("stats/")]
                groups = select(parquet.metadata, "episode_index", wanted)
                if groups:
                    tables.append(parquet.read_row_groups(groups, columns=["episode_index", *columns]))
        if not tables:
            return pa.table({"episode_index": pa.array([], pa.int64())})
        table = pa.concat_tables(tables, promote_options="default")
        chosen = pa.array(sorted(wanted), pa.int64())
        return table.filter(pc.is_in(table["episode_index"], value_set=chosen))

    # Data rows and video packets -------------------------------------------------------------------

    def _data_file(self, relative: str) -> pa.Table:
        """The rows of the chosen episodes in a data file, read from the row groups whose
        ``episode_index`` statistics admit one of them (LeRobot writes one row group per episode, so an
        append reads its episodes, not the file; every row group when the file has no statistics).
        The groups are found by a binary search, and by a scan when that finds fewer rows than the
        episodes' lengths (a file not in episode order)."""
        wanted = self._in_file.get(relative, set())
        expected = self._frames_in_file.get(relative, 0)
        with touching(self.file_uri(relative)), self.fs.open(self._path(relative), "rb") as f:
            parquet = pq.ParquetFile(f)
            groups = row_groups_with(parquet.metadata, "episode_index", wanted)
            rows = _episodes_rows(parquet, groups, wanted)
            if rows.num_rows < expected:  # groups out of episode order: a scan finds them all
                rows = _episodes_rows(parquet, scan(parquet.metadata, "episode_index", wanted), wanted)
            # One chunk, not one per row group: slicing a table of thousands of chunks costs a walk
            # over them every time.
            return rows.combine_chunks()

    def data_rows(self, episode: SourceEpisode) -> pa.Table:
        """The episode's rows of its data file, unchanged."""
        if self._data is None or self._data.path != episode.data_path:
            self._data = _DataFile.of(episode.data_path, self._data_file(episode.data_path))
        rows = self._data.episode_rows(episode.episode_index)
        if rows.num_rows != episode.length:
            raise CurationError(
                f"{self.uri}/{episode.data_path}: episode {episode.episode_index} has {rows.num_rows} rows, "
                f"its metadata says {episode.length}"
            )
        return rows

    def _container(self, key: str, path: str) -> av.container.InputContainer:
        cached = self._videos.get(key)
        if cached is None or cached[0] != path:
            if cached is not None:
                cached[1].close()
            opened = ExitStack()
            with touching(self.file_uri(path)):
                container = opened.enter_context(
                    av.open(opened.enter_context(self.fs.open(self._path(path))))
                )
            self._videos[key] = cached = (path, opened, container)
        return cached[2]

    def packets(
        self, episode: SourceEpisode, key: str
    ) -> tuple[av.video.stream.VideoStream, list[av.Packet]]:
        """Demuxes the episode's packets of one camera, in decode order, without decoding them.

        Raises:
            CurationError: If the episode has no packets or does not begin on a keyframe at its
                ``from_timestamp`` (then it cannot be cut out without re-encoding).
        """
        span = episode.videos[key]
        container = self._container(key, span.path)
        stream = container.streams.video[0]
        # Packet times are compared with half a frame of slack: stored timestamps are float seconds.
        half_frame = 0.5 / self.info["fps"]
        packets = []
        with touching(self.file_uri(span.path)):
            container.seek(math.floor(span.from_s / stream.time_base), stream=stream, backward=True)
            for packet in container.demux(stream):
                if packet.pts is None:  # the demuxer's end-of-stream flush packet
                    continue
                time_s = float(packet.pts * stream.time_base)
                # Each episode was encoded on its own and appended whole, so its packets are contiguous
                # in decode order and the first one at or after the next episode's start ends it.
                if time_s >= span.to_s - half_frame:
                    break
                if time_s >= span.from_s - half_frame:
                    packets.append(packet)
        where = f"{self.uri}/{span.path}: episode {episode.episode_index}"
        if not packets:
            raise CurationError(f"{where} has no video packets between {span.from_s} s and {span.to_s} s")
        first = packets[0]
        if not first.is_keyframe or abs(float(first.pts * stream.time_base) - span.from_s) > half_frame:
            raise CurationError(
                f"{where} does not begin on a keyframe at {span.from_s} s, so it cannot be stream-copied"
            )
        return stream, packets


def _episodes_rows(parquet: pq.ParquetFile, groups: list[int], wanted: set[int]) -> pa.Table:
    """The rows of ``groups`` whose ``episode_index`` is wanted."""
    if not groups:
        return parquet.schema_arrow.empty_table()
    table = parquet.read_row_groups(groups)
    return table.filter(pc.is_in(table["episode_index"], value_set=pa.array(sorted(wanted), pa.int64())))


def _chosen(meta: DatasetMeta, indices: list[int]) -> list[SourceEpisode]:
    """The ``indices`` episodes of ``meta``, in that order.

    Raises:
        CurationError: One is not in the dataset (with the index entries that could not be parsed), or
            the reader found it unusable (naming the file and the reason).
    """
    found = {episode.episode_index: episode for episode in meta.episodes}
    missing = sorted(set(indices) - set(found))
    if missing:
        unparsed = "".join(f"; {error}" for error in meta.errors)
        raise CurationError(f"{meta.root}: episodes {missing} are not in the dataset{unparsed}")
    for index in indices:
        if not found[index].ok:
            raise CurationError(f"{found[index].error} (episode {index})")
    return [found[index] for index in indices]
