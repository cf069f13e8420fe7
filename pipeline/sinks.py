"""Committed shards: how labelled episodes reach storage safely, and how a later run finds them.

Each write task groups its rows by dataset and writes one parquet shard per dataset under
``<output>/_state/<config_hash>/<dataset_id>/`` (:func:`state_uri`, through
:class:`~pipeline.layout.OutputLayout`, so the folder cannot leave ``output.uri``). The shard and then a
small JSON marker are each written in one step (:func:`pipeline.atomic.write_bytes`: a temporary name
and a rename on local disk, one PUT on object stores), the marker last: a shard without its marker does
not exist for readers, and no reader ever sees half a marker. The name is deterministic in what the
shard holds (first episode, then a digest of its episodes, their fingerprints and attempt numbers), so a
repeated write of the same rows lands on the same name and a new attempt or a changed episode never
replaces an older shard.

Markers carry, per episode, the status, the source fingerprint, the attempt number and the error, so
the driver decides what to score (:func:`committed_state`) and what to publish from markers alone; the
shard bodies are read only when a dataset is published (:func:`read_rows`). Leftovers of a killed write
(temporary files, shards whose marker never landed) are removed by :func:`clean_state` at the start
of the next run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import posixpath
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.atomic import TEMP_SUFFIX, parquet_bytes, write_bytes
from pipeline.fleetindex import STATE, FleetIndex, listing_digest
from pipeline.layout import DATASET_ID_PARTS, OutputLayout
from pipeline.storage import filesystem_for, forget_listings, join_uri, list_files, list_folder, redact

log = logging.getLogger(__name__)

SHARD_SCHEMA = pa.schema(
    [
        ("dataset_id", pa.string()),
        ("root", pa.string()),
        ("codebase_version", pa.string()),
        ("episode_index", pa.int64()),
        ("task", pa.string()),
        ("length", pa.int64()),
        ("fps", pa.float64()),
        ("camera", pa.string()),
        ("video_uri", pa.string()),
        ("dataset_from_index", pa.int64()),
        ("dataset_to_index", pa.int64()),
        ("fingerprint", pa.string()),
        ("attempt", pa.int64()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("frames_decoded", pa.int64()),
        ("bytes_read", pa.int64()),
        ("prefix_frame_indices", pa.list_(pa.int64())),
        ("log_p_true", pa.list_(pa.float64())),
        ("log_p_false", pa.list_(pa.float64())),
        ("progress", pa.list_(pa.float32())),
        ("frame_progress", pa.list_(pa.float32())),
        # Scores only: the success score, success and selection depend on success.* and curation.*,
        # which a later publish may change; pipeline.decision.decide makes them when publishing.
        ("voc", pa.float64()),
        ("model", pa.string()),
        ("config_hash", pa.string()),
        ("scored_at", pa.timestamp("us", tz="UTC")),
    ]
)

# Columns a shard write reports back to the driver (small: no arrays).
SUMMARY_COLUMNS = ("dataset_id", "episode_index", "status", "error", "length", "frames_decoded", "attempt")
MARKER_SUFFIX = ".done.json"
# Keys one listing request returns at most: S3's ListObjectsV2 and GCS's objects.list pages.
LIST_PAGE_KEYS = 1000
# Markers are read concurrently: thousands of small objects per dataset, bound by request latency.
MARKER_READ_THREADS = 16


@dataclass(frozen=True)
class CommittedEpisode:
    """One episode's committed result as its shard marker records it."""

    episode_index: int
    shard: str
    status: str
    fingerprint: str
    attempts: int
    error: str


def state_uri(output_uri: str, config_hash: str, dataset_id: str) -> str:
    """Folder holding the committed shards of one dataset for one config hash.

    Raises:
        ValueError: the folder would not be under ``output_uri`` (a dataset id with ``..`` in it).
    """
    return OutputLayout(output_uri).state(config_hash, dataset_id)


def _column(batch: dict[str, np.ndarray], name: str, size: int, default: Any) -> list[Any]:
    values = batch.get(name)
    if values is None:
        return [default] * size
    return [v.tolist() if isinstance(v, np.ndarray) else v for v in values]


