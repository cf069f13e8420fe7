"""Honest exit codes: a run that found nothing or in which nothing succeeded never exits 0.

4 (no dataset under a source) is run end to end in tests/test_preflight.py; 143 in tests/test_signals.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devkit.synth import write_v30_dataset
from jobs.relabel import (
    EXIT_FAILURES,
    EXIT_NO_DATASET,
    EXIT_NOTHING_SUCCEEDED,
    EXIT_OK,
    exit_status,
)
from pipeline.publish import PublishOutcome
from pipeline.relabel import DatasetSummary, RunSummary
from tests.conftest import PROJECT_ROOT


def _published(dataset_id: str) -> PublishOutcome:
    return PublishOutcome(dataset_id, "published", "", "", "", None, 0, 0.0, True)


def _summary(*datasets: DatasetSummary, missing: tuple[str, ...] = ()) -> RunSummary:
    summary = RunSummary("h", 1.0, {d.dataset_id: d for d in datasets})
    summary.missing_sources = list(missing)
    return summary


@pytest.mark.parametrize("fail_on_errors", [False, True])
def test_exit_status_order_is_4_then_5_then_3(fail_on_errors):
    good = DatasetSummary("lab/good", scored=2, publish=_published("lab/good"))
    bad = DatasetSummary("lab/bad", failed=2, errors=["lab/bad episode 0: x", "lab/bad episode 1: x"])
    gone = DatasetSummary("lab/gone", catalog_error="lab/gone: /f/lab/gone/meta/info.json: not found")

    assert exit_status(_summary(good), fail_on_errors) == (EXIT_OK, "")
    assert exit_status(_summary(good, gone, missing=("/f/lab/gone",)), fail_on_errors)[0] == EXIT_NO_DATASET
    assert exit_status(_summary(gone, missing=("/f/lab/gone",)), fail_on_errors)[0] == EXIT_NO_DATASET
    code, reason = exit_status(_summary(bad), fail_on_errors)
    assert (code, reason) == (EXIT_NOTHING_SUCCEEDED, "nothing succeeded: 2 failure(s), no episode published")
    partial = exit_status(_summary(good, bad), fail_on_errors)[0]
    assert partial == (EXIT_FAILURES if fail_on_errors else EXIT_OK)


def _job(tmp_path: Path, source: Path, model: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [
            sys.executable, "-m", "jobs.relabel", f"source.uris=[{source}]", f"output.uri={tmp_path / 'out'}",
            f"model.path={model}", "frames.height=64", "frames.width=64", "frames.max_frames=8",
            "prefixes.num=4", "ray.num_cpus=1", *extra,
        ],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def _fps0(root: Path) -> Path:
    dataset = write_v30_dataset(root, lengths=(8,))
    info = json.loads((dataset / "meta/info.json").read_text())
    (dataset / "meta/info.json").write_text(json.dumps({**info, "fps": 0}))
    return dataset


def test_a_run_where_nothing_succeeded_exits_5(tmp_path, tiny_model_dir):
    source = _fps0(tmp_path / "fleet" / "lab" / "fps0")
    job = _job(tmp_path, source, tiny_model_dir)
    assert job.returncode == EXIT_NOTHING_SUCCEEDED, job.stderr[-2000:]
    assert "lab/fps0: FAILED" in job.stdout and "fps 0 is out of range" in job.stdout
    assert "nothing succeeded: 1 failure(s), no episode published (exit 5)" in job.stderr
    (record,) = (tmp_path / "out" / "_runs").glob("*.json")
    assert json.loads(record.read_text())["status"] == "completed"


@pytest.mark.slow
def test_some_failures_exit_3_only_with_fail_on_errors(tmp_path, tiny_model_dir):
    fleet = tmp_path / "fleet"
    write_v30_dataset(fleet / "lab" / "good", lengths=(8, 8))
    _fps0(fleet / "lab" / "fps0")
    job = _job(tmp_path, fleet, tiny_model_dir, "job.fail_on_errors=true", "job.progress_interval_s=1")
    assert job.returncode == EXIT_FAILURES, job.stderr[-2000:]
    assert "1 failure(s) recorded and job.fail_on_errors=true (exit 3)" in job.stderr
    assert "lab/good: published" in job.stdout and "lab/fps0: FAILED" in job.stdout
    for line in (
        "catalog: 1 dataset(s), 2 episodes listed; 1 dataset(s) could not be listed",
        "plan: run ",
        ": 2 episodes to score, 0 already labelled (skipped), 0 given up",
        "scoring: started, 2 episodes pending",
        "publish: lab/good: published",
    ):
        assert line in job.stderr, line
