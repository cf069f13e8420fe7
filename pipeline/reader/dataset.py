"""One reader of LeRobot dataset metadata (v3.0 and v2.1) into typed, frozen records.

:func:`read_dataset` reads ``meta/info.json``, the episodes index and one literal listing of the objects
the episodes are read from, never frame data:

* v3.0: ``meta/episodes/chunk-*/file-*.parquet``; videos are packed, many episodes per mp4, located by
  ``videos/<camera>/{chunk_index,file_index,from_timestamp,to_timestamp}``; the global index range is
  ``dataset_from_index``/``dataset_to_index``.
* v2.1: ``meta/episodes.jsonl`` (``episode_index``, ``tasks`` as strings, ``length``); one mp4 per
  episode and camera at info.json's ``video_path`` with ``episode_chunk = episode_index // chunks_size``.
  v2.1 stores no global index, so the ``index`` column of each episode's data parquet is read (its
  footer and one column, concurrently) rather than summing ``episodes.jsonl`` lengths, which one wrong
  entry would shift for every later episode; the data file's row count is the episode's length.

Global index ranges must be what LeRobot assumes: ``to - from == length`` per episode (else that episode
fails) and, in episode order, each range starts at or after the previous one ends (else the dataset
fails: two episodes would publish progress rows under the same ``index``).

Every stored object an episode is scored from (its video per camera, and for v2.1 its data parquet)
carries its identity from the listing (:func:`pipeline.reader.listing.object_identity`), so a file
rewritten in place is seen as new. The listing is taken before the data parquets are read: a file
replaced in between is then read new under its old identity and scored again next time, never the other
way round.

This module does not import LeRobot (the driver's import path stays light); the few path constants it
needs are defined here, and a test keeps them equal to ``lerobot.datasets.utils``.
"""

from __future__ import annotations

import json
import logging
import math
import posixpath
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow.parquet as pq
from fsspec import AbstractFileSystem

from pipeline.reader.listing import object_identity
from pipeline.reader.rowgroups import row_groups_with, scan
from pipeline.storage import filesystem_for, forget_listings, join_uri, list_files, normalize_uri, redact

log = logging.getLogger(__name__)

# LeRobot's names (lerobot.datasets.utils), kept equal by tests/test_reader.py.
INFO_PATH = "meta/info.json"
EPISODES_DIR = "meta/episodes"
LEGACY_EPISODES_PATH = "meta/episodes.jsonl"
DEFAULT_CHUNK_SIZE = 1000

V30, V21 = "v3.0", "v2.1"
SUPPORTED_VERSIONS = (V21, V30)
# Frame rates outside this range are metadata errors (a typo, or a rate in the wrong unit), not data.
MAX_DATASET_FPS = 1000.0
# Concurrent footer reads of v2.1 data parquets: small requests, bound by latency, not bandwidth.
INDEX_READ_THREADS = 16
# A dataset id is the last two path parts of its root (robot/task); it names the output folder.
_ID_REASON = "a dataset root needs at least two path parts to name its outputs"


class MetadataError(Exception):
    """A metadata file of a dataset is missing, unreadable or inconsistent: ``"<file uri>: <reason>"``.

    Attributes:
        file_uri: The file (or folder) at fault.
        reason: What is wrong with it.
        codebase_version: The dataset's ``codebase_version`` when it was read before the error, else ``""``.
    """

    def __init__(self, file_uri: str, reason: str, codebase_version: str = "") -> None:
        super().__init__(f"{file_uri}: {reason}")
        self.file_uri, self.reason, self.codebase_version = file_uri, reason, codebase_version

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.file_uri, self.reason, self.codebase_version))


@dataclass(frozen=True)
class VideoSpan:
    """Where one camera's frames of an episode are: a file relative to the root and a time span in it.

    ``identity`` is the file's :func:`object_identity` from the listing, ``""`` when it is not listed
    (decoding then fails the episode, naming the file).
    """

    path: str
    from_s: float
    to_s: float
    identity: str = ""


