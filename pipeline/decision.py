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
import pyarrow.compute as pc

from pipeline.config import CurationConfig, SuccessConfig
from pipeline.labels import success_score

DECISION_COLUMNS = ("success_score", "success", "selected")


def _rule(
    scored: np.ndarray,
    scores: np.ndarray,
    vocs: np.ndarray,
    finals: np.ndarray,
    success: SuccessConfig,
    curation: CurationConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """The rule, once for every caller: ``(success, selected)`` per episode.

    Args:
        scored: Whether each episode is ``ok`` and has raw scores.
        scores: Success scores (NaN: undefined, never a success).
        vocs: VOC (NaN: missing, never passes ``curation.min_voc``).
        finals: Final normalised progress (NaN: none, never passes ``curation.min_final_progress``).
        success: The threshold (strict: a score equal to it is not a success).
        curation: The selection rule; disabled selects nothing.
    """
    # NaN compares false with everything, so an undefined score, VOC or progress fails its test.
    succeeded = scored & (scores > success.threshold)
    selected = scored & curation.enabled
    if curation.require_success:
        selected = selected & succeeded
    if curation.min_voc is not None:
        selected = selected & (vocs >= curation.min_voc)
    if curation.min_final_progress is not None:
        selected = selected & (finals >= curation.min_final_progress)
    return succeeded, selected


def _number(value: Any) -> float:
    """A float, NaN for a missing value (parquet nulls and NaN both mean "undefined")."""
    return math.nan if value is None else float(value)


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
    score = _number(success_score(raw, success.window)) if scored else math.nan
    progress = row.get("progress")
    final = float(progress[-1]) if progress is not None and len(progress) else math.nan
    succeeded, selected = _rule(
        np.array([scored]), np.array([score]), np.array([_number(row.get("voc"))]), np.array([final]),
        success, curation,
    )  # fmt: skip
    return score, bool(succeeded[0]), bool(selected[0])


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
        by_row = [decide_row(row, success, curation) for row in rows]
        decided = [
            np.array([row[i] for row in by_row], kind) for i, kind in enumerate((np.float64, bool, bool))
        ]
    else:
        decided = _decide_columns(episodes, success, curation)
    for name, column in zip(DECISION_COLUMNS, decided, strict=True):
        kind = pa.float64() if name == "success_score" else pa.bool_()
        values = pa.array(column, kind)
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


def _decide_columns(episodes: pa.Table, success: SuccessConfig, curation: CurationConfig) -> list[np.ndarray]:
    """:func:`decide_row` of every row, column-wise: success scores, success and selection (a publish
    decides thousands of rows; one numpy mean per row was most of a +1 publish's cost).

    The score is the window's values summed in order from 0.0 and divided by their count: what
    :func:`pipeline.labels.success_score`'s ``mean`` computes for fewer than ``_SEQUENTIAL_SUM`` values.
    """
    values, ends, taken = _last_values(episodes.column("log_p_true"), success.window)
    total = np.zeros(ends.size, dtype=np.float64)
    for step in range(success.window):
        adds = step < taken
        total[adds] += values[(ends - taken + step)[adds]]
    statuses = pc.equal(episodes.column("status"), "ok").fill_null(False)
    scored = statuses.to_numpy(zero_copy_only=False) & (taken > 0)
    scores = np.where(scored, total / np.maximum(taken, 1), np.nan)  # unscored rows: NaN, never 0 / 0
    progress, progress_ends, has_progress = _last_values(episodes.column("progress"), 1)
    finals = np.full(ends.size, np.nan)
    finals[has_progress > 0] = progress[progress_ends[has_progress > 0] - 1]
    vocs = episodes.column("voc").cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)
    succeeded, selected = _rule(scored, scores, vocs, finals, success, curation)
    return [scores, succeeded, selected]
