"""Curated behaviour-cloning subset: chosen episodes of a LeRobot dataset, re-indexed, videos remuxed.

:func:`write_curated_dataset` reads a LeRobot dataset (codebase v3.0, or the legacy v2.1 layout) from a
local folder or any fsspec URI and writes the chosen episodes as a new LeRobot **v3.0** dataset that
``LeRobotDataset(repo_id, root=...)`` opens as is:

* data rows are copied unchanged except ``episode_index`` (0..n-1 in source order), ``index`` (contiguous
  from 0) and ``task_index`` (re-mapped to a new ``meta/tasks.parquet``);
* videos are **remuxed, not re-encoded**: each episode's packets are stream-copied into one packed mp4 per
  camera with shifted timestamps, so the pixels are bit-identical and copying costs no decode. LeRobot's own
  ``delete_episodes`` re-encodes mixed files, which is slow and adds a second lossy generation;
* metadata is written through lerobot's own ``LeRobotDatasetMetadata`` (episodes index, ``info.json``
  totals, tasks, per-episode and aggregated stats), so the layout is the one lerobot itself records;
* the dataset carries its own ``topreward_progress.parquet``, re-indexed to the new global indices.

The dataset is built in a local temporary folder and then uploaded, so a half-written dataset never
appears at the destination.
"""

from __future__ import annotations

import json
import logging
import math
import posixpath
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from lerobot.datasets.compute_stats import compute_episode_stats
from lerobot.datasets.dataset_metadata import LeRobotDatasetMetadata
from lerobot.datasets.io_utils import cast_stats_to_numpy, write_table_one_row_group_per_episode
from lerobot.datasets.utils import (
    DEFAULT_TASKS_PATH,
    EPISODES_DIR,
    INFO_PATH,
    LEGACY_EPISODES_PATH,
    LEGACY_EPISODES_STATS_PATH,
    LEGACY_TASKS_PATH,
    DatasetInfo,
    update_chunk_file_indices,
)
from lerobot.rewards.topreward.compute_rabc_weights import DEFAULT_OUTPUT_FILENAME as PROGRESS_FILENAME
from lerobot.utils.utils import unflatten_dict

from pipeline.storage import filesystem_for, upload_dataset

__all__ = ["PROGRESS_FILENAME", "CuratedSummary", "CurationError", "write_curated_dataset"]

logger = logging.getLogger(__name__)

# info.json does not store a repo id and nothing is pushed; lerobot's metadata writer only wants a name.
_REPO_ID = "topreward/curated"
# The columns whose values change when episodes are dropped; their per-episode stats are recomputed.
_REINDEXED = ("episode_index", "index", "task_index")
_MB = 1024**2


class CurationError(ValueError):
    """The selection or the source dataset cannot be curated; the message names the file and episode."""


@dataclass(frozen=True)
class CuratedSummary:
    """What :func:`write_curated_dataset` wrote.

    Attributes:
        uri: The curated dataset's root (the ``dest_uri`` given).
        episodes: Number of episodes written (0 when the selection was empty and nothing was written).
        frames: Number of frames written.
        video_bytes: Bytes of video packets stream-copied, over all cameras.
    """

    uri: str
    episodes: int
    frames: int
    video_bytes: int


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


