"""Building the curated dataset: chosen episodes of a LeRobot dataset, re-indexed, videos remuxed.

:func:`write_curated_dataset` keeps a LeRobot **v3.0** dataset under a destination (local folder or any
fsspec URI) equal to a chosen selection of a source dataset (codebase v3.0, or the legacy v2.1 layout);
the version its pointer names opens as is in ``LeRobotDataset(repo_id, root=...)`` at every moment:

* data rows are copied unchanged except ``episode_index`` (0..n-1), ``index`` (contiguous from 0) and
  ``task_index`` (re-mapped to the dataset's own ``meta/tasks.parquet``);
* videos are **remuxed, not re-encoded** (:mod:`pipeline.curated.packers`);
* metadata is written through lerobot's own ``LeRobotDatasetMetadata`` (episodes index, ``info.json``
  totals, tasks, per-episode stats); ``stats.json`` is lerobot's ``aggregate_stats`` over every episode,
  written with sorted keys so equal inputs give equal bytes;
* the dataset carries its own ``topreward_progress.parquet``, re-indexed to the new global indices;
* each episode row records its source episode and fingerprint (``topreward/*`` columns), which is how a
  later run knows what the published dataset holds.

Publishing protocol (``docs/publishing.md``): the destination holds versions of the dataset behind a
one-file pointer (:mod:`pipeline.curated.store`). Newly selected episodes are **appended** to the current
version as new data, video and episodes files with fresh file indices, then ``tasks.parquet``,
``stats.json``, the progress file, and ``info.json`` last. Published files are never modified, so a reader
that read the previous ``info.json`` sees exactly the previous dataset (lerobot takes its length from
``info.json`` and new files sort after the old ones). A selection that drops or changes an episode is
written as a **new version** folder, complete before the pointer names it. Superseded versions and files
of a publish cut short are removed by a later publish, once no reader that resolved the pointer before
can still need them. Temporary space is one open file per camera plus one data file: each file is
uploaded when it closes.
"""

from __future__ import annotations

import json
import logging
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lerobot.datasets.compute_stats import aggregate_stats, compute_episode_stats
from lerobot.datasets.dataset_metadata import LeRobotDatasetMetadata
from lerobot.datasets.io_utils import cast_stats_to_numpy
from lerobot.datasets.utils import (
    DEFAULT_TASKS_PATH,
    EPISODES_DIR,
    INFO_PATH,
    STATS_PATH,
    DatasetInfo,
    serialize_dict,
)

from pipeline.atomic import parquet_bytes, step
from pipeline.curated.packers import DataPacker, VideoPacker
from pipeline.curated.pointer import Pointer
from pipeline.curated.source import Source
from pipeline.curated.store import (
    SOURCE_EPISODE,
    SOURCE_FINGERPRINT,
    Committed,
    Placed,
    Starts,
    VersionRoot,
    VersionStore,
)
from pipeline.layout import PROGRESS_FILE
from pipeline.reader import SourceEpisode

logger = logging.getLogger(__name__)

# info.json does not store a repo id and nothing is pushed; lerobot's metadata writer only wants a name.
_REPO_ID = "topreward/curated"
# The columns whose values change when episodes are dropped; their per-episode stats are recomputed.
_REINDEXED = ("episode_index", "index", "task_index")


