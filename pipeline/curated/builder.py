"""Building the curated dataset: chosen episodes of a LeRobot dataset, re-indexed, videos remuxed.

:func:`write_curated_dataset` keeps a LeRobot **v3.0** dataset under a destination (local folder or any
fsspec URI) equal to a chosen selection of a source dataset (codebase v3.0, or the legacy v2.1 layout);
the version its pointer names opens as is in ``LeRobotDataset(repo_id, root=...)`` at every moment:

* data rows are copied unchanged except ``episode_index`` (0..n-1), ``index`` (contiguous from 0) and
  ``task_index`` (re-mapped to the dataset's own ``meta/tasks.parquet``);
* videos are **remuxed, not re-encoded** (:mod:`pipeline.curated.packers`);
* metadata is written in LeRobot's v3.0 format (:mod:`pipeline.curated.v30`, which reproduces LeRobot's
  writers without importing LeRobot, torch or transformers): episodes index, ``info.json`` totals, tasks,
  per-episode stats; ``stats.json`` is LeRobot's ``aggregate_stats`` formula, kept as a running
  aggregate (the committed ``stats.json`` plus the new episodes), written with sorted keys;
* the dataset carries its own ``topreward_progress.parquet``, re-indexed to the new global indices;
* each episode row records its source episode and fingerprint (``topreward/*`` columns), which is how a
  later run knows what the published dataset holds, and the run it was written in.

Publishing protocol (``docs/publishing.md``): the destination holds versions of the dataset behind a
one-file pointer (:mod:`pipeline.curated.store`). Newly selected episodes are **appended** to the current
version as a new run (new data, video and episodes files with fresh file indices), then
``tasks.parquet``, the progress file, ``info.json`` (the commit point) and ``stats.json``. Published
files are never modified, so a reader that read the previous ``info.json`` sees exactly the previous
dataset. When the newest runs are many and small (:func:`plan_compaction`), they are **compacted**
instead: a new version that keeps every other run's files as they are (hard links, or copies inside the
store) and writes the small runs' episodes, with the new ones, into files of the normal size. A selection
that drops or changes an episode is written as a **new version** of everything. A new version is
complete before the pointer names it. Superseded versions and files of a publish cut short are removed
by a later publish. Temporary space is one open file per camera plus one data and one episodes file.
"""

from __future__ import annotations

import logging
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.atomic import step
from pipeline.curated.packers import DataPacker, EpisodesPacker, SchemaMismatch, VideoPacker
from pipeline.curated.pointer import Pointer
from pipeline.curated.source import Source, SourceEpisode
from pipeline.curated.store import (
    RUN,
    RUN_LEVEL,
    SOURCE_EPISODE,
    SOURCE_FINGERPRINT,
    Committed,
    Placed,
    Run,
    Starts,
    VersionRoot,
    VersionStore,
)
from pipeline.curated.v30 import (
    DEFAULT_TASKS_PATH,
    INFO_PATH,
    STATS_PATH,
    Layout,
    Stats,
    StatsSum,
    column_stats,
    curated_info,
    flatten,
    info_bytes,
    serialize_stats,
    stats_json,
    stored,
    tasks_bytes,
)
from pipeline.layout import PROGRESS_FILE

logger = logging.getLogger(__name__)

# The columns whose values change when episodes are dropped; their per-episode stats are recomputed.
_REINDEXED = ("episode_index", "index", "task_index")

# Compaction (defaults of publish.curated_compact_fanout / publish.curated_compact_levels): this
# many runs of one level at the end of the current version are packed into one run of the next level,
# by a new version that keeps every other file. A run of the top level is never packed again,
# so each episode's bytes are written at most 1 + COMPACT_LEVELS times, while the runs behind the pointer
# stay at most COMPACT_FANOUT - 1 per level below the top (plus one top-level run per
# COMPACT_FANOUT ** COMPACT_LEVELS publishes that append).
COMPACT_FANOUT = 8
COMPACT_LEVELS = 2
# The level of a run that holds a whole selection (a first publish or a rebuild): above any
# compact_levels, so that it is never written again by a compaction.
_BASE_LEVEL = 999


