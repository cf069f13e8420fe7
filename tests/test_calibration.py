"""Threshold calibration: AUC and the Youden-optimal threshold, and the CLI on a real episodes table, with
the success window of the run that published it."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.calibrate import main
from pipeline.calibration import calibrate, read_labels


def test_separable_scores():
    result = calibrate(np.array([-9.0, -8.0, -2.0, -1.0]), np.array([False, False, True, True]))
    assert result.auc == 1.0 and result.youden_j == 1.0
    assert -8.0 < result.threshold < -2.0


def test_overlapping_scores():
    scores = np.array([-5.0, -4.0, -3.0, -2.0, -1.0])
    labels = np.array([False, True, False, True, True])
    result = calibrate(scores, labels)
    # 5 of the 6 success/failure pairs are ordered correctly.
    assert result.auc == pytest.approx(5 / 6)
    assert result.true_positive_rate - result.false_positive_rate == pytest.approx(result.youden_j)
    predicted = scores > result.threshold
    assert (predicted & labels).sum() / 3 == pytest.approx(result.true_positive_rate)


def test_one_class_is_an_error():
    with pytest.raises(ValueError, match="both"):
        calibrate(np.array([-1.0, -2.0]), np.array([True, True]))


def test_label_formats(tmp_path):
    (tmp_path / "l.csv").write_text("episode_index,success\n0,true\n1,0\n")
    (tmp_path / "l.json").write_text('{"0": true, "1": false}')
    (tmp_path / "m.json").write_text(
        '[{"episode_index": 0, "success": true}, {"episode_index": 1, "success": false}]'
    )
    for name in ("l.csv", "l.json", "m.json"):
        assert read_labels(str(tmp_path / name)) == {0: True, 1: False}


def _table(folder: Path, raw: list[list[float] | None]) -> Path:
    """An episodes table of raw log P per prefix (None: a failed episode)."""
    folder.mkdir(parents=True, exist_ok=True)
    episodes = pa.Table.from_pylist(
        [
            {
                "episode_index": index,
                "status": "failed" if log_p is None else "ok",
                "log_p_true": log_p,
                "progress": None if log_p is None else [0.0] * (len(log_p) - 1) + [1.0],
                "voc": None,
                "success_score": -99.0,  # stored under other settings: never read
            }
            for index, log_p in enumerate(raw)
        ]
    )
    pq.write_table(episodes, folder / "episodes.parquet")
    return folder / "episodes.parquet"


def test_cli_prints_threshold(tmp_path, capsys):
    table = _table(tmp_path, [[-9.0] * 3, [-1.0] * 3, [-8.5] * 3, [-2.0] * 3, None])
    (tmp_path / "labels.csv").write_text("episode_index,success\n0,0\n1,1\n2,0\n3,1\n4,1\n")
    assert main([str(table), str(tmp_path / "labels.csv")]) == 0
    out = capsys.readouterr().out
    assert "ROC-AUC: 1.000" in out
    threshold = float(out.strip().splitlines()[-1].split("=")[1])
    assert -8.5 < threshold < -2.0
    assert "success.window 3 from the defaults (no run record for" in out


def test_cli_scores_with_the_window_of_the_run_that_published(tmp_path, capsys):
    # The last prefix alone (window 1) separates at -5.25; the mean of the last three at -2.75.
    dataset = tmp_path / "labels" / "so100" / "pick"
    table = _table(dataset, [[-9.0] * 4, [-1.0] * 4, [-1.0, -1.0, -1.0, -8.5], [-2.0] * 4])
    (dataset / "_published.json").write_text(json.dumps({"run_id": "r1"}))
    (tmp_path / "labels" / "_runs").mkdir()
    record = {"run_id": "r1", "config": {"success": {"window": 1, "threshold": -5.0}}}
    (tmp_path / "labels" / "_runs" / "r1.json").write_text(json.dumps(record))
    (tmp_path / "labels.csv").write_text("episode_index,success\n0,0\n1,1\n2,0\n3,1\n")
    assert main([str(table), str(tmp_path / "labels.csv")]) == 0
    out = capsys.readouterr().out
    assert "success score: success.window 1 from run r1" in out
    assert "now: success.threshold -5 from run r1" in out
    assert out.strip().endswith("use: success.threshold=-5.2500")
    assert main([str(table), str(tmp_path / "labels.csv"), "success.window=3"]) == 0
    out = capsys.readouterr().out
    assert "success.window=3 given on the command line, overriding run r1's 1" in out
    assert out.strip().endswith("use: success.threshold=-2.7500")
