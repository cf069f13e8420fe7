"""Publishing: turn one dataset's committed shards into the files users read and train on.

Under ``<output>/<dataset_id>/``:

* ``topreward_progress.parquet``: LeRobot's RA-BC schema exactly (``index``, ``episode_index``,
  ``frame_index`` int64, ``progress_sparse`` float32), sorted by ``index``, ``vlm_name`` in the schema
  metadata; one row per raw frame of every ``ok`` episode.
* ``episodes.parquet``: one row per episode with its status, error, prefix table, success and VOC.
* ``curated/``: a LeRobot v3.0 dataset of the selected episodes (``pipeline.curate``).

The shards stay the source of truth, so publishing is a pure rebuild and can be repeated at will; each
file is written to a temporary name and renamed into place so readers never see half a file.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from lerobot.rewards.topreward.compute_rabc_weights import DEFAULT_OUTPUT_FILENAME as PROGRESS_FILE

from pipeline.config import CurationConfig, SuccessConfig
from pipeline.curate import write_curated_dataset
from pipeline.sinks import CommittedEpisode
from pipeline.stages.label import redecide
from pipeline.storage import filesystem_for, join_uri

EPISODES_FILE = "episodes.parquet"
CURATED_DIR = "curated"

PROGRESS_SCHEMA = pa.schema(
    [
        ("index", pa.int64()),
        ("episode_index", pa.int64()),
        ("frame_index", pa.int64()),
        ("progress_sparse", pa.float32()),
    ]
)

EPISODE_COLUMNS = (
    "episode_index", "task", "length", "status", "error", "prefix_frame_indices", "log_p_true",
    "log_p_false", "progress", "success_score", "success", "voc", "selected", "model", "config_hash",
    "scored_at", "frames_decoded", "bytes_read", "camera", "video_uri", "attempt", "fingerprint",
)  # fmt: skip


@dataclass(frozen=True)
class PublishJob:
    """One dataset to publish: its source root, its state folder and the committed entries to show."""

    dataset_id: str
    root: str
    state_uri: str
    episodes: tuple[CommittedEpisode, ...]


@dataclass(frozen=True)
class Published:
    """What was published for one dataset."""

    dataset_id: str
    episodes_uri: str
    progress_uri: str
    curated_uri: str | None
    curated_episodes: int


def progress_table(shards: pa.Table, vlm_name: str) -> pa.Table:
    """Per-frame progress of the ``ok`` episodes in LeRobot's RA-BC schema, sorted by global index."""
    ok = shards.filter(pa.compute.equal(shards.column("status"), "ok"))
    lengths = pa.compute.list_value_length(ok.column("frame_progress")).to_numpy(zero_copy_only=False)
    lengths = lengths.astype(np.int64)
    starts = np.cumsum(lengths) - lengths
    frame_index = np.arange(lengths.sum(), dtype=np.int64) - np.repeat(starts, lengths)
    first_index = ok.column("dataset_from_index").to_numpy().astype(np.int64)
    columns = {
        "index": np.repeat(first_index, lengths) + frame_index,
        "episode_index": np.repeat(ok.column("episode_index").to_numpy().astype(np.int64), lengths),
        "frame_index": frame_index,
        "progress_sparse": pa.compute.list_flatten(ok.column("frame_progress")),
    }
    table = pa.Table.from_pydict(columns, schema=PROGRESS_SCHEMA).sort_by("index")
    return table.replace_schema_metadata({"vlm_name": vlm_name})


def write_parquet_atomic(table: pa.Table, uri: str, storage_options: dict[str, Any]) -> str:
    """Write a parquet file under a temporary name, then rename it over ``uri``."""
    fs, path = filesystem_for(uri, storage_options)
    fs.invalidate_cache(path)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    temp = f"{path}.{uuid.uuid4().hex}.tmp"
    with fs.open(temp, "wb") as f:
        pq.write_table(table, f)
    if fs.exists(path):
        fs.rm(path)
    fs.mv(temp, path)
    return uri


def publish_dataset(
    shards: pa.Table,
    dataset_id: str,
    root: str,
    output_uri: str,
    vlm_name: str,
    *,
    success: SuccessConfig,
    curation: CurationConfig,
    source_options: dict[str, Any],
    output_options: dict[str, Any],
) -> Published:
    """Write the user-facing files of one dataset from its committed shard rows.

    Success labels and the curated selection follow the current ``success``/``curation`` settings, so a
    new threshold (e.g. from ``jobs.calibrate``) takes effect on the next run without re-scoring.
    """
    shards = redecide(shards, success, curation)
    base = join_uri(output_uri, dataset_id)
    episodes_uri = write_parquet_atomic(
        shards.select(list(EPISODE_COLUMNS)), join_uri(base, EPISODES_FILE), output_options
    )
    progress = progress_table(shards, vlm_name)
    progress_uri = write_parquet_atomic(progress, join_uri(base, PROGRESS_FILE), output_options)
    curated_uri, curated = join_uri(base, CURATED_DIR), 0
    episodes = sorted(shards.filter(shards.column("selected")).column("episode_index").to_pylist())
    if curation.enabled and episodes:
        write_curated_dataset(
            root, episodes, curated_uri, progress, source_options=source_options, dest_options=output_options
        )
        curated = len(episodes)
    else:
        # A curated set from an earlier run must not outlive a selection that is now empty.
        fs, path = filesystem_for(curated_uri, output_options)
        fs.invalidate_cache(path)
        if fs.exists(path):
            fs.rm(path, recursive=True)
        curated_uri = None
    return Published(dataset_id, episodes_uri, progress_uri, curated_uri, curated)
