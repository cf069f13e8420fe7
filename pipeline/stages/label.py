"""The label stage: progress, per-frame progress, success, VOC and the curation decision for one row.

Input: a scored row (``log_p_true``, ``prefix_ends``, ``frame_indices``, ``length``, ``status``).
Output: the row plus ``prefix_frame_indices`` (raw index of each prefix's last frame), ``progress``
(normalised, per prefix), ``frame_progress`` (one value per raw frame), ``success_score``, ``success``,
``voc`` and ``selected``. Failed rows get empty arrays and NaN/False so the schema stays uniform.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.config import CurationConfig, SuccessConfig
from pipeline.labels import minmax_normalize, per_frame_progress, success_score, value_order_correlation


def is_selected(
    status: str, success: bool, voc: float, final_progress: float, curation: CurationConfig
) -> bool:
    """Whether an episode goes into the curated BC dataset."""
    if status != "ok" or (curation.require_success and not success):
        return False
    if curation.min_voc is not None and not (voc >= curation.min_voc):
        return False
    return curation.min_final_progress is None or final_progress >= curation.min_final_progress


def label_episode(row: dict[str, Any], success: SuccessConfig, curation: CurationConfig) -> dict[str, Any]:
    """Add labels to one scored episode row (a Ray Data ``map`` function)."""
    raw = np.asarray(row["log_p_true"], dtype=np.float64)
    if row["status"] != "ok" or raw.size == 0:
        row.update(
            prefix_frame_indices=np.zeros(0, np.int64),
            progress=np.zeros(0, np.float32),
            frame_progress=np.zeros(0, np.float32),
            success_score=math.nan,
            success=False,
            voc=math.nan,
            selected=False,
        )
        return row
    ends = np.asarray(row["prefix_ends"], dtype=np.int64)
    last_raw = np.asarray(row["frame_indices"], dtype=np.int64)[ends - 1]
    progress = minmax_normalize(raw)
    score = success_score(raw, success.window)
    succeeded = bool(score > success.threshold)
    voc = value_order_correlation(progress)
    row.update(
        prefix_frame_indices=last_raw,
        progress=progress,
        frame_progress=per_frame_progress(last_raw, progress, int(row["length"])),
        success_score=score,
        success=succeeded,
        voc=voc,
        selected=is_selected(row["status"], succeeded, voc, float(progress[-1]), curation),
    )
    return row


def redecide(episodes: pa.Table, success: SuccessConfig, curation: CurationConfig) -> pa.Table:
    """Recompute ``success`` and ``selected`` of committed episode rows under the current config.

    The threshold and the curation rules are not part of the config hash (changing them must not
    re-score anything), so the decisions stored when an episode was labelled can be stale: publishing
    takes them from the current config instead.
    """
    decided_success, decided_selected = [], []
    for row in episodes.select(["status", "success_score", "voc", "progress"]).to_pylist():
        score = row["success_score"]
        succeeded = score is not None and bool(score > success.threshold)
        final = row["progress"][-1] if row["progress"] else 0.0
        voc = math.nan if row["voc"] is None else row["voc"]
        decided_success.append(succeeded)
        decided_selected.append(is_selected(row["status"], succeeded, voc, final, curation))
    for name, values in (("success", decided_success), ("selected", decided_selected)):
        episodes = episodes.set_column(
            episodes.schema.get_field_index(name), name, pa.array(values, pa.bool_())
        )
    return episodes