@dataclass(frozen=True)
class SourceEpisode:
    """One episode of a dataset as its metadata (and, for v2.1, its data file) describes it.

    Attributes:
        episode_index: The episode's number in the source.
        length: Frame count (v2.1: the data file's row count).
        dataset_from_index: Global index of its first frame; -1 when unknown (a failed episode).
        dataset_to_index: Global index one past its last frame; -1 when unknown.
        tasks: Task texts, stripped, empty ones dropped.
        data_path: Its data parquet, relative to the root.
        data_rows: ``(first, stop)`` rows of the episode inside ``data_path`` when known (v2.1), else None.
        data_identity: The data file's identity when the global index was read from it (v2.1), else ``""``.
        videos: Camera -> its :class:`VideoSpan`, for the cameras that were asked for.
        error: ``""``, or ``"<file uri>: <reason>"`` when the episode cannot be used.
    """

    episode_index: int
    length: int
    dataset_from_index: int
    dataset_to_index: int
    tasks: tuple[str, ...]
    data_path: str
    data_rows: tuple[int, int] | None = None
    data_identity: str = ""
    videos: dict[str, VideoSpan] = field(default_factory=dict)
    error: str = ""

    @property
    def ok(self) -> bool:
        """Whether the episode can be used."""
        return not self.error

    def source_identity(self, camera: str) -> str:
        """The identity of the stored objects scoring this episode on ``camera`` reads.

        The camera's video, plus the data parquet when the global index came from it (v2.1). An
        object missing from the listing is ``absent``, so its reappearance reads as a change.
        """
        span = self.videos.get(camera)
        parts = [f"video[{span.identity if span and span.identity else 'absent'}]"]
        if self.data_rows is not None:
            parts.append(f"data[{self.data_identity or 'absent'}]")
        return " ".join(parts)


@dataclass(frozen=True)
class DatasetMeta:
    """The metadata of one dataset root.

    Attributes:
        root: Dataset root URI as given (keeps the caller's protocol), without a trailing ``/``.
        dataset_id: :func:`dataset_id_for` of the root.
        codebase_version: ``v3.0`` or ``v2.1``.
        fps: Frame rate, checked to be in ``(0, MAX_DATASET_FPS]``.
        info: ``meta/info.json`` as parsed.
        video_keys: Every video feature, in info.json's order.
        cameras: The video features whose spans the episodes carry.
        chunks_size: Files per chunk folder.
        episodes: The episodes read, by episode index (failed ones included, with ``error`` set).
        errors: ``"<file uri>: <reason>"`` of index entries that could not be parsed at all (a v2.1
            line): the entry is skipped, the rest of the dataset is usable.
    """

    root: str
    dataset_id: str
    codebase_version: str
    fps: float
    info: dict[str, Any]
    video_keys: tuple[str, ...]
    cameras: tuple[str, ...]
    chunks_size: int
    episodes: tuple[SourceEpisode, ...]
    errors: tuple[str, ...] = ()

    def file_uri(self, relative: str) -> str:
        """The URI of a file of the dataset, as messages name it."""
        return join_uri(self.root, relative)


def dataset_id_for(root: str) -> str:
    """A stable, readable dataset id: the last two path components of the root, e.g. ``so100/pick_cube``.

    ``..`` and ``.`` are resolved first, so the id never climbs out of the output folder.

    Args:
        root: Dataset root URI or path.

    Returns:
        The id, used as the dataset's output sub-folder.

    Raises:
        ValueError: the root normalises to a path with fewer than two parts to name it by.
    """
    parts = [part for part in normalize_uri(root).split("://", 1)[-1].split("/") if part]
    if len(parts) < 2:
        raise ValueError(f"{root}: {_ID_REASON}")
    return "/".join(parts[-2:])


