"""Episode catalog: one row per episode of every LeRobot dataset under the source URIs.

Runs on the driver and reads metadata only (``meta/info.json`` plus the episodes index), never frame
data, so listing a large fleet costs a few small reads per dataset. Both on-disk layouts are read:

* v3.0: ``meta/episodes/chunk-*/file-*.parquet``; videos are packed, many episodes per mp4, and an
  episode is located by ``videos/<camera>/{chunk_index,file_index,from_timestamp,to_timestamp}``.
* v2.1: ``meta/episodes.jsonl`` (``episode_index``, ``tasks`` as strings, ``length``); one mp4 per
  episode and camera at info.json's ``video_path`` with ``episode_chunk = episode_index // chunks_size``.

Row schema (:meth:`EpisodeRecord.to_row`, one flat dict of plain Python values, a Ray Data row):

==================== ========= ===========================================================
column               type      meaning
==================== ========= ===========================================================
dataset_id           str       readable id from the root (last two path parts), output folder
root                 str       dataset root URI as listed (keeps the user's protocol)
codebase_version     str       ``v3.0`` or ``v2.1`` (as read, possibly unsupported, on failure)
episode_index        int       episode number; -1 on a dataset-level failure
task                 str       first task text of the episode
tasks                list[str] all task texts of the episode
length               int       raw frame count from the index
fps                  float     raw frame rate of the dataset
camera               str       video feature key that is decoded
video_uri            str       URI of the mp4 holding the episode for that camera
from_timestamp       float     episode start inside ``video_uri`` in seconds (0 for v2.1)
to_timestamp         float     episode end inside ``video_uri`` in seconds (length/fps for v2.1)
dataset_from_index   int       global frame index of the episode's first frame
dataset_to_index     int       global frame index one past its last frame
data_uri             str       v2.1: the episode's data parquet (its ``index`` column); v3.0: ``""``
status               str       ``ok``, or ``failed`` when the dataset or episode cannot be listed
error                str       ``""``, or ``"<dataset_id>: <file uri>: <reason>"``
fingerprint          str       digest of what is scored (see :meth:`EpisodeRecord.fingerprint`)
==================== ========= ===========================================================

The global frame index comes from the dataset's own data: v3.0 stores ``dataset_from_index`` in its
episodes index; v2.1 stores nothing, so the ``index`` column of each episode's data parquet is read
(its footer and one column) rather than summing ``episodes.jsonl`` lengths, which one wrong entry
would shift for every later episode.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import posixpath
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any

import pyarrow.parquet as pq
from fsspec import AbstractFileSystem
from lerobot.datasets.utils import (
    DEFAULT_CHUNK_SIZE,
    EPISODES_DIR,
    INFO_PATH,
    LEGACY_EPISODES_PATH,
)

from pipeline.config import SourceConfig
from pipeline.storage import OUTPUT_MARKER, filesystem_for, join_uri, normalize_uri, redact

log = logging.getLogger(__name__)

V30, V21 = "v3.0", "v2.1"
SUPPORTED_VERSIONS = (V21, V30)
# How many folder levels below a source URI are searched for meta/info.json (fleet/robot/task/...).
MAX_DISCOVERY_DEPTH = 4
# Frame rates outside this range are metadata errors (a typo, or a rate in the wrong unit), not data.
MAX_DATASET_FPS = 1000.0
# Concurrent footer reads of v2.1 data parquets: small requests, bound by latency, not bandwidth.
INDEX_READ_THREADS = 16


@dataclass(frozen=True)
class EpisodeRecord:
    """One episode of one dataset, or a dataset that could not be listed (``status="failed"``)."""

    dataset_id: str
    root: str
    codebase_version: str = ""
    episode_index: int = -1
    task: str = ""
    tasks: tuple[str, ...] = ()
    length: int = 0
    fps: float = 0.0
    camera: str = ""
    video_uri: str = ""
    from_timestamp: float = 0.0
    to_timestamp: float = 0.0
    dataset_from_index: int = -1
    dataset_to_index: int = -1
    data_uri: str = ""
    status: str = "ok"
    error: str = ""

    def fingerprint(self) -> str:
        """Digest of what scoring this episode depends on in the source (metadata only).

        Length, global index range, video file and span, task text, camera and fps: if any of them
        changes (a dataset rewritten in place, re-indexed, re-encoded), committed labels are stale.
        """
        facts = [
            self.length, self.dataset_from_index, self.dataset_to_index, self.video_uri,
            round(self.from_timestamp, 6), round(self.to_timestamp, 6), self.task, self.camera, self.fps,
        ]  # fmt: skip
        return hashlib.sha256(json.dumps(facts).encode()).hexdigest()[:16]

    def to_row(self) -> dict[str, Any]:
        """The record as one flat dict of plain Python values (the schema in the module docstring)."""
        row = asdict(self)
        row["tasks"] = list(self.tasks)
        row["fingerprint"] = self.fingerprint()
        return row


class _MetadataError(Exception):
    """A metadata file of a dataset is missing, unreadable or inconsistent."""

    def __init__(self, file_uri: str, reason: str) -> None:
        super().__init__(f"{file_uri}: {reason}")


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
        raise ValueError(f"{root}: a dataset root needs at least two path parts to name its outputs")
    return "/".join(parts[-2:])


def list_episodes(source: SourceConfig) -> list[EpisodeRecord]:
    """Lists every episode of every dataset under ``source.uris``.

    Each URI is a dataset root (it holds ``meta/info.json``) or a prefix holding datasets at most
    :data:`MAX_DISCOVERY_DEPTH` levels down. A dataset whose metadata cannot be read never stops the
    listing: it becomes one failed record naming the file and the reason.

    Args:
        source: URIs, camera (default: the first video feature of each dataset), episode filter (indices
            a dataset lacks are skipped) and storage options.

    Returns:
        Records ordered by source URI, dataset root and episode index.
    """
    records: list[EpisodeRecord] = []
    roots_by_id: dict[str, tuple[str, str]] = {}
    for given in source.uris:
        try:
            uri = normalize_uri(given)
        except ValueError as err:
            records.append(_failed(given, str(err)))
            continue
        fs, path = filesystem_for(uri, source.storage_options)
        for root in _dataset_roots(fs, uri, path):
            try:
                dataset_id = dataset_id_for(root)
            except ValueError as err:
                records.append(_failed(root, str(err)))
                continue
            # The same dataset may be reached twice (as a root and inside a prefix, or as path and file://).
            canonical = fs.unstrip_protocol(filesystem_for(root, source.storage_options)[1])
            if dataset_id not in roots_by_id:
                roots_by_id[dataset_id] = (canonical, root)
                records.extend(_dataset_episodes(fs, root, source))
            elif roots_by_id[dataset_id][0] != canonical:
                # Outputs are written per dataset id, so two roots sharing one would mix their labels.
                other = roots_by_id[dataset_id][1]
                records.append(_failed(root, f"{root}: dataset id collides with {other}"))
    failed = sum(record.status != "ok" for record in records)
    log.info(
        "catalog: %d episode rows from %d source URI(s), %d failed", len(records), len(source.uris), failed
    )
    return records


def _failed(root: str, reason: str, version: str = "") -> EpisodeRecord:
    """A dataset-level failure; a root that cannot be named is labelled by itself (it is never written)."""
    try:
        dataset_id = dataset_id_for(root)
    except ValueError:
        dataset_id = root
    return EpisodeRecord(
        dataset_id=dataset_id,
        root=root,
        codebase_version=version,
        status="failed",
        error=f"{dataset_id}: {reason}",
    )


def _dataset_roots(fs: AbstractFileSystem, uri: str, path: str) -> list[str]:
    """Dataset root URIs at or below ``uri``; the URI itself (to be reported as failed) when none is found."""
    fs.invalidate_cache(path)  # a long-lived driver must see datasets uploaded since its last listing
    try:
        found = _find_roots(fs, path.rstrip("/"), MAX_DISCOVERY_DEPTH)
    except Exception as err:  # any listing failure is reported on the row, not raised
        log.warning("catalog: cannot list %s: %s", uri, type(err).__name__)
        found = []
    if not found:
        # Listed as one root so that the run records "not found" instead of silently scoring nothing.
        return [uri.rstrip("/")]
    base = path.rstrip("/")
    return [
        join_uri(uri, posixpath.relpath(root, base)) if root != base else uri.rstrip("/") for root in found
    ]


def _find_roots(fs: AbstractFileSystem, path: str, depth: int) -> list[str]:
    # One existence check and one delimiter listing per folder: never lists the files inside a dataset.
    if fs.isfile(posixpath.join(path, INFO_PATH)):
        return [path]
    if depth == 0 or not fs.isdir(path):
        return []
    entries = fs.ls(path, detail=True)
    names = {posixpath.basename(entry["name"].rstrip("/")) for entry in entries}
    if OUTPUT_MARKER in names:
        # The pipeline's own outputs (published files, curated datasets) are never a source.
        log.info("catalog: skipping %s: it holds topreward outputs", path)
        return []
    if "meta" in names and ("data" in names or "videos" in names):
        # Looks like a dataset but has no meta/info.json: listed so that the run records why.
        return [path]
    folders = sorted(entry["name"].rstrip("/") for entry in entries if entry["type"] == "directory")
    return [root for folder in folders for root in _find_roots(fs, folder, depth - 1)]


def _dataset_episodes(fs: AbstractFileSystem, root: str, source: SourceConfig) -> list[EpisodeRecord]:
    _, root_path = filesystem_for(root, source.storage_options)
    info_uri = join_uri(root, INFO_PATH)
    version = ""
    try:
        with _reading(root, INFO_PATH, source.storage_options):
            with fs.open(posixpath.join(root_path, INFO_PATH), "rb") as f:
                info = json.load(f)
            version = str(info.get("codebase_version", ""))
            if version not in SUPPORTED_VERSIONS:
                supported = ", ".join(SUPPORTED_VERSIONS)
                raise _MetadataError(
                    info_uri, f"unsupported codebase_version {version!r} (supported: {supported})"
                )
            base = EpisodeRecord(
                dataset_id=dataset_id_for(root),
                root=root,
                codebase_version=version,
                fps=_fps(info, info_uri),
                camera=_camera(info, source.camera, info_uri),
            )
        wanted = None if source.episodes is None else set(source.episodes)
        reader = _v30_episodes if version == V30 else _v21_episodes
        records = reader(fs, root_path, info, base, wanted, source.storage_options)
    except _MetadataError as err:
        return [_failed(root, str(err), version)]
    return sorted(records, key=lambda record: record.episode_index)


@contextmanager
def _reading(root: str, relative: str, storage_options: dict[str, Any]) -> Iterator[None]:
    """Turns any failure while reading or interpreting one metadata file into a _MetadataError naming it."""
    try:
        yield
    except _MetadataError:
        raise
    except FileNotFoundError:
        raise _MetadataError(join_uri(root, relative), "not found") from None
    except json.JSONDecodeError as err:
        raise _MetadataError(join_uri(root, relative), f"invalid JSON ({err})") from None
    except KeyError as err:
        raise _MetadataError(join_uri(root, relative), f"missing key {err}") from None
    except Exception as err:  # pyarrow/fsspec/format errors of one file end that dataset only
        reason = redact(f"{type(err).__name__}: {err}", storage_options)
        raise _MetadataError(join_uri(root, relative), reason) from None


def _fps(info: dict[str, Any], info_uri: str) -> float:
    fps = float(info["fps"])
    if not (math.isfinite(fps) and 0 < fps <= MAX_DATASET_FPS):
        raise _MetadataError(info_uri, f"fps {info['fps']!r} is out of range (0, {MAX_DATASET_FPS:g}]")
    return fps


def _camera(info: dict[str, Any], wanted: str | None, info_uri: str) -> str:
    video_keys = [key for key, feature in info["features"].items() if feature.get("dtype") == "video"]
    if not video_keys:
        raise _MetadataError(info_uri, "the dataset has no video feature")
    if wanted is None:
        return video_keys[0]
    if wanted not in video_keys:
        have = ", ".join(video_keys)
        raise _MetadataError(info_uri, f"camera {wanted!r} is not a video feature (video features: {have})")
    return wanted


def _episode(base: EpisodeRecord, tasks: list[str], file_uri: str, **fields: Any) -> EpisodeRecord:
    """One episode record; an episode without usable task text is a failed record naming its file."""
    tasks = [task.strip() for task in tasks if isinstance(task, str) and task.strip()]
    record = replace(base, task=tasks[0] if tasks else "", tasks=tuple(tasks), **fields)
    if not tasks:
        return _failed_episode(record, file_uri, "no task text")
    return record


def _failed_episode(record: EpisodeRecord, file_uri: str, reason: str) -> EpisodeRecord:
    error = f"{record.dataset_id}: episode {record.episode_index}: {file_uri}: {reason}"
    return replace(record, status="failed", error=error)


def _v30_episodes(
    fs: AbstractFileSystem,
    root_path: str,
    info: dict[str, Any],
    base: EpisodeRecord,
    wanted: set[int] | None,
    storage_options: dict[str, Any],
) -> list[EpisodeRecord]:
    video = f"videos/{base.camera}/"
    columns = ["episode_index", "tasks", "length", "dataset_from_index", "dataset_to_index"] + [
        video + name for name in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")
    ]
    with _reading(base.root, INFO_PATH, storage_options):
        template = info["video_path"]
    with _reading(base.root, EPISODES_DIR, storage_options):
        # Same layout lerobot's load_nested_dataset globs: meta/episodes/chunk-*/file-*.parquet.
        files = sorted(fs.glob(posixpath.join(root_path, EPISODES_DIR, "*", "*.parquet")))
        if not files:
            raise FileNotFoundError(EPISODES_DIR)
    records = []
    for file in files:
        relative = posixpath.relpath(file, root_path)
        with _reading(base.root, relative, storage_options):
            with fs.open(file, "rb") as f:
                rows = pq.ParquetFile(f).read(columns=columns).to_pylist()
            for row in rows:
                if wanted is not None and row["episode_index"] not in wanted:
                    continue
                video_path = template.format(
                    video_key=base.camera,
                    chunk_index=row[video + "chunk_index"],
                    file_index=row[video + "file_index"],
                )
                records.append(
                    _episode(
                        base,
                        list(row["tasks"] or []),
                        join_uri(base.root, relative),
                        episode_index=int(row["episode_index"]),
                        length=int(row["length"]),
                        video_uri=join_uri(base.root, video_path),
                        from_timestamp=float(row[video + "from_timestamp"]),
                        to_timestamp=float(row[video + "to_timestamp"]),
                        dataset_from_index=int(row["dataset_from_index"]),
                        dataset_to_index=int(row["dataset_to_index"]),
                    )
                )
    return records


def _v21_episodes(
    fs: AbstractFileSystem,
    root_path: str,
    info: dict[str, Any],
    base: EpisodeRecord,
    wanted: set[int] | None,
    storage_options: dict[str, Any],
) -> list[EpisodeRecord]:
    episodes_uri = join_uri(base.root, LEGACY_EPISODES_PATH)
    with (
        _reading(base.root, LEGACY_EPISODES_PATH, storage_options),
        fs.open(posixpath.join(root_path, LEGACY_EPISODES_PATH), "rb") as f,
    ):
        lines = f.read().splitlines()
    with _reading(base.root, INFO_PATH, storage_options):
        chunks_size = int(info.get("chunks_size", DEFAULT_CHUNK_SIZE))
        video_template, data_template = info["video_path"], info["data_path"]
    records = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        # A stray byte must cost at most its own text, never the dataset: decode leniently and say so.
        text = raw.decode("utf-8", errors="replace")
        if "\ufffd" in text:
            log.warning("catalog: %s line %d is not valid UTF-8; bad bytes replaced", episodes_uri, number)
        try:
            episode = json.loads(text)
            index, length = int(episode["episode_index"]), int(episode["length"])
            tasks = [str(task) for task in episode.get("tasks") or []]
        except (ValueError, KeyError, TypeError) as err:
            what = f"missing key {err}" if isinstance(err, KeyError) else f"{type(err).__name__}: {err}"
            reason = f"line {number}: {what}"
            records.append(_failed(base.root, f"{episodes_uri}: {reason}", base.codebase_version))
            continue
        if wanted is not None and index not in wanted:
            continue
        chunk = index // chunks_size
        video_path = video_template.format(episode_chunk=chunk, video_key=base.camera, episode_index=index)
        data_path = data_template.format(episode_chunk=chunk, episode_index=index)
        records.append(
            _episode(
                base,
                tasks,
                episodes_uri,
                episode_index=index,
                length=length,
                video_uri=join_uri(base.root, video_path),
                from_timestamp=0.0,
                to_timestamp=length / base.fps,
                # Filled from the episode's data parquet below.
                dataset_from_index=-1,
                dataset_to_index=-1,
                data_uri=join_uri(base.root, data_path),
            )
        )
    with ThreadPoolExecutor(INDEX_READ_THREADS) as pool:
        return list(pool.map(lambda record: _v21_index(fs, record, storage_options), records))


def _v21_index(
    fs: AbstractFileSystem, record: EpisodeRecord, storage_options: dict[str, Any]
) -> EpisodeRecord:
    """The episode's global index range and length as its data parquet has them (v2.1 stores no index)."""
    if record.status != "ok":
        return record
    try:
        _, path = filesystem_for(record.data_uri, storage_options)
        with fs.open(path, "rb") as f:
            index = pq.ParquetFile(f).read(columns=["index"]).column("index").to_numpy()
    except Exception as err:  # one unreadable data file fails its episode only
        reason = redact(f"{type(err).__name__}: {err}", storage_options)
        return _failed_episode(record, record.data_uri, reason)
    if index.size == 0 or (index.size > 1 and not (index[1:] - index[:-1] == 1).all()):
        return _failed_episode(record, record.data_uri, "the index column is empty or not contiguous")
    if index.size != record.length:
        # The frames on disk are the truth the progress rows must line up with; the metadata is stale.
        log.warning(
            "catalog: %s episode %d: episodes.jsonl says %d frames, %s has %d; using the data file",
            record.dataset_id, record.episode_index, record.length, record.data_uri, index.size,
        )  # fmt: skip
    length = int(index.size)
    return replace(
        record,
        length=length,
        to_timestamp=length / record.fps,
        dataset_from_index=int(index[0]),
        dataset_to_index=int(index[-1]) + 1,
    )
