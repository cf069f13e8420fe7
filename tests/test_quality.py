"""Quality flags (pipeline.quality) on single rows, and the printed lerobot-edit-dataset command run for real
on a synthetic local LeRobot v3.0 dataset: it removes exactly the flagged episodes."""

from __future__ import annotations

import html
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipeline.quality import FLAGS, QualityConfig, delete_command, episode_flags, flagged_episodes, is_local

VIDEO = "/data/so100/pick/videos/observation.images.front/chunk-000/file-000.mp4"
WINDOW = 3


def _row(**values) -> dict:
    """A scored episode that rises steadily: no flag."""
    raw = [-6.0, -5.0, -4.0, -3.0, -2.0, -1.0]
    row = {
        "episode_index": 0,
        "status": "ok",
        "error": "",
        "length": 60,
        "video_uri": VIDEO,
        "prefix_frame_indices": [9, 19, 29, 39, 49, 59],
        "log_p_true": raw,
        "progress": [(v + 6) / 5 for v in raw],
        "voc": 1.0,
    }
    return row | values


def test_a_steady_episode_has_no_flag():
    assert episode_flags(_row(), QualityConfig(), WINDOW) == ()


def test_decode_failed_is_a_failed_row_whose_error_names_its_video():
    error = f"so100/pick episode 0: {VIDEO}: cannot read video (Invalid data found)"
    assert episode_flags(_row(status="failed", error=error), QualityConfig(), WINDOW) == ("decode_failed",)
    # A scoring error or a metadata error that does not name the video is not a decode failure.
    scoring = f"so100/pick episode 0: scoring: CUDA out of memory ({VIDEO})"
    assert episode_flags(_row(status="failed", error=scoring), QualityConfig(), WINDOW) == ()
    catalog = "so100/pick: episode 0: /data/so100/pick/meta/episodes/x.parquet: no task text"
    assert episode_flags(_row(status="failed", error=catalog), QualityConfig(), WINDOW) == ()


def test_too_short_is_fewer_frames_than_the_schedule_needs():
    one_frame = _row(status="failed", length=1, error=f"x episode 0: {VIDEO}: episode has 1 frame(s)")
    assert episode_flags(one_frame, QualityConfig(), WINDOW) == ("too_short",)
    # Three prefixes: the success score would average the whole episode (window 3); four are needed.
    three = _row(prefix_frame_indices=[3, 7, 11], log_p_true=[-3.0, -2.0, -1.0], progress=[0, 0.5, 1])
    assert episode_flags(three, QualityConfig(), WINDOW) == ("too_short",)
    assert episode_flags(three, QualityConfig(min_prefixes=3), WINDOW) == ()
    assert episode_flags(_row(), QualityConfig(), success_window=6) == ("too_short",)


def test_flat_progress_is_a_narrow_raw_range_and_nothing_else():
    raw = [-2.0, -2.03, -1.99, -2.01, -2.0, -1.98]  # range 0.05: its normalised progress is noise
    lo, hi = min(raw), max(raw)
    flat = _row(log_p_true=raw, progress=[(v - lo) / (hi - lo) for v in raw], voc=0.1)
    assert "flat_progress" in episode_flags(flat, QualityConfig(), WINDOW)
    assert "flat_progress" not in episode_flags(flat, QualityConfig(flat_log_p_range=0.04), WINDOW)
    # A constant series: progress all ones and VOC undefined; flat only.
    constant = _row(log_p_true=[-2.0] * 6, progress=[1.0] * 6, voc=float("nan"))
    assert episode_flags(constant, QualityConfig(), WINDOW) == ("flat_progress",)


def test_progress_that_falls_at_the_end():
    falls = _row(
        log_p_true=[-6.0, -4.0, -1.0, -2.0, -3.0, -4.0], progress=[0, 0.4, 1, 0.8, 0.6, 0.4], voc=0.4
    )
    assert episode_flags(falls, QualityConfig(), WINDOW) == ("falls_at_end",)
    assert episode_flags(falls, QualityConfig(end_drop=0.7), WINDOW) == ()


def test_low_voc_below_the_threshold_key():
    assert episode_flags(_row(voc=0.1), QualityConfig(), WINDOW) == ("low_voc",)
    assert episode_flags(_row(voc=0.1), QualityConfig(min_voc=0.0), WINDOW) == ()
    assert episode_flags(_row(voc=None), QualityConfig(), WINDOW) == ()


def test_numpy_rows_and_several_flags():
    row = _row(
        prefix_frame_indices=np.array([3, 7]),
        log_p_true=np.array([-1.0, -1.05]),
        progress=np.array([1.0, 0.0], dtype=np.float32),
        voc=-1.0,
    )
    assert episode_flags(row, QualityConfig(), WINDOW) == (
        "too_short",
        "flat_progress",
        "falls_at_end",
        "low_voc",
    )


