"""End to end on real local Ray, moto S3 and the tiny model: every output contract, and the same numbers
as calling decode + scorer + labels directly.

Tests that only read outputs read the session's ``golden_run`` (both synthetic datasets, one run); tests
that run the pipeline again over their outputs make their own runs.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.catalog import list_episodes
from pipeline.curated.pointer import resolve_curated
from pipeline.decision import decide_row
from pipeline.frames.decode import decode_episode
from pipeline.layout import EPISODES_FILE, PROGRESS_FILE
from pipeline.relabel import format_summary, run
from pipeline.scoring.inputs import EpisodeClip
from pipeline.scoring.scorer import PrefixScorer
from pipeline.stages.label import label_episode
from tests.conftest import BROKEN_DATASET, BUCKET, SYNTH_LENGTHS, relabel_config

pytestmark = pytest.mark.slow


_config = relabel_config


def _read(s3, uri: str):
    with s3.open(uri, "rb") as f:
        return pq.read_table(f)


def _direct_labels(cfg, row: dict) -> dict:
    """Decode, score and label one episode without Ray: the numbers the pipeline must reproduce."""
    decoded = decode_episode(row, cfg.frames, cfg.prefixes, cfg.source.storage_options, cfg.source.block_size)
    assert decoded["status"] == "ok", decoded["error"]
    scorer = PrefixScorer(cfg.model, cfg.scoring)
    scores = scorer.score(EpisodeClip.from_row(decoded), row["task"])
    decoded.update(log_p_true=scores.log_p_true, log_p_false=scores.log_p_false)
    labelled = label_episode(decoded)
    labelled["success_score"] = decide_row(labelled, cfg.success, cfg.curation)[0]
    return labelled


@pytest.mark.parametrize("version", ["v30", "v21"])
def test_relabel_from_s3(golden_run, s3, tiny_model_dir, tmp_path, version):
    cfg, dataset_id = golden_run.cfg, golden_run.datasets[version]
    dataset = golden_run.summary.datasets[dataset_id]
    assert (dataset.scored, dataset.failed, dataset.skipped) == (len(SYNTH_LENGTHS), 0, 0)
    assert "scored" in format_summary(golden_run.summary)

    base = f"{golden_run.output}/{dataset_id}"
    episodes = _read(s3, f"{base}/{EPISODES_FILE}").to_pylist()
    assert [e["episode_index"] for e in episodes] == list(range(len(SYNTH_LENGTHS)))
    assert all(e["status"] == "ok" and e["error"] == "" for e in episodes)
    assert all(len(e["log_p_true"]) == len(e["progress"]) == len(e["prefix_frame_indices"]) for e in episodes)

    progress = _read(s3, f"{base}/{PROGRESS_FILE}")
    assert progress.schema.names == ["index", "episode_index", "frame_index", "progress_sparse"]
    assert [str(t) for t in progress.schema.types] == ["int64", "int64", "int64", "float"]
    assert progress.schema.metadata[b"vlm_name"] == str(tiny_model_dir).encode()
    index = progress.column("index").to_numpy()
    assert np.array_equal(index, np.arange(sum(SYNTH_LENGTHS)))  # one row per raw frame, global indices

    # The same numbers as decode + scorer + labels called directly, episode by episode.
    records = {r.episode_index: r.to_row() for r in list_episodes(cfg.source) if r.dataset_id == dataset_id}
    frames = progress.to_pandas()
    for episode in episodes:
        direct = _direct_labels(cfg, records[episode["episode_index"]])
        np.testing.assert_allclose(episode["log_p_true"], direct["log_p_true"], atol=1e-5, rtol=0)
        mine = frames[frames.episode_index == episode["episode_index"]]
        assert np.array_equal(mine.frame_index, np.arange(episode["length"]))
        np.testing.assert_allclose(mine.progress_sparse, direct["frame_progress"], atol=1e-5, rtol=0)
        assert episode["success_score"] == pytest.approx(direct["success_score"], abs=1e-5)

    # Every episode passed the (permissive) threshold: the curated dataset holds them all, loadable as is.
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    curated_uri = resolve_curated(f"{base}/curated", golden_run.s3_options)
    s3.get(curated_uri + "/", str(tmp_path / "curated"), recursive=True)
    curated = LeRobotDataset("curated/" + version, root=tmp_path / "curated", video_backend="pyav")
    assert curated.meta.total_episodes == len(SYNTH_LENGTHS)
    assert curated.meta.total_frames == sum(SYNTH_LENGTHS)
    assert pq.read_table(tmp_path / "curated" / PROGRESS_FILE).num_rows == sum(SYNTH_LENGTHS)


def test_rerun_is_incremental_and_idempotent(ray_session, s3, s3_options, synth_s3, tiny_model_dir):
    output = f"s3://{BUCKET}/labels-rerun"
    first = _config(f"{synth_s3}/v30", output, tiny_model_dir, s3_options, "source.episodes=[0,2]")
    assert run(first).scored == 2
    progress_uri = f"{output}/synth/v30/{PROGRESS_FILE}"
    before = _read(s3, progress_uri)

    again = run(first)
    (dataset,) = again.datasets.values()
    assert (dataset.scored, dataset.skipped) == (0, 2)
    assert _read(s3, progress_uri).equals(before)

    # New episodes arrive: only they are scored, and the published files hold all of them.
    grown = run(_config(f"{synth_s3}/v30", output, tiny_model_dir, s3_options))
    (dataset,) = grown.datasets.values()
    assert (dataset.scored, dataset.skipped) == (2, 2)
    episodes = _read(s3, f"{output}/synth/v30/{EPISODES_FILE}").column("episode_index").to_pylist()
    assert episodes == [0, 1, 2, 3]


def test_corrupt_episode_fails_alone(broken_run):
    (dataset,) = broken_run.summary.datasets.values()
    assert (dataset.scored, dataset.failed) == (2, 1)
    rows = pq.read_table(broken_run.output / BROKEN_DATASET / EPISODES_FILE).to_pylist()
    status = {r["episode_index"]: (r["status"], r["error"]) for r in rows}
    assert status[0][0] == status[2][0] == "ok"
    assert status[1][0] == "failed"
    assert "episode 1" in status[1][1] and "episode_000001.mp4" in status[1][1]
    progress = pq.read_table(broken_run.output / BROKEN_DATASET / PROGRESS_FILE)
    assert set(progress.column("episode_index").to_pylist()) == {0, 2}


def test_lerobot_rabc_loader_accepts_progress(golden_run, s3, tmp_path):
    from lerobot.utils.sample_weighting import SampleWeightingConfig, make_sample_weighter

    path = tmp_path / PROGRESS_FILE
    s3.get(f"{golden_run.output}/{golden_run.datasets['v30']}/{PROGRESS_FILE}", str(path))
    weighting = SampleWeightingConfig(type="rabc", progress_path=str(path), head_mode="sparse")
    policy = SimpleNamespace(config=SimpleNamespace(chunk_size=5))
    weighter = make_sample_weighter(weighting, policy, torch.device("cpu"))
    weights, stats = weighter.compute_batch_weights({"index": torch.arange(0, sum(SYNTH_LENGTHS), 7)})
    assert weights.shape == (len(range(0, sum(SYNTH_LENGTHS), 7)),)
    assert torch.isfinite(weights).all()
    assert "mean_weight" in stats


def test_new_threshold_takes_effect_without_rescoring(ray_session, tmp_path, synth_dir, tiny_model_dir):
    output = tmp_path / "out"
    (dataset,) = run(_config(str(synth_dir / "v30"), str(output), tiny_model_dir, {})).datasets.values()
    base = output / dataset.dataset_id
    before = pq.read_table(base / EPISODES_FILE)
    assert all(before.column("selected").to_pylist()) and resolve_curated(str(base / "curated"))

    # A calibrated threshold above every score: nothing is re-scored, but no episode succeeds any more.
    strict = _config(str(synth_dir / "v30"), str(output), tiny_model_dir, {}, "success.threshold=0")
    (again,) = run(strict).datasets.values()
    assert (again.scored, again.skipped) == (0, len(SYNTH_LENGTHS))
    after = pq.read_table(base / EPISODES_FILE)
    assert after.column("log_p_true").equals(before.column("log_p_true"))
    assert not any(after.column("success").to_pylist()) and not any(after.column("selected").to_pylist())
    assert resolve_curated(str(base / "curated")) is None
