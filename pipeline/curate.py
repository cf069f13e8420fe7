"""Curated behaviour-cloning subset: chosen episodes of a LeRobot dataset, re-indexed, videos remuxed.

:func:`write_curated_dataset` keeps a LeRobot **v3.0** dataset under a destination (local folder or any
fsspec URI) equal to a chosen selection of a source dataset (codebase v3.0, or the legacy v2.1 layout);
the version its pointer names opens as is in ``LeRobotDataset(repo_id, root=...)`` at every moment:

* data rows are copied unchanged except ``episode_index`` (0..n-1), ``index`` (contiguous from 0) and
  ``task_index`` (re-mapped to the dataset's own ``meta/tasks.parquet``);
* videos are **remuxed, not re-encoded**: each episode's packets are stream-copied into packed mp4 files
  per camera with shifted timestamps, so the pixels are bit-identical and copying costs no decode;
* metadata is written through lerobot's own ``LeRobotDatasetMetadata`` (episodes index, ``info.json``
  totals, tasks, per-episode stats); ``stats.json`` is lerobot's ``aggregate_stats`` over every episode,
  written with sorted keys so equal inputs give equal bytes;
* the dataset carries its own ``topreward_progress.parquet``, re-indexed to the new global indices;
* each episode row records its source episode and fingerprint (``topreward/*`` columns), which is how a
  later run knows what the published dataset holds.

Publishing protocol (``docs/publishing.md``): ``dest_uri`` holds versions of the dataset behind a
one-file pointer (``pipeline.versions``). Newly selected episodes are **appended** to the current version
as new data, video and episodes files with fresh file indices, then ``tasks.parquet``, ``stats.json``, the
progress file, and ``info.json`` last. Published files are never modified, so a reader that read the
previous ``info.json`` sees exactly the previous dataset (lerobot takes its length from ``info.json`` and
new files sort after the old ones). A selection that drops or changes an episode is **rebuilt** as a new
version folder, complete before the pointer names it. Superseded versions and files of a publish cut
short are removed by a later publish, once no reader that resolved the pointer before can still need them.
Temporary space is one open file per camera plus one data file: each file is uploaded when it closes.
"""

from __future__ import annotations

import json
import logging
import math
import posixpath
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import av
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from lerobot.datasets.compute_stats import aggregate_stats, compute_episode_stats
from lerobot.datasets.dataset_metadata import LeRobotDatasetMetadata
from lerobot.datasets.io_utils import cast_stats_to_numpy, write_table_one_row_group_per_episode
from lerobot.datasets.utils import (
    DEFAULT_EPISODES_PATH,
    DEFAULT_TASKS_PATH,
    EPISODES_DIR,
    INFO_PATH,
    LEGACY_EPISODES_PATH,
    LEGACY_EPISODES_STATS_PATH,
    LEGACY_TASKS_PATH,
    STATS_PATH,
    DatasetInfo,
    serialize_dict,
    update_chunk_file_indices,
)
from lerobot.rewards.topreward.compute_rabc_weights import DEFAULT_OUTPUT_FILENAME as PROGRESS_FILENAME
from lerobot.utils.utils import unflatten_dict

from pipeline.atomic import parquet_bytes, put_file, remove, step, touching, write_bytes
from pipeline.storage import ensure_under, filesystem_for, join_uri
from pipeline.versions import POINTER_FILE, Pointer, pointer_age_s, read_pointer, version_number

__all__ = ["PROGRESS_FILENAME", "CuratedSummary", "CurationError", "write_curated_dataset"]

logger = logging.getLogger(__name__)

# info.json does not store a repo id and nothing is pushed; lerobot's metadata writer only wants a name.
_REPO_ID = "topreward/curated"
# The columns whose values change when episodes are dropped; their per-episode stats are recomputed.
_REINDEXED = ("episode_index", "index", "task_index")
_MB = 1024**2
# Extra columns of the curated episodes index (lerobot ignores them): where each episode came from.
SOURCE_EPISODE = "topreward/source_episode_index"
SOURCE_FINGERPRINT = "topreward/source_fingerprint"
# Files that are replaced in place (one atomic step each) rather than added under fresh names.
_SINGLE_FILES = (INFO_PATH, STATS_PATH, DEFAULT_TASKS_PATH, PROGRESS_FILENAME)


class CurationError(ValueError):
    """The selection or the source dataset cannot be curated; the message names the file and episode."""


