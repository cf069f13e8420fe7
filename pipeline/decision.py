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
    rows = episodes.select(["status", "log_p_true", "voc", "progress"]).to_pylist()
    decided = [decide_row(row, success, curation) for row in rows]
    for position, name in enumerate(DECISION_COLUMNS):
        kind = pa.float64() if name == "success_score" else pa.bool_()
        values = pa.array([row[position] for row in decided], kind)
        index = episodes.schema.get_field_index(name)
        episodes = (
            episodes.set_column(index, name, values) if index >= 0 else episodes.append_column(name, values)
        )
    return episodes
