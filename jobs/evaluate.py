"""Evaluate the labels of one dataset: VOC, ROC-AUC against labels, and two controls run through the model.

    python -m jobs.evaluate s3://fleet-labels/topreward/so100/pick_cube/episodes.parquet
    python -m jobs.evaluate s3://fleet-labels/topreward/so100/pick_cube --labels labels.csv \\
        evaluate.max_episodes=8 [success.threshold=-3 ...]

Settings are those of the run that published the table (``<dataset>/_published.json`` names it, its
record ``<output>/_runs/<run id>.json`` holds its config): the success threshold and window, the curation
rules, and the ``model.*``, ``frames.*``, ``prefixes.*`` and ``scoring.*`` the controls re-score with. A
``key=value`` given here overrides the record, and the printout says which setting came from where. A
table without a run record is evaluated only when its ``model.path`` is given.

The labels file maps episode_index to success, as for jobs.calibrate. The controls (the static video: the
first frame repeated to the episode's length; shuffled frames) re-score ``evaluate.max_episodes``
episodes. Prints a table and writes JSON to ``evaluate.out`` (default ``evaluation.json`` next to the
episodes table); the table, the record and the JSON use ``output.storage_options``, the videos
``source.storage_options`` (as recorded, without secrets, unless given). ``--config FILE`` gives settings
as a YAML (they count as given, like ``key=value``); ``--print-config`` prints the settings it would use.

Exit status: 0 evaluated and written; 2 refused in one line (a bad setting or argument, the table or
labels not found, missing credentials, no run record and no ``model.path``, a model that cannot load);
1 with a traceback: a bug.
"""

from __future__ import annotations

import argparse
import json
import posixpath
import sys

from pipeline.cli import Exit, Refused, Settings, job_parser, parse, print_config, refusals, run_job
from pipeline.config import ConfigError, RelabelConfig, device_class
from pipeline.layout import EPISODES_FILE, EVALUATION_FILE
from pipeline.report.config import EvaluateJob, JobArgs, RunSettings, load_job_config, printed_settings
from pipeline.storage import join_uri, redact

JOB = "jobs.evaluate"
# What the evaluation reads, decides and re-scores with; other relabel keys are accepted and checked.
READ_SECTIONS = ("output", "source", "success", "curation", "model", "scoring", "frames", "prefixes")


class EvaluateRefused(Refused):
    """The evaluation cannot run as asked; the message is the one line printed."""


def table_uri(argument: str) -> str:
    """The episodes table named on the command line: the file itself, or the dataset folder holding it."""
    stripped = argument.rstrip("/")
    return stripped if posixpath.basename(stripped) == EPISODES_FILE else join_uri(stripped, EPISODES_FILE)


def check_controls(settings: RunSettings) -> None:
    """Refuse, in one line, a model the controls could not load, before any frame is decoded.

    Raises:
        EvaluateRefused: no run record and no ``model.path`` given, a model that does not resolve, or a
            recorded CUDA device on a machine without one.
    """
    cfg = settings.cfg
    if settings.run_id is None and "model.path" not in settings.explicit:
        raise EvaluateRefused(
            f"{settings.missing}: which model, frames and threshold scored it is unknown; give them "
            "(model.path=... frames.* prefixes.* success.threshold=...) to evaluate it anyway"
        )
    from pipeline.preflight import check_model  # Hugging Face and torch: only when the model is needed

    try:
        check_model(cfg.model)
    except ConfigError as err:
        raise EvaluateRefused(str(err)) from None
    if device_class(cfg.model.device) == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise EvaluateRefused(
                f"{settings.origin('model.device')}, and this machine has no CUDA device: give "
                "model.device=cpu (the controls then score in float32, so they differ from the table's)"
            )


def _evaluate(args: argparse.Namespace, job_args: JobArgs[EvaluateJob]) -> int:
    # pyarrow, scipy, torch and PyAV: only once there is something to evaluate.
    from pipeline.atomic import write_bytes
    from pipeline.calibration import CalibrationInputError, read_labels
    from pipeline.evaluation import evaluate, format_evaluation, json_safe
    from pipeline.report.outputs import read_episodes

    options = job_args.base.output.storage_options
    uri = table_uri(args.episodes)
    try:
        rows = read_episodes(uri, options)
        labels = read_labels(args.labels, options) if args.labels else None
    except FileNotFoundError as err:
        raise EvaluateRefused(f"not found: {redact(str(err), options)}") from None
    except CalibrationInputError as err:  # a labels file that is not one (bad value, missing column)
        raise EvaluateRefused(redact(str(err), options)) from None
    settings = job_args.settings(posixpath.dirname(uri))
    ecfg = job_args.job.evaluate
    if ecfg.max_episodes > 0 and any(row["status"] == "ok" for row in rows):
        check_controls(settings)
    result = json_safe(evaluate(rows, settings, ecfg, labels, uri))
    print(format_evaluation(result), flush=True)

    out = ecfg.out or posixpath.join(posixpath.dirname(uri), EVALUATION_FILE)
    # Replaced in one step, like every small file the pipeline writes: a reader never sees half of it.
    write_bytes(json.dumps(result, indent=2).encode(), out, options)
    print(f"evaluation: {out}", flush=True)
    return 0


def command_line(argv: list[str] | None) -> tuple[argparse.Namespace, JobArgs[EvaluateJob]]:
    """The evaluation's arguments and settings from the command line (``sys.argv[1:]`` when None).

    Raises:
        Exit: nothing to run: ``--help`` or ``--print-config`` printed (0), or refused in one line (2).
    """
    parser = job_parser(
        JOB,
        __doc__,
        Settings(EvaluateJob, title="evaluate settings (key=value, or in a --config file)"),
        Settings(RelabelConfig, READ_SECTIONS, "relabel settings it reads with (the run's, unless given)"),
    )
    parser.add_argument(
        "episodes", help="episodes.parquet written by jobs.relabel, or its dataset folder (path or URI)"
    )
    parser.add_argument("--labels", help="ground-truth labels: csv/parquet (episode_index,success) or json")
    with refusals(JOB):
        command = parse(parser, argv, "settings: relabel keys and evaluate.*, as listed below")
        job_args = load_job_config(command.overrides, EvaluateJob)
        if job_args.job.evaluate.max_episodes < 0:
            raise EvaluateRefused("evaluate.max_episodes must be >= 0")
        if command.print_config:
            dataset = posixpath.dirname(table_uri(command.args.episodes))
            documents = [(dataset, job_args.settings(dataset))]
            raise Exit(print_config(printed_settings(job_args.job, job_args.base, documents)))
    return command.args, job_args


def main(argv: list[str] | None = None) -> int:
    """Evaluate, print, write the JSON; exit 2 with one line on a config error or a missing input."""
    # run_job also ends an Exit from the command line (--help, --print-config, a refusal) with its code.
    return run_job(JOB, lambda: _evaluate(*command_line(argv)))


if __name__ == "__main__":
    sys.exit(main())
