"""The label stage: what follows from one episode's scores alone, and nothing that is decided.

Input: a scored row (``log_p_true``, ``prefix_ends``, ``frame_indices``, ``length``, ``status``).
Output: the row plus ``prefix_frame_indices`` (raw index of each prefix's last frame), ``progress``
(normalised, per prefix), ``frame_progress`` (one value per raw frame), ``voc`` and, for information,
``success_score`` under ``success.window``. Failed rows get empty arrays and NaN so the schema stays
uniform.

Whether an episode succeeded and whether it is curated are decisions under ``success.*`` and
``curation.*``, settings outside the config hash: they are never committed with the scores, and
:func:`pipeline.decision.decide` makes them when a dataset is published (and wherever else they are
shown).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pipeline.config import CurationConfig, SuccessConfig
from pipeline.decision import DECISION_COLUMNS, decide_row
from pipeline.labels import minmax_normalize, per_frame_progress, success_score, value_order_correlation


def label_episode(
    row: dict[str, Any], success: SuccessConfig, curation: CurationConfig | None = None
) -> dict[str, Any]:
    """Add the scores-derived labels to one scored episode row (a Ray Data ``map`` function).

    Args:
        row: A scored row; updated in place and returned.
        success: Only ``success.window`` is used, for the informational ``success_score``.
        curation: None in the pipeline. One-episode previews (``python -m pipeline.scoring``, the
            benches) pass it to get ``success`` and ``selected`` as well, from
            :func:`pipeline.decision.decide_row`, the function publishing uses.
    """
    raw = np.asarray(row["log_p_true"], dtype=np.float64)
    if row["status"] != "ok" or raw.size == 0:
        row.update(
            prefix_frame_indices=np.zeros(0, np.int64),
            progress=np.zeros(0, np.float32),
            frame_progress=np.zeros(0, np.float32),
            success_score=math.nan,
            voc=math.nan,
        )
    else:
        ends = np.asarray(row["prefix_ends"], dtype=np.int64)
        last_raw = np.asarray(row["frame_indices"], dtype=np.int64)[ends - 1]
        progress = minmax_normalize(raw)
        row.update(
            prefix_frame_indices=last_raw,
            progress=progress,
            frame_progress=per_frame_progress(last_raw, progress, int(row["length"])),
            success_score=success_score(raw, success.window),
            voc=value_order_correlation(progress),
        )
    if curation is not None:
        row.update(zip(DECISION_COLUMNS, decide_row(row, success, curation), strict=True))
    return row