@dataclass(frozen=True)
class CuratedSummary:
    """What :func:`write_curated_dataset` did.

    Attributes:
        uri: The current version's root (what ``LeRobotDataset(repo_id, root=...)`` opens), None when the
            selection is empty.
        episodes: Episodes the dataset holds now.
        frames: Frames the dataset holds now.
        mode: ``"unchanged"``, ``"appended"``, ``"compacted"`` (a new version keeping the files of all
            but the newest runs), ``"rebuilt"`` (a new version of everything) or ``"removed"``.
        added: Episodes copied in this call that the dataset did not hold (all of them when rebuilt).
        video_bytes: Bytes of video packets stream-copied in this call, over all cameras.
        bytes_written: Bytes of every file written in this call (videos, data, metadata, pointer).
        video_bytes_written: Bytes of the mp4 files written in this call.
        superseded: Superseded version folders still kept for readers that may be using them.
        rewritten: Episodes the dataset already held that were copied again into fewer files (compacted).
        bytes_carried: Bytes of files a compaction kept by hard link or by a copy inside the store (not
            sent by this process).
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
    rewritten: int = 0
    bytes_carried: int = 0


@dataclass(frozen=True)
class _Inputs:
    """What every version is written from: the source, its progress, and where to stage files."""

    source_uri: str
    source_options: dict[str, Any] | None
    camera_keys: list[str] | None
    progress: pa.Table | None
    temp_dir: str | None


class _Incompatible(Exception):
    """The new episodes cannot join the current version's files (cameras or columns differ)."""


# Compaction ----------------------------------------------------------------------------------------


def plan_compaction(runs: list[Run], new: int, fanout: int, levels: int) -> Run | None:
    """The run a publish that appends ``new`` episodes after ``runs`` writes, when it compacts.

    The new episodes form a run of level 0. While the last ``fanout`` runs share a level below
    ``levels``, they become one run of the next level (so appends pack like a base-``fanout`` counter).
    Returns the resulting last run when any packing happened (its episodes are written again, together,
    into fresh files), None when the publish is a plain append.
    """
    runs = (
        [*runs, Run(runs[-1].stop if runs else 0, (runs[-1].stop if runs else 0) + new, 0)] if new else runs
    )
    merged = None
    while fanout > 1 and len(runs) >= fanout:
        tail = runs[-fanout:]
        level = tail[-1].level
        if level >= levels or any(run.level != level for run in tail):
            break
        merged = Run(tail[0].start, tail[-1].stop, level + 1)
        runs = [*runs[:-fanout], merged]
    return merged


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


def _episode_stats(source_stats: Stats, rows: pa.Table, features: dict[str, dict]) -> Stats:
    # Only the re-indexed columns changed; every other feature (videos included) keeps its source stats.
    kept = {key: value for key, value in source_stats.items() if key in features}
    recomputed = {key: column_stats(rows[key].to_numpy()) for key in _REINDEXED}
    return stored({**kept, **recomputed})


def _curated_progress(progress: pa.Table, placed: Placed) -> pa.Table:
    """The curated episodes' progress rows, renumbered to their curated episode and global index."""
    order = np.argsort(placed.source, kind="stable")
    sources = placed.source[order]
    kept = progress.filter(pc.is_in(progress["episode_index"], value_set=pa.array(sources, pa.int64())))
    position = order[np.searchsorted(sources, kept["episode_index"].to_numpy())]
    index = placed.from_index[position] + kept["frame_index"].to_numpy()
    kept = _replace_columns(kept, {"episode_index": placed.index[position], "index": index})
    # Episodes kept in source order are already in index order: sorting 100,000s of rows a night for
    # nothing is most of this function's time.
    return kept.sort_by("index") if np.any(np.diff(index) < 0) else kept


def _progress_bytes(table: pa.Table) -> bytes:
    """The progress file's parquet bytes, small: it is rewritten whole every night (LeRobot's RA-BC
    reads one file), so its integer columns are delta-encoded (contiguous indices cost next to nothing)
    and progress values byte-split, then zstd: about a tenth of the default encoding's size for
    increasing progress, half for noisy values. No timestamps: equal tables, equal bytes."""
    encodings = {}
    for field in table.schema:
        if pa.types.is_integer(field.type):
            encodings[field.name] = "DELTA_BINARY_PACKED"
        elif pa.types.is_floating(field.type):
            encodings[field.name] = "BYTE_STREAM_SPLIT"
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, use_dictionary=False, column_encoding=encodings, compression="zstd")
    return sink.getvalue().to_pybytes()


