"""Committed labels without a model: shards with chosen success scores, for publishing tests and benches.

The rows have the real shard layout (``pipeline.sinks``) and per-frame progress rising 0..1 over each
episode; only the scores are made up, so everything downstream of scoring runs for real.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pipeline.publish import PublishJob
from pipeline.sinks import batch_to_table, commit_shard, committed_state, needs_folding, state_uri
from pipeline.storage import filesystem_for, list_files

CONFIG_HASH = "fakehash0000"
MODEL = "fake/vlm"


def lengths_of(root: str | Path) -> list[int]:
    """Episode lengths of a local v3.0 dataset, from its episodes index."""
    table = pq.read_table(Path(root) / "meta" / "episodes", columns=["episode_index", "length"])
    return [length for _, length in sorted(zip(*table.to_pydict().values(), strict=True))]


def _objects(arrays: list[np.ndarray]) -> np.ndarray:
    """A 1-D object column of arrays (as Ray's numpy batches carry list columns)."""
    column = np.empty(len(arrays), dtype=object)
    for i, array in enumerate(arrays):
        column[i] = array
    return column


def commit_scores(
    root: str, dataset_id: str, output: str, scores: dict[int, float], lengths: list[int], options: dict
) -> None:
    """Commits one shard of ``ok`` rows for the episodes in ``scores``, with those success scores."""
    episodes = sorted(scores)
    starts = np.cumsum([0, *lengths])
    size = len(episodes)
    batch = {
        "dataset_id": np.array([dataset_id] * size, dtype=object),
        "root": np.array([root] * size, dtype=object),
        "episode_index": np.array(episodes),
        "length": np.array([lengths[e] for e in episodes]),
        "dataset_from_index": np.array([starts[e] for e in episodes]),
        "dataset_to_index": np.array([starts[e + 1] for e in episodes]),
        "fingerprint": np.array([f"fp{e}" for e in episodes], dtype=object),
        "attempt": np.array([1] * size),
        "status": np.array(["ok"] * size, dtype=object),
        "error": np.array([""] * size, dtype=object),
        "prefix_frame_indices": _objects([np.array([lengths[e] - 1]) for e in episodes]),
        "log_p_true": _objects([np.array([scores[e]]) for e in episodes]),
        "log_p_false": _objects([np.array([-1.0]) for e in episodes]),
        "progress": _objects([np.array([1.0], np.float32) for e in episodes]),
        "frame_progress": _objects([np.linspace(0, 1, lengths[e], dtype=np.float32) for e in episodes]),
        "success_score": np.array([scores[e] for e in episodes]),
        "voc": np.array([1.0] * size),
        "model": np.array([MODEL] * size, dtype=object),
    }
    commit_shard(batch_to_table(batch, CONFIG_HASH), state_uri(output, CONFIG_HASH, dataset_id), options)


def job_for(
    root: str, dataset_id: str, output: str, options: dict, compact_markers: int | None = None
) -> PublishJob:
    """The publish job of a dataset: its committed entries (as the relabel run builds them).

    ``compact_markers``: as the run's ``output.compact_markers``, the shards are folded into one while
    publishing when the state folder holds more markers than that; None never folds them (a test that
    counts a publish's writes one by one).
    """
    folder = state_uri(output, CONFIG_HASH, dataset_id)
    state = committed_state(folder, options)
    compact = False
    if compact_markers is not None:
        fs, path = filesystem_for(folder, options)
        compact = needs_folding(list_files(fs, path, maxdepth=1), compact_markers)
    episodes = tuple(sorted(state.values(), key=lambda e: e.episode_index))
    return PublishJob(dataset_id, root, folder, episodes, compact=compact)
