"""``ray job submit`` against a real head node on loopback runs jobs.relabel and writes its outputs."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from devkit.local_s3 import free_port
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).parent / "ray")


def _stop_tree(process: subprocess.Popen) -> None:
    """Stop the head and everything it started (``ray stop`` would also stop other local clusters)."""
    try:
        family = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for proc in family:
        proc.terminate()
    _, alive = psutil.wait_procs(family, timeout=15)
    for proc in alive:
        proc.kill()
    process.wait(timeout=10)


@pytest.fixture
def ray_head():
    """``ray start --head`` on 127.0.0.1 with its own ports and temp dir; yields the dashboard address."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    dashboard = free_port()
    # Short path: Ray's unix socket paths under the temp dir must stay below ~107 characters.
    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", f"--port={free_port()}", "--node-ip-address=127.0.0.1",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--num-cpus=2",
         f"--ray-client-server-port={free_port()}", f"--temp-dir={temp_dir}", "--disable-usage-stats",
         # Own agent ports: another Ray on this machine (the session fixture's) holds the defaults.
         f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
         f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 90
        while subprocess.run(
            [RAY, "job", "list", "--address", address], env=env, capture_output=True
        ).returncode:
            assert head.poll() is None, "ray start exited"
            assert time.monotonic() < deadline, "ray head did not come up"
            time.sleep(2)
        yield address, env
    finally:
        _stop_tree(head)
        subprocess.run(["rm", "-rf", temp_dir], check=False)


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
    dataset_dir = next(output.glob("*/v30"))
    episodes = pq.read_table(dataset_dir / "episodes.parquet").to_pylist()
    assert len(episodes) == 4 and all(e["status"] == "ok" for e in episodes)