# Writing episodes ----------------------------------------------------------------------------------


class _Upload:
    """Hands each finished local file to the version root under its relative path, then deletes it.

    Episodes files are held back until :meth:`flush_held` (after every data and video file): a reader
    never finds an episodes row whose files are not there yet.
    """

    def __init__(self, dest: VersionRoot, root: Path) -> None:
        self.dest, self.root = dest, root
        self.failed = False
        self.held: list[Path] = []

    def __call__(self, path: Path) -> None:
        # Files finished while an episode fails are dropped: they would only be cleaned up later.
        if not self.failed:
            self.dest.put(path, path.relative_to(self.root).as_posix())
        path.unlink()

    def hold(self, path: Path) -> None:
        """Keeps a finished episodes file for :meth:`flush_held`."""
        self.held.append(path)

    def flush_held(self) -> None:
        """Uploads the held episodes files."""
        for path in self.held:
            self(path)
        self.held = []
        step("new-files", self.dest.uri)

    def note_exit(self, exc_type: type[BaseException] | None, *_: object) -> bool:
        """An ``ExitStack`` callback: records whether the block is left by an exception (never swallows)."""
        self.failed = exc_type is not None
        return False


@dataclass
class _Tasks:
    """The version's tasks table: texts by task index, growing as new episodes bring new tasks."""

    names: list[str]

    def index_of(self, name: str) -> int:
        """The task's index, adding it at the end when new (as LeRobot's ``save_episode_tasks``)."""
        if name not in self.names:
            self.names.append(name)
        return self.names.index(name)


@dataclass
class _Copied:
    """What copying episodes wrote: their placement and their video packet bytes."""

    placed: Placed
    video_bytes: int


class _Copier:
    """Copies source episodes into the version being written: rows re-indexed, packets stream-copied,
    one episodes row each."""

    def __init__(
        self,
        source: Source,
        features: dict[str, dict],
        tasks: _Tasks,
        packers: tuple[DataPacker, dict[str, VideoPacker], EpisodesPacker],
        run: Run,
    ) -> None:
        self.source, self.features, self.tasks, self.run = source, features, tasks, run
        self.data, self.videos, self.episodes = packers
        self.task_names = source.task_names()
        self._row_bytes: int | None = None

    def copy(
        self, episode: SourceEpisode, fingerprint: str, new_index: int, first_index: int
    ) -> tuple[Stats, int]:
        """Appends one episode as ``new_index`` from global index ``first_index``; returns its stored
        stats and the video packet bytes copied."""
        rows = self.source.data_rows(episode)
        old_tasks = list(dict.fromkeys(rows["task_index"].to_pylist()))
        task_map = {task: self.tasks.index_of(self.task_names[task]) for task in old_tasks}
        rows = _reindex_rows(rows, new_index, first_index, task_map)
        located = self.data.append(rows)
        video_bytes = 0
        for key, packer in self.videos.items():
            stream, packets = self.source.packets(episode, key)
            located |= packer.append(stream, packets, episode.videos[key])
            video_bytes += sum(p.size for p in packets)
        located |= {
            SOURCE_EPISODE: episode.episode_index,
            SOURCE_FINGERPRINT: fingerprint,
            RUN: self.run.start,
            RUN_LEVEL: self.run.level,
        }
        stats = _episode_stats(self.source.stats(episode), rows, self.features)
        # The row as LeRobot's save_episode builds it: index, tasks, length, locations, stats, ranges.
        row = {"episode_index": new_index, "tasks": self.source.tasks(episode), "length": episode.length}
        row |= located
        row |= flatten({"stats": serialize_stats(stats)})
        row |= {"dataset_from_index": first_index, "dataset_to_index": first_index + episode.length}
        if self._row_bytes is None:  # every row has the same columns: one estimate of its size
            self._row_bytes = 8 * sum(len(v) if isinstance(v, list) else 1 for v in row.values()) + 64
        self.episodes.append(row, self._row_bytes)
        return stats, video_bytes


