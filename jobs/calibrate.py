"""Calibrate ``success.threshold`` from a few labelled episodes.

    python -m jobs.calibrate outputs/topreward/so100/pick_cube/episodes.parquet labels.csv [key=value ...]

The labels file maps episode_index to success (csv/parquet columns ``episode_index,success`` or JSON);
a label is 1/0, true/false, yes/no, y/n or 1.0/0.0 in any case. Labelled episodes the table does not
hold, or holds as failed, are named and left out. Exit 2 with one line when the table or the labels file
is missing or unreadable (naming the file, and for a bad label its line and value) or nothing is left to
calibrate. Table and labels are read with ``output.storage_options='{...}'`` (as for jobs.relabel).
Success scores are decided (:func:`pipeline.decision.decide`) from the table's raw log P per prefix with
the ``success.window`` of the run that published it (its run record; ``success.window=...`` overrides).
Prints ROC-AUC of the success score and the threshold maximising Youden's J, ready to pass as
``success.threshold=<value>`` to jobs.relabel, next to the threshold that run used. ``--config FILE``
gives settings as a YAML (they count as given); ``--print-config`` prints the settings it would use.

Exit status: 0 calibrated and printed; 2 refused in one line (above, or a bad argument or setting);
1 with a traceback: a bug.
"""

from __future__ import annotations

import argparse
import posixpath
import sys

from pipeline.calibration import (
    Calibration,
    CalibrationInputError,
    calibrate,
    match_labels,
    read_labels,
    read_scored,
)
from pipeline.cli import Exit, Settings, job_parser, parse, print_config, refusals
from pipeline.config import ConfigError, RelabelConfig, load_config
from pipeline.report.config import RunSettings, load_settings, printed_settings

JOB = "jobs.calibrate"


def _print(result: Calibration, pairs: int, settings: RunSettings) -> None:
    print(f"labelled episodes: {pairs} ({result.positives} successes, {result.negatives} failures)")
    print(f"success score: {settings.origin('success.window')}")
    print(f"ROC-AUC: {result.auc:.3f}")
    print(
        f"threshold (max Youden J={result.youden_j:.3f}, TPR={result.true_positive_rate:.3f}, "
        f"FPR={result.false_positive_rate:.3f}): {result.threshold:.4f}"
    )
    print(f"now: {settings.origin('success.threshold')}")
    print(f"use: success.threshold={result.threshold:.4f}")


def command_line(argv: list[str] | None) -> tuple[argparse.Namespace, RelabelConfig, RunSettings]:
    """The arguments, the settings given, and the publishing run's settings under them.

    Raises:
        Exit: nothing to run: ``--help`` or ``--print-config`` printed (0), or refused in one line (2).
    """
    parser = job_parser(
        JOB,
        __doc__,
        Settings(RelabelConfig, ("output", "success"), "settings it reads with (the run's, unless given)"),
    )
    parser.add_argument("episodes", help="episodes.parquet written by jobs.relabel (local path or URI)")
    parser.add_argument("labels", help="ground-truth labels: csv/parquet (episode_index,success) or json")
    with refusals(JOB):
        command = parse(parser, argv, "settings, as listed below (output.storage_options, success.window)")
        base = load_config(command.overrides)
        dataset = posixpath.dirname(command.args.episodes)
        settings = load_settings(dataset, command.overrides, base)
    if command.print_config:
        raise Exit(print_config(printed_settings(None, base, [(dataset, settings)])))
    return command.args, base, settings


def main(argv: list[str] | None = None) -> int:
    """Print the calibration; exit 2 when the inputs cannot be calibrated."""
    try:
        args, base, settings = command_line(argv)
    except Exit as done:
        return done.code
    try:
        options = base.output.storage_options
        cfg = settings.cfg
        rows = read_scored(args.episodes, options, cfg.success, cfg.curation)
        labels = read_labels(args.labels, options)
    except (ConfigError, CalibrationInputError) as err:
        print(f"jobs.calibrate: {err}", file=sys.stderr)
        return 2
    matched = match_labels(rows, labels)
    if not len(matched.scores):
        why = "".join(f"; {note}" for note in matched.notes())
        print(f"jobs.calibrate: no scored episode of {args.episodes} has a label{why}", file=sys.stderr)
        return 2
    try:
        result = calibrate(matched.scores, matched.truth)
    except ValueError as err:
        print(f"jobs.calibrate: {err}", file=sys.stderr)
        return 2
    for note in matched.notes():
        print(note)
    _print(result, len(matched.scores), settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
