"""Evaluate the labels of one dataset: VOC, ROC-AUC against labels, and two controls run through the model.

    python -m jobs.evaluate s3://fleet-labels/topreward/so100/pick_cube/episodes.parquet
    python -m jobs.evaluate <episodes.parquet> --labels labels.csv model.path=... evaluate.max_episodes=8

The labels file maps episode_index to success, as for jobs.calibrate. The controls (the static video: the
first frame repeated to the episode's length; shuffled frames) re-score ``evaluate.max_episodes`` episodes
with the relabel settings given here (``model.*``, ``frames.*``, ``prefixes.*``, ``source.storage_options``);
pass the ones the table was scored with. Prints a table and writes JSON to ``evaluate.out`` (default
``evaluation.json`` next to the episodes table); the table and the JSON use ``output.storage_options``.
"""

from __future__ import annotations

import argparse
import json
import posixpath
import sys

from pipeline.calibration import read_labels
from pipeline.config import ConfigError
from pipeline.evaluation import EvaluateJob, evaluate, format_evaluation, json_safe
from pipeline.report import load_job_config
from pipeline.report.outputs import read_episodes
from pipeline.storage import filesystem_for

EVALUATION_FILE = "evaluation.json"


def main(argv: list[str] | None = None) -> int:
    """Evaluate, print, write the JSON; exit 2 on a config error."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("episodes", help="episodes.parquet written by jobs.relabel (local path or URI)")
    parser.add_argument("--labels", help="ground-truth labels: csv/parquet (episode_index,success) or json")
    parser.add_argument("overrides", nargs="*", help="key=value settings (relabel keys and evaluate.*)")
    args = parser.parse_intermixed_args(argv)  # --labels may come before or after the keys
    try:
        cfg, job = load_job_config(args.overrides, EvaluateJob)
    except ConfigError as err:
        print(f"jobs.evaluate: {err}", file=sys.stderr)
        return 2
    if job.evaluate.max_episodes < 0:
        print("jobs.evaluate: evaluate.max_episodes must be >= 0", file=sys.stderr)
        return 2
    options = cfg.output.storage_options
    try:
        rows = read_episodes(args.episodes, options)
        labels = read_labels(args.labels, options) if args.labels else None
    except FileNotFoundError as err:
        print(f"jobs.evaluate: not found: {err}", file=sys.stderr)
        return 2
    result = json_safe(evaluate(rows, cfg, job.evaluate, labels, args.episodes))
    print(format_evaluation(result), flush=True)

    out = job.evaluate.out or posixpath.join(posixpath.dirname(args.episodes), EVALUATION_FILE)
    fs, path = filesystem_for(out, options)
    with fs.open(path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    print(f"evaluation: {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