@dataclass(frozen=True)
class _Source:
    """A dataset root opened on its filesystem: resolves relative paths and names files in errors."""

    fs: AbstractFileSystem
    root: str
    root_path: str
    storage_options: dict[str, Any]
    # Every file under the root as one earlier listing reported it (relative path -> entry), or None:
    # then the folders read are listed here.
    listing: Mapping[str, Mapping[str, Any]] | None = None

    def files(self, prefix: str) -> dict[str, Mapping[str, Any]]:
        """Files below the folder ``prefix`` (relative to the root), by path relative to ``prefix``."""
        if self.listing is None:
            folder = self.path(prefix)
            return list_files(self.fs, folder)
        start = f"{prefix.rstrip('/')}/" if prefix else ""
        return {rel[len(start) :]: info for rel, info in self.listing.items() if rel.startswith(start)}

    def uri(self, relative: str) -> str:
        return join_uri(self.root, relative)

    def path(self, relative: str) -> str:
        return posixpath.join(self.root_path, relative) if relative else self.root_path

    @contextmanager
    def reading(self, relative: str) -> Iterator[None]:
        """Turns any failure reading or interpreting one file into a MetadataError naming it."""
        try:
            yield
        except MetadataError:
            raise
        except FileNotFoundError:
            raise MetadataError(self.uri(relative), "not found") from None
        except json.JSONDecodeError as err:
            raise MetadataError(self.uri(relative), f"invalid JSON ({err})") from None
        except KeyError as err:
            raise MetadataError(self.uri(relative), f"missing key {err}") from None
        except Exception as err:  # pyarrow/fsspec/format errors of one file end that dataset only
            reason = redact(f"{type(err).__name__}: {err}", self.storage_options)
            raise MetadataError(self.uri(relative), reason) from None


def read_dataset(
    root_uri: str,
    storage_options: Mapping[str, Any] | None = None,
    camera: str | None = None,
    *,
    all_cameras: bool = False,
    episodes: Collection[int] | None = None,
    listing: Mapping[str, Mapping[str, Any]] | None = None,
    partial_index: bool = False,
    footers: dict[str, pq.FileMetaData] | None = None,
) -> DatasetMeta:
    """Reads one dataset root's metadata (v3.0 or v2.1), with literal listings only.

    Args:
        root_uri: The dataset root (the folder holding ``meta/info.json``), any fsspec URI or local path.
        storage_options: fsspec options of its store.
        camera: The video feature to locate; ``None``: the first video feature of the dataset.
        all_cameras: Locate every video feature instead (``camera`` must then be None).
        episodes: Only these episode indices (ones the dataset lacks are skipped); ``None``: all.
        listing: Every file under the root (path relative to it -> its listing entry) from a listing the
            caller already made (the catalog lists a whole source prefix at once); ``None``: the folders
            needed are listed here. Either way ``meta/info.json`` and the episodes index are read.
        partial_index: With ``episodes`` (v3.0): read only the episodes index row groups that hold
            them (:func:`pipeline.reader.rowgroups.row_groups_with`), not the whole index, from the
            newest index file back until every one is found (a later recording session's episodes are
            in new files), and check the order of the index ranges among those rows alone. For a caller
            that needs a few episodes of a dataset the catalog has read and checked whole (publishing
            one more episode of thousands).
        footers: Parsed parquet footers of the episodes index files by path relative to the root: used
            when present, added when parsed, so that a caller reading other columns of the same files
            (the curated-set builder's stats) parses each footer once.

    Returns:
        The dataset's metadata; episodes that cannot be used carry their ``error``.

    Raises:
        MetadataError: the dataset as a whole cannot be read (missing or invalid info.json, unsupported
            version, bad fps or camera, unreadable episodes index, overlapping index ranges).
    """
    if all_cameras and camera is not None:
        raise ValueError("read_dataset: pass camera or all_cameras, not both")
    root = root_uri.rstrip("/")
    try:
        dataset_id = dataset_id_for(root)
    except ValueError:
        raise MetadataError(root, _ID_REASON) from None
    options = dict(storage_options or {})
    fs, root_path = filesystem_for(root, options)
    # A long-lived driver, or a pool thread handed a finished thread's filesystem, must see the objects
    # as they are now, not as this filesystem last listed them.
    forget_listings(fs, root_path)
    source = _Source(fs, root, root_path.rstrip("/"), options, listing)
    with source.reading(INFO_PATH), fs.open(source.path(INFO_PATH), "rb") as f:
        info = json.load(f)
    version = str(info.get("codebase_version", "")) if isinstance(info, dict) else ""
    try:
        partial = partial_index and episodes is not None
        return _read(source, dataset_id, info, version, camera, all_cameras, episodes, (partial, footers))
    except MetadataError as err:
        err.codebase_version = version
        raise


