"""Relabel LeRobot datasets with TOPReward progress and success labels.

    python -m jobs.relabel source.uris='[s3://fleet/so100/pick_cube]' output.uri=s3://fleet-labels/topreward
    ray job submit --working-dir . -- python -m jobs.relabel source.uris='[...]' output.uri=...

Settings merge as defaults < conf/relabel.yaml < ``--config FILE`` < ``key=value``; ``--print-config``
prints the result (secrets masked) without running, ``--help`` lists every setting. Under ``ray job
submit`` it joins the cluster it was submitted to; standalone it starts a local Ray. Episodes already
committed for the same config are skipped, so re-running (or running nightly) scores only what is new or
changed.

Exit status (what a scheduler reads):

* 0: the run completed. Failed episodes or datasets, if any, are recorded (summary, ``episodes.parquet``,
  ``_runs/<run id>.json``) and retried by later runs; they do not fail the job unless
  ``job.fail_on_errors=true``.
* 1: the run broke (an unexpected error, Ray itself failing); the run record says ``broken``.
* 2: refused before it started: a bad config value, a model that cannot load, an output inside a
  source, an output that cannot be written. The message names the key and the value.
* 3: the run completed with recorded failures and ``job.fail_on_errors=true`` (for alerting).
"""

from __future__ import annotations

import logging
import sys

from pipeline.cli import Exit, Settings, job_parser, parse, print_config, refusals
from pipeline.config import ConfigError, RelabelConfig, load_config

JOB = "jobs.relabel"
EXIT_OK, EXIT_BROKEN, EXIT_REFUSED, EXIT_FAILURES = 0, 1, 2, 3
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    """Show the pipeline's own log lines at ``level``, whatever Ray or others did to the root logger.

    Ray configures the root logger at import (WARNING), which makes ``logging.basicConfig`` a no-op, so
    the pipeline's logger gets its own handler instead.
    """
    logger = logging.getLogger("pipeline")
    logger.setLevel(level.upper())
    if not any(getattr(handler, "_topreward", False) for handler in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler._topreward = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.propagate = False


def command_line(argv: list[str] | None) -> RelabelConfig:
    """The run's config from the command line (``sys.argv[1:]`` when ``argv`` is None).

    Raises:
        Exit: nothing to run: ``--help`` or ``--print-config`` printed (0), or refused in one line (2).
    """
    parser = job_parser(JOB, __doc__, Settings(RelabelConfig))
    with refusals(JOB):
        command = parse(parser, argv)
        cfg = load_config(command.overrides)
    if command.print_config:
        origin = "defaults < conf/relabel.yaml < --config < key=value"
        raise Exit(print_config([(f"{JOB}: the settings a run would use ({origin})", cfg)]))
    return cfg


def main(argv: list[str] | None = None) -> int:
    """Run the relabel job and return its exit status (see the module docstring)."""
    try:
        cfg = command_line(argv)
    except Exit as done:
        return done.code
    from pipeline.relabel import format_summary, run  # Ray and torch load only for a run

    configure_logging(cfg.job.log_level)
    try:
        summary = run(cfg)
    except ConfigError as err:
        print(f"jobs.relabel: {err}", file=sys.stderr)
        return EXIT_REFUSED
    except Exception:
        logging.getLogger("pipeline").exception("jobs.relabel: the run broke")
        return EXIT_BROKEN
    print(format_summary(summary), flush=True)
    if summary.failures and cfg.job.fail_on_errors:
        print(
            f"jobs.relabel: {summary.failures} failure(s) recorded and job.fail_on_errors=true",
            file=sys.stderr,
        )
        return EXIT_FAILURES
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