@dataclass(frozen=True)
class CuratedSummary:
    """What :func:`write_curated_dataset` did.

    Attributes:
        uri: The current version's root (what ``LeRobotDataset(repo_id, root=...)`` opens), None when the
            selection is empty.
        episodes: Episodes the dataset holds now.
        frames: Frames the dataset holds now.
        mode: ``"unchanged"``, ``"appended"``, ``"rebuilt"`` (new or changed dataset) or ``"removed"``.
        added: Episodes copied in this call.
        video_bytes: Bytes of video packets stream-copied in this call, over all cameras.
        bytes_written: Bytes of every file written in this call (videos, data, metadata, pointer).
        video_bytes_written: Bytes of the mp4 files written in this call.
        superseded: Superseded version folders still kept for readers that may be using them.
    """

    uri: str | None
    episodes: int
    frames: int
    mode: str = "unchanged"
    added: int = 0
    video_bytes: int = 0
    bytes_written: int = 0
    video_bytes_written: int = 0
    superseded: tuple[str, ...] = ()


@dataclass(frozen=True)
class _VideoSpan:
    path: str
    from_s: float
    to_s: float


@dataclass(frozen=True)
class _Episode:
    index: int
    length: int
    tasks: list[str]
    data_path: str
    videos: dict[str, _VideoSpan]
    stats: dict[str, dict[str, np.ndarray]]


