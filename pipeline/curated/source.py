"""The read side of curation: the source dataset's metadata, data rows and video packets, through fsspec.

A source is a LeRobot dataset of codebase v3.0 (packed files) or v2.1 (one data file and one mp4 per
episode and camera). :class:`Source` keeps its metadata reading (``meta/info.json``, tasks, the chosen
episodes' locations and stats) in methods of their own, apart from the data rows and video packets, so
that it can move to a shared metadata reader without touching the copying side.
"""

from __future__ import annotations

import json
import math
import posixpath
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from lerobot.datasets.io_utils import cast_stats_to_numpy
from lerobot.datasets.utils import (
    DEFAULT_TASKS_PATH,
    EPISODES_DIR,
    INFO_PATH,
    LEGACY_EPISODES_PATH,
    LEGACY_EPISODES_STATS_PATH,
    LEGACY_TASKS_PATH,
    DatasetInfo,
)
from lerobot.utils.utils import unflatten_dict

from pipeline.atomic import touching
from pipeline.storage import filesystem_for, join_uri


class CurationError(ValueError):
    """The selection or the source dataset cannot be curated; the message names the file and episode."""


@dataclass(frozen=True)
class VideoSpan:
    """Where one episode's video of one camera is: its file and its time span in it."""

    path: str
    from_s: float
    to_s: float


@dataclass(frozen=True)
class SourceEpisode:
    """One episode of the source, as its metadata describes it."""

    index: int
    length: int
    tasks: list[str]
    data_path: str
    videos: dict[str, VideoSpan]
    stats: dict[str, dict[str, np.ndarray]]


def row_stats(row: dict[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """The per-episode stats of a v3.0 episodes-index row (its flattened ``stats/...`` columns)."""
    stats = {key.removeprefix("stats/"): v for key, v in row.items() if key.startswith("stats/")}
    return cast_stats_to_numpy(unflatten_dict(stats))


class Source:
    """Read side: metadata, data rows and video packets of the source dataset, through fsspec.

    Metadata: :attr:`info`, :attr:`cameras`, :meth:`video_keys`, :meth:`task_names`, :meth:`episodes`
    (and the private readers below them). Data: :meth:`data_rows`, :meth:`packets`.

    Episodes are visited in source order, so consecutive episodes share a packed file; the last data file
    and one open video container per camera are kept to avoid re-reading them for every episode.
    """

    def __init__(self, uri: str, storage_options: dict[str, Any] | None) -> None:
        self.uri = uri
        self.fs, self.root = filesystem_for(uri, storage_options)
        self.info = self._read_info()
        self._version = self.info.codebase_version
        if not self._version.startswith(("v3.", "v2.1")):
            raise CurationError(f"{uri}: codebase {self._version} is not supported (v3.x or v2.1)")
        self.cameras = [key for key, ft in self.info.features.items() if ft["dtype"] == "video"]
        self._videos: dict[str, tuple[str, ExitStack, av.container.InputContainer]] = {}
        self._data: tuple[str, pa.Table] | None = None

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

    def _parquet(self, relative: str) -> pa.Table:
        with touching(self.file_uri(relative)), self.fs.open(self._path(relative), "rb") as f:
            return pq.read_table(f)

    # Metadata --------------------------------------------------------------------------------------

    def _read_info(self) -> DatasetInfo:
        with touching(self.file_uri(INFO_PATH)):
            return DatasetInfo.from_dict(json.loads(self.fs.cat_file(self._path(INFO_PATH))))

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

    def episodes(self, indices: list[int]) -> list[SourceEpisode]:
        """The chosen episodes' locations, tasks and stats, in the order of ``indices``."""
        found = self._v2_episodes(indices) if self._version.startswith("v2") else self._v3_episodes(indices)
        missing = sorted(set(indices) - set(found))
        if missing:
            raise CurationError(f"{self.uri}: episodes {missing} are not in the dataset")
        return [found[index] for index in indices]

    def _v3_episodes(self, indices: list[int]) -> dict[int, SourceEpisode]:
        files = sorted(self.fs.glob(self._path(f"{EPISODES_DIR}/*/*.parquet")))
        table = pa.concat_tables(
            [self._parquet(posixpath.relpath(f, self.root)) for f in files], promote_options="default"
        )
        table = table.filter(pc.is_in(table["episode_index"], value_set=pa.array(indices, pa.int64())))
        episodes = {}
        for row in table.to_pylist():
            videos = {
                key: VideoSpan(
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
            episodes[row["episode_index"]] = SourceEpisode(
                index=row["episode_index"],
                length=row["length"],
                tasks=list(row["tasks"]),
                data_path=self.info.data_path.format(
                    chunk_index=row["data/chunk_index"], file_index=row["data/file_index"]
                ),
                videos=videos,
                stats=row_stats(row),
            )
        return episodes

    def _v2_episodes(self, indices: list[int]) -> dict[int, SourceEpisode]:
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
            episodes[index] = SourceEpisode(
                index=index,
                length=length,
                tasks=list(row["tasks"]),
                data_path=data_path,
                videos={
                    key: VideoSpan(
                        self.info.video_path.format(episode_chunk=chunk, video_key=key, episode_index=index),
                        0.0,
                        length / self.info.fps,
                    )
                    for key in self.cameras
                },
                stats=cast_stats_to_numpy(stats[index]),
            )
        return episodes

    # Data rows and video packets -------------------------------------------------------------------

    def data_rows(self, episode: SourceEpisode) -> pa.Table:
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