@dataclass(frozen=True)
class CuratedSummary:
    """What :func:`write_curated_dataset` did.

    Attributes:
        uri: The current version's root (what ``LeRobotDataset(repo_id, root=...)`` opens), None when the
            selection is empty.
        episodes: Episodes the dataset holds now.
        frames: Frames the dataset holds now.
        mode: ``"unchanged"``, ``"appended"``, ``"rebuilt"`` (a new version) or ``"removed"``.
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
class _Inputs:
    """What every version is written from: the source, its progress, and where to stage files."""

    source_uri: str
    source_options: dict[str, Any] | None
    camera_keys: list[str] | None
    progress: pa.Table | None
    temp_dir: str | None


# Re-indexing ---------------------------------------------------------------------------------------


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
    source_stats: dict[str, dict[str, np.ndarray]], rows: pa.Table, features: dict[str, dict]
) -> dict[str, dict[str, np.ndarray]]:
    # Only the re-indexed columns changed; every other feature (videos included) keeps its source stats.
    kept = {key: value for key, value in source_stats.items() if key in features}
    recomputed = compute_episode_stats({key: rows[key].to_numpy() for key in _REINDEXED}, features)
    return {**kept, **recomputed}


def _curated_progress(progress: pa.Table, placed: list[Placed]) -> pa.Table:
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


def _stats_bytes(placed: list[Placed]) -> bytes:
    # lerobot's aggregation over every episode, in episode order; keys sorted so equal stats, equal bytes.
    stats = aggregate_stats([p.stats for p in placed])
    return json.dumps(serialize_dict(stats), indent=4, sort_keys=True).encode()


# Writing one version -------------------------------------------------------------------------------


def _new_metadata(
    info: DatasetInfo,
    features: dict[str, dict],
    cameras: list[str],
    root: Path,
    base: Committed | None,
    starts: Starts,
) -> LeRobotDatasetMetadata:
    """lerobot's metadata writer for the version, in a local staging ``root``: it continues after the
    ``base`` version's episodes, tasks and files (None: starts empty)."""
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
        meta.info.total_episodes, meta.info.total_frames = base.info.total_episodes, base.info.total_frames
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
    return meta


class _Upload:
    """Hands each finished local file to the version root under its relative path, then deletes it."""

    def __init__(self, dest: VersionRoot, root: Path) -> None:
        self.dest, self.root = dest, root
        self.failed = False

    def __call__(self, path: Path) -> None:
        # Files finished while an episode fails are dropped: they would only be cleaned up later.
        if not self.failed:
            self.dest.put(path, path.relative_to(self.root).as_posix())
        path.unlink()

    def note_exit(self, exc_type: type[BaseException] | None, *_: object) -> bool:
        """An ``ExitStack`` callback: records whether the block is left by an exception (never swallows)."""
        self.failed = exc_type is not None
        return False


@dataclass(frozen=True)
class _Copier:
    """Copies source episodes into the version being written: rows re-indexed, packets stream-copied."""

    source: Source
    meta: LeRobotDatasetMetadata
    features: dict[str, dict]
    task_names: dict[int, str]
    data: DataPacker
    videos: dict[str, VideoPacker]

    def copy(self, episode: SourceEpisode, fingerprint: str) -> tuple[Placed, int]:
        """Appends one episode; returns where it sits now and the video packet bytes copied."""
        meta = self.meta
        rows = self.source.data_rows(episode)
        old_tasks = list(dict.fromkeys(rows["task_index"].to_pylist()))
        meta.save_episode_tasks([self.task_names[task] for task in old_tasks])
        task_map = {task: meta.get_task_index(self.task_names[task]) for task in old_tasks}
        new_index, first_index = meta.info.total_episodes, meta.info.total_frames
        rows = _reindex_rows(rows, new_index, first_index, task_map)
        located = self.data.append(rows)
        video_bytes = 0
        for key, packer in self.videos.items():
            stream, packets = self.source.packets(episode, key)
            located |= packer.append(stream, packets, episode.videos[key])
            video_bytes += sum(p.size for p in packets)
        located |= {SOURCE_EPISODE: episode.episode_index, SOURCE_FINGERPRINT: fingerprint}
        # lerobot's own writer: episodes index row (from/to indices), info.json totals.
        stats = _episode_stats(self.source.stats(episode), rows, self.features)
        meta.save_episode(new_index, episode.length, self.source.tasks(episode), stats, located)
        # Stats as the episodes index stores them, so a later append aggregates the same numbers.
        stored = cast_stats_to_numpy(serialize_dict(stats))
        placed = Placed(episode.episode_index, fingerprint, new_index, first_index, episode.length, stored)
        return placed, video_bytes


