"""Episode catalog: one row per episode of every LeRobot dataset under the source URIs.

Runs on the driver. It finds dataset roots (folders holding ``meta/info.json``) with literal listings,
reads each root's metadata through :func:`pipeline.reader.read_dataset` (``meta/info.json``, the episodes
index, one listing of the camera's videos and for v2.1 of the data files, never frame data) and turns
its :class:`~pipeline.reader.SourceEpisode` records into :class:`EpisodeRecord` rows. The LeRobot layouts
(v3.0 and v2.1), the global index rules and the checks are the reader's.

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
length               int       raw frame count (v2.1: rows of the episode's data parquet)
fps                  float     raw frame rate of the dataset
camera               str       video feature key that is decoded
video_uri            str       URI of the mp4 holding the episode for that camera
from_timestamp       float     episode start inside ``video_uri`` in seconds (0 for v2.1)
to_timestamp         float     episode end inside ``video_uri`` in seconds (length/fps for v2.1)
dataset_from_index   int       global frame index of the episode's first frame
dataset_to_index     int       global frame index one past its last frame
data_uri             str       v2.1: the episode's data parquet (its ``index`` column); v3.0: ``""``
source_identity      str       size and ETag/generation/mtime of the video (and v2.1 data parquet)
                               as the store listed them: changes when a file is rewritten in place
status               str       ``ok``, or ``failed`` when the dataset or episode cannot be listed
error                str       ``""``, ``"<dataset_id>: <file uri>: <reason>"`` (dataset) or
                               ``"<dataset_id>: episode <i>: <file uri>: <reason>"`` (episode)
fingerprint          str       digest of what is scored (see :meth:`EpisodeRecord.fingerprint`)
==================== ========= ===========================================================
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
from dataclasses import asdict, dataclass
from typing import Any

from fsspec import AbstractFileSystem

from pipeline.config import SourceConfig
from pipeline.layout import OUTPUT_MARKER
from pipeline.reader import (
    INFO_PATH,
    DatasetMeta,
    MetadataError,
    SourceEpisode,
    dataset_id_for,
    read_dataset,
)
from pipeline.storage import filesystem_for, join_uri, list_folder, normalize_uri

__all__ = ["MAX_DISCOVERY_DEPTH", "EpisodeRecord", "dataset_id_for", "list_episodes"]

log = logging.getLogger(__name__)

# How many folder levels below a source URI are searched for meta/info.json (fleet/robot/task/...).
MAX_DISCOVERY_DEPTH = 4


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
    source_identity: str = ""
    status: str = "ok"
    error: str = ""

    def fingerprint(self) -> str:
        """Digest of what scoring this episode depends on in the source.

        Length, global index range, video file and span, task text, camera and fps, and the identity
        of the stored objects read (the video, and for v2.1 the data parquet): if any of them changes (a
        dataset rewritten in place, re-indexed, a video re-encoded under the same name), committed
        labels are stale.
        """
        facts = [
            self.length, self.dataset_from_index, self.dataset_to_index, self.video_uri,
            round(self.from_timestamp, 6), round(self.to_timestamp, 6), self.task, self.camera, self.fps,
            self.source_identity,
        ]  # fmt: skip
        return hashlib.sha256(json.dumps(facts).encode()).hexdigest()[:16]

    def to_row(self) -> dict[str, Any]:
        """The record as one flat dict of plain Python values (the schema in the module docstring)."""
        row = asdict(self)
        row["tasks"] = list(self.tasks)
        row["fingerprint"] = self.fingerprint()
        return row


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
                records.extend(_dataset_episodes(root, source))
            elif roots_by_id[dataset_id][0] != canonical:
                # Outputs are written per dataset id, so two roots sharing one would mix their labels.
                other = roots_by_id[dataset_id][1]
                records.append(_failed(root, f"{root}: dataset id collides with {other}"))
    failed = sum(record.status != "ok" for record in records)
    # DEBUG: the run's own catalog line (pipeline.relabel) counts datasets and episodes for the person
    # reading the log; this one is for the report and other callers' debugging.
    log.debug(
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
    # Folder names are used literally (list_folder), never as glob patterns.
    if fs.isfile(posixpath.join(path, INFO_PATH)):
        return [path]
    if depth == 0 or not fs.isdir(path):
        return []
    entries = list_folder(fs, path)
    names = {posixpath.basename(entry["name"]) for entry in entries}
    if OUTPUT_MARKER in names:
        # The pipeline's own outputs (published files, curated datasets) are never a source.
        log.info("catalog: skipping %s: it holds topreward outputs", path)
        return []
    if "meta" in names and ("data" in names or "videos" in names):
        # Looks like a dataset but has no meta/info.json: listed so that the run records why.
        return [path]
    folders = [entry["name"] for entry in entries if entry["type"] == "directory"]
    return [root for folder in folders for root in _find_roots(fs, folder, depth - 1)]


def _dataset_episodes(root: str, source: SourceConfig) -> list[EpisodeRecord]:
    """The records of one dataset root: its episodes, or one failed record naming the file and reason."""
    try:
        meta = read_dataset(root, source.storage_options, source.camera, episodes=source.episodes)
    except MetadataError as err:
        return [_failed(root, str(err), err.codebase_version)]
    records = [_failed(root, error, meta.codebase_version) for error in meta.errors]
    return records + [_record(meta, episode) for episode in meta.episodes]


def _record(meta: DatasetMeta, episode: SourceEpisode) -> EpisodeRecord:
    """One catalog row from the reader's episode, for the dataset's (single) located camera."""
    camera = meta.cameras[0]
    span = episode.videos[camera]
    error = f"{meta.dataset_id}: episode {episode.episode_index}: {episode.error}" if episode.error else ""
    return EpisodeRecord(
        dataset_id=meta.dataset_id,
        root=meta.root,
        codebase_version=meta.codebase_version,
        episode_index=episode.episode_index,
        task=episode.tasks[0] if episode.tasks else "",
        tasks=episode.tasks,
        length=episode.length,
        fps=meta.fps,
        camera=camera,
        video_uri=meta.file_uri(span.path),
        from_timestamp=span.from_s,
        to_timestamp=span.to_s,
        dataset_from_index=episode.dataset_from_index,
        dataset_to_index=episode.dataset_to_index,
        # The v2.1 index is read from the episode's own data file; v3.0 takes it from the episodes index.
        data_uri=meta.file_uri(episode.data_path) if episode.data_rows is not None else "",
        source_identity=episode.source_identity(camera),
        status="failed" if episode.error else "ok",
        error=error,
    )
