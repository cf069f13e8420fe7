"""The GPU stage: a callable class Ray Data runs in an actor pool, holding one loaded VLM per actor.

Input columns: the decoded episode (``frames``, ``frame_indices``, ``prefix_ends``, ``fps``, ``length``,
``task``, ``status``, ``error`` and the catalog's columns). Output: the same rows without ``frames``
(they are large and no later stage needs them), plus ``log_p_true`` and ``log_p_false`` per prefix,
``model`` and ``scored_at`` (UTC, when the row was scored). A row that fails to score is marked
``failed`` with the reason; the batch goes on.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime

import numpy as np
import ray

from pipeline.config import ModelConfig, ScoringConfig

# torch, transformers and the scorer are imported inside the actor, never on the driver that builds
# the graph: a driver that loads torch late (after Ray and PyAV) can fail to map its libraries
# (oneMKL "Cannot load libtorch_cpu.so"), and one that loads it early pays seconds for nothing. The
# in-process executor (pipeline.stages.inline) builds this scorer before it imports PyAV.

log = logging.getLogger(__name__)

CLIP_COLUMNS = ("frames", "frame_indices", "fps", "length", "prefix_ends")
# Errors after which the CUDA context is unusable: only a fresh process recovers.
_FATAL_DEVICE_MARKERS = ("CUDA error", "device-side assert", "illegal memory access", "NCCL error")


def is_fatal_device_error(err: BaseException) -> bool:
    """True for errors that poison the device (not out-of-memory, which one smaller episode survives)."""
    import torch

    if isinstance(err, torch.cuda.OutOfMemoryError):
        return False
    return isinstance(err, RuntimeError) and any(marker in str(err) for marker in _FATAL_DEVICE_MARKERS)


class ScoreEpisodes:
    """Scores a batch of decoded episodes with the cached TOPReward scorer."""

    def __init__(
        self,
        model: ModelConfig,
        scoring: ScoringConfig,
        threads: int | None = None,
        exit_on_fatal: bool = True,
    ) -> None:
        """Loads the model once.

        Args:
            model: What to load and where (device and dtype resolved by the driver).
            scoring: The prompt and the prefix batching.
            threads: torch CPU threads when scoring on CPU; None = all the node's cores.
            exit_on_fatal: A fatal device error ends the process, so Ray replaces the actor (a pool
                actor); False raises it instead (scoring in the driver's own process, which must live to
                record the run as broken).
        """
        self.exit_on_fatal = exit_on_fatal
        import torch
        from transformers.utils import logging as hf_logging

        from pipeline.scoring.scorer import PrefixScorer

        # The weight-loading bars would land in the driver's log once per actor; the log line below says
        # the same. (The run also sets HF_HUB_DISABLE_PROGRESS_BARS in the actor's runtime_env.)
        hf_logging.disable_progress_bar()
        self.scorer = PrefixScorer(model, scoring)
        self.model_name = model.path
        loaded = self.scorer.loaded
        if loaded.device.type == "cpu":
            # Ray sets OMP_NUM_THREADS=1 for fractional-CPU actors; CPU scoring wants the node's cores.
            torch.set_num_threads(threads or os.cpu_count() or 1)
        # get_runtime_context() would start a Ray of its own when called outside one; the driver's own
        # process (exit_on_fatal False) is on no Ray node, whatever Ray it started meanwhile.
        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() and exit_on_fatal else ""
        where = f"actor on Ray node {node}" if node else "in this process"
        log.info("scorer ready: %s on %s %s, %s", model.path, loaded.device, loaded.dtype, where)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Score each row of a numpy batch; failures go on the row."""
        from pipeline.scoring.inputs import EpisodeClip

        size = len(batch["episode_index"])
        true_lp: list[np.ndarray] = []
        false_lp: list[np.ndarray] = []
        status = list(batch["status"])
        error = list(batch["error"])
        scored_at: list[datetime | None] = []
        for i in range(size):
            scores = (np.zeros(0), np.zeros(0))
            if status[i] == "ok":
                try:
                    row = {key: batch[key][i] for key in CLIP_COLUMNS}
                    result = self.scorer.score(EpisodeClip.from_row(row), str(batch["task"][i]))
                    scores = (result.log_p_true, result.log_p_false)
                except Exception as err:
                    if is_fatal_device_error(err):
                        if not self.exit_on_fatal:
                            raise
                        # Exit so Ray replaces the actor and retries the batch on a healthy one.
                        log.critical("fatal device error, restarting scorer actor: %s", err)
                        os._exit(1)
                    status[i] = "failed"
                    error[i] = f"{batch['dataset_id'][i]} episode {batch['episode_index'][i]}: scoring: {err}"
            true_lp.append(scores[0])
            false_lp.append(scores[1])
            # Naive UTC: Ray's numpy batches cannot carry a timezone (the shard writer restores it).
            scored_at.append(datetime.now(UTC).replace(tzinfo=None) if status[i] == "ok" else None)
        out = {key: value for key, value in batch.items() if key != "frames"}
        out["status"] = np.array(status, dtype=object)
        out["error"] = np.array(error, dtype=object)
        out["log_p_true"] = _ragged(true_lp)
        out["log_p_false"] = _ragged(false_lp)
        out["model"] = np.array([self.model_name] * size, dtype=object)
        out["scored_at"] = np.array(scored_at, dtype=object)
        return out


def _ragged(arrays: list[np.ndarray]) -> np.ndarray:
    out = np.empty(len(arrays), dtype=object)
    out[:] = [np.asarray(a, dtype=np.float64) for a in arrays]
    return out
