"""The in-process executor: the Ray Data graph's stages, run one after another in the driver.

For a run with a handful of episodes on a machine of its own (``job.inline_max_episodes``), starting a
Ray, a scorer actor's process (torch and transformers imported again there) and Ray Data's workers costs
more than the work. This executor calls the very stage functions the graph runs, with the same arguments
(:class:`StageArgs`, built once for both by :func:`pipeline.relabel.stage_args`), in the graph's order
and batch sizes: decode each row, score in batches of ``score_batch_size``, label each row, commit
batches of ``commit_batch_size``. So the scores, the labels, the shards and markers, and what a failed
episode records are those of the Ray path (``tests/test_inline.py`` compares them).

Rows pass between the stages as Ray Data passes them: one dict per row to ``map`` functions, numpy
batches (one array per column) to ``map_batches`` ones.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class StageArgs:
    """The arguments of the stage functions in one run, the same for both executors.

    Attributes:
        decode: keyword arguments of :func:`pipeline.frames.decode.decode_episode` after the row.
        score: constructor arguments of :class:`pipeline.stages.score.ScoreEpisodes`.
        commit: keyword arguments of :func:`pipeline.sinks.write_shards` after the batch.
        score_batch_size: episodes per scorer call.
        commit_batch_size: episodes per label-and-commit batch (one shard per dataset in it).
    """

    decode: dict[str, Any]
    score: dict[str, Any]
    commit: dict[str, Any]
    score_batch_size: int
    commit_batch_size: int


def numpy_batch(rows: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Rows as a numpy batch: one object array per column, holding each row's value as it is.

    Object arrays keep every value whole (an episode's frames, a ragged array, a string, a timestamp),
    which is what the batch functions index and iterate; they never rely on a column's dtype.
    """
    batch = {}
    for key in rows[0]:
        column = np.empty(len(rows), dtype=object)
        column[:] = [row[key] for row in rows]
        batch[key] = column
    return batch


def batch_rows(batch: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """A numpy batch as one dict per row."""
    size = len(next(iter(batch.values()))) if batch else 0
    return [{key: values[i] for key, values in batch.items()} for i in range(size)]


def _chunks(rows: Sequence[dict[str, Any]], size: int) -> Iterator[Sequence[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def score_in_process(rows: list[dict[str, Any]], args: StageArgs) -> Iterator[dict[str, Any]]:
    """Decodes, scores, labels and commits ``rows`` (catalog rows to score) in this process.

    Yields the committed rows' summary (``pipeline.sinks.SUMMARY_COLUMNS``), as the Ray graph's
    ``iter_rows`` does, one commit batch at a time: a run stopped half-way keeps what was committed.
    """
    # The scorer first: torch must be loaded before PyAV's libraries (pipeline.stages.score says why).
    from pipeline.stages.score import ScoreEpisodes

    scorer = ScoreEpisodes(**args.score, exit_on_fatal=False)

    from pipeline.frames.decode import decode_episode
    from pipeline.sinks import write_shards
    from pipeline.stages.label import label_episode

    for chunk in _chunks(rows, args.commit_batch_size):
        decoded = [decode_episode(dict(row), **args.decode) for row in chunk]
        scored = []
        for part in _chunks(decoded, args.score_batch_size):
            scored += batch_rows(scorer(numpy_batch(part)))
        labelled = [label_episode(row) for row in scored]
        yield from batch_rows(write_shards(numpy_batch(labelled), **args.commit))