def _utc(value: Any) -> datetime | None:
    """A scorer timestamp as an aware UTC datetime, or None when the row was never scored.

    Ray's numpy batches carry naive ``datetime64`` (NaT if unset), ``datetime`` objects, or, in a batch
    where every row failed, a float column of NaN: anything that is not a time means "not scored".
    """
    if isinstance(value, np.datetime64):
        value = None if np.isnat(value) else value.astype("datetime64[us]").item()
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def batch_to_table(batch: dict[str, np.ndarray], config_hash: str) -> pa.Table:
    """The shard table for a numpy batch of labelled rows, in ``SHARD_SCHEMA``."""
    size = len(batch["episode_index"])
    columns: dict[str, list[Any]] = {}
    for field in SHARD_SCHEMA:
        if field.name == "config_hash":
            columns[field.name] = [config_hash] * size
        elif field.name == "scored_at":
            # Rows that never reached the scorer (failed earlier) are stamped when committed.
            now = datetime.now(UTC)
            columns[field.name] = [_utc(t) or now for t in _column(batch, field.name, size, None)]
        else:
            default = 0 if pa.types.is_integer(field.type) else None
            columns[field.name] = _column(batch, field.name, size, default)
    return pa.Table.from_pydict(columns, schema=SHARD_SCHEMA)


def shard_name(episodes: list[int], fingerprints: list[str], attempts: list[int]) -> str:
    """Deterministic shard name: the first episode, then a digest of (episode, fingerprint, attempt)s."""
    entries = sorted(zip(episodes, fingerprints, attempts, strict=True))
    digest = hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:12]
    return f"ep-{entries[0][0]:06d}-{digest}"


def commit_shard(table: pa.Table, folder_uri: str, storage_options: dict[str, Any]) -> str:
    """Writes one dataset's shard, then its marker, each in one step; returns the shard's URI.

    Args:
        table: Rows of one dataset in ``SHARD_SCHEMA``.
        folder_uri: The dataset's state folder, from :func:`state_uri` (which keeps it under the
            output); the two names written in it are generated here (``ep-<episode>-<hex digest>``),
            so they cannot leave it.
        storage_options: fsspec options of the output.
    """
    episodes = table.column("episode_index").to_pylist()
    fingerprints = table.column("fingerprint").to_pylist()
    attempts = table.column("attempt").to_pylist()
    name = shard_name(episodes, fingerprints, attempts)
    shard_uri = join_uri(folder_uri, f"{name}.parquet")
    # Locally a temp file renamed into place (a killed write leaves a .tmp for clean_state); on an
    # object store one PUT, where a temporary object would only add a copy and a delete.
    write_bytes(parquet_bytes(table), shard_uri, storage_options, name="shard")
    marker = {
        "shard": f"{name}.parquet",
        "episodes": episodes,
        "status": table.column("status").to_pylist(),
        "fingerprints": fingerprints,
        "attempts": attempts,
        "errors": table.column("error").to_pylist(),
        "committed_at": datetime.now(UTC).isoformat(),
    }
    # Written last and in one step: a reader sees the marker whole or not at all, and the shard it names
    # is complete before it exists. A plain open("w") killed mid-write would leave a truncated marker.
    write_bytes(
        json.dumps(marker).encode(),
        join_uri(folder_uri, f"{name}{MARKER_SUFFIX}"),
        storage_options,
        name="marker",
    )
    return shard_uri


def write_shards(
    batch: dict[str, np.ndarray], output_uri: str, config_hash: str, storage_options: dict[str, Any]
) -> dict[str, np.ndarray]:
    """Ray Data ``map_batches`` function: commit the batch's rows, one shard per dataset.

    Returns the small per-episode summary columns (``SUMMARY_COLUMNS``) for the driver's report. A shard
    that cannot be written (storage down) does not fail the batch: its rows come back ``failed``, each
    naming its episode, the folder and the reason; nothing is committed for them, and the next run scores
    them again.
    """
    table = batch_to_table(batch, config_hash)
    summary = {name: table.column(name).to_pylist() for name in SUMMARY_COLUMNS}
    for dataset_id in sorted(set(summary["dataset_id"])):
        part = table.filter(pa.compute.equal(table.column("dataset_id"), dataset_id))
        folder = state_uri(output_uri, config_hash, dataset_id)
        try:
            commit_shard(part, folder, storage_options)
        except Exception as err:  # one dataset's failed commit must not lose the others' rows
            rows = [i for i, row_dataset in enumerate(summary["dataset_id"]) if row_dataset == dataset_id]
            episodes = ", ".join(str(summary["episode_index"][i]) for i in rows)
            reason = redact(f"writing a shard under {folder}: {type(err).__name__}: {err}", storage_options)
            log.warning("shard write failed: %s episodes %s: %s", dataset_id, episodes, reason)
            for i in rows:
                # Each row names its own episode, like every other failed row.
                error = f"{dataset_id} episode {summary['episode_index'][i]}: {reason}"
                summary["status"][i], summary["error"][i] = "failed", error
    return {name: np.asarray(values, dtype=object) for name, values in summary.items()}