def _read(
    source: _Source,
    dataset_id: str,
    info: dict[str, Any],
    version: str,
    camera: str | None,
    all_cameras: bool,
    episodes: Collection[int] | None,
    index_reading: tuple[bool, dict[str, pq.FileMetaData] | None],
) -> DatasetMeta:
    info_uri = source.uri(INFO_PATH)
    if version not in SUPPORTED_VERSIONS:
        supported = ", ".join(SUPPORTED_VERSIONS)
        raise MetadataError(info_uri, f"unsupported codebase_version {version!r} (supported: {supported})")
    with source.reading(INFO_PATH):
        fps = _fps(info, info_uri)
        video_keys = _video_keys(info, info_uri)
        cameras = video_keys if all_cameras else (_camera(video_keys, camera, info_uri),)
        chunks_size = int(info.get("chunks_size", DEFAULT_CHUNK_SIZE))
        templates = (info["video_path"], info["data_path"])
    meta = DatasetMeta(
        root=source.root,
        dataset_id=dataset_id,
        codebase_version=version,
        fps=fps,
        info=info,
        video_keys=video_keys,
        cameras=cameras,
        chunks_size=chunks_size,
        episodes=(),
    )
    wanted = None if episodes is None else set(episodes)
    # Listed before any data file is read (see the module docstring).
    identities = _identities(source, _listing_prefixes(templates, cameras, version))
    if version == V30:
        found, errors = _v30_episodes(source, meta, identities, wanted, index_reading), []
    else:
        found, errors = _v21_episodes(source, meta, identities, wanted)
    ordered = tuple(sorted(found, key=lambda episode: episode.episode_index))
    return replace(meta, episodes=ordered, errors=tuple(errors))


def _fps(info: dict[str, Any], info_uri: str) -> float:
    fps = float(info["fps"])
    if not (math.isfinite(fps) and 0 < fps <= MAX_DATASET_FPS):
        raise MetadataError(info_uri, f"fps {info['fps']!r} is out of range (0, {MAX_DATASET_FPS:g}]")
    return fps


def _video_keys(info: dict[str, Any], info_uri: str) -> tuple[str, ...]:
    video_keys = tuple(key for key, feature in info["features"].items() if feature.get("dtype") == "video")
    if not video_keys:
        raise MetadataError(info_uri, "the dataset has no video feature")
    return video_keys


def _camera(video_keys: tuple[str, ...], wanted: str | None, info_uri: str) -> str:
    if wanted is None:
        return video_keys[0]
    if wanted not in video_keys:
        have = ", ".join(video_keys)
        raise MetadataError(info_uri, f"camera {wanted!r} is not a video feature (video features: {have})")
    return wanted


def _tasks(raw: Any) -> tuple[str, ...]:
    """Task texts stripped, blank and non-text entries dropped."""
    return tuple(task.strip() for task in raw or () if isinstance(task, str) and task.strip())


# ---- listings ---------------------------------------------------------------------------------------


def _literal_prefix(template: str, video_key: str | None = None) -> str:
    """The leading folders of a path template that hold no placeholder but the camera's name.

    ``videos/{video_key}/chunk-{chunk_index:03d}/...`` -> ``videos/<camera>`` (v3.0);
    ``videos/chunk-{episode_chunk:03d}/{video_key}/...`` -> ``videos`` (v2.1).
    """
    folders = []
    for segment in template.split("/")[:-1]:
        if video_key is not None:
            segment = segment.replace("{video_key}", video_key)
        if "{" in segment or "}" in segment:
            break
        folders.append(segment)
    return "/".join(folders)


def _listing_prefixes(templates: tuple[str, str], cameras: tuple[str, ...], version: str) -> list[str]:
    """The folders to list: each camera's videos, and for v2.1 the data files the index is read from."""
    video_template, data_template = templates
    prefixes = [_literal_prefix(video_template, camera) for camera in cameras]
    if version == V21:
        prefixes.append(_literal_prefix(data_template))
    return prefixes


