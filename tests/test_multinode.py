"""Two Ray nodes on 127.0.0.1: the scorer pool is placed on the second through a custom resource only it
has (``ray.scorer_resources``), ``jobs.relabel`` runs under ``ray job submit`` from and to moto S3."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from ray.util.state import list_actors, list_nodes

from tests.conftest import BUCKET, PROJECT_ROOT
from tests.ray_nodes import RAY, ray_head, ray_worker

pytestmark = pytest.mark.slow
SCORER_RESOURCE = "scorer_node"


def test_scorer_pool_runs_on_the_node_with_the_resource(s3, s3_options, synth_s3, tiny_model_dir):
    output = f"s3://{BUCKET}/labels-multinode"
    storage = "{" + ", ".join(f"{k}: '{v}'" for k, v in s3_options.items()) + "}"
    with ray_head(num_cpus=1) as head, ray_worker(head, num_cpus=1, resources={SCORER_RESOURCE: 1}):
        cmd = [
            RAY, "job", "submit", "--address", head.dashboard, "--working-dir", str(PROJECT_ROOT),
            "--submission-id", f"multinode-{os.getpid()}", "--",
            sys.executable, "-m", "jobs.relabel", f"source.uris=[{synth_s3}/v30]",
            f"source.storage_options={storage}", "source.episodes=[0,3]", f"output.uri={output}",
            f"output.storage_options={storage}", f"model.path={tiny_model_dir}", "frames.height=64",
            "frames.width=64", "frames.max_frames=8", "prefixes.num=4", "curation.enabled=false",
            f"ray.scorer_resources={{{SCORER_RESOURCE}: 1}}",
        ]  # fmt: skip
        result = subprocess.run(cmd, env=head.env, capture_output=True, text=True, timeout=500)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert f"x 0.5 CPU + 1 {SCORER_RESOURCE}" in result.stdout  # the summary says where it scored

        nodes = list_nodes(address=head.dashboard, detail=True)
        (scorer_node,) = [n.node_id for n in nodes if SCORER_RESOURCE in n.resources_total]
        actors = list_actors(address=head.dashboard, detail=True, limit=1000)
        scorers = [a for a in actors if SCORER_RESOURCE in (a.required_resources or {})]
        assert scorers, [(a.class_name, a.required_resources) for a in actors]
        assert {a.node_id for a in scorers} == {scorer_node}
        # Ray Data's pool actors are named after the stage they run.
        names = [f"{a.class_name} {a.repr_name}" for a in scorers]
        assert all("ScoreEpisodes" in name for name in names), names

    with s3.open(f"{output}/synth/v30/episodes.parquet", "rb") as f:
        episodes = pq.read_table(f).to_pylist()
    assert [e["episode_index"] for e in episodes] == [0, 3]
    assert all(e["status"] == "ok" for e in episodes), episodes
    assert all(1 <= len(e["log_p_true"]) == len(e["prefix_frame_indices"]) <= 4 for e in episodes)
