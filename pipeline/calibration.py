"""Success-threshold calibration from a few labelled episodes: ROC-AUC and the Youden-optimal threshold."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from scipy.stats import mannwhitneyu

from pipeline.storage import filesystem_for


@dataclass(frozen=True)
class Calibration:
    """ROC-AUC of the success score and the threshold maximising Youden's J (TPR - FPR)."""

    auc: float
    threshold: float
    youden_j: float
    true_positive_rate: float
    false_positive_rate: float
    positives: int
    negatives: int


def calibrate(scores: np.ndarray, labels: np.ndarray) -> Calibration:
    """Calibrate ``success = score > threshold`` against ground-truth labels.

    Raises:
        ValueError: the labels hold only one class (AUC and J are undefined).
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        raise ValueError(f"need both successes and failures, got {positives} and {negatives}")
    # AUC is the Mann-Whitney U statistic normalised: P(score of a success > score of a failure).
    auc = mannwhitneyu(scores[labels], scores[~labels]).statistic / (positives * negatives)
    levels = np.unique(scores)
    # Thresholds halfway between observed scores (and below the lowest) give every distinct split.
    candidates = np.concatenate([[levels[0] - 1.0], (levels[:-1] + levels[1:]) / 2])
    predicted = scores[None, :] > candidates[:, None]
    tpr = (predicted & labels).sum(axis=1) / positives
    fpr = (predicted & ~labels).sum(axis=1) / negatives
    best = int(np.argmax(tpr - fpr))
    return Calibration(
        auc=float(auc),
        threshold=float(candidates[best]),
        youden_j=float(tpr[best] - fpr[best]),
        true_positive_rate=float(tpr[best]),
        false_positive_rate=float(fpr[best]),
        positives=positives,
        negatives=negatives,
    )


def read_labels(uri: str, storage_options: dict[str, Any] | None = None) -> dict[int, bool]:
    """Ground-truth labels from ``.csv``/``.parquet`` (columns episode_index, success) or ``.json``.

    JSON may be an object ``{"<episode_index>": true, ...}`` or a list of ``{episode_index, success}``.
    """
    fs, path = filesystem_for(uri, storage_options)
    with fs.open(path, "rb") as f:
        if path.endswith(".json"):
            data = json.load(f)
            if isinstance(data, dict):
                return {int(k): bool(v) for k, v in data.items()}
            return {int(item["episode_index"]): bool(item["success"]) for item in data}
        table = pq.read_table(f) if path.endswith(".parquet") else pacsv.read_csv(f)
    success = [str(v).lower() in ("1", "true", "yes") for v in table.column("success").to_pylist()]
    return dict(zip(map(int, table.column("episode_index").to_pylist()), success, strict=True))