def _identities(source: _Source, prefixes: list[str]) -> dict[str, str]:
    """Relative path -> object identity of every file under the prefixes: one listing per folder."""
    listed: list[str] = []
    identities: dict[str, str] = {}
    # Sorted, a folder comes before the folders inside it, which its listing already covers.
    for prefix in sorted(set(prefixes)):
        if any(not done or prefix == done or prefix.startswith(done + "/") for done in listed):
            continue
        listed.append(prefix)
        with source.reading(prefix + "/"):
            files = source.files(prefix)
        for relative, info in files.items():
            identities[posixpath.join(prefix, relative) if prefix else relative] = object_identity(info)
    return identities


# ---- v3.0 -------------------------------------------------------------------------------------------


def episodes_index_files(
    fs: AbstractFileSystem, root_path: str, listed: Mapping[str, Any] | None = None
) -> list[str]:
    """The v3.0 episodes index files, ``meta/episodes/<chunk>/<file>.parquet``, relative to the root.

    For readers of index columns :func:`read_dataset` does not return (the curated-set builder's
    per-episode stats): the same files, found the same literal way.

    Args:
        fs: The dataset's filesystem.
        root_path: The dataset root as ``fs`` understands it (no protocol).
        listed: The files under ``meta/episodes/`` (path relative to it -> entry) when already listed.

    Returns:
        The files in name order; ``[]`` when there are none.
    """
    # The layout lerobot's load_nested_dataset reads (*/*.parquet), matched on listed names; one
    # recursive listing (a single prefix listing on object stores, where maxdepth would walk).
    if listed is None:
        listed = list_files(fs, posixpath.join(root_path.rstrip("/"), EPISODES_DIR))
    return [
        posixpath.join(EPISODES_DIR, relative)
        for relative in listed
        if relative.count("/") == 1 and relative.endswith(".parquet")
    ]


def _v30_index_files(source: _Source) -> list[str]:
    """The episodes index files, ``meta/episodes/<chunk>/<file>.parquet``, relative to the root."""
    with source.reading(EPISODES_DIR):
        files = episodes_index_files(source.fs, source.root_path, source.files(EPISODES_DIR))
        if not files:
            raise FileNotFoundError(EPISODES_DIR)
    return files


def _v30_rows(
    source: _Source,
    cameras: tuple[str, ...],
    wanted: set[int] | None,
    index_reading: tuple[bool, dict[str, pq.FileMetaData] | None],
) -> list[tuple[str, dict[str, Any]]]:
    """The rows of the episodes index, with the file each came from: every row, or with a partial read
    (``index_reading[0]``) the rows of the row groups that hold the ``wanted`` episodes."""
    columns = [
        "episode_index", "tasks", "length", "dataset_from_index", "dataset_to_index",
        "data/chunk_index", "data/file_index",
    ]  # fmt: skip
    for camera in cameras:
        columns += [f"videos/{camera}/{name}" for name in ("chunk_index", "file_index")]
        columns += [f"videos/{camera}/{name}" for name in ("from_timestamp", "to_timestamp")]
    partial, footers = index_reading
    files = _v30_index_files(source)
    if not partial or wanted is None:
        return _index_rows(source, files, columns, footers, None)
    rows = _index_rows(source, files, columns, footers, row_groups_with, wanted)
    if wanted - {row["episode_index"] for _, row in rows}:
        # The search assumes groups in episode order; a file that is not finds its episodes by a scan.
        rows = _index_rows(source, files, columns, footers, scan, wanted)
    return [(relative, row) for relative, row in rows if row["episode_index"] in wanted]


