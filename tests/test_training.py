"""From relabel outputs on object storage to LeRobot training (``lerobot[training]``), offline on CPU.

The outputs of a relabel run to (moto) S3 (the session's ``golden_run``) are pulled to local disk with
``jobs.pull``, because LeRobot's trainer reads ``--dataset.root`` and ``--sample_weighting.progress_path``
from local disk only; then:

* ``lerobot-train`` trains a small ACT, built from config (no pretrained backbone, nothing downloaded),
  for 2 steps on the curated dataset and writes a checkpoint;
* RA-BC on the original dataset: in LeRobot 0.6.1 only policies whose ``forward`` takes ``reduction``
  support it (pi0, pi05, smolvla, evo1, molmoact2), and every one of them needs pretrained weights, a
  tokenizer or a backbone config from the Hugging Face Hub, so none can be built offline. Instead the
  test computes the weights with LeRobot's own RA-BC weighter (``make_sample_weighter``, what
  ``lerobot-train --sample_weighting.type=rabc`` builds) for a policy built from config, over the
  batches LeRobot's own dataset and loader yield for the original dataset.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from jobs.pull import main as pull_main
from pipeline.layout import CURATED_DIR, PROGRESS_FILE
from tests.conftest import SYNTH_LENGTHS

pytestmark = pytest.mark.slow

CHUNK = 5
# A small ACT: no pretrained ResNet weights (that would be a download), one encoder and decoder layer.
TINY_ACT = {
    "pretrained_backbone_weights": None,
    "dim_model": 32,
    "dim_feedforward": 64,
    "n_heads": 2,
    "n_encoder_layers": 1,
    "n_decoder_layers": 1,
    "chunk_size": CHUNK,
    "n_action_steps": CHUNK,
    "use_vae": False,
}


def _storage(options: dict) -> str:
    return "{" + ", ".join(f"{k}: '{v}'" for k, v in options.items()) + "}"


@pytest.fixture(scope="module")
def pulled(golden_run, tmp_path_factory) -> Path:
    """The session's golden relabel run (S3 to S3), its outputs for ``synth/v30`` pulled to a local folder."""
    dataset_id = golden_run.datasets["v30"]
    dataset = golden_run.summary.datasets[dataset_id]
    assert dataset.published and dataset.published.curated_episodes == len(SYNTH_LENGTHS)
    local = tmp_path_factory.mktemp("pulled") / "v30"
    storage = f"output.storage_options={_storage(golden_run.s3_options)}"
    assert pull_main([f"{golden_run.output}/{dataset_id}", str(local), storage]) == 0
    return local


def test_lerobot_train_on_curated_set(pulled, tmp_path):
    out = tmp_path / "train"
    command = [
        str(Path(sys.executable).parent / "lerobot-train"),
        "--dataset.repo_id=curated/v30",
        f"--dataset.root={pulled / CURATED_DIR}",
        "--dataset.video_backend=pyav",
        "--policy.type=act",
        "--policy.device=cpu",
        "--policy.push_to_hub=false",
        *(f"--policy.{k}={'null' if v is None else str(v).lower()}" for k, v in TINY_ACT.items()),
        "--batch_size=2",
        "--steps=2",
        "--num_workers=0",
        "--log_freq=1",
        "--save_freq=2",
        "--wandb.enable=false",
        f"--output_dir={out}",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert f"dataset.num_episodes={len(SYNTH_LENGTHS)}" in log
    assert "step:2 " in log
    assert (out / "checkpoints" / "000002" / "pretrained_model" / "model.safetensors").is_file()


def test_rabc_weights_from_lerobots_weighter(pulled, synth_dir):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from lerobot.policies.act.configuration_act import ACTConfig
    from lerobot.policies.factory import make_policy
    from lerobot.utils.sample_weighting import SampleWeightingConfig, make_sample_weighter

    dataset = LeRobotDataset("synth/v30", root=synth_dir / "v30", video_backend="pyav")
    policy = make_policy(ACTConfig(device="cpu", **TINY_ACT), ds_meta=dataset.meta)
    weighting = SampleWeightingConfig(
        type="rabc", progress_path=str(pulled / PROGRESS_FILE), head_mode="sparse"
    )
    weighter = make_sample_weighter(weighting, policy, torch.device("cpu"))
    # The progress file covers every frame of the original dataset, by its global index.
    assert weighter.get_stats()["num_frames"] == dataset.meta.total_frames == sum(SYNTH_LENGTHS)

    weights = []
    for batch in torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=False):
        assert all(int(i) in weighter.progress_lookup for i in batch["index"])
        batch_weights, stats = weighter.compute_batch_weights(batch)
        assert batch_weights.shape == batch["index"].shape
        assert torch.isfinite(batch_weights).all() and (batch_weights >= 0).all()
        # Normalised to sum to the batch size, as the trainer's weighted loss expects.
        assert float(batch_weights.sum()) == pytest.approx(len(batch_weights), rel=1e-4)
        assert 0 <= stats["mean_weight"] <= 1
        weights.append(batch_weights)
    # The progress drives the weights: they are not the uniform fallback.
    assert torch.cat(weights).std() > 0
