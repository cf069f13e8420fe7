"""Per-episode labels from raw prefix scores: progress, per-frame progress, success, VOC (method.md §C–§F)."""

from __future__ import annotations

import numpy as np


def minmax_normalize(raw: np.ndarray) -> np.ndarray:
    """Min-max normalise one episode's raw prefix log-probs to [0, 1].

    As upstream and LeRobot do: empty stays empty, one value or a constant series becomes all ones,
    and no epsilon is added.
    """
    raw = np.asarray(raw, dtype=np.float64)
    if raw.size == 0:
        return raw.astype(np.float32)
    lo, hi = raw.min(), raw.max()
    if hi - lo == 0:
        return np.ones_like(raw, dtype=np.float32)
    return ((raw - lo) / (hi - lo)).astype(np.float32)


def per_frame_progress(prefix_last_raw: np.ndarray, progress: np.ndarray, num_raw: int) -> np.ndarray:
    """Progress for every raw frame, interpolated between the raw indices where the prefixes end.

    Frames before the first prefix end take its value; frames after the last take the last value.
    """
    frames = np.arange(num_raw, dtype=np.float64)
    return np.interp(frames, np.asarray(prefix_last_raw, dtype=np.float64), np.asarray(progress)).astype(
        np.float32
    )


def success_score(raw: np.ndarray, window: int = 3) -> float:
    """Mean raw log P("True") over the last ``window`` prefixes (the paper's success score)."""
    raw = np.asarray(raw, dtype=np.float64)
    if raw.size == 0:
        return float("nan")
    return float(raw[-window:].mean())


def value_order_correlation(values: np.ndarray) -> float:
    """Spearman correlation of values with time; NaN for fewer than 2 values or a constant series."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2 or np.allclose(values, values[0]):
        return float("nan")
    # Imported here: scipy.stats costs a second or more of start-up to every process that imports this
    # module (the driver, through pipeline.decision) and only scoring and evaluation compute a VOC.
    from scipy.stats import spearmanr

    return float(spearmanr(values, np.arange(values.size)).statistic)
