"""Threshold calibration: AUC and the Youden-optimal threshold, and the CLI on a real episodes table, with
the success window of the run that published it."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.calibrate import main
from pipeline.calibration import CalibrationInputError, calibrate, read_labels
from tests.conftest import BUCKET


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


@pytest.mark.parametrize(
    ("true", "false"),
    [("1.0", "0.0"), ("Y", "n"), ("YES", "no"), ("True", "FALSE"), ("1", "0"), (" yes ", " N ")],
)
def test_labels_read_however_they_are_spelt(tmp_path, true, false):
    (tmp_path / "l.csv").write_text(f"episode_index,success\n0,{true}\n1,{false}\n2.0,{true}\n")
    assert read_labels(str(tmp_path / "l.csv")) == {0: True, 1: False, 2: True}
    pq.write_table(pa.table({"episode_index": [0, 1], "success": [1.0, 0.0]}), tmp_path / "l.parquet")
    (tmp_path / "l.json").write_text(json.dumps({"0": true.strip(), "1": 0}))
    for name in ("l.parquet", "l.json"):
        assert read_labels(str(tmp_path / name)) == {0: True, 1: False}


def test_a_label_that_is_none_of_those_names_its_file_line_and_value(tmp_path):
    labels = tmp_path / "l.csv"
    labels.write_text("episode_index,success\n0,yes\n1,maybe\n")
    with pytest.raises(CalibrationInputError) as err:
        read_labels(str(labels))
    assert str(err.value) == f"{labels}: line 3: success 'maybe' is not 1/0, true/false, yes/no, y/n, 1.0/0.0"
    labels.write_text("episode_index,success\n0,1\nzero,1\n")
    with pytest.raises(CalibrationInputError, match="line 3: episode_index 'zero' is not an index"):
        read_labels(str(labels))
    labels.write_text("episode_index,success\n0,1\n0,0\n")
    with pytest.raises(CalibrationInputError, match="line 3: episode 0 is labelled both ways"):
        read_labels(str(labels))


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_missing_or_malformed_inputs_are_one_line_and_exit_2(tmp_path, capsys):
    table = _table(tmp_path, [[-9.0] * 3, [-1.0] * 3])
    labels = tmp_path / "labels.csv"
    labels.write_text("episode_index,success\n0,0\n1,1\n")
    (tmp_path / "no_success.csv").write_text("episode_index,label\n0,0\n")
    (tmp_path / "broken.json").write_text('{"0": tru')
    (tmp_path / "garbage.parquet").write_bytes(b"not parquet at all")
    pq.write_table(pa.table({"episode_index": [0]}), tmp_path / "other.parquet")
    cases = [
        (table, tmp_path / "missing.csv", f"labels file not found: {tmp_path / 'missing.csv'}"),
        (
            table,
            tmp_path / "no_success.csv",
            "no_success.csv: no column success (columns: episode_index, label)",
        ),
        (table, tmp_path / "broken.json", "broken.json: unreadable labels file (JSONDecodeError"),
        (tmp_path / "gone.parquet", labels, f"episodes table not found: {tmp_path / 'gone.parquet'}"),
        (tmp_path / "garbage.parquet", labels, "garbage.parquet: not an episodes table (ArrowInvalid"),
        (tmp_path / "other.parquet", labels, "other.parquet: not an episodes table (no column"),
    ]
    for episodes, labels_file, message in cases:
        status, out, err = _run(capsys, episodes, labels_file)
        assert status == 2 and not out, (episodes, labels_file, out)
        assert err.startswith("jobs.calibrate: ") and err.count("\n") == 1 and message in err, err


def test_labelled_episodes_missing_from_the_table_are_named(tmp_path, capsys):
    table = _table(tmp_path, [[-9.0] * 3, [-1.0] * 3, [-8.5] * 3, [-2.0] * 3, None])
    labels = tmp_path / "labels.csv"
    labels.write_text("episode_index,success\n0,n\n1,y\n2,n\n3,y\n4,y\n7,y\n9,n\n")
    status, out, _ = _run(capsys, table, labels)
    assert status == 0
    assert "labelled episodes not in the table (2, left out): 7, 9" in out
    assert "labelled episodes not scored ok (1, left out): 4" in out
    assert "labelled episodes: 4 (2 successes, 2 failures)" in out
    labels.write_text("episode_index,success\n11,1\n12,0\n")
    status, out, err = _run(capsys, table, labels)
    assert status == 2 and err.count("\n") == 1
    assert "no scored episode of" in err and "not in the table (2, left out): 11, 12" in err


def test_table_and_labels_are_read_with_the_output_storage_options(s3, s3_options, tmp_path, capsys):
    _table(tmp_path, [[-9.0] * 3, [-1.0] * 3, [-8.5] * 3, [-2.0] * 3])
    s3.put_file(str(tmp_path / "episodes.parquet"), f"{BUCKET}/calibrate/so100/pick/episodes.parquet")
    s3.pipe(f"{BUCKET}/calibrate/labels.csv", b"episode_index,success\n0,N\n1,Y\n2,N\n3,Y\n")
    options = "{" + ", ".join(f"{k}: '{v}'" for k, v in s3_options.items()) + "}"
    base = f"s3://{BUCKET}/calibrate"
    status, out, err = _run(
        capsys,
        f"{base}/so100/pick/episodes.parquet",
        f"{base}/labels.csv",
        f"output.storage_options={options}",
    )
    assert status == 0, err
    assert "labelled episodes: 4 (2 successes, 2 failures)" in out and "ROC-AUC: 1.000" in out
    assert s3_options["secret"] not in out + err
