"""The moto S3 fixture speaks real S3 protocol through s3fs, and pyarrow reads through it."""

import pyarrow as pa
import pyarrow.parquet as pq

from tests.conftest import BUCKET


def test_s3fs_round_trip(s3):
    table = pa.table({"episode_index": [0, 1, 2], "task": ["a", "b", "c"]})
    with s3.open(f"{BUCKET}/roundtrip/t.parquet", "wb") as f:
        pq.write_table(table, f)
    assert s3.exists(f"{BUCKET}/roundtrip/t.parquet")
    with s3.open(f"{BUCKET}/roundtrip/t.parquet", "rb") as f:
        assert pq.read_table(f).equals(table)
    s3.rm(f"{BUCKET}/roundtrip", recursive=True)
    assert not s3.exists(f"{BUCKET}/roundtrip/t.parquet")
