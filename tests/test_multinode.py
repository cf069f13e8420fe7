"""``ray job submit`` of jobs.relabel against real Ray nodes on 127.0.0.1, from and to moto S3.

Two nodes: the scorer pool is placed on the second through a custom resource only it has
(``ray.scorer_resources``). One job serves every test of this module (a cluster and a job cost about a
minute): each test checks its own facts about the same submission.
"""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
from ray.util.state import list_actors, list_nodes

from tests.conftest import BUCKET, PROJECT_ROOT
from tests.ray_nodes import RAY, in_session, ray_head, ray_worker

pytestmark = pytest.mark.slow
SCORER_RESOURCE = "scorer_node"
OUTPUT = f"s3://{BUCKET}/labels-multinode"


@pytest.fixture(scope="module")
def relabel_job(s3_options, synth_s3, tiny_model_dir) -> SimpleNamespace:
    """``ray job submit --working-dir <project> -- python -m jobs.relabel`` of episodes 0 and 3 of
    ``synth/v30`` on a head (1 CPU) and a second node (1 CPU and the custom resource), the scorers
    pinned to the second node. Returns the submitter's exit status, stdout and stderr (``log``: both),
    ``failure`` (their tails, for assertion messages), and the cluster's nodes and actors as the state API
    saw them after the job."""
    storage = "{" + ", ".join(f"{k}: '{v}'" for k, v in s3_options.items()) + "}"
    with ray_head(num_cpus=1) as head, ray_worker(head, num_cpus=1, resources={SCORER_RESOURCE: 1}) as worker:
        sessions = (head.session, worker)
        cmd = [
            RAY, "job", "submit", "--address", head.dashboard, "--working-dir", str(PROJECT_ROOT),
            "--submission-id", f"multinode-{os.getpid()}", "--",
            sys.executable, "-m", "jobs.relabel", f"source.uris=[{synth_s3}/v30]",
            f"source.storage_options={storage}", "source.episodes=[0,3]", f"output.uri={OUTPUT}",
            f"output.storage_options={storage}", f"model.path={tiny_model_dir}", "frames.height=64",
            "frames.width=64", "frames.max_frames=8", "prefixes.num=4", "curation.enabled=false",
            f"ray.scorer_resources={{{SCORER_RESOURCE}: 1}}",
        ]  # fmt: skip
        result = subprocess.run(cmd, env=head.env, capture_output=True, text=True, timeout=500)
        nodes = list_nodes(address=head.dashboard, detail=True)
        actors = list_actors(address=head.dashboard, detail=True, limit=1000)
    return SimpleNamespace(
        returncode=result.returncode,
        stdout=result.stdout,
        log=result.stdout + result.stderr,
        failure=result.stdout[-3000:] + result.stderr[-3000:],
        nodes=nodes,
        actors=actors,
        # Every process of both nodes, orphans included, once they are stopped.
        left_running=[proc.pid for session in sessions for proc in in_session(session)],
    )


def test_relabel_under_ray_job_submit(relabel_job, s3):
    assert relabel_job.returncode == 0, relabel_job.failure
    assert "succeeded" in relabel_job.log
    assert "scored" in relabel_job.stdout  # the job's summary table reaches the submitter
    # The pipeline's own INFO lines reach the job log too (job.log_level), and the run leaves its record.
    assert "INFO pipeline.relabel: catalog: 1 dataset(s), 2 episodes listed" in relabel_job.log
    assert len(s3.glob(f"{OUTPUT}/_runs/*.json")) == 1
    with s3.open(f"{OUTPUT}/synth/v30/episodes.parquet", "rb") as f:
        episodes = pq.read_table(f).to_pylist()
    assert [e["episode_index"] for e in episodes] == [0, 3]
    assert all(e["status"] == "ok" for e in episodes), episodes
    assert all(1 <= len(e["log_p_true"]) == len(e["prefix_frame_indices"]) <= 4 for e in episodes)


def test_scorer_pool_runs_on_the_node_with_the_resource(relabel_job):
    assert relabel_job.returncode == 0, relabel_job.failure
    assert f"x 0.5 CPU + 1 {SCORER_RESOURCE}" in relabel_job.stdout  # the summary says where it scored
    (scorer_node,) = [n.node_id for n in relabel_job.nodes if SCORER_RESOURCE in n.resources_total]
    scorers = [a for a in relabel_job.actors if SCORER_RESOURCE in (a.required_resources or {})]
    assert scorers, [(a.class_name, a.required_resources) for a in relabel_job.actors]
    assert {a.node_id for a in scorers} == {scorer_node}
    # Ray Data's pool actors are named after the stage they run.
    names = [f"{a.class_name} {a.repr_name}" for a in scorers]
    assert all("ScoreEpisodes" in name for name in names), names


def test_both_nodes_leave_no_process_behind(relabel_job):
    assert relabel_job.left_running == []