def _index_rows(
    source: _Source,
    files: list[str],
    columns: list[str],
    footers: dict[str, pq.FileMetaData] | None,
    select: Callable[[pq.FileMetaData, str, set[int]], list[int]] | None,
    wanted: set[int] | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """The ``columns`` of the index files' rows, in file order: all of them (``select`` None) or those of
    the row groups ``select(footer, "episode_index", wanted)`` names.

    A selective read visits the files newest first and stops once every ``wanted`` episode is found:
    LeRobot's recorder writes each session's episodes to new files, so a night's new episodes are in the
    last files and an old file's footer (which grows with its row groups) is never parsed for them.
    """
    rows = []
    missing = None if select is None else set(wanted or ())
    for relative in files if missing is None else files[::-1]:
        if missing is not None and not missing:
            break
        with source.reading(relative), source.fs.open(source.path(relative), "rb") as f:
            parquet = pq.ParquetFile(f, metadata=footers.get(relative) if footers is not None else None)
            if footers is not None:
                footers[relative] = parquet.metadata
            if select is None:
                table = parquet.read(columns=columns)
            else:
                groups = select(parquet.metadata, "episode_index", wanted)
                table = parquet.read_row_groups(groups, columns=columns) if groups else None
        if table is not None:
            found = table.to_pylist()
            rows.extend((relative, row) for row in found)
            if missing is not None:
                missing -= {row["episode_index"] for row in found}
    if missing is None:
        return rows
    position = {relative: place for place, relative in enumerate(files)}
    return sorted(rows, key=lambda item: position[item[0]])  # stable: each file's rows in their order


def _v30_episodes(
    source: _Source,
    meta: DatasetMeta,
    identities: dict[str, str],
    wanted: set[int] | None,
    index_reading: tuple[bool, dict[str, pq.FileMetaData] | None],
) -> list[SourceEpisode]:
    rows = _v30_rows(source, meta.cameras, wanted, index_reading)
    with source.reading(EPISODES_DIR):
        ranges = [
            (int(row["episode_index"]), int(row["dataset_from_index"]), int(row["dataset_to_index"]), rel)
            for rel, row in rows
        ]
    _check_order([(episode, start, stop, source.uri(rel)) for episode, start, stop, rel in ranges])
    video_template, data_template = meta.info["video_path"], meta.info["data_path"]
    episodes = []
    for relative, row in rows:
        if wanted is not None and row["episode_index"] not in wanted:
            continue
        with source.reading(relative):
            videos = {}
            for camera in meta.cameras:
                prefix = f"videos/{camera}/"
                path = video_template.format(
                    video_key=camera,
                    chunk_index=row[prefix + "chunk_index"],
                    file_index=row[prefix + "file_index"],
                )
                span = (float(row[prefix + "from_timestamp"]), float(row[prefix + "to_timestamp"]))
                videos[camera] = VideoSpan(path, *span, identities.get(path, ""))
            episode = SourceEpisode(
                episode_index=int(row["episode_index"]),
                length=int(row["length"]),
                dataset_from_index=int(row["dataset_from_index"]),
                dataset_to_index=int(row["dataset_to_index"]),
                tasks=_tasks(row["tasks"]),
                data_path=data_template.format(
                    chunk_index=row["data/chunk_index"], file_index=row["data/file_index"]
                ),
                videos=videos,
            )
        episodes.append(_checked(episode, source.uri(relative)))
    return episodes


def _checked(episode: SourceEpisode, file_uri: str) -> SourceEpisode:
    """The episode, failed (naming ``file_uri``) when it has no task text or its range disagrees."""
    span = episode.dataset_to_index - episode.dataset_from_index
    if episode.dataset_from_index < 0 or span != episode.length:
        reason = (
            f"global index range [{episode.dataset_from_index}, {episode.dataset_to_index}) does not hold "
            f"its length of {episode.length} frames"
        )
        return replace(episode, error=f"{file_uri}: {reason}")
    if not episode.tasks:
        return replace(episode, error=f"{file_uri}: no task text")
    return episode


def _check_order(ranges: list[tuple[int, int, int, str]]) -> None:
    """Refuses index ranges that overlap or run out of episode order: ``(episode, from, to, file uri)``.

    Raises:
        MetadataError: naming the later episode's file, both episodes and both ranges.
    """
    previous: tuple[int, int, int, str] | None = None
    for current in sorted(ranges):
        episode, start, stop, file_uri = current
        if stop < start:
            continue  # an inverted range fails its own episode (_checked)
        if previous is not None:
            before, before_start, before_stop, before_uri = previous
            if episode == before:
                raise MetadataError(file_uri, f"episode {episode} is listed twice")
            if start < before_stop:
                where = "" if before_uri == file_uri else f" (in {before_uri})"
                raise MetadataError(
                    file_uri,
                    f"episode {episode}'s global index range [{start}, {stop}) overlaps or precedes "
                    f"episode {before}'s [{before_start}, {before_stop}){where}",
                )
        previous = current


# ---- v2.1 -------------------------------------------------------------------------------------------


def _v21_lines(source: _Source) -> tuple[list[tuple[int, int, tuple[str, ...]]], list[str]]:
    """``(episode_index, length, tasks)`` per line of episodes.jsonl, and the lines that cannot be parsed."""
    episodes_uri = source.uri(LEGACY_EPISODES_PATH)
    with source.reading(LEGACY_EPISODES_PATH), source.fs.open(source.path(LEGACY_EPISODES_PATH), "rb") as f:
        lines = f.read().splitlines()
    entries, errors = [], []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        # A stray byte must cost at most its own text, never the dataset: decode leniently and say so.
        text = raw.decode("utf-8", errors="replace")
        if "\ufffd" in text:
            log.warning("reader: %s line %d is not valid UTF-8; bad bytes replaced", episodes_uri, number)
        try:
            episode = json.loads(text)
            entries.append(
                (int(episode["episode_index"]), int(episode["length"]), _tasks(episode.get("tasks")))
            )
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            what = f"missing key {err}" if isinstance(err, KeyError) else f"{type(err).__name__}: {err}"
            errors.append(f"{episodes_uri}: line {number}: {what}")
    return entries, errors


def _v21_episodes(
    source: _Source, meta: DatasetMeta, identities: dict[str, str], wanted: set[int] | None
) -> tuple[list[SourceEpisode], list[str]]:
    entries, errors = _v21_lines(source)
    video_template, data_template = meta.info["video_path"], meta.info["data_path"]
    listed = []
    for index, length, tasks in entries:
        if wanted is not None and index not in wanted:
            continue
        chunk = index // meta.chunks_size
        videos = {}
        for camera in meta.cameras:
            path = video_template.format(episode_chunk=chunk, video_key=camera, episode_index=index)
            videos[camera] = VideoSpan(path, 0.0, length / meta.fps, identities.get(path, ""))
        data_path = data_template.format(episode_chunk=chunk, episode_index=index)
        episode = SourceEpisode(
            episode_index=index,
            length=length,
            dataset_from_index=-1,  # read from the data parquet below
            dataset_to_index=-1,
            tasks=tasks,
            data_path=data_path,
            data_rows=(0, length),
            data_identity=identities.get(data_path, ""),
            videos=videos,
            error="" if tasks else f"{source.uri(LEGACY_EPISODES_PATH)}: no task text",
        )
        listed.append(episode)
    with ThreadPoolExecutor(INDEX_READ_THREADS) as pool:
        episodes = list(pool.map(lambda episode: _v21_index(source, meta, episode), listed))
    _check_order(
        [
            (e.episode_index, e.dataset_from_index, e.dataset_to_index, source.uri(e.data_path))
            for e in episodes
            if e.ok
        ]
    )
    return episodes, errors


def _v21_index(source: _Source, meta: DatasetMeta, episode: SourceEpisode) -> SourceEpisode:
    """The episode's global index range and length as its data parquet has them (v2.1 stores no index)."""
    if not episode.ok:
        return episode
    data_uri = source.uri(episode.data_path)
    try:
        with source.fs.open(source.path(episode.data_path), "rb") as f:
            index = pq.ParquetFile(f).read(columns=["index"]).column("index").to_numpy()
    except Exception as err:  # one unreadable data file fails its episode only
        reason = redact(f"{type(err).__name__}: {err}", source.storage_options)
        return replace(episode, error=f"{data_uri}: {reason}")
    if index.size == 0 or (index.size > 1 and not (index[1:] - index[:-1] == 1).all()):
        return replace(episode, error=f"{data_uri}: the index column is empty or not contiguous")
    if index.size != episode.length:
        # The frames on disk are the truth the progress rows must line up with; the metadata is stale.
        log.warning(
            "reader: %s episode %d: episodes.jsonl says %d frames, %s has %d; using the data file",
            meta.dataset_id, episode.episode_index, episode.length, data_uri, index.size,
        )  # fmt: skip
    length = int(index.size)
    videos = {camera: replace(span, to_s=length / meta.fps) for camera, span in episode.videos.items()}
    return replace(
        episode,
        length=length,
        dataset_from_index=int(index[0]),
        dataset_to_index=int(index[-1]) + 1,
        data_rows=(0, length),
        videos=videos,
    )