def _copy_episodes(
    source: Source,
    copy: list[tuple[int, str]],
    features: dict[str, dict],
    tasks: _Tasks,
    layout: Layout,
    cameras: list[str],
    starts: Starts,
    upload: _Upload,
    run: Run,
    first_index: int,
    schema: pa.Schema | None,
    stats: StatsSum,
    counted: int,
) -> _Copied:
    """Copies the ``copy`` (episode, fingerprint)s as episodes ``run.start``... into fresh packed files,
    each data and video file uploaded as it closes, the episodes files after them; the stats of the last
    ``counted`` of them are added to ``stats``."""
    data = DataPacker(upload.root, layout, starts.data, upload)
    videos = {key: VideoPacker(upload.root, layout, key, starts.videos[key], upload) for key in cameras}
    episodes = EpisodesPacker(upload.root, layout, starts.episodes, upload.hold, schema)
    copier = _Copier(source, features, tasks, (data, videos, episodes), run)
    video_bytes, lengths, firsts = 0, [], []
    first_counted = len(copy) - counted
    with ExitStack() as closing:
        # Open mp4s and the open data file are finished even if an episode fails.
        for packer in videos.values():
            closing.callback(packer.close)
        closing.callback(data.abandon)
        closing.push(upload.note_exit)  # runs first on the way out
        for offset, ((_, fingerprint), episode) in enumerate(zip(copy, source.episodes(), strict=True)):
            episode_stats, episode_bytes = copier.copy(episode, fingerprint, run.start + offset, first_index)
            if offset >= first_counted:
                stats.add(episode_stats)
            video_bytes += episode_bytes
            lengths.append(episode.length)
            firsts.append(first_index)
            first_index += episode.length
        data.close()
    try:
        episodes.close()
    except SchemaMismatch as err:
        raise _Incompatible(str(err)) from err
    upload.flush_held()
    placed = Placed(
        np.array([episode for episode, _ in copy], dtype=np.int64),
        [fingerprint for _, fingerprint in copy],
        np.arange(run.start, run.start + len(copy), dtype=np.int64),
        np.array(firsts, dtype=np.int64),
        np.array(lengths, dtype=np.int64),
    )
    return _Copied(placed, video_bytes)


@dataclass(frozen=True)
class _Version:
    """One write into a version root: the episodes it keeps, those it copies, and how its stats follow."""

    dest: VersionRoot
    base: Committed | None  # the committed version the kept episodes are read from
    keep: int  # the base's first episodes kept as they are
    copy: list[tuple[int, str]]  # (source episode, fingerprint)s copied after them, in order
    run: Run  # the run the copied episodes form
    stats_base: Stats | None  # aggregated stats the new episodes are added to (None: none)
    new: int  # how many of the copied episodes, at the end, are new to the dataset (and to the stats)
    carry_from: VersionRoot | None = None  # where the kept files are (None: already in dest)
    append: bool = False  # info.json commits an append (stats.json follows it) rather than a version


def _write(inputs: _Inputs, version: _Version) -> tuple[Placed, int]:
    """Writes ``version``: kept files carried, copied episodes into fresh files, then the single files.

    Returns:
        Every episode of the version, and the video packet bytes copied.
    """
    base, dest = version.base, version.dest
    with Source(inputs.source_uri, inputs.source_options, [ep for ep, _ in version.copy]) as source:
        cameras = source.video_keys(inputs.camera_keys)
        if base is not None and cameras != base.cameras:
            raise _Incompatible(f"cameras {cameras} differ from the version's {base.cameras}")
        features = {
            key: ft for key, ft in source.info["features"].items() if ft["dtype"] != "video" or key in cameras
        }
        layout = base.layout if base is not None else source.layout
        kept = base.placed().head(version.keep) if base is not None else Placed.empty()
        tasks = _Tasks(list(base.tasks) if base is not None else [])
        if version.carry_from is not None:
            for relative in sorted(base.referenced(version.keep)):
                dest.carry(version.carry_from, relative)
        starts = base.starts(version.keep) if base is not None else Starts.fresh(cameras)
        schema = base.schema if base is not None else None
        stats = StatsSum(version.stats_base)
        with tempfile.TemporaryDirectory(prefix="curated-", dir=inputs.temp_dir) as tmp:
            upload = _Upload(dest, Path(tmp) / "dataset")
            copied = _copy_episodes(
                source, version.copy, features, tasks, layout, cameras, starts, upload, version.run,
                kept.frames, schema, stats, version.new,
            )  # fmt: skip
        info = curated_info(
            source.info,
            features,
            layout,
            episodes=version.keep + len(copied.placed),
            frames=kept.frames + copied.placed.frames,
            tasks=len(tasks.names),
        )
    placed = kept + copied.placed
    if base is None or tasks.names != base.stored_tasks:
        dest.write(tasks_bytes(tasks.names), DEFAULT_TASKS_PATH)
    elif version.carry_from is not None:
        dest.carry(version.carry_from, DEFAULT_TASKS_PATH)
    _commit(inputs, dest, info, stats.result(), placed, version.append)
    return placed, copied.video_bytes


