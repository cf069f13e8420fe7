"""``gs://`` end to end against a GCS emulator on loopback: relabel gs:// → gs:// (v3.0 and v2.1), a second
run skips everything, and the outputs equal those of the same config run on other storage (the session's
``golden_run``, S3 → S3)."""

from __future__ import annotations

import gcsfs
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.curated.pointer import resolve_curated
from pipeline.layout import CURATED_DIR, EPISODES_FILE, PROGRESS_FILE
from pipeline.relabel import run
from pipeline.storage import upload_dataset
from tests.conftest import BUCKET, SYNTH_LENGTHS, relabel_config

pytestmark = pytest.mark.slow

# Columns that say when or where (the source URI, and the fingerprint that digests it), not what was scored.
WHEN_OR_WHERE = {"scored_at", "video_uri", "fingerprint"}


def _table(fs, path: str) -> pa.Table:
    with fs.open(path, "rb") as f:
        return pq.read_table(f)


def _comparable(table: pa.Table) -> list[dict]:
    return table.drop_columns([c for c in table.column_names if c in WHEN_OR_WHERE]).to_pylist()


def test_relabel_gs_to_gs_equals_s3(golden_run, s3, gcs_options, synth_dir, tiny_model_dir):
    fs = gcsfs.GCSFileSystem(**gcs_options, use_listings_cache=False)
    # One prefix holding both datasets, found by listing; laid out so that they get the golden run's ids.
    source = f"gs://{BUCKET}/synth"
    for version in ("v30", "v21"):
        upload_dataset(synth_dir / version, fs, f"{source}/{version}")
    output = f"gs://{BUCKET}/labels"
    cfg = relabel_config(source, output, tiny_model_dir, gcs_options)
    # The golden run's config but for where it reads and writes: what scores, decides and curates.
    assert (cfg.success, cfg.curation) == (golden_run.cfg.success, golden_run.cfg.curation)

    first = run(cfg)
    assert first.config_hash == golden_run.summary.config_hash
    ids = sorted(first.datasets)
    assert ids == sorted(golden_run.datasets.values())
    for dataset in first.datasets.values():
        assert (dataset.scored, dataset.skipped, dataset.failed) == (len(SYNTH_LENGTHS), 0, 0), dataset.errors

    again = run(cfg)
    for dataset in again.datasets.values():
        assert (dataset.scored, dataset.skipped, dataset.failed) == (0, len(SYNTH_LENGTHS), 0)

    for dataset_id in ids:
        remote_base = f"{BUCKET}/labels/{dataset_id}"
        s3_base = f"{golden_run.output}/{dataset_id}"
        s3_episodes = _table(s3, f"{s3_base}/{EPISODES_FILE}")
        remote_episodes = _table(fs, f"{remote_base}/{EPISODES_FILE}")
        assert remote_episodes.column("video_uri")[0].as_py().startswith("gs://")
        assert _comparable(remote_episodes) == _comparable(s3_episodes)
        assert _table(fs, f"{remote_base}/{PROGRESS_FILE}").equals(_table(s3, f"{s3_base}/{PROGRESS_FILE}"))
        remote_curated = {
            p.removeprefix(f"{remote_base}/{CURATED_DIR}/") for p in fs.find(f"{remote_base}/{CURATED_DIR}")
        }
        s3_curated = {
            p.removeprefix(f"{s3_base.removeprefix('s3://')}/{CURATED_DIR}/")
            for p in s3.find(f"{s3_base}/{CURATED_DIR}")
        }
        assert remote_curated == s3_curated
        assert {"current.json", "v000001/meta/info.json"} <= remote_curated
        assert resolve_curated(f"gs://{remote_base}/{CURATED_DIR}", gcs_options).endswith("/v000001")
