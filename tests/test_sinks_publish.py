"""The RA-BC progress table, without Ray."""

import pyarrow as pa

from pipeline.publish import PROGRESS_SCHEMA, progress_table


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