class _Source:
    """Read side: metadata, data rows and video packets of the source dataset, through fsspec.

    Episodes are visited in source order, so consecutive episodes share a packed file; the last data file
    and one open video container per camera are kept to avoid re-reading them for every episode.
    """

    def __init__(self, uri: str, storage_options: dict[str, Any] | None) -> None:
        self.uri = uri
        self.fs, self.root = filesystem_for(uri, storage_options)
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

    def _parquet(self, relative: str) -> pa.Table:
        with self.fs.open(self._path(relative), "rb") as f:
            return pq.read_table(f)

    def _jsonl(self, relative: str) -> list[dict[str, Any]]:
        text = self.fs.cat_file(self._path(relative)).decode()
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
            stats = {key.removeprefix("stats/"): v for key, v in row.items() if key.startswith("stats/")}
            episodes[row["episode_index"]] = _Episode(
                index=row["episode_index"],
                length=row["length"],
                tasks=list(row["tasks"]),
                data_path=self.info.data_path.format(
                    chunk_index=row["data/chunk_index"], file_index=row["data/file_index"]
                ),
                videos=videos,
                stats=cast_stats_to_numpy(unflatten_dict(stats)),
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
            episodes[index] = _Episode(
                index=index,
                length=row["length"],
                tasks=list(row["tasks"]),
                data_path=self.info.data_path.format(episode_chunk=chunk, episode_index=index),
                videos={
                    key: _VideoSpan(
                        self.info.video_path.format(episode_chunk=chunk, video_key=key, episode_index=index),
                        0.0,
                        row["length"] / self.info.fps,
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
            container = opened.enter_context(av.open(opened.enter_context(self.fs.open(self._path(path)))))
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
        container.seek(math.floor(span.from_s / stream.time_base), stream=stream, backward=True)
        packets = []
        for packet in container.demux(stream):
            if packet.pts is None:  # the demuxer's end-of-stream flush packet
                continue
            time_s = float(packet.pts * stream.time_base)
            # Each episode was encoded on its own and appended whole, so its packets are contiguous in
            # decode order and the first one at or after the next episode's start ends it.
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


class _RollingFiles:
    """Chunk/file indices of packed files that roll over at a size limit, like lerobot's recorder."""

    def __init__(self, limit_mb: int, chunks_size: int) -> None:
        self.chunk_index, self.file_index = 0, 0
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
    """Appends episodes' rows to the packed data parquet files of the new dataset."""

    def __init__(self, root: Path, info: DatasetInfo) -> None:
        self._root, self._info = root, info
        self._files = _RollingFiles(info.data_files_size_in_mb, info.chunks_size)
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
    """Stream-copies one camera's episodes back to back into the new dataset's packed mp4 files."""

    def __init__(self, root: Path, info: DatasetInfo, key: str) -> None:
        self._root, self._info, self._key = root, info, key
        self._files = _RollingFiles(info.video_files_size_in_mb, info.chunks_size)
        self._container: av.container.OutputContainer | None = None
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


def _reindex_progress(progress: pa.Table, moves: dict[int, tuple[int, int]]) -> pa.Table:
    """Keeps the kept episodes' progress rows, renumbered; ``moves``: old episode -> (new, index shift)."""
    kept = progress.filter(pc.is_in(progress["episode_index"], value_set=pa.array(list(moves), pa.int64())))
    old = kept["episode_index"].to_numpy()
    kept = _replace_columns(
        kept,
        {
            "episode_index": _remap(old, {k: new for k, (new, _) in moves.items()}),
            "index": kept["index"].to_numpy() + _remap(old, {k: shift for k, (_, shift) in moves.items()}),
        },
    )
    return kept.sort_by("index")


def _build(
    source: _Source,
    indices: list[int],
    root: Path,
    progress: pa.Table | None,
    camera_keys: list[str] | None,
) -> tuple[int, int]:
    """Writes the curated dataset under the local ``root``; returns (frames, video bytes)."""
    cameras = source.video_keys(camera_keys)
    info = source.info
    features = {key: ft for key, ft in info.features.items() if ft["dtype"] != "video" or key in cameras}
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
    meta.info.tools = info.tools  # written with the first episode's info.json
    data = _DataPacker(root, meta.info)
    videos = {key: _VideoPacker(root, meta.info, key) for key in cameras}
    task_names = source.task_names()
    moves: dict[int, tuple[int, int]] = {}
    video_bytes = 0
    with ExitStack() as closing:
        # Open mp4s and lerobot's episodes writer are finished even if an episode fails, before the
        # temporary folder under them is removed.
        closing.callback(meta.finalize)
        for packer in videos.values():
            closing.callback(packer.close)
        for new_index, episode in enumerate(source.episodes(indices)):
            rows = source.data_rows(episode)
            old_tasks = list(dict.fromkeys(rows["task_index"].to_pylist()))
            meta.save_episode_tasks([task_names[task] for task in old_tasks])
            task_map = {task: meta.get_task_index(task_names[task]) for task in old_tasks}
            first_index = meta.info.total_frames
            moves[episode.index] = (new_index, first_index - rows["index"][0].as_py())
            rows = _reindex_rows(rows, new_index, first_index, task_map)
            located = data.append(rows)
            for key, packer in videos.items():
                stream, packets = source.packets(episode, key)
                located |= packer.append(stream, packets, episode.videos[key])
                video_bytes += sum(p.size for p in packets)
            # lerobot's own writer: episodes index row (from/to indices), info.json totals, stats.json.
            stats = _episode_stats(episode, rows, features)
            meta.save_episode(new_index, episode.length, episode.tasks, stats, located)
        data.close()
    if progress is not None:
        pq.write_table(_reindex_progress(progress, moves), root / PROGRESS_FILENAME)
    return meta.info.total_frames, video_bytes


def write_curated_dataset(
    source_uri: str,
    episodes: list[int],
    dest_uri: str,
    progress: pa.Table | None = None,
    *,
    source_options: dict[str, Any] | None = None,
    dest_options: dict[str, Any] | None = None,
    camera_keys: list[str] | None = None,
    overwrite: bool = True,
) -> CuratedSummary:
    """Writes the chosen episodes of a LeRobot dataset as a new LeRobot v3.0 dataset, videos stream-copied.

    The new dataset numbers the episodes 0..n-1 in source order, its global ``index`` runs from 0, tasks
    are renumbered in a new ``meta/tasks.parquet``, and every other column and all pixels are the
    source's. Each camera's episodes are packed into ``videos/<key>/chunk-XXX/file-XXX.mp4`` without
    re-encoding (files roll over at the source's ``video_files_size_in_mb``).

    Args:
        source_uri: Root of the source dataset: a local path or an fsspec URI such as ``s3://bucket/ds``.
            Codebase v3.0 (packed files) or v2.1 (one file per episode).
        episodes: Source episode indices to keep; order and duplicates do not matter. Empty writes
            nothing.
        dest_uri: Root of the new dataset (local path or fsspec URI).
        progress: Per-frame progress of the source (``index``, ``episode_index``, ``frame_index``,
            ``progress_sparse``, as LeRobot's RA-BC reads it). Its rows of the kept episodes, renumbered
            to the new ``index``/``episode_index`` and sorted by ``index``, are written to
            ``<dest>/topreward_progress.parquet`` with the schema (and its metadata) unchanged. ``None``
            writes no progress file.
        source_options: fsspec storage options for the source.
        dest_options: fsspec storage options for the destination.
        camera_keys: Video features to copy; ``None`` copies all. Others are left out of the new dataset.
        overwrite: Replace a dataset already at ``dest_uri`` (re-runs curate the same place again);
            with False an existing destination is an error.

    Returns:
        The number of episodes and frames written and the video bytes copied.

    Raises:
        CurationError: An episode is not in the source, its rows disagree with its metadata, a camera is
            unknown, or an episode's video does not begin on a keyframe (it could only be re-encoded).
        FileExistsError: ``dest_uri`` exists and ``overwrite`` is false.
    """
    indices = sorted(set(episodes))
    if not indices:
        return CuratedSummary(uri=dest_uri, episodes=0, frames=0, video_bytes=0)
    dest_fs, dest_path = filesystem_for(dest_uri, dest_options)
    if dest_fs.exists(dest_path) and not overwrite:
        raise FileExistsError(f"{dest_uri} already exists; pass overwrite=True to replace it")
    with tempfile.TemporaryDirectory(prefix="curated-") as tmp, _Source(source_uri, source_options) as source:
        root = Path(tmp) / "dataset"
        frames, video_bytes = _build(source, indices, root, progress, camera_keys)
        if dest_fs.exists(dest_path):
            dest_fs.rm(dest_path, recursive=True)
        upload_dataset(root, dest_fs, dest_uri)
    logger.info("curated %d episodes (%d frames) into %s", len(indices), frames, dest_uri)
    return CuratedSummary(uri=dest_uri, episodes=len(indices), frames=frames, video_bytes=video_bytes)
