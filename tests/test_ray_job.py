"""``ray job submit`` against a real head node on loopback runs jobs.relabel and writes its outputs."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from tests.conftest import PROJECT_ROOT
from tests.ray_nodes import RAY
from tests.ray_nodes import ray_head as start_head

pytestmark = pytest.mark.slow


@pytest.fixture
def ray_head():
    """A head node on 127.0.0.1 with its own ports and temp dir; yields the dashboard address and env."""
    with start_head(num_cpus=2) as head:
        yield head.dashboard, head.env


def test_relabel_under_ray_job_submit(ray_head, synth_dir, tiny_model_dir, tmp_path):
    address, env = ray_head
    output = tmp_path / "labels"
    cmd = [
        RAY, "job", "submit", "--address", address, "--working-dir", str(PROJECT_ROOT),
        "--submission-id", f"relabel-{os.getpid()}", "--",
        sys.executable, "-m", "jobs.relabel", f"source.uris=[{synth_dir / 'v30'}]", f"output.uri={output}",
        f"model.path={tiny_model_dir}", "frames.height=64", "frames.width=64", "frames.max_frames=8",
    ]  # fmt: skip
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "succeeded" in result.stdout + result.stderr
    assert "scored" in result.stdout  # the job's summary table reaches the submitter
    # The pipeline's own INFO lines reach the job log too (job.log_level), and the run leaves its record.
    assert "INFO pipeline.catalog: catalog: 4 episode rows" in result.stdout + result.stderr
    assert len(list((output / "_runs").glob("*.json"))) == 1
    dataset_dir = next(output.glob("*/v30"))
    episodes = pq.read_table(dataset_dir / "episodes.parquet").to_pylist()
    assert len(episodes) == 4 and all(e["status"] == "ok" for e in episodes)