def _row_stats(row: dict[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """The per-episode stats of a v3.0 episodes-index row (its flattened ``stats/...`` columns)."""
    stats = {key.removeprefix("stats/"): v for key, v in row.items() if key.startswith("stats/")}
    return cast_stats_to_numpy(unflatten_dict(stats))


class _Source:
    """Read side: metadata, data rows and video packets of the source dataset, through fsspec.

    Episodes are visited in source order, so consecutive episodes share a packed file; the last data file
    and one open video container per camera are kept to avoid re-reading them for every episode.
    """

    def __init__(self, uri: str, storage_options: dict[str, Any] | None) -> None:
        self.uri = uri
        self.fs, self.root = filesystem_for(uri, storage_options)
        with touching(self.file_uri(INFO_PATH)):
            self.info = DatasetInfo.from_dict(json.loads(self.fs.cat_file(self._path(INFO_PATH))))
        self._version = self.info.codebase_version
        if not self._version.startswith(("v3.", "v2.1")):
            raise CurationError(f"{uri}: codebase {self._version} is not supported (v3.x or v2.1)")
        self.cameras = [key for key, ft in self.info.features.items() if ft["dtype"] == "video"]
        self._videos: dict[str, tuple[str, ExitStack, av.container.InputContainer]] = {}
        self._data: tuple[str, pa.Table] | None = None

    def __enter__(self) -> _Source:
        return self

    def __exit__(self, *exc: object) -> None:
        for _, opened, _ in self._videos.values():
            opened.close()

    def _path(self, relative: str) -> str:
        return posixpath.join(self.root, relative)

    def file_uri(self, relative: str) -> str:
        """The URI of a file of the source, as error messages name it."""
        return join_uri(self.uri, relative)

    def _parquet(self, relative: str) -> pa.Table:
        with touching(self.file_uri(relative)), self.fs.open(self._path(relative), "rb") as f:
            return pq.read_table(f)

    def _row_count(self, relative: str) -> int:
        with touching(self.file_uri(relative)), self.fs.open(self._path(relative), "rb") as f:
            return pq.ParquetFile(f).metadata.num_rows

    def _jsonl(self, relative: str) -> list[dict[str, Any]]:
        with touching(self.file_uri(relative)):
            # As the catalog does: a stray non-UTF-8 byte costs its character, not the dataset.
            text = self.fs.cat_file(self._path(relative)).decode("utf-8", errors="replace")
            return [json.loads(line) for line in text.splitlines() if line.strip()]

    def video_keys(self, wanted: list[str] | None) -> list[str]:
        """The source's video features, or the ``wanted`` subset of them (in the source's order)."""
        unknown = sorted(set(wanted or ()) - set(self.cameras))
        if unknown:
            raise CurationError(f"{self.uri}: no video feature {unknown}; it has {self.cameras}")
        return list(self.cameras) if wanted is None else [key for key in self.cameras if key in wanted]

    def task_names(self) -> dict[int, str]:
        """Task index -> task string."""
        if self._version.startswith("v2"):
            return {row["task_index"]: row["task"] for row in self._jsonl(LEGACY_TASKS_PATH)}
        tasks = self._parquet(DEFAULT_TASKS_PATH).to_pandas()
        return {int(index): str(task) for task, index in tasks["task_index"].items()}

    def episodes(self, indices: list[int]) -> list[_Episode]:
        """The chosen episodes' locations, tasks and stats, in the order of ``indices``."""
        found = self._v2_episodes(indices) if self._version.startswith("v2") else self._v3_episodes(indices)
        missing = sorted(set(indices) - set(found))
        if missing:
            raise CurationError(f"{self.uri}: episodes {missing} are not in the dataset")
        return [found[index] for index in indices]

    def _v3_episodes(self, indices: list[int]) -> dict[int, _Episode]:
        files = sorted(self.fs.glob(self._path(f"{EPISODES_DIR}/*/*.parquet")))
        table = pa.concat_tables(
            [self._parquet(posixpath.relpath(f, self.root)) for f in files], promote_options="default"
        )
        table = table.filter(pc.is_in(table["episode_index"], value_set=pa.array(indices, pa.int64())))
        episodes = {}
        for row in table.to_pylist():
            videos = {
                key: _VideoSpan(
                    self.info.video_path.format(
                        video_key=key,
                        chunk_index=row[f"videos/{key}/chunk_index"],
                        file_index=row[f"videos/{key}/file_index"],
                    ),
                    row[f"videos/{key}/from_timestamp"],
                    row[f"videos/{key}/to_timestamp"],
                )
                for key in self.cameras
            }
            episodes[row["episode_index"]] = _Episode(
                index=row["episode_index"],
                length=row["length"],
                tasks=list(row["tasks"]),
                data_path=self.info.data_path.format(
                    chunk_index=row["data/chunk_index"], file_index=row["data/file_index"]
                ),
                videos=videos,
                stats=_row_stats(row),
            )
        return episodes

    def _v2_episodes(self, indices: list[int]) -> dict[int, _Episode]:
        # v2.1: one parquet per episode and one mp4 per episode and camera, so every video starts at 0 s.
        wanted = set(indices)
        stats = {row["episode_index"]: row["stats"] for row in self._jsonl(LEGACY_EPISODES_STATS_PATH)}
        episodes = {}
        for row in self._jsonl(LEGACY_EPISODES_PATH):
            index = row["episode_index"]
            if index not in wanted:
                continue
            chunk = index // self.info.chunks_size
            data_path = self.info.data_path.format(episode_chunk=chunk, episode_index=index)
            # One data file per episode: its row count is the length (episodes.jsonl may be wrong, and
            # the catalog, hence the progress file, already follows the data).
            length = self._row_count(data_path)
            episodes[index] = _Episode(
                index=index,
                length=length,
                tasks=list(row["tasks"]),
                data_path=data_path,
                videos={
                    key: _VideoSpan(
                        self.info.video_path.format(episode_chunk=chunk, video_key=key, episode_index=index),
                        0.0,
                        length / self.info.fps,
                    )
                    for key in self.cameras
                },
                stats=cast_stats_to_numpy(stats[index]),
            )
        return episodes

    def data_rows(self, episode: _Episode) -> pa.Table:
        """The episode's rows of its data file, unchanged."""
        if self._data is None or self._data[0] != episode.data_path:
            self._data = (episode.data_path, self._parquet(episode.data_path))
        table = self._data[1]
        rows = table.filter(pc.equal(table["episode_index"], episode.index))
        if rows.num_rows != episode.length:
            raise CurationError(
                f"{self.uri}/{episode.data_path}: episode {episode.index} has {rows.num_rows} rows, "
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

    def packets(self, episode: _Episode, key: str) -> tuple[av.video.stream.VideoStream, list[av.Packet]]:
        """Demuxes the episode's packets of one camera, in decode order, without decoding them.

        Raises:
            CurationError: If the episode has no packets or does not begin on a keyframe at its
                ``from_timestamp`` (then it cannot be cut out without re-encoding).
        """
        span = episode.videos[key]
        container = self._container(key, span.path)
        stream = container.streams.video[0]
        # Packet times are compared with half a frame of slack: stored timestamps are float seconds.
        half_frame = 0.5 / self.info.fps
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
        where = f"{self.uri}/{span.path}: episode {episode.index}"
        if not packets:
            raise CurationError(f"{where} has no video packets between {span.from_s} s and {span.to_s} s")
        first = packets[0]
        if not first.is_keyframe or abs(float(first.pts * stream.time_base) - span.from_s) > half_frame:
            raise CurationError(
                f"{where} does not begin on a keyframe at {span.from_s} s, so it cannot be stream-copied"
            )
        return stream, packets


_FileIndex = tuple[int, int]  # (chunk_index, file_index)


def _next_index(index: _FileIndex | None, chunks_size: int) -> _FileIndex:
    """The file index after ``index`` (``(0, 0)`` for none): fresh files never reuse a published name."""
    return (0, 0) if index is None else update_chunk_file_indices(index[0], index[1], chunks_size)


class _RollingFiles:
    """Chunk/file indices of packed files that roll over at a size limit, like lerobot's recorder."""

    def __init__(self, limit_mb: float, chunks_size: int, start: _FileIndex) -> None:
        self.chunk_index, self.file_index = start
        self._limit = limit_mb * _MB
        self._chunks_size = chunks_size
        self._used: int | None = None  # None until the first file is opened

    def reserve(self, nbytes: int, *, fresh: bool = False) -> bool:
        """Accounts for the next episode's bytes.

        Args:
            nbytes: Size the episode adds to its file.
            fresh: Start a new file whatever the size (e.g. the codec parameters changed).

        Returns:
            True when the episode must go into a new file; the indices then already name it.
        """
        if self._used is not None and (fresh or self._used + nbytes > self._limit):
            self.chunk_index, self.file_index = update_chunk_file_indices(
                self.chunk_index, self.file_index, self._chunks_size
            )
            self._used = None
        new_file = self._used is None
        self._used = (self._used or 0) + nbytes
        return new_file


class _DataPacker:
    """Appends episodes' rows to new packed data parquet files; hands each finished file to ``on_close``."""

    def __init__(
        self, root: Path, info: DatasetInfo, start: _FileIndex, on_close: Callable[[Path], None]
    ) -> None:
        self._root, self._info, self._on_close = root, info, on_close
        self._files = _RollingFiles(info.data_files_size_in_mb, info.chunks_size, start)
        self._tables: list[pa.Table] = []
        self._path: Path | None = None

    def append(self, rows: pa.Table) -> dict[str, int]:
        """Queues one episode's rows; returns its ``data/chunk_index`` and ``data/file_index``."""
        # Arrow's in-memory size stands in for the uncompressed parquet size lerobot's writer compares.
        if self._files.reserve(rows.nbytes):
            self.close()
            self._path = self._root / self._info.data_path.format(
                chunk_index=self._files.chunk_index, file_index=self._files.file_index
            )
        self._tables.append(rows)
        return {"data/chunk_index": self._files.chunk_index, "data/file_index": self._files.file_index}

    def close(self) -> None:
        """Writes the queued rows of the current file (one row group per episode, as lerobot does)."""
        if self._tables:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            write_table_one_row_group_per_episode(pa.concat_tables(self._tables), self._path)
            self._tables = []
            self._on_close(self._path)


def _codec_signature(stream: av.video.stream.VideoStream) -> tuple[Any, ...]:
    # Packets can only share an output stream if they were encoded with the same parameters.
    ctx = stream.codec_context
    return (
        ctx.name,
        ctx.width,
        ctx.height,
        ctx.format.name if ctx.format else None,
        ctx.extradata,
        stream.time_base,
    )


class _VideoPacker:
    """Stream-copies one camera's episodes back to back into new packed mp4 files (``on_close`` each)."""

    def __init__(
        self, root: Path, info: DatasetInfo, key: str, start: _FileIndex, on_close: Callable[[Path], None]
    ) -> None:
        self._root, self._info, self._key, self._on_close = root, info, key, on_close
        self._files = _RollingFiles(info.video_files_size_in_mb, info.chunks_size, start)
        self._container: av.container.OutputContainer | None = None
        self._path: Path | None = None
        self._stream: av.video.stream.VideoStream | None = None
        self._signature: tuple[Any, ...] | None = None
        self._next_pts = 0

    def append(
        self, source: av.video.stream.VideoStream, packets: list[av.Packet], span: _VideoSpan
    ) -> dict[str, Any]:
        """Muxes one episode's packets after the previous one's; returns its ``videos/<key>/*`` columns."""
        signature = _codec_signature(source)
        if self._files.reserve(sum(p.size for p in packets), fresh=signature != self._signature):
            self._open(source, signature)
        start = packets[0].pts
        end = max(p.pts + p.duration for p in packets)
        # One integer shift for every packet keeps the episode's internal timing exact (B-frame pts/dts
        # offsets included); the stored timestamps move by the same amount.
        shift = self._next_pts - start
        for packet in packets:
            packet.pts += shift
            packet.dts += shift
            packet.stream = self._stream
            self._container.mux(packet)
        self._next_pts += end - start
        offset_s = float(shift * source.time_base)
        prefix = f"videos/{self._key}"
        return {
            f"{prefix}/chunk_index": self._files.chunk_index,
            f"{prefix}/file_index": self._files.file_index,
            f"{prefix}/from_timestamp": span.from_s + offset_s,
            f"{prefix}/to_timestamp": span.to_s + offset_s,
        }

    def _open(self, source: av.video.stream.VideoStream, signature: tuple[Any, ...]) -> None:
        self.close()
        path = self._root / self._info.video_path.format(
            video_key=self._key, chunk_index=self._files.chunk_index, file_index=self._files.file_index
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        # Same muxing set-up as lerobot's concatenate_video_files: codec parameters copied from the input
        # stream, its time base kept, index (moov) in front so readers over HTTP/S3 need not fetch the end.
        self._container = av.open(str(path), "w", options={"movflags": "faststart"})
        self._stream = self._container.add_stream_from_template(template=source, opaque=True)
        self._stream.time_base = source.time_base
        self._signature = signature
        self._next_pts = 0

    def close(self) -> None:
        """Finishes the current mp4, if any."""
        if self._container is not None:
            self._container.close()
            self._container = None
            self._on_close(self._path)


def _remap(values: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    keys = np.array(sorted(mapping), dtype=np.int64)
    return np.array([mapping[key] for key in keys], dtype=np.int64)[np.searchsorted(keys, values)]


def _replace_columns(table: pa.Table, columns: dict[str, np.ndarray]) -> pa.Table:
    for name, values in columns.items():
        position = table.schema.get_field_index(name)
        field = table.schema.field(position)
        table = table.set_column(position, field, pa.array(values, type=field.type))
    return table


def _reindex_rows(rows: pa.Table, episode_index: int, first_index: int, task_map: dict[int, int]) -> pa.Table:
    return _replace_columns(
        rows,
        {
            "episode_index": np.full(rows.num_rows, episode_index),
            "index": np.arange(first_index, first_index + rows.num_rows),
            "task_index": _remap(rows["task_index"].to_numpy(), task_map),
        },
    )


def _episode_stats(
    episode: _Episode, rows: pa.Table, features: dict[str, dict]
) -> dict[str, dict[str, np.ndarray]]:
    # Only the re-indexed columns changed; every other feature (videos included) keeps its source stats.
    kept = {key: value for key, value in episode.stats.items() if key in features}
    recomputed = compute_episode_stats({key: rows[key].to_numpy() for key in _REINDEXED}, features)
    return {**kept, **recomputed}


@dataclass(frozen=True)
class _Placed:
    """One episode of the curated dataset: where it came from and where it sits now."""

    source: int
    fingerprint: str
    index: int
    from_index: int
    length: int
    stats: dict[str, dict[str, np.ndarray]]


def _curated_progress(progress: pa.Table, placed: list[_Placed]) -> pa.Table:
    """The curated episodes' progress rows, renumbered to their curated episode and global index."""
    sources = pa.array([p.source for p in placed], pa.int64())
    kept = progress.filter(pc.is_in(progress["episode_index"], value_set=sources))
    old = kept["episode_index"].to_numpy()
    kept = _replace_columns(
        kept,
        {
            "episode_index": _remap(old, {p.source: p.index for p in placed}),
            "index": _remap(old, {p.source: p.from_index for p in placed}) + kept["frame_index"].to_numpy(),
        },
    )
    return kept.sort_by("index")


def _stats_bytes(placed: list[_Placed]) -> bytes:
    # lerobot's aggregation over every episode, in episode order; keys sorted so equal stats, equal bytes.
    stats = aggregate_stats([p.stats for p in placed])
    return json.dumps(serialize_dict(stats), indent=4, sort_keys=True).encode()


def _max_index(rows: list[dict[str, Any]], prefix: str) -> _FileIndex:
    return max((row[f"{prefix}/chunk_index"], row[f"{prefix}/file_index"]) for row in rows)


@dataclass(frozen=True)
class _Starts:
    """Where new files begin: after every file the published version references."""

    data: _FileIndex
    videos: dict[str, _FileIndex]
    episodes_after: _FileIndex | None  # the last published episodes file; None: start at (0, 0)

    @classmethod
    def fresh(cls, cameras: list[str]) -> _Starts:
        """The first files of a new version."""
        return cls((0, 0), {key: (0, 0) for key in cameras}, None)


@dataclass
class _Committed:
    """The version of the curated dataset its ``info.json`` names, read back from the destination."""

    info: DatasetInfo
    rows: list[dict[str, Any]]
    tasks: pd.DataFrame

    @property
    def cameras(self) -> list[str]:
        """Its video features."""
        return [key for key, ft in self.info.features.items() if ft["dtype"] == "video"]

    def placed(self) -> list[_Placed]:
        """Its episodes, in order."""
        return [
            _Placed(
                row[SOURCE_EPISODE],
                row[SOURCE_FINGERPRINT],
                row["episode_index"],
                row["dataset_from_index"],
                row["length"],
                _row_stats(row),
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

    def starts(self) -> _Starts:
        """Fresh file indices after everything this version references."""
        size = self.info.chunks_size
        return _Starts(
            _next_index(_max_index(self.rows, "data"), size),
            {key: _next_index(_max_index(self.rows, f"videos/{key}"), size) for key in self.cameras},
            _max_index(self.rows, "meta/episodes"),
        )


def _is_episodes_file(relative: str) -> bool:
    return posixpath.dirname(posixpath.dirname(relative)) == EPISODES_DIR and relative.endswith(".parquet")


def _is_data_file(relative: str) -> bool:
    return relative.startswith("data/") and relative.endswith(".parquet")


class _Destination:
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

    def committed(self, files: set[str]) -> _Committed | None:
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
        if SOURCE_EPISODE not in table.column_names:
            logger.warning("%s was not written by this pipeline's protocol; writing a new version", self.uri)
            return None
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
        return _Committed(info, rows, tasks[tasks.index.isin(used)])

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


class _Versions:
    """The curated folder: versions of the dataset behind the pointer (``pipeline.versions``)."""

    def __init__(self, uri: str, storage_options: dict[str, Any] | None) -> None:
        self.uri, self.options = uri, dict(storage_options or {})
        self.fs, self.root = filesystem_for(uri, self.options)
        self.pointer = read_pointer(uri, self.options)
        self.bytes_written = 0

    @property
    def current(self) -> str | None:
        """The folder of the version the pointer names."""
        return self.pointer.root if self.pointer else None

    def version(self, folder: str) -> _Destination:
        """One version's root."""
        return _Destination(ensure_under(join_uri(self.uri, folder), self.uri), self.options)

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
        temporary file, an older layout) is removed now.
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


def _write_version(
    source: _Source,
    cameras: list[str],
    new: list[tuple[int, str]],
    dest: _Destination,
    base: _Committed | None,
    starts: _Starts,
    progress: pa.Table | None,
    temp_dir: str | None,
) -> tuple[list[_Placed], int]:
    """Writes the dataset ``base`` (None: empty) plus the ``new`` (episode, fingerprint)s into ``dest``.

    New data, video and episodes files first (each uploaded when it closes), then tasks, stats, progress,
    and ``info.json`` last.

    Returns:
        Every episode of the new version, and the video packet bytes copied.
    """
    info = source.info
    features = {key: ft for key, ft in info.features.items() if ft["dtype"] != "video" or key in cameras}
    task_names = source.task_names()
    placed = base.placed() if base else []
    video_bytes = 0
    with tempfile.TemporaryDirectory(prefix="curated-", dir=temp_dir) as tmp:
        root = Path(tmp) / "dataset"
        meta = LeRobotDatasetMetadata.create(
            repo_id=_REPO_ID,
            fps=info.fps,
            features=features,
            robot_type=info.robot_type,
            root=root,
            use_videos=bool(cameras),
            chunks_size=info.chunks_size,
            data_files_size_in_mb=info.data_files_size_in_mb,
            video_files_size_in_mb=info.video_files_size_in_mb,
        )
        meta.info.tools = info.tools
        if base is not None:
            meta.info.total_episodes, meta.info.total_frames = (
                base.info.total_episodes,
                base.info.total_frames,
            )
            meta.tasks = base.tasks.copy()
        if starts.episodes_after is not None:
            # lerobot's writer resumes after the last episode it is shown: a new episodes file after the
            # published ones, global indices continuing from the base's total.
            chunk, file = starts.episodes_after
            meta.episodes = [
                {
                    "meta/episodes/chunk_index": chunk,
                    "meta/episodes/file_index": file,
                    "dataset_to_index": meta.info.total_frames,
                }
            ]

        failed = False

        def upload(path: Path) -> None:
            # Files finished while an episode fails are dropped: they would only be cleaned up later.
            if not failed:
                dest.put(path, path.relative_to(root).as_posix())
            path.unlink()

        def fail(exc_type: type[BaseException] | None, *_: object) -> bool:
            nonlocal failed
            failed = exc_type is not None
            return False

        data = _DataPacker(root, meta.info, starts.data, upload)
        videos = {key: _VideoPacker(root, meta.info, key, starts.videos[key], upload) for key in cameras}
        with ExitStack() as closing:
            # Open mp4s and lerobot's episodes writer are finished even if an episode fails.
            closing.callback(meta.finalize)
            for packer in videos.values():
                closing.callback(packer.close)
            closing.push(fail)  # runs first on the way out
            for (_, fingerprint), episode in zip(new, source.episodes([ep for ep, _ in new]), strict=True):
                rows = source.data_rows(episode)
                old_tasks = list(dict.fromkeys(rows["task_index"].to_pylist()))
                meta.save_episode_tasks([task_names[task] for task in old_tasks])
                task_map = {task: meta.get_task_index(task_names[task]) for task in old_tasks}
                new_index, first_index = meta.info.total_episodes, meta.info.total_frames
                rows = _reindex_rows(rows, new_index, first_index, task_map)
                located = data.append(rows)
                for key, packer in videos.items():
                    stream, packets = source.packets(episode, key)
                    located |= packer.append(stream, packets, episode.videos[key])
                    video_bytes += sum(p.size for p in packets)
                located |= {SOURCE_EPISODE: episode.index, SOURCE_FINGERPRINT: fingerprint}
                # lerobot's own writer: episodes index row (from/to indices), info.json totals.
                stats = _episode_stats(episode, rows, features)
                meta.save_episode(new_index, episode.length, episode.tasks, stats, located)
                # Stats as the episodes index stores them, so a later append aggregates the same numbers.
                stored = cast_stats_to_numpy(serialize_dict(stats))
                placed.append(
                    _Placed(episode.index, fingerprint, new_index, first_index, episode.length, stored)
                )
            data.close()
        for path in sorted((root / EPISODES_DIR).rglob("*.parquet")):
            upload(path)
        step("new-files", dest.uri)
        if (root / DEFAULT_TASKS_PATH).exists():
            dest.write((root / DEFAULT_TASKS_PATH).read_bytes(), DEFAULT_TASKS_PATH)
        dest.write(_stats_bytes(placed), STATS_PATH)
        if progress is not None:
            dest.write(parquet_bytes(_curated_progress(progress, placed)), PROGRESS_FILENAME)
        step("metadata", dest.uri)
        dest.write((root / INFO_PATH).read_bytes(), INFO_PATH)
        step("commit", dest.uri)
    return placed, video_bytes


def write_curated_dataset(
    source_uri: str,
    episodes: list[int],
    dest_uri: str,
    progress: pa.Table | None = None,
    *,
    source_options: dict[str, Any] | None = None,
    dest_options: dict[str, Any] | None = None,
    camera_keys: list[str] | None = None,
    fingerprints: dict[int, str] | None = None,
    temp_dir: str | None = None,
    keep_superseded_s: float = 0.0,
) -> CuratedSummary:
    """Makes the current version under ``dest_uri`` a LeRobot v3.0 dataset of exactly the chosen episodes.

    Episodes are numbered 0..n-1 and the global ``index`` runs from 0; tasks get their own
    ``meta/tasks.parquet``; every other column and all pixels are the source's. Each camera's episodes
    are packed into ``videos/<key>/chunk-XXX/file-XXX.mp4`` without re-encoding (files roll over at the
    source's ``video_files_size_in_mb``). What is already published is kept: episodes chosen since are
    appended to the current version (in source order, after the published ones), and only a selection
    that drops an episode or changes its fingerprint writes a new version. Calling it again with the same
    arguments writes nothing. Open the result at ``summary.uri`` or ``pipeline.versions.resolve_curated``.

    Args:
        source_uri: Root of the source dataset: a local path or an fsspec URI such as ``s3://bucket/ds``.
            Codebase v3.0 (packed files) or v2.1 (one file per episode).
        episodes: Source episode indices to keep; order and duplicates do not matter. Empty points the
            pointer at no version.
        dest_uri: The curated folder (its versions and their pointer; local path or fsspec URI).
        progress: Per-frame progress of the source (``index``, ``episode_index``, ``frame_index``,
            ``progress_sparse``, as LeRobot's RA-BC reads it). Its rows of the kept episodes, renumbered
            to the new ``index``/``episode_index`` and sorted by ``index``, are written to
            ``<version>/topreward_progress.parquet`` with the schema (and its metadata) unchanged.
            ``None`` writes no progress file.
        source_options: fsspec storage options for the source.
        dest_options: fsspec storage options for the destination.
        camera_keys: Video features to copy; ``None`` copies all. Others are left out of the new dataset.
        fingerprints: Source episode -> fingerprint of its source data; an episode published under
            another fingerprint is copied again (into a new version).
        temp_dir: Local folder for the files being written (one open file per camera and one data file
            at a time); ``None`` uses the system's.
        keep_superseded_s: A superseded version is removed by the first call at least this long after
            the pointer stopped naming it (0: the next call).

    Returns:
        What the dataset holds now and what this call wrote.

    Raises:
        CurationError: An episode is not in the source, its rows disagree with its metadata, a camera is
            unknown, or an episode's video does not begin on a keyframe (it could only be re-encoded).
        FileError: A file could not be read or written; the message names it.
    """
    wanted = [(ep, (fingerprints or {}).get(ep, "")) for ep in sorted(set(episodes))]
    versions = _Versions(dest_uri, dest_options)
    entries = versions.entries()
    superseded = versions.clean(entries, keep_superseded_s)
    current = versions.current
    if not wanted:
        if current is None:
            return CuratedSummary(None, 0, 0, superseded=tuple(superseded))
        versions.point_at(Pointer(versions.pointer.version, None))
        return CuratedSummary(
            None, 0, 0, "removed", bytes_written=versions.bytes_written, superseded=(*superseded, current)
        )
    if current is not None:
        dest = versions.version(current)
        files = entries.get(current, set())
        committed = dest.committed(files)
        if committed is not None:
            # Leftovers of an append cut short: no reader of this version reaches them (they are not
            # referenced, and extra episodes files only add rows past its total).
            keep = committed.referenced() | set(_SINGLE_FILES)
            dest.remove(sorted(files - keep), name="cleanup")
            published = [(p.source, p.fingerprint) for p in committed.placed()]
            if set(published) <= set(wanted):
                new = [entry for entry in wanted if entry not in set(published)]
                summary = _append(
                    source_uri, new, dest, committed, progress, source_options, camera_keys, temp_dir
                )
                return _with(summary, superseded)
        superseded.append(current)
    return _rebuild(source_uri, wanted, versions, progress, source_options, camera_keys, temp_dir, superseded)


def _append(
    source_uri: str,
    new: list[tuple[int, str]],
    dest: _Destination,
    committed: _Committed,
    progress: pa.Table | None,
    source_options: dict[str, Any] | None,
    camera_keys: list[str] | None,
    temp_dir: str | None,
) -> CuratedSummary:
    """Adds the ``new`` episodes after the published ones; nothing published is modified."""
    if not new:
        placed = committed.placed()
        if progress is not None:
            dest.write(parquet_bytes(_curated_progress(progress, placed)), PROGRESS_FILENAME)
        return _summary(dest, placed, "unchanged", 0, 0)
    with _Source(source_uri, source_options) as source:
        cameras = source.video_keys(camera_keys)
        placed, video_bytes = _write_version(
            source, cameras, new, dest, committed, committed.starts(), progress, temp_dir
        )
    logger.info("curated: appended %d episodes to %s", len(new), dest.uri)
    return _summary(dest, placed, "appended", len(new), video_bytes)


def _rebuild(
    source_uri: str,
    wanted: list[tuple[int, str]],
    versions: _Versions,
    progress: pa.Table | None,
    source_options: dict[str, Any] | None,
    camera_keys: list[str] | None,
    temp_dir: str | None,
    superseded: list[str],
) -> CuratedSummary:
    """Writes the whole selection as a new version, then points the pointer at it."""
    pointer = versions.pointer or Pointer(0, None)
    folder = pointer.next_root()
    dest = versions.version(folder)
    with _Source(source_uri, source_options) as source:
        cameras = source.video_keys(camera_keys)
        placed, video_bytes = _write_version(
            source, cameras, wanted, dest, None, _Starts.fresh(cameras), progress, temp_dir
        )
    versions.point_at(Pointer(pointer.version + 1, folder))
    logger.info("curated: wrote %s with %d episodes", dest.uri, len(wanted))
    summary = _summary(dest, placed, "rebuilt", len(wanted), video_bytes)
    return _with(summary, superseded, versions.bytes_written)


def _with(summary: CuratedSummary, superseded: list[str], pointer_bytes: int = 0) -> CuratedSummary:
    """``summary`` with the versions still kept and the pointer's bytes written."""
    return replace(summary, superseded=tuple(superseded), bytes_written=summary.bytes_written + pointer_bytes)


def _summary(
    dest: _Destination, placed: list[_Placed], mode: str, added: int, video_bytes: int
) -> CuratedSummary:
    return CuratedSummary(
        uri=dest.uri,
        episodes=len(placed),
        frames=sum(p.length for p in placed),
        mode=mode,
        added=added,
        video_bytes=video_bytes,
        bytes_written=dest.bytes_written,
        video_bytes_written=dest.video_bytes_written,
    )
