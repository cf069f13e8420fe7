"""The label stage: what follows from one episode's scores alone, and nothing that is decided.

Input: a scored row (``log_p_true``, ``prefix_ends``, ``frame_indices``, ``length``, ``status``).
Output: the row plus ``prefix_frame_indices`` (raw index of each prefix's last frame), ``progress``
(normalised, per prefix), ``frame_progress`` (one value per raw frame) and ``voc``. Failed rows get
empty arrays and NaN so the schema stays uniform.

The success score, whether an episode succeeded and whether it is curated depend on ``success.*`` and
``curation.*``, settings outside the config hash: they are never committed with the scores, and
:func:`pipeline.decision.decide` makes them wherever they are shown (publish, report, evaluation, the
one-episode preview).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pipeline.labels import minmax_normalize, per_frame_progress, value_order_correlation


def label_episode(row: dict[str, Any]) -> dict[str, Any]:
    """Add the scores-derived labels to one scored episode row (a Ray Data ``map`` function).

    Args:
        row: A scored row; updated in place and returned.
    """
    raw = np.asarray(row["log_p_true"], dtype=np.float64)
    if row["status"] != "ok" or raw.size == 0:
        row.update(
            prefix_frame_indices=np.zeros(0, np.int64),
            progress=np.zeros(0, np.float32),
            frame_progress=np.zeros(0, np.float32),
            voc=math.nan,
        )
        return row
    ends = np.asarray(row["prefix_ends"], dtype=np.int64)
    last_raw = np.asarray(row["frame_indices"], dtype=np.int64)[ends - 1]
    progress = minmax_normalize(raw)
    row.update(
        prefix_frame_indices=last_raw,
        progress=progress,
        frame_progress=per_frame_progress(last_raw, progress, int(row["length"])),
        voc=value_order_correlation(progress),
    )
    return row