def _copy_episodes(
    source: Source,
    new: list[tuple[int, str]],
    meta: LeRobotDatasetMetadata,
    features: dict[str, dict],
    task_names: dict[int, str],
    cameras: list[str],
    starts: Starts,
    upload: _Upload,
) -> tuple[list[Placed], int]:
    """Copies the ``new`` (episode, fingerprint)s into fresh packed files, each uploaded as it closes.

    Returns:
        The copied episodes, and the video packet bytes copied.
    """
    data = DataPacker(upload.root, meta.info, starts.data, upload)
    videos = {key: VideoPacker(upload.root, meta.info, key, starts.videos[key], upload) for key in cameras}
    copier = _Copier(source, meta, features, task_names, data, videos)
    placed, video_bytes = [], 0
    with ExitStack() as closing:
        # Open mp4s and lerobot's episodes writer are finished even if an episode fails.
        closing.callback(meta.finalize)
        for packer in videos.values():
            closing.callback(packer.close)
        closing.push(upload.note_exit)  # runs first on the way out
        for (_, fingerprint), episode in zip(new, source.episodes(), strict=True):
            episode_placed, episode_bytes = copier.copy(episode, fingerprint)
            placed.append(episode_placed)
            video_bytes += episode_bytes
        data.close()
    return placed, video_bytes


def _commit_metadata(
    dest: VersionRoot, root: Path, placed: list[Placed], progress: pa.Table | None, upload: _Upload
) -> None:
    """After the data and video files: lerobot's episodes files, then tasks, stats and progress, and
    ``info.json`` last (the commit point of an append, and the last file of a new version)."""
    for path in sorted((root / EPISODES_DIR).rglob("*.parquet")):
        upload(path)
    step("new-files", dest.uri)
    if (root / DEFAULT_TASKS_PATH).exists():
        dest.write((root / DEFAULT_TASKS_PATH).read_bytes(), DEFAULT_TASKS_PATH)
    dest.write(_stats_bytes(placed), STATS_PATH)
    if progress is not None:
        dest.write(parquet_bytes(_curated_progress(progress, placed)), PROGRESS_FILE)
    step("metadata", dest.uri)
    dest.write((root / INFO_PATH).read_bytes(), INFO_PATH)
    step("commit", dest.uri)


def _write_version(
    source: Source,
    cameras: list[str],
    new: list[tuple[int, str]],
    dest: VersionRoot,
    base: Committed | None,
    starts: Starts,
    progress: pa.Table | None,
    temp_dir: str | None,
) -> tuple[list[Placed], int]:
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
    with tempfile.TemporaryDirectory(prefix="curated-", dir=temp_dir) as tmp:
        root = Path(tmp) / "dataset"
        meta = _new_metadata(info, features, cameras, root, base, starts)
        upload = _Upload(dest, root)
        copied, video_bytes = _copy_episodes(source, new, meta, features, task_names, cameras, starts, upload)
        placed += copied
        _commit_metadata(dest, root, placed, progress, upload)
    return placed, video_bytes


