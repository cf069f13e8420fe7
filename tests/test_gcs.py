"""``gs://`` end to end against a GCS emulator on loopback: relabel gs:// → gs:// (v3.0 and v2.1), a second
run skips everything, and the outputs equal a local run of the same config."""

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


def test_relabel_gs_to_gs_equals_local(ray_session, gcs_options, synth_dir, tiny_model_dir, tmp_path):
    fs = gcsfs.GCSFileSystem(**gcs_options, use_listings_cache=False)
    # The same last two path parts as the local copies, so both runs name the datasets alike.
    source = f"gs://{BUCKET}/{synth_dir.name}"
    for version in ("v30", "v21"):
        upload_dataset(synth_dir / version, fs, f"{source}/{version}")
    output = f"gs://{BUCKET}/labels"
    cfg = relabel_config(source, output, tiny_model_dir, gcs_options)

    first = run(cfg)
    ids = sorted(first.datasets)
    assert ids == [f"{synth_dir.name}/v21", f"{synth_dir.name}/v30"]
    for dataset in first.datasets.values():
        assert (dataset.scored, dataset.skipped, dataset.failed) == (len(SYNTH_LENGTHS), 0, 0), dataset.errors

    again = run(cfg)
    for dataset in again.datasets.values():
        assert (dataset.scored, dataset.skipped, dataset.failed) == (0, len(SYNTH_LENGTHS), 0)

    local_out = tmp_path / "local"
    local = run(relabel_config(str(synth_dir), str(local_out), tiny_model_dir, {}))
    assert sorted(local.datasets) == ids
    for dataset_id in ids:
        remote_base = f"{BUCKET}/labels/{dataset_id}"
        local_base = local_out / dataset_id
        local_episodes = pq.read_table(local_base / EPISODES_FILE)
        remote_episodes = _table(fs, f"{remote_base}/{EPISODES_FILE}")
        assert remote_episodes.column("video_uri")[0].as_py().startswith("gs://")
        assert _comparable(remote_episodes) == _comparable(local_episodes)
        assert _table(fs, f"{remote_base}/{PROGRESS_FILE}").equals(pq.read_table(local_base / PROGRESS_FILE))
        remote_curated = {
            p.removeprefix(f"{remote_base}/{CURATED_DIR}/") for p in fs.find(f"{remote_base}/{CURATED_DIR}")
        }
        local_curated = {
            p.relative_to(local_base / CURATED_DIR).as_posix()
            for p in (local_base / CURATED_DIR).rglob("*")
            if p.is_file()
        }
        assert remote_curated == local_curated
        assert {"current.json", "v000001/meta/info.json"} <= remote_curated
        assert resolve_curated(f"gs://{remote_base}/{CURATED_DIR}", gcs_options).endswith("/v000001")
