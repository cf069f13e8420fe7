"""Threshold calibration: AUC and the Youden-optimal threshold, and the CLI on a real episodes table."""

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


def test_cli_prints_threshold(tmp_path, capsys):
    episodes = pa.table(
        {
            "episode_index": [0, 1, 2, 3, 4],
            "status": ["ok", "ok", "ok", "ok", "failed"],
            "success_score": [-9.0, -1.0, -8.5, -2.0, float("nan")],
        }
    )
    pq.write_table(episodes, tmp_path / "episodes.parquet")
    (tmp_path / "labels.csv").write_text("episode_index,success\n0,0\n1,1\n2,0\n3,1\n4,1\n")
    assert main([str(tmp_path / "episodes.parquet"), str(tmp_path / "labels.csv")]) == 0
    out = capsys.readouterr().out
    assert "ROC-AUC: 1.000" in out
    threshold = float(out.strip().splitlines()[-1].split("=")[1])
    assert -8.5 < threshold < -2.0