# Append or new version -----------------------------------------------------------------------------


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
    source's ``video_files_size_in_mb``). Episodes chosen since the last call are appended to the current
    version (in source order, after the published ones); a selection that drops an episode or changes its
    fingerprint writes a new version. The same arguments again write nothing. Open the result at
    ``summary.uri`` or through ``pipeline.curated.pointer.resolve_curated``.

    Args:
        source_uri: Root of the source dataset (local path or fsspec URI), codebase v3.0 or v2.1.
        episodes: Source episode indices to keep; order and duplicates do not matter. Empty points the
            pointer at no version.
        dest_uri: The curated folder (its versions and their pointer; local path or fsspec URI).
        progress: Per-frame progress of the source in LeRobot's RA-BC schema. Its rows of the kept
            episodes, renumbered and sorted by the new ``index``, are written to
            ``<version>/topreward_progress.parquet`` with the schema and its metadata unchanged.
            ``None`` writes no progress file.
        source_options: fsspec storage options for the source.
        dest_options: fsspec storage options for the destination.
        camera_keys: Video features to copy; ``None`` copies all. Others are left out of the new dataset.
        fingerprints: Source episode -> fingerprint of its source data; an episode published under
            another fingerprint is copied again (into a new version).
        temp_dir: Local folder for the files being written; ``None`` uses the system's.
        keep_superseded_s: A superseded version is removed by the first call at least this long after
            the pointer stopped naming it (0: the next call).

    Returns:
        What the dataset holds now and what this call wrote.

    Raises:
        CurationError: The source's metadata cannot be used (:func:`pipeline.reader.read_dataset`), an
            episode is not in the source or its metadata fails the reader's checks, its rows disagree
            with its metadata, a camera is unknown, or an episode's video does not begin on a keyframe
            (it could only be re-encoded).
        FileError: A file could not be read or written; the message names it.
    """
    wanted = [(ep, (fingerprints or {}).get(ep, "")) for ep in sorted(set(episodes))]
    inputs = _Inputs(source_uri, source_options, camera_keys, progress, temp_dir)
    store = VersionStore(dest_uri, dest_options)
    entries = store.entries()
    superseded = store.clean(entries, keep_superseded_s)
    current = store.current
    if not wanted:
        return _point_at_nothing(store, superseded)
    if current is not None:
        dest = store.version(current)
        appended = _append_to_current(inputs, wanted, dest, entries.get(current, set()), superseded)
        if appended is not None:
            return appended
        superseded.append(current)
    return _new_version(inputs, wanted, store, superseded)


def _point_at_nothing(store: VersionStore, superseded: list[str]) -> CuratedSummary:
    """An empty selection: the pointer names no version, and the current one (if any) is superseded."""
    current = store.current
    if current is None:
        return CuratedSummary(None, 0, 0, superseded=tuple(superseded))
    store.point_at(Pointer(store.pointer.version, None))
    return CuratedSummary(
        None, 0, 0, "removed", bytes_written=store.bytes_written, superseded=(*superseded, current)
    )


def _append_to_current(
    inputs: _Inputs, wanted: list[tuple[int, str]], dest: VersionRoot, files: set[str], superseded: list[str]
) -> CuratedSummary | None:
    """Appends the newly wanted episodes to the current version ``dest`` (whose files are ``files``);
    None when it cannot: the version does not hold together, or holds an episode no longer wanted."""
    committed = dest.committed(files)
    if committed is None:
        return None
    dest.remove_unreferenced(committed, files)
    published = {(p.source, p.fingerprint) for p in committed.placed()}
    if not published <= set(wanted):
        return None
    new = [entry for entry in wanted if entry not in published]
    return _with(_append(inputs, new, dest, committed), superseded)


def _append(
    inputs: _Inputs, new: list[tuple[int, str]], dest: VersionRoot, committed: Committed
) -> CuratedSummary:
    """Adds the ``new`` episodes after the published ones; nothing published is modified."""
    if not new:
        placed = committed.placed()
        if inputs.progress is not None:
            dest.write(parquet_bytes(_curated_progress(inputs.progress, placed)), PROGRESS_FILE)
        return _summary(dest, placed, "unchanged", 0, 0)
    with Source(inputs.source_uri, inputs.source_options, [ep for ep, _ in new]) as source:
        cameras = source.video_keys(inputs.camera_keys)
        placed, video_bytes = _write_version(
            source, cameras, new, dest, committed, committed.starts(), inputs.progress, inputs.temp_dir
        )
    logger.info("curated: appended %d episodes to %s", len(new), dest.uri)
    return _summary(dest, placed, "appended", len(new), video_bytes)


def _new_version(
    inputs: _Inputs, wanted: list[tuple[int, str]], store: VersionStore, superseded: list[str]
) -> CuratedSummary:
    """Writes the whole selection as a new version, then points the pointer at it."""
    pointer = store.pointer or Pointer(0, None)
    folder = pointer.next_root()
    dest = store.version(folder)
    with Source(inputs.source_uri, inputs.source_options, [ep for ep, _ in wanted]) as source:
        cameras = source.video_keys(inputs.camera_keys)
        placed, video_bytes = _write_version(
            source, cameras, wanted, dest, None, Starts.fresh(cameras), inputs.progress, inputs.temp_dir
        )
    store.point_at(Pointer(pointer.version + 1, folder))
    logger.info("curated: wrote %s with %d episodes", dest.uri, len(wanted))
    summary = _summary(dest, placed, "rebuilt", len(wanted), video_bytes)
    return _with(summary, superseded, store.bytes_written)


def _with(summary: CuratedSummary, superseded: list[str], pointer_bytes: int = 0) -> CuratedSummary:
    """``summary`` with the versions still kept and the pointer's bytes written."""
    return replace(summary, superseded=tuple(superseded), bytes_written=summary.bytes_written + pointer_bytes)


def _summary(
    dest: VersionRoot, placed: list[Placed], mode: str, added: int, video_bytes: int
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