def test_flagged_episodes_by_flag():
    rows = [
        _row(episode_index=0),
        _row(episode_index=3, voc=0.0),
        _row(episode_index=1, voc=-0.5),
        _row(episode_index=2, status="failed", error=f"x: {VIDEO}: file not found"),
    ]
    found = flagged_episodes(rows, QualityConfig(), WINDOW)
    assert list(found) == list(FLAGS)
    assert found["low_voc"] == [1, 3] and found["decode_failed"] == [2] and found["too_short"] == []


def test_config_check_names_the_key():
    assert QualityConfig().check() == []
    assert QualityConfig(end_drop=2).check() == ["report.quality.end_drop must be in [0, 1]"]
    assert QualityConfig(min_prefixes=0).check() == ["report.quality.min_prefixes must be >= 1 or null"]


def test_delete_command_syntax():
    assert delete_command("so100/pick", "/data/so100/pick", [4, 1, 4]) == (
        "lerobot-edit-dataset --repo_id so100/pick --root /data/so100/pick --new_root /data/so100/pick "
        '--operation.type delete_episodes --operation.episode_indices "[1, 4]"'
    )
    command = delete_command("a/b", "file:///data/my sets/b", [0])
    assert shlex.split(command)[4:7] == ["/data/my sets/b", "--new_root", "/data/my sets/b"]
    assert is_local("/data/x") and is_local("file:///data/x") and not is_local("s3://bucket/x")


LENGTHS = (20, 21, 22, 23, 24, 25)
CAMERA = "observation.images.front"


def _published(output: Path, root: Path, dataset_id: str) -> list[int]:
    """An episodes.parquet for the dataset at ``root`` in which episodes 1 (decode failed) and 4 (VOC
    -0.6) are flagged; returns them."""
    from pipeline.config import load_config
    from pipeline.decision import decide
    from pipeline.layout import OutputLayout
    from pipeline.publish import EPISODE_COLUMNS
    from pipeline.runrecord import RunRecord
    from pipeline.sinks import SHARD_SCHEMA

    video = f"{root}/videos/{CAMERA}/chunk-000/file-000.mp4"
    rows = []
    for index, length in enumerate(LENGTHS):
        row = _row(episode_index=index, length=length, video_uri=video, camera=CAMERA, root=str(root))
        if index == 1:
            row.update(status="failed", error=f"{dataset_id} episode 1: {video}: cannot read video (EOF)")
        if index == 4:
            row.update(voc=-0.6)
        rows.append({k: v for k, v in row.items() if k != "root"} | {"dataset_id": dataset_id})
    cfg = load_config([f"output.uri={output}"])
    table = decide(pa.Table.from_pylist(rows, schema=SHARD_SCHEMA), cfg.success, cfg.curation)
    layout = OutputLayout(str(output)).dataset(dataset_id)
    layout_path = Path(layout.episodes)
    layout_path.parent.mkdir(parents=True)
    pa.parquet.write_table(table.select(list(EPISODE_COLUMNS)), layout_path)
    record = RunRecord(str(output), {}, "c0ffee", config=asdict(cfg))
    record.finish("completed")
    Path(layout.record).write_text(json.dumps({"run_id": record.run_id}))
    return [1, 4]


@pytest.mark.slow
def test_the_printed_command_removes_exactly_the_flagged_episodes(tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata

    from devkit.synth import write_v30_dataset
    from jobs.report import main as report_main

    dataset_id = "so100/pick"
    root = write_v30_dataset(
        tmp_path / "source" / "so100" / "pick", repo_id=dataset_id, lengths=LENGTHS, cameras=(CAMERA,)
    )
    flagged = _published(tmp_path / "labels", root, dataset_id)
    out = tmp_path / "report"
    assert (
        report_main([f"output.uri={tmp_path / 'labels'}", f"report.out={out}", "report.max_episodes=0"]) == 0
    )
    page = (out / f"{dataset_id}.html").read_text(encoding="utf-8")
    command = html.unescape(re.search(r"<pre class='command' id='delete-command'>(.*?)</pre>", page).group(1))
    assert command == delete_command(dataset_id, str(root), flagged)
    assert "edits a LeRobot v3.0 dataset on local disk" in page

    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    kept = LeRobotDatasetMetadata(dataset_id, root=root)
    assert kept.total_episodes == len(LENGTHS) - len(flagged)
    lengths = [int(n) for n in kept.episodes["length"]]
    assert lengths == [n for i, n in enumerate(LENGTHS) if i not in flagged]  # exactly those removed
    assert kept.total_frames == sum(lengths)
    original = LeRobotDatasetMetadata(dataset_id, root=root.with_name(root.name + "_old"))
    assert original.total_episodes == len(LENGTHS)  # LeRobot's backup of the source
