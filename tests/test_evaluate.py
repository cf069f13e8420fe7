"""jobs.evaluate: table metrics against hand-computed values, the controls' clips, a run with the tiny model
on a synthetic dataset (a hand-written episodes table pointing at real videos, no run record), and the
golden run's table evaluated with the settings its run record holds."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.evaluate import main as evaluate_main
from pipeline.calibration import calibrate
from pipeline.catalog import list_episodes
from pipeline.config import CurationConfig, SourceConfig, SuccessConfig, load_config
from pipeline.evaluation import shuffled_clip, static_clip, table_metrics
from pipeline.frames.decode import decode_episode
from pipeline.layout import EPISODES_FILE, RECORD_FILE, RUNS_DIR
from pipeline.scoring.inputs import EpisodeClip
from pipeline.scoring.scorer import PrefixScorer


def _clip(count: int = 8) -> EpisodeClip:
    frames = np.stack([np.full((4, 4, 3), i, dtype=np.uint8) for i in range(count)])
    return EpisodeClip(frames, np.arange(count) * 3, 10.0, 3 * count, np.array([2, 4, 6, 8]))


def test_static_control_repeats_the_first_frame_and_keeps_timing():
    clip = _clip()
    static = static_clip(clip)
    assert static.frames.shape == clip.frames.shape
    assert (static.frames == clip.frames[0]).all()
    assert np.array_equal(static.raw_indices, clip.raw_indices)
    assert np.array_equal(static.prefix_ends, clip.prefix_ends)


@pytest.mark.parametrize("count", [2, 8])
def test_shuffled_control_permutes_frames_and_keeps_timing(count):
    clip = replace(_clip(count), prefix_ends=np.array([count]))
    for seed in range(5):
        shuffled = shuffled_clip(clip, np.random.default_rng(seed))
        order = shuffled.frames[:, 0, 0, 0]
        assert sorted(order.tolist()) == list(range(count))
        assert order.tolist() != list(range(count))
        assert np.array_equal(shuffled.raw_indices, clip.raw_indices)


def _raw(score: float) -> list[float]:
    """Raw log P per prefix whose success score (mean of the last 3) is ``score``."""
    return [score - 1.0, score, score, score]


def _row(index: int, score: float, voc: float | None, status: str = "ok", stored: bool = False) -> dict:
    ok = status == "ok"
    return {
        "episode_index": index,
        "status": status,
        "log_p_true": _raw(score) if ok else None,
        "progress": [0.0, 1.0, 1.0, 1.0] if ok else None,
        "voc": voc,
        # What a table published under other settings says; never read.
        "success_score": -99.0,
        "success": stored,
        "selected": stored,
    }


SUCCESS = SuccessConfig(window=3, threshold=-2.0)


def test_table_metrics_match_hand_computed_values():
    rows = [
        _row(0, -1.0, 0.9),
        _row(1, -3.0, 0.5, stored=True),  # a stale stored "success" below the threshold is not counted
        _row(2, -2.5, None),  # constant progress: VOC undefined
        _row(3, -0.5, 0.1),
        _row(4, float("nan"), float("nan"), status="failed", stored=True),
    ]
    labels = {0: True, 1: False, 2: False, 3: True, 4: True}
    metrics = table_metrics(rows, SUCCESS, CurationConfig(), labels=labels)
    assert (metrics["episodes"], metrics["scored"], metrics["failed"]) == (5, 4, 1)
    assert metrics["voc_mean"] == pytest.approx(0.5)
    assert metrics["voc_median"] == pytest.approx(0.5)
    assert metrics["voc_undefined"] == 1
    assert metrics["success_rate"] == pytest.approx(0.5)
    assert metrics["selected"] == 2
    # The failed episode's label is not used; the rest separate perfectly.
    assert metrics["labels"]["labelled"] == 4
    assert metrics["labels"]["auc"] == pytest.approx(1.0)
    expected = calibrate(np.array([-1.0, -3.0, -2.5, -0.5]), np.array([True, False, False, True]))
    assert metrics["labels"]["threshold"] == pytest.approx(expected.threshold)

    one_class = table_metrics(rows, SUCCESS, CurationConfig(), labels={0: True, 3: True})
    assert "need both successes and failures" in one_class["labels"]["error"]
    assert table_metrics(rows, SUCCESS, CurationConfig(), labels=None)["labels"] is None
    # The curation rules decide the selection: min_voc=0.5 keeps episode 0 (VOC 0.9), not 3 (VOC 0.1).
    assert table_metrics(rows, SUCCESS, CurationConfig(min_voc=0.5), labels=None)["selected"] == 1


@pytest.fixture(scope="module")
def episodes_table(synth_dir, tmp_path_factory) -> dict:
    """An episodes table (as jobs.relabel publishes it, minus unused columns) over the v3.0 synthetic
    dataset: episodes 0, 2 and 3 scored, 1 failed; made-up scores, real videos."""
    folder = tmp_path_factory.mktemp("evaluate")
    records = list_episodes(SourceConfig(uris=[str(synth_dir / "v30")]))
    scores = {0: -1.0, 2: -3.0, 3: -0.5}
    rows = [
        {
            "episode_index": r.episode_index,
            "task": r.task,
            "length": r.length,
            "status": "ok" if r.episode_index in scores else "failed",
            "error": "" if r.episode_index in scores else "synth/v30 episode 1: made up",
            "log_p_true": _raw(scores[r.episode_index]) if r.episode_index in scores else None,
            "progress": [0.0, 1.0, 1.0, 1.0] if r.episode_index in scores else None,
            "success_score": scores.get(r.episode_index, float("nan")),
            "voc": {0: 0.8, 2: 0.2, 3: 1.0}.get(r.episode_index, float("nan")),
            "camera": r.camera,
            "video_uri": r.video_uri,
            "config_hash": "0123456789ab",
            "extra_column": 1,  # columns other versions add must not matter
        }
        for r in records
    ]
    path = folder / "episodes.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    labels = folder / "labels.csv"
    labels.write_text("episode_index,success\n0,true\n1,true\n2,false\n3,true\n")
    return {"path": path, "labels": labels, "records": {r.episode_index: r for r in records}}


def _keys(tiny_model_dir) -> list[str]:
    return [
        f"model.path={tiny_model_dir}",
        "frames.height=64",
        "frames.width=64",
        "frames.max_frames=8",
        "prefixes.num=4",
        "success.threshold=-2.0",
    ]


def test_evaluate_job_prints_and_writes_json(episodes_table, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "evaluation.json"
    argv = [str(episodes_table["path"]), "--labels", str(episodes_table["labels"]), *_keys(tiny_model_dir)]
    assert evaluate_main([*argv, "evaluate.max_episodes=2", f"evaluate.out={out}"]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())

    table = result["table"]
    assert (table["scored"], table["failed"]) == (3, 1)
    assert table["voc_mean"] == pytest.approx(2.0 / 3)
    assert table["labels"]["auc"] == pytest.approx(1.0)  # -1.0 and -0.5 succeed, -3.0 fails
    assert "ROC-AUC of the success score: 1.000" in printed
    assert "scored under config 0123456789ab" in printed
    # No run record: every setting is the command line's or a default, and the printout says so.
    assert "settings of the defaults (no run record for" in printed
    assert "success.threshold=-2 given on the command line\n" in printed
    assert result["settings"]["run_id"] is None
    assert table["success_rate"] == pytest.approx(2 / 3)

    # The controls took the first two scored episodes (0 and 2), never the failed one.
    controls = result["controls"]
    assert controls["episodes"] == [0, 2] and controls["skipped"] == []
    cfg = load_config(_keys(tiny_model_dir))
    scorer = PrefixScorer(cfg.model, cfg.scoring)
    for episode in controls["per_episode"]:
        record = episodes_table["records"][episode["episode_index"]]
        decoded = decode_episode(record.to_row(), cfg.frames, cfg.prefixes, {}, cfg.source.block_size)
        clip = EpisodeClip.from_row(decoded)
        # "real" is the pipeline's own scoring of the episode; the static video is scored on other pixels.
        real = scorer.score(clip, record.task).log_p_true
        np.testing.assert_allclose(episode["real"]["log_p_true"], real, atol=1e-5)
        static = scorer.score(static_clip(clip), record.task).log_p_true
        np.testing.assert_allclose(episode["static"]["log_p_true"], static, atol=1e-5)
        assert not np.allclose(episode["static"]["log_p_true"], real)
        assert len(episode["shuffled"]["log_p_true"]) == len(real)
    for name in ("real", "static", "shuffled"):
        summary = controls["summary"][name]
        assert -1 <= summary["voc_mean"] <= 1
        assert 0 <= summary["success_rate"] <= 1
        assert name in printed
    assert "VOC gaps: real - static" in printed


def test_evaluate_default_json_goes_next_to_the_table(episodes_table, tiny_model_dir):
    argv = [str(episodes_table["path"]), *_keys(tiny_model_dir), "evaluate.max_episodes=0"]
    assert evaluate_main(argv) == 0
    result = json.loads((episodes_table["path"].parent / "evaluation.json").read_text())
    assert result["controls"]["episodes"] == [] and result["table"]["labels"] is None


def test_a_table_without_run_record_or_model_is_refused_in_one_line(episodes_table, tmp_path, capsys):
    assert evaluate_main([str(episodes_table["path"])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("jobs.evaluate: no run record for ")
    assert "model.path=" in err
    assert evaluate_main([str(tmp_path / "nothing" / "episodes.parquet")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("jobs.evaluate: not found:")
    bad = tmp_path / "labels.csv"
    bad.write_text("episode_index,success\n0,maybe\n")
    assert evaluate_main([str(episodes_table["path"]), "--labels", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'maybe'" in err and str(bad) in err


def test_bad_keys_are_refused_by_name(episodes_table, capsys):
    assert evaluate_main([str(episodes_table["path"]), "evaluate.max_episode=3"]) == 2
    assert "evaluate.max_episode" in capsys.readouterr().err
    assert evaluate_main([str(episodes_table["path"]), "frames.fpz=1"]) == 2
    assert "frames.fpz" in capsys.readouterr().err


@pytest.fixture(scope="module")
def golden_copy(golden_run, s3, tmp_path_factory) -> dict:
    """The golden run's v3.0 table, its ``_published.json`` and the run records, copied to local disk
    (the golden outputs are read-only; jobs.evaluate writes evaluation.json next to the table)."""
    output = tmp_path_factory.mktemp("golden-copy") / "labels"
    dataset = golden_run.datasets["v30"]
    source = golden_run.output.removeprefix("s3://")
    for name in (EPISODES_FILE, RECORD_FILE):
        (output / dataset).mkdir(parents=True, exist_ok=True)
        s3.get(f"{source}/{dataset}/{name}", str(output / dataset / name))
    (output / RUNS_DIR).mkdir()
    for path in s3.ls(f"{source}/{RUNS_DIR}"):
        s3.get(path, str(output / RUNS_DIR / path.rsplit("/", 1)[1]))
    run_id = json.loads((output / dataset / RECORD_FILE).read_text())["run_id"]
    table = output / dataset / EPISODES_FILE
    rows = pq.read_table(table).to_pylist()
    return {"table": table, "run_id": run_id, "rows": rows, "threshold": golden_run.cfg.success.threshold}


def test_evaluate_takes_the_publishing_runs_settings(golden_run, golden_copy, tiny_model_dir, capsys):
    # Nothing but the table: the threshold, the model and the frames are the golden run's, so the
    # controls load the tiny model (HF_HUB_OFFLINE=1: a download would fail) and score as the run did.
    assert evaluate_main([str(golden_copy["table"])]) == 0
    printed = capsys.readouterr().out
    run_id = golden_copy["run_id"]
    threshold = golden_run.cfg.success.threshold
    assert f"success.threshold {threshold:g} from run {run_id}" in printed
    assert f"model.path {tiny_model_dir} from run {run_id}" in printed
    result = json.loads((golden_copy["table"].parent / "evaluation.json").read_text())
    assert result["settings"]["run_id"] == run_id and result["settings"]["given"] == []
    assert result["threshold"] == threshold and result["model"] == str(tiny_model_dir)
    ok = [row for row in golden_copy["rows"] if row["status"] == "ok"]
    expected = np.mean([row["success_score"] > threshold for row in ok])
    assert result["table"]["success_rate"] == pytest.approx(expected)
    assert f"success rate {expected:.2f} at threshold {threshold:g}" in printed
    # Same model, frames and prefixes as the table: the same config hash, so no mismatch note.
    assert result["table_config_hashes"] == [result["config_hash"]]
    assert "scored under config" not in printed
    assert result["controls"]["episodes"] == [row["episode_index"] for row in ok][:8]
    for episode in result["controls"]["per_episode"]:
        stored = next(row for row in ok if row["episode_index"] == episode["episode_index"])
        np.testing.assert_allclose(episode["real"]["log_p_true"], stored["log_p_true"], atol=1e-4)


def test_a_setting_given_on_the_command_line_wins_and_is_announced(golden_copy, tmp_path, capsys):
    scores = sorted(row["success_score"] for row in golden_copy["rows"] if row["status"] == "ok")
    threshold = (scores[0] + scores[1]) / 2  # one scored episode fails, the others succeed
    out = tmp_path / "evaluation.json"
    argv = [str(golden_copy["table"]), f"success.threshold={threshold}", "evaluate.max_episodes=0"]
    assert evaluate_main([*argv, f"evaluate.out={out}"]) == 0
    printed = capsys.readouterr().out
    run_id = golden_copy["run_id"]
    recorded = golden_copy["threshold"]
    assert "given on the command line: success.threshold" in printed
    assert (
        f"success.threshold={threshold:g} given on the command line, overriding run {run_id}'s {recorded:g}"
        in printed
    )
    result = json.loads(out.read_text())
    assert result["threshold"] == threshold
    assert result["table"]["success_rate"] == pytest.approx((len(scores) - 1) / len(scores))
