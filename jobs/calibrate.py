"""Calibrate ``success.threshold`` from a few labelled episodes.

    python -m jobs.calibrate outputs/topreward/so100/pick_cube/episodes.parquet labels.csv

The labels file maps episode_index to success (csv/parquet columns ``episode_index,success`` or JSON).
Prints ROC-AUC of the success score and the threshold maximising Youden's J, ready to pass as
``success.threshold=<value>`` to jobs.relabel.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pyarrow.parquet as pq

from pipeline.calibration import calibrate, read_labels
from pipeline.storage import filesystem_for


def main(argv: list[str] | None = None) -> int:
    """Print the calibration; exit 2 when the inputs cannot be calibrated."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("episodes", help="episodes.parquet written by jobs.relabel (local path or URI)")
    parser.add_argument("labels", help="ground-truth labels: csv/parquet (episode_index,success) or json")
    args = parser.parse_args(argv)

    fs, path = filesystem_for(args.episodes)
    with fs.open(path, "rb") as f:
        episodes = pq.read_table(f, columns=["episode_index", "status", "success_score"]).to_pylist()
    labels = read_labels(args.labels)
    pairs = [(row["success_score"], labels[row["episode_index"]]) for row in episodes
             if row["status"] == "ok" and row["episode_index"] in labels]  # fmt: skip
    if not pairs:
        print("jobs.calibrate: no scored episode has a label", file=sys.stderr)
        return 2
    scores, truth = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    try:
        result = calibrate(scores, truth)
    except ValueError as err:
        print(f"jobs.calibrate: {err}", file=sys.stderr)
        return 2
    print(f"labelled episodes: {len(pairs)} ({result.positives} successes, {result.negatives} failures)")
    print(f"ROC-AUC: {result.auc:.3f}")
    print(
        f"threshold (max Youden J={result.youden_j:.3f}, TPR={result.true_positive_rate:.3f}, "
        f"FPR={result.false_positive_rate:.3f}): {result.threshold:.4f}"
    )
    print(f"use: success.threshold={result.threshold:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