@dataclass(frozen=True)
class _Marker:
    """One shard marker, checked: when it was committed and what it commits."""

    committed_at: str
    entries: tuple[CommittedEpisode, ...]


def _parse_marker(data: bytes, name: str) -> _Marker:
    """A marker file's bytes as a :class:`_Marker`.

    Raises:
        ValueError: not JSON, or not a marker of the shard its own name says (a truncated or foreign
            file): it names another shard, lacks a field, or its per-episode lists differ in length.
    """
    marker = json.loads(data)
    shard = name[: -len(MARKER_SUFFIX)] + ".parquet"
    if not isinstance(marker, dict) or marker.get("shard") != shard:
        raise ValueError(f"not the marker of {shard}")
    committed_at = marker.get("committed_at")
    columns = [marker.get(key) for key in ("episodes", "status", "fingerprints", "attempts", "errors")]
    if not isinstance(committed_at, str) or not all(isinstance(column, list) for column in columns):
        raise ValueError("missing committed_at, episodes, status, fingerprints, attempts or errors")
    try:
        entries = tuple(
            CommittedEpisode(int(episode), shard, str(status), str(fingerprint), int(attempt), error or "")
            for episode, status, fingerprint, attempt, error in zip(*columns, strict=True)
        )
    except TypeError as err:  # a null where a number belongs
        raise ValueError(str(err)) from None
    return _Marker(committed_at, entries)


def _state_files(
    folder_uri: str, storage_options: dict[str, Any], listed: Mapping[str, Any] | None = None
) -> tuple[Any, str, list[str]]:
    """``(fs, folder path, names of the files directly in it)``; no names when the folder is absent.

    ``listed`` is the folder's files (name -> listing entry) when the caller listed them already
    (:func:`list_states`); otherwise the folder is listed literally (never globbed: a dataset id may
    hold ``[`` or ``*``), after dropping fsspec's listing cache, which another run in the same process
    may have filled.
    """
    fs, folder = filesystem_for(folder_uri, storage_options)
    folder = folder.rstrip("/")
    if listed is not None:
        return fs, folder, sorted(listed)
    forget_listings(fs, folder)
    names = [
        posixpath.basename(entry["name"]) for entry in list_folder(fs, folder) if entry["type"] == "file"
    ]
    return fs, folder, names


def list_states(
    output_uri: str,
    config_hash: str,
    storage_options: dict[str, Any],
    dataset_ids: Iterable[str] | None = None,
) -> dict[str, dict]:
    """Dataset state folders of one config hash: ``{dataset id: {file name: listing entry}}``.

    With ``dataset_ids`` None, every folder, from one recursive listing of ``_state/<config hash>/`` (a
    few paginated requests on an object store for thousands of datasets) instead of one listing per
    dataset. Otherwise only those datasets' folders, one listing each (a folder without files is left
    out, as the whole listing leaves it out).
    """
    fs, folder = filesystem_for(OutputLayout(output_uri).states(config_hash), storage_options)
    folder = folder.rstrip("/")
    forget_listings(fs, folder)
    if dataset_ids is not None:
        found = {dataset: list_files(fs, f"{folder}/{dataset}", maxdepth=1) for dataset in dataset_ids}
        return {dataset_id: files for dataset_id, files in found.items() if files}
    states: dict[str, dict] = {}
    for relative, info in list_files(fs, folder).items():
        *dataset, name = relative.split("/")
        if len(dataset) == DATASET_ID_PARTS:
            states.setdefault("/".join(dataset), {})[name] = info
    return states


def listing_pages(listing: Mapping[str, Mapping[str, Any]]) -> int:
    """Requests a listing of :func:`list_states` takes on an object store: its pages of
    :data:`LIST_PAGE_KEYS` keys."""
    return math.ceil(sum(len(files) for files in listing.values()) / LIST_PAGE_KEYS)


