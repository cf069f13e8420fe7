"""Committed shards: how labelled episodes reach storage safely, and how a later run finds them.

Each write task groups its rows by dataset and writes one parquet shard per dataset under
``<output>/_state/<config_hash>/<dataset_id>/``. The name is deterministic (first episode of the shard
and a digest of its episode list), the parquet goes to a temporary name first and is renamed into
place, and a small JSON marker is written last: a shard without its marker does not exist for readers.
Nothing is ever overwritten in place, so a crashed or repeated run cannot corrupt committed labels, and
the next run scores only the episodes without a committed ``ok`` result for the same config hash.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.storage import filesystem_for, join_uri

STATE_DIR = "_state"

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
        ("status", pa.string()),
        ("error", pa.string()),
        ("frames_decoded", pa.int64()),
        ("bytes_read", pa.int64()),
        ("prefix_frame_indices", pa.list_(pa.int64())),
        ("log_p_true", pa.list_(pa.float64())),
        ("log_p_false", pa.list_(pa.float64())),
        ("progress", pa.list_(pa.float32())),
        ("frame_progress", pa.list_(pa.float32())),
        ("success_score", pa.float64()),
        ("success", pa.bool_()),
        ("voc", pa.float64()),
        ("selected", pa.bool_()),
        ("model", pa.string()),
        ("config_hash", pa.string()),
        ("scored_at", pa.timestamp("us", tz="UTC")),
    ]
)

# Columns a shard write reports back to the driver (small: no arrays).
SUMMARY_COLUMNS = ("dataset_id", "episode_index", "status", "error", "length", "frames_decoded")


def state_uri(output_uri: str, config_hash: str, dataset_id: str) -> str:
    """Folder holding the committed shards of one dataset for one config hash."""
    return join_uri(output_uri, STATE_DIR, config_hash, dataset_id)


def _column(batch: dict[str, np.ndarray], name: str, size: int, default: Any) -> list[Any]:
    values = batch.get(name)
    if values is None:
        return [default] * size
    return [v.tolist() if isinstance(v, np.ndarray) else v for v in values]


def _utc(value: Any) -> datetime | None:
    """A scorer timestamp as an aware UTC datetime (numpy batches carry naive datetime64, NaT if unset)."""
    if isinstance(value, np.datetime64):
        value = None if np.isnat(value) else value.astype("datetime64[us]").item()
    if value is None:
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


def shard_name(episodes: list[int]) -> str:
    """Deterministic shard name from its episodes: the first one, then a digest of the whole list."""
    ordered = sorted(episodes)
    digest = hashlib.sha256(",".join(map(str, ordered)).encode()).hexdigest()[:10]
    return f"ep-{ordered[0]:06d}-{digest}"


def commit_shard(table: pa.Table, folder_uri: str, storage_options: dict[str, Any]) -> str:
    """Write one dataset's shard (temp name, rename, then marker) and return its final URI."""
    fs, folder = filesystem_for(folder_uri, storage_options)
    fs.makedirs(folder, exist_ok=True)
    episodes = table.column("episode_index").to_pylist()
    name = shard_name(episodes)
    final = f"{folder}/{name}.parquet"
    temp = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
    with fs.open(temp, "wb") as f:
        pq.write_table(table, f)
    fs.mv(temp, final)
    marker = {
        "shard": f"{name}.parquet",
        "episodes": episodes,
        "status": table.column("status").to_pylist(),
        "committed_at": datetime.now(UTC).isoformat(),
    }
    with fs.open(f"{folder}/{name}.done.json", "w") as f:
        json.dump(marker, f)
    return fs.unstrip_protocol(final)


def write_shards(
    batch: dict[str, np.ndarray], output_uri: str, config_hash: str, storage_options: dict[str, Any]
) -> dict[str, np.ndarray]:
    """Ray Data ``map_batches`` function: commit the batch's rows, one shard per dataset.

    Returns the small per-episode summary columns (``SUMMARY_COLUMNS``) for the driver's report.
    """
    table = batch_to_table(batch, config_hash)
    for dataset_id in sorted(set(table.column("dataset_id").to_pylist())):
        part = table.filter(pa.compute.equal(table.column("dataset_id"), dataset_id))
        commit_shard(part, state_uri(output_uri, config_hash, dataset_id), storage_options)
    return {name: np.asarray(table.column(name).to_pylist(), dtype=object) for name in SUMMARY_COLUMNS}


def _markers(folder_uri: str, storage_options: dict[str, Any]) -> list[tuple[Any, str, dict[str, Any]]]:
    fs, folder = filesystem_for(folder_uri, storage_options)
    # Filesystem instances are shared per process; another run in it may have listed this folder before.
    fs.invalidate_cache(folder)
    if not fs.exists(folder):
        return []
    found = []
    for path in sorted(fs.glob(f"{folder}/*.done.json")):
        with fs.open(path, "r") as f:
            found.append((fs, folder, json.load(f)))
    return found


def committed_ok_episodes(folder_uri: str, storage_options: dict[str, Any]) -> set[int]:
    """Episodes that already have a committed ``ok`` result in this state folder."""
    done: set[int] = set()
    for _, _, marker in _markers(folder_uri, storage_options):
        done.update(
            ep for ep, status in zip(marker["episodes"], marker["status"], strict=True) if status == "ok"
        )
    return done


def read_committed(folder_uri: str, storage_options: dict[str, Any]) -> pa.Table:
    """All committed rows of one dataset, one per episode: the latest ``ok`` one, else the latest attempt."""
    tables = []
    for fs, folder, marker in _markers(folder_uri, storage_options):
        with fs.open(f"{folder}/{marker['shard']}", "rb") as f:
            tables.append(pq.read_table(f, schema=SHARD_SCHEMA))
    if not tables:
        return SHARD_SCHEMA.empty_table()
    rows = pa.concat_tables(tables).sort_by([("episode_index", "ascending"), ("scored_at", "ascending")])
    best: dict[int, int] = {}
    for i, (episode, status) in enumerate(
        zip(rows.column("episode_index").to_pylist(), rows.column("status").to_pylist(), strict=True)
    ):
        previous = best.get(episode)
        if previous is None or status == "ok" or rows.column("status")[previous].as_py() != "ok":
            best[episode] = i
    return rows.take(sorted(best.values()))