def _commit(
    inputs: _Inputs, dest: VersionRoot, info: dict[str, Any], stats: Stats, placed: Placed, append: bool
) -> None:
    """After the data, video and episodes files and the tasks table: progress, ``info.json`` (the commit
    point of an append, and the last file a reader of a new version needs), with ``stats.json`` before it
    in a new version and right after it in an append (so that it always covers exactly the committed
    episodes or those before the last append: :meth:`~pipeline.curated.store.VersionRoot.running_stats`)."""
    if not append:
        dest.write(stats_json(stats), STATS_PATH)
    if inputs.progress is not None:
        dest.write(_progress_bytes(_curated_progress(inputs.progress, placed)), PROGRESS_FILE)
    step("metadata", dest.uri)
    dest.write(info_bytes(info), INFO_PATH)
    step("commit", dest.uri)
    if append:
        dest.write(stats_json(stats), STATS_PATH, name="stats")


# Append, compact or new version --------------------------------------------------------------------


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
    compact_fanout: int = COMPACT_FANOUT,
    compact_levels: int = COMPACT_LEVELS,
) -> CuratedSummary:
    """Makes the current version under ``dest_uri`` a LeRobot v3.0 dataset of exactly the chosen episodes.

    Episodes are numbered 0..n-1 and the global ``index`` runs from 0; tasks get their own
    ``meta/tasks.parquet``; every other column and all pixels are the source's. Each camera's episodes
    are packed into ``videos/<key>/chunk-XXX/file-XXX.mp4`` without re-encoding (files roll over at the
    source's ``video_files_size_in_mb``). Episodes chosen since the last call are appended to the current
    version (in source order, after the published ones), or compacted with the newest runs into a new
    version (:func:`plan_compaction`); a selection that drops an episode or changes its fingerprint writes
    a new version. The same arguments again write nothing. An append reads and writes only the new
    episodes' rows and packets, plus the version's narrow index and single files. Open the result at
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
        compact_fanout: Runs of one level packed into one run of the next (below 2: never compact).
        compact_levels: Levels of packing: an episode's bytes are written at most ``1 + compact_levels``
            times by appends and compactions.

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
        files = entries.get(current, set())
        compaction = (compact_fanout, compact_levels)
        try:
            grown = _grow_current(inputs, wanted, store, dest, files, superseded, compaction)
        except _Incompatible as err:
            logger.info("curated: %s: %s; writing a new version", dest.uri, err)
            grown = None
        if grown is not None:
            return grown
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


def _grow_current(
    inputs: _Inputs,
    wanted: list[tuple[int, str]],
    store: VersionStore,
    dest: VersionRoot,
    files: set[str],
    superseded: list[str],
    compaction: tuple[int, int],
) -> CuratedSummary | None:
    """Adds the newly wanted episodes to the current version ``dest`` (whose files are ``files``):
    appended, or compacted with its newest runs into a new version. None when neither can be done: the
    version does not hold together, or holds an episode no longer wanted."""
    committed = dest.committed(files)
    if committed is None:
        return None
    dest.remove_unreferenced(committed, files)
    placed = committed.placed()
    published = set(placed.pairs())
    if not published <= set(wanted):
        return None
    new = [entry for entry in wanted if entry not in published]
    stats = dest.running_stats(committed)
    if not new:
        return _with(_unchanged(inputs, dest, committed, placed, stats), superseded)
    merged = plan_compaction(committed.runs(), len(new), *compaction)
    if merged is None:
        run = Run(committed.episodes, committed.episodes + len(new), 0)
        version = _Version(dest, committed, committed.episodes, new, run, stats, len(new), append=True)
        placed, video_bytes = _write(inputs, version)
        logger.info("curated: appended %d episodes to %s", len(new), dest.uri)
        return _with(_summary(dest, placed, "appended", len(new), video_bytes), superseded)
    if committed.shares_files(merged.start):
        return None  # its runs are not in files of their own (never so when written by this module)
    return _compact(inputs, store, dest, committed, merged, new, stats, superseded)


def _unchanged(
    inputs: _Inputs, dest: VersionRoot, committed: Committed, placed: Placed, stats: Stats
) -> CuratedSummary:
    """Nothing new: the progress file follows the run's progress, ``stats.json`` is completed if an
    append stopped before it."""
    if inputs.progress is not None:
        dest.write(_progress_bytes(_curated_progress(inputs.progress, placed)), PROGRESS_FILE)
    dest.write(stats_json(stats), STATS_PATH, name="stats")
    return _summary(dest, placed, "unchanged", 0, 0)


def _compact(
    inputs: _Inputs,
    store: VersionStore,
    current: VersionRoot,
    committed: Committed,
    merged: Run,
    new: list[tuple[int, str]],
    stats: Stats,
    superseded: list[str],
) -> CuratedSummary:
    """A new version: the current one's files before ``merged.start`` kept as they are, its episodes from
    there and the ``new`` ones copied again into fresh files as one run; then the pointer names it."""
    pointer, old = store.pointer, store.current
    folder = pointer.next_root()
    dest = store.version(folder)
    again = committed.placed().pairs()[merged.start :]
    version = _Version(
        dest, committed, merged.start, again + new, merged, stats, len(new), carry_from=current
    )
    placed, video_bytes = _write(inputs, version)
    store.point_at(Pointer(pointer.version + 1, folder))
    copied = len(again) + len(new)
    logger.info(
        "curated: wrote %s: %d episodes kept, %d copied (%d new)", dest.uri, merged.start, copied, len(new)
    )
    summary = replace(_summary(dest, placed, "compacted", len(new), video_bytes), rewritten=len(again))
    return _with(summary, [*superseded, old], store.bytes_written)


def _new_version(
    inputs: _Inputs, wanted: list[tuple[int, str]], store: VersionStore, superseded: list[str]
) -> CuratedSummary:
    """Writes the whole selection as a new version (one run of the top level), then points the pointer
    at it."""
    pointer = store.pointer or Pointer(0, None)
    folder = pointer.next_root()
    store.discard(folder)  # what a compaction given up in this call left there
    dest = store.version(folder)
    run = Run(0, len(wanted), _BASE_LEVEL)
    placed, video_bytes = _write(inputs, _Version(dest, None, 0, wanted, run, None, len(wanted)))
    store.point_at(Pointer(pointer.version + 1, folder))
    logger.info("curated: wrote %s with %d episodes", dest.uri, len(wanted))
    summary = _summary(dest, placed, "rebuilt", len(wanted), video_bytes)
    return _with(summary, superseded, store.bytes_written)


def _with(summary: CuratedSummary, superseded: list[str], pointer_bytes: int = 0) -> CuratedSummary:
    """``summary`` with the versions still kept and the pointer's bytes written."""
    return replace(summary, superseded=tuple(superseded), bytes_written=summary.bytes_written + pointer_bytes)


def _summary(dest: VersionRoot, placed: Placed, mode: str, added: int, video_bytes: int) -> CuratedSummary:
    return CuratedSummary(
        uri=dest.uri,
        episodes=len(placed),
        frames=placed.frames,
        mode=mode,
        added=added,
        video_bytes=video_bytes,
        bytes_written=dest.bytes_written,
        video_bytes_written=dest.video_bytes_written,
        bytes_carried=dest.bytes_carried,
    )