def _read_markers(
    folder_uri: str, storage_options: dict[str, Any], fs: Any, folder: str, names: list[str]
) -> tuple[list[_Marker], list[str]]:
    """The markers among ``names`` that parse, oldest commit first, and the names of those that do not.

    A marker that does not parse (truncated by a crash of an older version that wrote markers in place,
    or by a bad disk) is logged as a warning naming the file and treated as absent; a storage error
    reading one is raised: it says nothing about the marker.
    """
    marker_names = [name for name in names if name.endswith(MARKER_SUFFIX)]
    with ThreadPoolExecutor(MARKER_READ_THREADS) as pool:
        contents = list(pool.map(lambda name: fs.cat_file(f"{folder}/{name}"), marker_names))
    markers, broken = [], []
    for name, data in zip(marker_names, contents, strict=True):
        try:
            markers.append(_parse_marker(data, name))
        except ValueError as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            log.warning(
                "state: ignoring unreadable shard marker %s (%s): its episodes count as not committed "
                "and are scored again; the next run removes it and its shard",
                join_uri(folder_uri, name),
                redact(str(err), storage_options)[:200],
            )
            broken.append(name)
    return sorted(markers, key=lambda marker: marker.committed_at), broken


State = dict[tuple[int, str], CommittedEpisode]


def committed_state(
    folder_uri: str, storage_options: dict[str, Any], listed: Mapping[str, Any] | None = None
) -> State:
    """What is committed per (episode, fingerprint), from the markers alone.

    An ``ok`` result wins over failures (the latest ``ok`` if several); otherwise the latest failure,
    with ``attempts`` the highest attempt number committed. A marker that does not parse is treated as
    absent, with a warning naming it: its episodes are scored again. ``listed``: the folder's files
    when already listed (:func:`list_states`).
    """
    fs, folder, names = _state_files(folder_uri, storage_options, listed)
    return _state_of(_read_markers(folder_uri, storage_options, fs, folder, names)[0])


def clean_state(
    folder_uri: str, storage_options: dict[str, Any], listed: Mapping[str, Any] | None = None
) -> tuple[State, list[str]]:
    """Deletes what a killed write left in a state folder, then returns :func:`committed_state` and the
    names removed; one listing (none when ``listed`` is given) and one read of each marker (what a run's
    plan does per changed dataset before it writes anything).

    Leftovers are temp files, markers that do not parse, and shards without a marker that parses. This
    runs on the driver before any write of this run, so nothing it removes can be in flight (nightly
    runs do not overlap: the schedulers in ``infra/`` refuse a second concurrent run). A storage error
    reading a marker is raised and nothing is removed.
    """
    fs, folder, names = _state_files(folder_uri, storage_options, listed)
    markers, broken = _read_markers(folder_uri, storage_options, fs, folder, names)
    removed = _remove_stale(folder_uri, fs, folder, names, set(broken))
    return _state_of(markers), removed


def _state_of(markers: list[_Marker]) -> State:
    state: State = {}
    for marker in markers:
        for entry in marker.entries:
            key = (entry.episode_index, entry.fingerprint)
            previous = state.get(key)
            if previous is None or entry.status == "ok" or previous.status != "ok":
                state[key] = entry
    return state


def read_rows(
    folder_uri: str, episodes: Iterable[CommittedEpisode], storage_options: dict[str, Any]
) -> pa.Table:
    """The committed rows of exactly these entries, sorted by episode; each shard file is read once."""
    wanted: dict[str, dict[int, CommittedEpisode]] = {}
    for entry in episodes:
        wanted.setdefault(entry.shard, {})[entry.episode_index] = entry
    fs, folder = filesystem_for(folder_uri, storage_options)
    tables = []
    for shard, entries in sorted(wanted.items()):
        with fs.open(f"{folder}/{shard}", "rb") as f:
            table = pq.read_table(f, schema=SHARD_SCHEMA)
        keep = [
            i
            for i, (episode, fingerprint) in enumerate(
                zip(
                    table.column("episode_index").to_pylist(),
                    table.column("fingerprint").to_pylist(),
                    strict=True,
                )
            )
            if episode in entries and entries[episode].fingerprint == (fingerprint or "")
        ]
        # A folded shard usually holds exactly the committed rows: taking all of them copies for nothing.
        tables.append(table if len(keep) == table.num_rows else table.take(keep))
    if not tables:
        return SHARD_SCHEMA.empty_table()
    rows = pa.concat_tables(tables)
    episodes = rows.column("episode_index").to_numpy()
    return rows if np.all(np.diff(episodes) > 0) else rows.sort_by("episode_index")


