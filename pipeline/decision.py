"""The one place where success and curation are decided, from committed scores and a run's settings.

Scores are facts of the model (raw ``log_p_true``, normalised ``progress`` per prefix and ``voc``,
committed in the shards); the success score (mean raw log P over the last ``success.window`` prefixes),
whether an episode *succeeded* and whether it is *selected* for the curated dataset are
decisions under ``success.*`` and ``curation.*``. Those settings are not part of the config hash (a
calibrated threshold must apply without re-scoring), so the decision is never stored with the scores:
publish, the report and evaluation all call :func:`decide` with the settings of the run they show.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.config import CurationConfig, SuccessConfig
from pipeline.labels import success_score

DECISION_COLUMNS = ("success_score", "success", "selected")


def is_success(status: str, success_score: float | None, success: SuccessConfig) -> bool:
    """An ``ok`` episode whose success score is above ``success.threshold``."""
    return status == "ok" and success_score is not None and bool(success_score > success.threshold)


def is_selected(
    status: str, succeeded: bool, voc: float | None, final_progress: float | None, curation: CurationConfig
) -> bool:
    """Whether an episode goes into the curated BC dataset (``curation.enabled`` aside)."""
    if status != "ok" or (curation.require_success and not succeeded):
        return False
    if curation.min_voc is not None and not (voc is not None and voc >= curation.min_voc):
        return False
    if curation.min_final_progress is None:
        return True
    return final_progress is not None and final_progress >= curation.min_final_progress


def _number(value: Any) -> float | None:
    """A float, or None for a missing or NaN value (parquet nulls and NaN both mean "undefined")."""
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def decide_row(
    row: dict[str, Any], success: SuccessConfig, curation: CurationConfig
) -> tuple[float, bool, bool]:
    """``(success_score, success, selected)`` of one episode row.

    The row needs ``status``, ``log_p_true`` (raw scores per prefix), ``voc`` and ``progress``, as
    lists (parquet rows) or numpy arrays (a labelled row in memory). A failed row, or one without
    scores, gets a NaN score and is neither a success nor selected.
    """
    raw = row.get("log_p_true")
    scored = row["status"] == "ok" and raw is not None and len(raw) > 0
    score = _number(success_score(raw, success.window)) if scored else None
    succeeded = is_success(row["status"], score, success)
    progress = row.get("progress")
    final = float(progress[-1]) if progress is not None and len(progress) else None
    # An "ok" row without scores has nothing to curate by, whatever require_success says.
    selected = (
        curation.enabled
        and scored
        and is_selected(row["status"], succeeded, _number(row.get("voc")), final, curation)
    )
    return (math.nan if score is None else score), succeeded, bool(selected)


def decide(episodes: pa.Table, success: SuccessConfig, curation: CurationConfig) -> pa.Table:
    """``episodes`` with ``success_score``, ``success`` and ``selected`` decided under these settings.

    Args:
        episodes: Committed or published episode rows with ``status``, ``log_p_true``, ``voc`` and
            ``progress``; existing decision columns are replaced, missing ones appended.
        success: The success rule (threshold, window).
        curation: The selection rule; with ``curation.enabled=false`` nothing is selected.

    Returns:
        The table with the decision columns (``success_score`` float64, the others bool).
    """
    if success.window >= _SEQUENTIAL_SUM or episodes.num_rows == 0:
        rows = episodes.select(["status", "log_p_true", "voc", "progress"]).to_pylist()
        decided = [decide_row(row, success, curation) for row in rows]
    else:
        decided = _decide_columns(episodes, success, curation)
    for position, name in enumerate(DECISION_COLUMNS):
        kind = pa.float64() if name == "success_score" else pa.bool_()
        values = pa.array([row[position] for row in decided], kind)
        index = episodes.schema.get_field_index(name)
        episodes = (
            episodes.set_column(index, name, values) if index >= 0 else episodes.append_column(name, values)
        )
    return episodes


# numpy sums fewer than this many float64 values one after another (its pairwise summation unrolls
# eight at a time beyond), so a window below it is summed here column by column with the same bits.
_SEQUENTIAL_SUM = 8


def _last_values(column: pa.ChunkedArray, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each list's last ``count`` values as float64: ``(values, ends, taken)``, where row ``i`` holds
    ``values[ends[i] - taken[i] : ends[i]]`` (a null list holds none)."""
    lists = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    offsets = lists.offsets.to_numpy().astype(np.int64)
    values = lists.values.to_numpy(zero_copy_only=False).astype(np.float64)
    lengths = np.diff(offsets)
    if lists.null_count:
        lengths[lists.is_null().to_numpy(zero_copy_only=False)] = 0
    return values, offsets[1:], np.minimum(lengths, count)


def _decide_columns(
    episodes: pa.Table, success: SuccessConfig, curation: CurationConfig
) -> list[tuple[float, bool, bool]]:
    """:func:`decide_row` of every row, with the success scores and final progress taken column-wise
    (a publish decides thousands of rows; one numpy mean per row was most of a +1 publish's cost).

    The score is the window's values summed in order from 0.0 and divided by their count: what
    :func:`pipeline.labels.success_score`'s ``mean`` computes for fewer than ``_SEQUENTIAL_SUM`` values.
    """
    values, ends, taken = _last_values(episodes.column("log_p_true"), success.window)
    total = np.zeros(ends.size, dtype=np.float64)
    for step in range(success.window):
        adds = step < taken
        total[adds] += values[(ends - taken + step)[adds]]
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = total / taken
    progress, progress_ends, has_progress = _last_values(episodes.column("progress"), 1)
    statuses = episodes.column("status").to_pylist()
    vocs = episodes.column("voc").to_pylist()
    decided = []
    for row, status in enumerate(statuses):
        scored = status == "ok" and taken[row] > 0
        score = _number(scores[row]) if scored else None
        succeeded = is_success(status, score, success)
        final = float(progress[progress_ends[row] - 1]) if has_progress[row] else None
        voc = _number(vocs[row])
        selected = curation.enabled and scored and is_selected(status, succeeded, voc, final, curation)
        decided.append(((math.nan if score is None else score), succeeded, bool(selected)))
    return decided
