"""Episode catalog: one row per episode of every LeRobot dataset under the source URIs.

Runs on the driver. It finds dataset roots (folders holding ``meta/info.json``) in one literal,
recursive listing per source URI, takes every dataset whose listed objects are unchanged from the fleet
index (:mod:`pipeline.fleetindex`), and reads the others' metadata concurrently through
:func:`pipeline.reader.read_dataset` (``meta/info.json``, the episodes index and, for v2.1, the index
column of the data files; never frame data), turning their :class:`~pipeline.reader.SourceEpisode`
records into :class:`EpisodeRecord` rows. The LeRobot layouts (v3.0 and v2.1), the global index rules
and the checks are the reader's.

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
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from fsspec import AbstractFileSystem

from pipeline.config import SourceConfig
from pipeline.fleetindex import CATALOG, FleetIndex, listing_digest
from pipeline.layout import OUTPUT_MARKER
from pipeline.reader import (
    INFO_PATH,
    DatasetMeta,
    MetadataError,
    SourceEpisode,
    dataset_id_for,
    read_dataset,
)
from pipeline.storage import filesystem_for, forget_listings, join_uri, list_files, normalize_uri

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

    def fingerprint(self, schedule_tag: str = "") -> str:
        """Digest of what scoring this episode depends on in the source, and of its schedule's tag.

        Length, global index range, video file and span, task text, camera and fps, and the identity
        of the stored objects read (the video, and for v2.1 the data parquet): if any of them changes (a
        dataset rewritten in place, re-indexed, a video re-encoded under the same name), committed
        labels are stale. ``schedule_tag`` is what the run's per-episode settings make of it
        (:func:`pipeline.frames.schedule.resolution_tag`); empty, it leaves the digest as it was
        before those settings existed.
        """
        facts = [
            self.length, self.dataset_from_index, self.dataset_to_index, self.video_uri,
            round(self.from_timestamp, 6), round(self.to_timestamp, 6), self.task, self.camera, self.fps,
            self.source_identity,
        ]  # fmt: skip
        if schedule_tag:
            facts.append(schedule_tag)
        return hashlib.sha256(json.dumps(facts).encode()).hexdigest()[:16]

    def to_row(self, schedule_tag: str = "") -> dict[str, Any]:
        """The record as one flat dict of plain Python values (the schema in the module docstring)."""
        row = asdict(self)
        row["tasks"] = list(self.tasks)
        row["fingerprint"] = self.fingerprint(schedule_tag)
        return row


def list_episodes(source: SourceConfig, index: FleetIndex | None = None) -> list[EpisodeRecord]:
    """Lists every episode of every dataset under ``source.uris``.

    Each URI is a dataset root (it holds ``meta/info.json``) or a prefix holding datasets at most
    :data:`MAX_DISCOVERY_DEPTH` levels down. Each URI is listed once, recursively (a few paginated
    listings on an object store, whatever the number of datasets); the datasets are found in that
    listing. A dataset whose listed objects (names, sizes, ETags / generations / mtimes) equal what
    ``index`` recorded is taken from the index without a single read; the others are read (their
    ``meta/info.json`` and episodes index) ``source.read_threads`` at a time. A dataset whose metadata
    cannot be read never stops the listing: it becomes one failed record naming the file and the reason.

    Args:
        source: URIs, camera (default: the first video feature of each dataset), episode filter (indices
            a dataset lacks are skipped), storage options and read concurrency.
        index: The output's fleet index; updated with what was read. None: everything is read.

    Returns:
        Records ordered by source URI, dataset root and episode index.
    """
    found: list[tuple[str, dict[str, Any] | None] | EpisodeRecord] = []
    roots_by_id: dict[str, tuple[str, str]] = {}
    for given in source.uris:
        try:
            uri = normalize_uri(given)
        except ValueError as err:
            found.append(_failed(given, str(err)))
            continue
        fs, path = filesystem_for(uri, source.storage_options)
        for root, files in _dataset_roots(fs, uri, path):
            try:
                dataset_id = dataset_id_for(root)
            except ValueError as err:
                found.append(_failed(root, str(err)))
                continue
            # The same dataset may be reached twice (as a root and inside a prefix, or as path and file://).
            canonical = fs.unstrip_protocol(filesystem_for(root, source.storage_options)[1])
            if dataset_id not in roots_by_id:
                roots_by_id[dataset_id] = (canonical, root)
                found.append((root, files))
            elif roots_by_id[dataset_id][0] != canonical:
                # Outputs are written per dataset id, so two roots sharing one would mix their labels.
                other = roots_by_id[dataset_id][1]
                found.append(_failed(root, f"{root}: dataset id collides with {other}"))
    datasets = [item for item in found if not isinstance(item, EpisodeRecord)]
    read = dict(zip((root for root, _ in datasets), _read_datasets(datasets, source, index), strict=True))
    records = [
        record for item in found for record in ([item] if isinstance(item, EpisodeRecord) else read[item[0]])
    ]
    failed = sum(record.status != "ok" for record in records)
    # DEBUG: the run's own catalog line (pipeline.relabel) counts datasets and episodes for the person
    # reading the log; this one is for the report and other callers' debugging.
    log.debug(
        "catalog: %d episode rows from %d source URI(s), %d failed, %d dataset(s) unchanged (index)",
        len(records), len(source.uris), failed, index.hits.get(CATALOG, 0) if index else 0,
    )  # fmt: skip
    return records


def _catalog_key(root: str, source: SourceConfig) -> str:
    """The index key of a dataset's records: its root and the settings that shape them."""
    return json.dumps([root, source.camera, source.episodes])