def _remove_stale(folder_uri: str, fs: Any, folder: str, names: list[str], broken: set[str]) -> list[str]:
    """Removes temp files, the ``broken`` markers and shards without a marker that parses; their names."""
    committed = {
        name[: -len(MARKER_SUFFIX)] for name in names if name.endswith(MARKER_SUFFIX) and name not in broken
    }
    stale = [
        name
        for name in names
        if name.endswith(TEMP_SUFFIX)
        or name in broken
        or (name.endswith(".parquet") and name[: -len(".parquet")] not in committed)
    ]
    for name in stale:
        fs.rm_file(f"{folder}/{name}")
    if stale:
        log.info("state: removed %d leftover object(s) of an interrupted write in %s", len(stale), folder_uri)
    return stale


def _state_payload(state: State) -> list[list[Any]]:
    return [
        [e.episode_index, e.shard, e.status, e.fingerprint, e.attempts, e.error]
        for e in sorted(state.values(), key=lambda e: (e.episode_index, e.fingerprint))
    ]


def _state_from_payload(payload: list[list[Any]]) -> State:
    entries = [CommittedEpisode(int(e), s, st, fp, int(a), err) for e, s, st, fp, a, err in payload]
    return {(entry.episode_index, entry.fingerprint): entry for entry in entries}


def load_states(
    output_uri: str,
    config_hash: str,
    dataset_ids: Iterable[str],
    storage_options: dict[str, Any],
    *,
    listing: Mapping[str, Mapping[str, Any]],
    index: FleetIndex | None = None,
    threads: int = 1,
) -> dict[str, State]:
    """The committed state of many datasets: from the fleet index when a folder's listing is unchanged,
    else read from its markers (:func:`clean_state`: leftovers removed), ``threads`` folders at a time.

    Args:
        listing: :func:`list_states` of the config hash, taken before this call.
        index: The fleet index to answer from and to update; None: every folder's markers are read.
    """
    ids = list(dict.fromkeys(dataset_ids))
    states: dict[str, State] = {}
    todo = []
    for dataset_id in ids:
        files = listing.get(dataset_id, {})
        key = f"{config_hash}/{dataset_id}"
        cached = index.get(STATE, key, listing_digest(files)) if index is not None else None
        if cached is None:
            todo.append(dataset_id)
        else:
            states[dataset_id] = _state_from_payload(cached)

    def read(dataset_id: str) -> State:
        files = dict(listing.get(dataset_id, {}))
        folder = state_uri(output_uri, config_hash, dataset_id)
        state, removed = clean_state(folder, storage_options, files)
        if index is not None:
            kept = {name: info for name, info in files.items() if name not in removed}
            index.put(STATE, f"{config_hash}/{dataset_id}", listing_digest(kept), _state_payload(state))
        return state

    with ThreadPoolExecutor(threads) as pool:
        states.update(zip(todo, pool.map(read, todo), strict=True))
    return {dataset_id: states[dataset_id] for dataset_id in ids}


def marker_count(files: Mapping[str, Any]) -> int:
    """How many shard markers a state folder's listing holds."""
    return sum(name.endswith(MARKER_SUFFIX) for name in files)


def needs_folding(files: Mapping[str, Any], compact_markers: int) -> bool:
    """Whether a state folder (its listing) is folded into one shard as it is published: it holds more
    than ``output.compact_markers`` markers."""
    return marker_count(files) > compact_markers


def compact_state(folder_uri: str, rows: pa.Table, storage_options: dict[str, Any]) -> str:
    """Folds a dataset's committed shards into one: ``rows`` (its current entries, ``SHARD_SCHEMA``,
    as :func:`read_rows` returns them) are committed as one shard and marker, then every other marker
    and every shard left without one is deleted; returns the new shard's URI.

    Safe at any point of a kill: until the old markers are gone, the new marker repeats what they
    commit (the newest wins, with equal entries), and shards whose marker is gone are leftovers that
    :func:`clean_state` removes. Entries of episodes that are gone or of old fingerprints are dropped:
    no current decision reads them. Runs in the dataset's publish task, after scoring has finished
    writing (nothing else writes the folder then).
    """
    shard_uri = commit_shard(rows, folder_uri, storage_options)
    keep = posixpath.basename(shard_uri)[: -len(".parquet")]
    fs, folder, names = _state_files(folder_uri, storage_options)
    markers = [n for n in names if n.endswith(MARKER_SUFFIX) and n != keep + MARKER_SUFFIX]
    shards = [n for n in names if n.endswith((".parquet", TEMP_SUFFIX)) and n != keep + ".parquet"]
    # Markers first: a shard whose marker is gone is a leftover, never a half-removed commit.
    for group in (markers, shards):
        if group:
            fs.rm([f"{folder}/{name}" for name in group])
    log.info("state: folded %d shard(s) into %s", len(markers) + 1, shard_uri)
    return shard_uri
