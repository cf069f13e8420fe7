"""Committed shards (markers, retries, idempotency) and the RA-BC progress table, without Ray."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.publish import PROGRESS_SCHEMA, progress_table
from pipeline.sinks import (
    SHARD_SCHEMA,
    batch_to_table,
    commit_shard,
    committed_ok_episodes,
    read_committed,
    shard_name,
)


def _batch(episodes, status, scored_at=None):
    size = len(episodes)
    return {
        "dataset_id": np.array(["fleet/a"] * size, dtype=object),
        "episode_index": np.array(episodes),
        "status": np.array(status, dtype=object),
        "error": np.array(["" if s == "ok" else "boom" for s in status], dtype=object),
        "length": np.array([3] * size),
        "dataset_from_index": np.array([3 * e for e in episodes]),
        "frame_progress": np.array([np.array([0.0, 0.5, 1.0], np.float32)] * size, dtype=object),
        "scored_at": np.array([scored_at] * size, dtype=object),
    }


def test_shard_names_are_deterministic():
    assert shard_name([3, 1, 2]) == shard_name([1, 2, 3])
    assert shard_name([1, 2, 3]).startswith("ep-000001-")
    assert shard_name([1, 2]) != shard_name([1, 3])


def test_batch_table_has_the_shard_schema_and_utc_stamps():
    stamp = datetime(2026, 11, 24, 3, 0)
    table = batch_to_table(_batch([0, 1], ["ok", "failed"], scored_at=stamp), "abc123")
    assert table.schema == SHARD_SCHEMA
    assert table.column("config_hash").to_pylist() == ["abc123", "abc123"]
    assert table.column("scored_at")[0].as_py() == stamp.replace(tzinfo=UTC)


def test_markers_commit_and_retries_win(tmp_path):
    folder = str(tmp_path / "state")
    early = datetime.now(UTC) - timedelta(hours=1)
    commit_shard(batch_to_table(_batch([0, 1], ["ok", "failed"], scored_at=early), "h"), folder, {})
    assert committed_ok_episodes(folder, {}) == {0}

    # A shard whose marker never got written (a crash between the two) does not exist for readers.
    pq.write_table(batch_to_table(_batch([2], ["ok"]), "h"), tmp_path / "state" / "ep-000002-orphan.parquet")
    assert committed_ok_episodes(folder, {}) == {0}

    # The retried episode 1 succeeds: the ok row replaces the failed one, nothing is duplicated.
    commit_shard(batch_to_table(_batch([1], ["ok"], scored_at=datetime.now(UTC)), "h"), folder, {})
    rows = read_committed(folder, {})
    assert rows.column("episode_index").to_pylist() == [0, 1]
    assert rows.column("status").to_pylist() == ["ok", "ok"]
    assert committed_ok_episodes(folder, {}) == {0, 1}


def test_missing_state_folder_is_empty(tmp_path):
    assert committed_ok_episodes(str(tmp_path / "nothing"), {}) == set()
    assert read_committed(str(tmp_path / "nothing"), {}).num_rows == 0


def test_progress_table_is_the_rabc_schema():
    shards = pa.Table.from_pylist(
        [
            {"status": "ok", "dataset_from_index": 10, "episode_index": 1, "frame_progress": [0.0, 0.5, 1.0]},
            {"status": "failed", "dataset_from_index": 13, "episode_index": 2, "frame_progress": []},
            {"status": "ok", "dataset_from_index": 0, "episode_index": 0, "frame_progress": [0.25, 1.0]},
        ]
    )
    table = progress_table(shards, "Qwen/Qwen3-VL-8B-Instruct")
    assert table.schema.remove_metadata() == PROGRESS_SCHEMA
    assert table.schema.metadata == {b"vlm_name": b"Qwen/Qwen3-VL-8B-Instruct"}
    assert table.column("index").to_pylist() == [0, 1, 10, 11, 12]
    assert table.column("episode_index").to_pylist() == [0, 0, 1, 1, 1]
    assert table.column("frame_index").to_pylist() == [0, 1, 0, 1, 2]
    assert table.column("progress_sparse").to_pylist() == [0.25, 1.0, 0.0, 0.5, 1.0]
    assert progress_table(shards.slice(1, 1), "m").num_rows == 0
