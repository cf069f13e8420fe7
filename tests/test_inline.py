"""The in-process executor (``job.inline_max_episodes``, ``publish.inline_max_datasets``) against the
Ray Data graph and the publish tasks.

Both executors run the same stage functions with the same arguments; these tests check what that
promises: the same shards and markers (but for when they were written), byte-identical published
progress, and a bad episode recorded with the same status, error and attempt; and that a small local
job starts no Ray at all. They also check which runs take the in-process path.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.config import load_config
from pipeline.layout import EPISODES_FILE, PROGRESS_FILE
from tests.conftest import BROKEN_DATASET as DATASET
from tests.conftest import PROJECT_ROOT


def _env() -> dict[str, str]:
    return {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}


def _same(value: object) -> object:
    """``value`` with NaN as a string, so that a failed row's NaN ``voc`` compares equal to itself."""
    return "NaN" if isinstance(value, float) and math.isnan(value) else value


def _shards(output: Path) -> dict[str, list[dict]]:
    """Every committed shard's rows (sorted by episode) without ``scored_at``, by shard name."""
    shards = {}
    for path in sorted(output.glob("_state/*/*/*/*.parquet")):
        rows = pq.read_table(path).drop_columns(["scored_at"]).to_pylist()
        rows = [{key: _same(value) for key, value in row.items()} for row in rows]
        shards[path.name] = sorted(rows, key=lambda row: row["episode_index"])
    return shards


def _markers(output: Path) -> dict[str, dict]:
    """Every marker without ``committed_at``, by file name."""
    markers = {}
    for path in sorted(output.glob("_state/*/*/*/*.done.json")):
        marker = json.loads(path.read_text())
        marker.pop("committed_at")
        markers[path.name] = marker
    return markers


def _failures(output: Path) -> list[dict]:
    (record,) = (output / "_runs").glob("*.json")
    return json.loads(record.read_text())["failures"]


@pytest.mark.slow
def test_in_process_run_writes_what_the_ray_graph_writes(broken_run, tmp_path, tiny_model_dir):
    source, by_ray, in_process = broken_run.source, broken_run.output, tmp_path / "inline"

    # The Ray Data graph: the session's run, connected to its Ray, so it never scored inline.
    summary = broken_run.summary
    assert summary.placement is not None and not summary.placement.in_process
    assert (summary.datasets[DATASET].scored, summary.datasets[DATASET].failed) == (2, 1)

    # The job on its own, with no Ray yet: 3 episodes <= job.inline_max_episodes, on CPU.
    ray_temp = tmp_path / "ray-temp"  # where a local Ray would keep its session: it must stay empty
    args = [
        f"source.uris=[{source}]", f"output.uri={in_process}", f"model.path={tiny_model_dir}",
        "frames.height=64", "frames.width=64", "frames.max_frames=8", "prefixes.num=4",
        "success.threshold=-1000", "ray.num_cpus=2", f"ray.temp_dir={ray_temp}",
    ]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "jobs.relabel", *args],
        cwd=PROJECT_ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "in the driver's process (job.inline_max_episodes)" in done.stdout, done.stdout
    # One dataset changed: published in the job's own process too, so Ray never started.
    assert "publishing in this process" in done.stderr, done.stderr[-3000:]
    assert not ray_temp.exists() or not any(ray_temp.iterdir())
    (record,) = (in_process / "_runs").glob("*.json")
    assert json.loads(record.read_text())["placement"]["in_process"] is True

    # The same shards and markers (their names follow from episodes, fingerprints and attempts)...
    assert _shards(in_process) == _shards(by_ray) and _shards(by_ray)
    assert _markers(in_process) == _markers(by_ray)
    # ... the same bytes published for RA-BC, the same episodes file but for when each was scored ...
    progress = [(root / DATASET / PROGRESS_FILE).read_bytes() for root in (by_ray, in_process)]
    assert progress[0] == progress[1]
    episodes = [
        pq.read_table(root / DATASET / EPISODES_FILE).drop_columns(["scored_at"])
        for root in (by_ray, in_process)
    ]
    assert [{k: _same(v) for k, v in row.items()} for row in episodes[0].to_pylist()] == [
        {k: _same(v) for k, v in row.items()} for row in episodes[1].to_pylist()
    ]
    # ... and the corrupt episode recorded the same way: failed, naming its video, at attempt 1.
    bad = [row for row in episodes[1].to_pylist() if row["status"] == "failed"]
    assert [(row["episode_index"], row["attempt"]) for row in bad] == [(1, 1)]
    assert "episode_000001.mp4" in bad[0]["error"]
    assert _failures(in_process) == _failures(by_ray) and len(_failures(by_ray)) == 1


def test_which_runs_score_in_process(monkeypatch, tmp_path):
    import ray

    from pipeline.relabel import scores_in_process

    cfg = load_config([f"source.uris=[{tmp_path}]", f"output.uri={tmp_path / 'out'}", "model.device=cpu"])
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    limit = cfg.job.inline_max_episodes
    assert limit > 0
    assert scores_in_process(cfg, 1) and scores_in_process(cfg, limit)
    assert not scores_in_process(cfg, 0)  # nothing to score: no scorer either
    assert not scores_in_process(cfg, limit + 1)
    assert not scores_in_process(replace(cfg, job=replace(cfg.job, inline_max_episodes=0)), 1)
    assert not scores_in_process(replace(cfg, model=replace(cfg.model, device="cuda")), 1)
    assert not scores_in_process(replace(cfg, ray=replace(cfg.ray, address="10.0.0.1:6379")), 1)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # under ray job submit: the cluster's actors
    assert not scores_in_process(cfg, 1)
    monkeypatch.delenv("RAY_ADDRESS")
    monkeypatch.setattr(ray, "is_initialized", lambda: True)  # connected already: nothing to save
    assert not scores_in_process(cfg, 1)


def test_negative_inline_limits_are_refused(tmp_path):
    from pipeline.config import ConfigError

    for key in ("job.inline_max_episodes", "publish.inline_max_datasets"):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config([f"source.uris=[{tmp_path}]", f"output.uri={tmp_path}/o", f"{key}=-1"])