def _read_datasets(
    datasets: list[tuple[str, dict[str, Any] | None]], source: SourceConfig, index: FleetIndex | None
) -> list[list[EpisodeRecord]]:
    """Each dataset's records: from the index when its listing is unchanged, else read concurrently.

    Only datasets that listed and read cleanly are indexed: a failure may be a storage error, not a fact
    about the dataset, so a dataset with any failed record is read again next time.
    """
    results: list[list[EpisodeRecord] | None] = [None] * len(datasets)
    todo = []
    for i, (root, files) in enumerate(datasets):
        cached = None
        if index is not None and files is not None:
            cached = index.get(CATALOG, _catalog_key(root, source), listing_digest(files))
        if cached is None:
            todo.append(i)
        else:
            results[i] = [_from_payload(row) for row in cached]

    def read(i: int) -> list[EpisodeRecord]:
        root, files = datasets[i]
        records = _dataset_episodes(root, source, files)
        if index is not None and files is not None and all(r.status == "ok" for r in records):
            payload = [asdict(record) for record in records]
            index.put(CATALOG, _catalog_key(root, source), listing_digest(files), payload)
        return records

    with ThreadPoolExecutor(source.read_threads) as pool:
        for i, records in zip(todo, pool.map(read, todo), strict=True):
            results[i] = records
    return [records or [] for records in results]


def _from_payload(row: dict[str, Any]) -> EpisodeRecord:
    return EpisodeRecord(**{**row, "tasks": tuple(row["tasks"])})


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


def _dataset_roots(
    fs: AbstractFileSystem, uri: str, path: str
) -> list[tuple[str, dict[str, dict[str, Any]] | None]]:
    """Dataset roots at or below ``uri``, each with the files under it (relative path -> listing entry).

    One recursive listing of ``uri``. When it finds no dataset, the URI itself (to be reported as
    failed); when the listing itself fails, the URI itself with ``None`` for its files (reading it then
    names the reason).
    """
    base = path.rstrip("/")
    # A long-lived driver must see what changed since its last listing.
    forget_listings(fs, base)
    try:
        files = list_files(fs, base)
    except Exception as err:  # any listing failure is reported on the row, not raised
        log.warning("catalog: cannot list %s: %s", uri, type(err).__name__)
        return [(uri.rstrip("/"), None)]
    roots = _find_roots(_Tree(files), "", MAX_DISCOVERY_DEPTH)
    if not roots:
        # Listed as one root so that the run records "not found" instead of silently scoring nothing.
        return [(uri.rstrip("/"), {})]
    by_root: dict[str, dict[str, dict[str, Any]]] = {root: {} for root in roots}
    for name, info in files.items():
        parts = name.split("/")
        # A file belongs to the root among its ancestor folders (roots never nest).
        for depth in range(min(len(parts) - 1, MAX_DISCOVERY_DEPTH) + 1):
            owner = "/".join(parts[:depth])
            if owner in by_root:
                by_root[owner][name[len(owner) + 1 :] if owner else name] = info
                break
    return [(join_uri(uri, root) if root else uri.rstrip("/"), by_root[root]) for root in roots]


class _Tree:
    """The folders of a recursive listing: each folder's entries (files and sub-folders), by name."""

    def __init__(self, files: Mapping[str, Any]) -> None:
        self.children: dict[str, set[str]] = {}
        self.files = set(files)
        for name in files:
            parts = name.split("/")
            for depth in range(len(parts)):
                self.children.setdefault("/".join(parts[:depth]), set()).add(parts[depth])

    def entries(self, folder: str) -> set[str]:
        return self.children.get(folder, set())

    def is_file(self, name: str) -> bool:
        return name in self.files


def _find_roots(tree: _Tree, folder: str, depth: int) -> list[str]:
    # The listing's folders visited as a walk would: a root is not searched inside, sub-folders in name
    # order, names used literally (never as glob patterns).
    if tree.is_file(posixpath.join(folder, INFO_PATH)):
        return [folder]
    names = tree.entries(folder)
    if depth == 0 or not names:
        return []
    if OUTPUT_MARKER in names and tree.is_file(posixpath.join(folder, OUTPUT_MARKER)):
        # The pipeline's own outputs (published files, curated datasets) are never a source.
        log.info("catalog: skipping %s: it holds topreward outputs", folder or "the source root")
        return []
    if "meta" in names and ("data" in names or "videos" in names):
        # Looks like a dataset but has no meta/info.json: listed so that the run records why.
        return [folder]
    folders = sorted(name for name in names if not tree.is_file(posixpath.join(folder, name)))
    return [root for name in folders for root in _find_roots(tree, posixpath.join(folder, name), depth - 1)]


def _dataset_episodes(
    root: str, source: SourceConfig, files: Mapping[str, Any] | None = None
) -> list[EpisodeRecord]:
    """The records of one dataset root: its episodes, or one failed record naming the file and reason.

    ``files`` is the root's listing when the caller has it (then no folder of it is listed again).
    """
    try:
        meta = read_dataset(
            root, source.storage_options, source.camera, episodes=source.episodes, listing=files
        )
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
