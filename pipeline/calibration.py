"""Success-threshold calibration from a few labelled episodes: ROC-AUC and the Youden-optimal threshold."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import pyarrow.parquet as pq
from scipy.stats import mannwhitneyu

from pipeline.config import CurationConfig, SuccessConfig
from pipeline.report.outputs import read_decided
from pipeline.storage import filesystem_for, redact


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
        raise ValueError(
            f"need both successes and failures among the labelled episodes, got {positives} "
            f"success(es) and {negatives} failure(s)"
        )
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


class CalibrationInputError(ValueError):
    """An episodes table or labels file that cannot be read; the message is one line naming the file."""


class CalibrationInputNotFound(CalibrationInputError, FileNotFoundError):
    """The episodes table or labels file is not there (also a FileNotFoundError, for older callers)."""


# Accepted spellings of a label, compared lower-cased and stripped (numbers: 1/0 and 1.0/0.0).
TRUE_LABELS = ("1", "1.0", "true", "yes", "y", "t")
FALSE_LABELS = ("0", "0.0", "false", "no", "n", "f")
_LABEL_FORMS = "1/0, true/false, yes/no, y/n, 1.0/0.0"


def parse_label(value: Any) -> bool | None:
    """A success label as written: booleans, 1/0 and 1.0/0.0, true/false, yes/no, y/n in any case.

    Returns:
        The label, or None when ``value`` is none of these.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in TRUE_LABELS:
        return True
    if text in FALSE_LABELS:
        return False
    return None


def _episode(value: Any) -> int | None:
    """An episode index as written (``3``, ``"3"``, ``3.0``), or None."""
    if isinstance(value, bool):
        return None
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return int(number) if number.is_integer() and number >= 0 else None


def _entries(uri: str, path: str, f: IO[bytes]) -> list[tuple[str, Any, Any]]:
    """``(where, episode_index, success)`` per entry of a labels file, ``where`` naming its line or key."""
    if path.endswith(".json"):
        data = json.load(f)
        if isinstance(data, dict):
            return [(f"key {key!r}", key, value) for key, value in data.items()]
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            raise CalibrationInputError(f"{uri}: expected an object or a list of objects")
        return [(f"item {i}", item.get("episode_index"), item.get("success")) for i, item in enumerate(data)]
    if path.endswith(".parquet"):
        table = pq.read_table(f)
        _require_columns(uri, table.column_names)
        rows = table.to_pylist()
        return [(f"row {i}", row["episode_index"], row["success"]) for i, row in enumerate(rows)]
    reader = csv.DictReader(io.TextIOWrapper(f, encoding="utf-8-sig", newline=""))
    reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
    _require_columns(uri, reader.fieldnames)
    return [(f"line {reader.line_num}", row["episode_index"], row["success"]) for row in reader]


def _require_columns(uri: str, columns: list[str]) -> None:
    missing = [name for name in ("episode_index", "success") if name not in columns]
    if missing:
        found = ", ".join(columns) or "none"
        raise CalibrationInputError(f"{uri}: no column {', '.join(missing)} (columns: {found})")


def read_labels(uri: str, storage_options: dict[str, Any] | None = None) -> dict[int, bool]:
    """Ground-truth labels from ``.csv``/``.parquet`` (columns episode_index, success) or ``.json``.

    JSON may be an object ``{"<episode_index>": true, ...}`` or a list of ``{episode_index, success}``.
    A label may be written 1/0, true/false, yes/no, y/n or 1.0/0.0, in any case (:func:`parse_label`).

    Raises:
        CalibrationInputError: the file is missing or unreadable, or an entry is not a label (naming the
            file, the line and the value), or one episode is labelled both ways.
    """
    fs, path = filesystem_for(uri, storage_options)
    try:
        with fs.open(path, "rb") as f:
            entries = _entries(uri, path, f)
    except FileNotFoundError:
        raise CalibrationInputNotFound(f"labels file not found: {uri}") from None
    except CalibrationInputError:
        raise
    except Exception as err:  # csv, JSON, parquet and storage errors of this one file
        reason = redact(f"{type(err).__name__}: {err}".splitlines()[0], storage_options)
        raise CalibrationInputError(f"{uri}: unreadable labels file ({reason})") from None
    labels: dict[int, bool] = {}
    for where, raw_episode, raw_label in entries:
        episode, label = _episode(raw_episode), parse_label(raw_label)
        if episode is None:
            raise CalibrationInputError(f"{uri}: {where}: episode_index {raw_episode!r} is not an index")
        if label is None:
            raise CalibrationInputError(f"{uri}: {where}: success {raw_label!r} is not {_LABEL_FORMS}")
        if labels.get(episode, label) != label:
            raise CalibrationInputError(f"{uri}: {where}: episode {episode} is labelled both ways")
        labels[episode] = label
    return labels


def read_scored(
    uri: str, storage_options: dict[str, Any], success: SuccessConfig, curation: CurationConfig
) -> list[dict[str, Any]]:
    """The rows of an ``episodes.parquet`` with success scores decided under ``success``.

    Raises:
        CalibrationInputError: the table is missing or is not an episodes table written by jobs.relabel.
    """
    try:
        return read_decided(uri, storage_options, success, curation).rows
    except FileNotFoundError:
        raise CalibrationInputNotFound(f"episodes table not found: {uri}") from None
    except KeyError as err:
        raise CalibrationInputError(f"{uri}: not an episodes table (no column {err})") from None
    except Exception as err:  # not parquet, or a storage error reading it
        reason = redact(f"{type(err).__name__}: {err}".splitlines()[0], storage_options)
        raise CalibrationInputError(f"{uri}: not an episodes table ({reason})") from None


@dataclass(frozen=True)
class Matched:
    """Labelled episodes paired with their success scores, and the labels that found none.

    Attributes:
        scores: Success scores of the labelled episodes scored ``ok``.
        truth: Their labels, in the same order.
        not_in_table: Labelled episode indices the table does not hold.
        not_scored: Labelled episodes the table holds as failed (no score to calibrate).
    """

    scores: np.ndarray
    truth: np.ndarray
    not_in_table: list[int]
    not_scored: list[int]

    def notes(self) -> list[str]:
        """One line per kind of label that was left out, naming the episodes (the first 20)."""
        lines = []
        for what, episodes in (("not in the table", self.not_in_table), ("not scored ok", self.not_scored)):
            if episodes:
                shown = ", ".join(map(str, episodes[:20])) + (", ..." if len(episodes) > 20 else "")
                lines.append(f"labelled episodes {what} ({len(episodes)}, left out): {shown}")
        return lines


def match_labels(rows: list[dict[str, Any]], labels: dict[int, bool]) -> Matched:
    """Pair each labelled episode with its row's success score (decided rows, :func:`read_scored`)."""
    by_index = {int(row["episode_index"]): row for row in rows}
    pairs = [
        (by_index[episode]["success_score"], label)
        for episode, label in sorted(labels.items())
        if episode in by_index and by_index[episode]["status"] == "ok"
    ]
    return Matched(
        scores=np.array([score for score, _ in pairs], dtype=np.float64),
        truth=np.array([label for _, label in pairs], dtype=bool),
        not_in_table=sorted(episode for episode in labels if episode not in by_index),
        not_scored=sorted(e for e in labels if e in by_index and by_index[e]["status"] != "ok"),
    )
