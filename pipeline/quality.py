"""Quality flags a curator acts on, per episode, from one row of a published ``episodes.parquet``.

Pure functions of the row and a few thresholds: no I/O, nothing heavy imported, so the report, a
notebook or a test compute the same flags. A flag does not decide success or curation (that is
:mod:`pipeline.decision`); it names an episode worth a look, and :func:`delete_command` prints the
LeRobot command that removes flagged episodes from the source dataset.

=================  ===========================================================================
flag               rule
=================  ===========================================================================
``decode_failed``  failed, and its error names its video: the frames could not be decoded
``too_short``      fewer frames than the schedule needs: failed with fewer than 2 raw frames,
                   or scored on fewer than ``min_prefixes`` prefixes (default: the success
                   window plus one, so that the success score averages the end, not the whole)
``flat_progress``  scored, and its raw log P("True") varies by less than ``flat_log_p_range``
                   (the min-max normalised progress is then noise)
``falls_at_end``   scored, and its final progress is at least ``end_drop`` below its maximum
``low_voc``        scored, and its VOC (Spearman of progress with time) is below ``min_voc``
=================  ===========================================================================
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.frames.schedule import TEMPORAL_BLOCK

FLAGS = ("decode_failed", "too_short", "flat_progress", "falls_at_end", "low_voc")
# The LeRobot console script that edits datasets (lerobot/scripts/lerobot_edit_dataset.py).
EDIT_TOOL = "lerobot-edit-dataset"


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of the quality flags (``report.quality.*``).

    Attributes:
        min_prefixes: too_short below this many scored prefixes; null = success.window + 1.
        flat_log_p_range: flat_progress when max - min of raw log P("True") is below this (nats).
        end_drop: falls_at_end when max progress - final progress is at least this.
        min_voc: low_voc when VOC is below this (an undefined VOC is flat_progress, not low_voc).
    """

    min_prefixes: int | None = None
    flat_log_p_range: float = 0.1
    end_drop: float = 0.3
    min_voc: float = 0.2

    def needed_prefixes(self, success_window: int) -> int:
        """The prefixes an episode needs to be long enough to score."""
        return self.min_prefixes if self.min_prefixes is not None else success_window + 1

    def check(self) -> list[str]:
        """What is out of range, as ``key must be ...`` messages (empty when every value is valid)."""
        problems = []
        if self.min_prefixes is not None and self.min_prefixes < 1:
            problems.append("report.quality.min_prefixes must be >= 1 or null")
        if not self.flat_log_p_range >= 0:
            problems.append("report.quality.flat_log_p_range must be >= 0")
        if not 0 <= self.end_drop <= 1:
            problems.append("report.quality.end_drop must be in [0, 1]")
        if not -1 <= self.min_voc <= 1:
            problems.append("report.quality.min_voc must be in [-1, 1]")
        return problems

    def rules(self, success_window: int) -> dict[str, str]:
        """Each flag's rule in words, with the thresholds in effect."""
        return {
            "decode_failed": "failed: the frames of its video could not be decoded",
            "too_short": f"fewer frames than the schedule needs: fewer than {TEMPORAL_BLOCK} raw frames, or "
            f"scored on fewer than {self.needed_prefixes(success_window)} prefixes",
            "flat_progress": f'raw log P("True") varies by less than {self.flat_log_p_range:g} '
            "(its normalised progress is noise)",
            "falls_at_end": f"final progress at least {self.end_drop:g} below its maximum",
            "low_voc": f"VOC below {self.min_voc:g}",
        }


def _values(value: Any) -> list[float]:
    """A list column (list, numpy array or None) as floats without NaN."""
    if value is None:
        return []
    return [float(v) for v in value if v is not None and not math.isnan(float(v))]


def _failed_flags(row: Mapping[str, Any]) -> tuple[str, ...]:
    if int(row.get("length") or 0) < TEMPORAL_BLOCK:
        return ("too_short",)
    error, video = str(row.get("error") or ""), str(row.get("video_uri") or "")
    if video and video in error and ": scoring:" not in error:
        return ("decode_failed",)
    return ()


def episode_flags(row: Mapping[str, Any], quality: QualityConfig, success_window: int) -> tuple[str, ...]:
    """The quality flags of one ``episodes.parquet`` row, in :data:`FLAGS` order.

    Args:
        row: The row, with ``status``, ``error``, ``length``, ``video_uri``, ``prefix_frame_indices``,
            ``log_p_true``, ``progress`` and ``voc`` (parquet lists or numpy arrays).
        quality: The thresholds.
        success_window: ``success.window`` of the settings in effect (the default ``min_prefixes``).

    Returns:
        The flags that apply; empty for an episode with nothing to look at.
    """
    if row.get("status") != "ok":
        return _failed_flags(row)
    raw, progress = _values(row.get("log_p_true")), _values(row.get("progress"))
    ends = row.get("prefix_frame_indices")
    prefixes = len(ends) if ends is not None else len(raw)
    voc = _values([row.get("voc")])
    found = {
        "too_short": prefixes < quality.needed_prefixes(success_window),
        "flat_progress": bool(raw) and max(raw) - min(raw) < quality.flat_log_p_range,
        "falls_at_end": bool(progress) and max(progress) - progress[-1] >= quality.end_drop,
        "low_voc": bool(voc) and voc[0] < quality.min_voc,
    }
    return tuple(flag for flag in FLAGS if found.get(flag))


def flagged_episodes(
    rows: Iterable[Mapping[str, Any]], quality: QualityConfig, success_window: int
) -> dict[str, list[int]]:
    """Episode indices per flag (every flag a key, in :data:`FLAGS` order; lists sorted)."""
    found: dict[str, list[int]] = {flag: [] for flag in FLAGS}
    for row in rows:
        for flag in episode_flags(row, quality, success_window):
            found[flag].append(int(row["episode_index"]))
    return {flag: sorted(indices) for flag, indices in found.items()}


def is_local(uri: str) -> bool:
    """Whether a dataset root is a folder on this machine (no scheme, or ``file://``)."""
    return "://" not in uri or uri.startswith("file://")


def delete_command(repo_id: str, root: str, episodes: Sequence[int]) -> str:
    """The ``lerobot-edit-dataset`` command that deletes ``episodes`` from the dataset at ``root``.

    ``--new_root`` is ``--root``: LeRobot then edits in place (it moves the original to
    ``<root>_old`` first and writes the dataset without those episodes at ``root``, renumbered from 0).
    Without it the result would go to ``$HF_LEROBOT_HOME/<repo_id>`` and the source would keep them.

    Args:
        repo_id: The dataset's id (only a name here: ``--root`` says where it is).
        root: A local folder holding the LeRobot v3.0 dataset (``file://`` is dropped).
        episodes: Episode indices to delete.
    """
    path = root.removeprefix("file://")
    indices = ", ".join(str(int(i)) for i in sorted(set(episodes)))
    return (
        f"{EDIT_TOOL} --repo_id {shlex.quote(repo_id)} --root {shlex.quote(path)} "
        f"--new_root {shlex.quote(path)} --operation.type delete_episodes "
        f'--operation.episode_indices "[{indices}]"'
    )
