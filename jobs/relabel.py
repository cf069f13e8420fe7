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
* 4: no dataset was found under a source URI (a mistyped or empty prefix: no ``meta/info.json`` at or
  below it); the other sources were processed and published. Whatever ``job.fail_on_errors`` says.
* 5: nothing succeeded: failures were recorded and no episode is labelled and published (every episode
  or dataset failed, e.g. workers without storage credentials). Whatever ``job.fail_on_errors`` says.
* 143 / 130: stopped by SIGTERM / SIGINT (Kubernetes, ``ray job stop``, Ctrl-C); the run record says
  ``stopped``, what was committed stays, nothing is half-published, and the next run goes on from it.

When several apply, the first in the order 4, 5, 3 is the status.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import TYPE_CHECKING, NoReturn

from pipeline.cli import Exit, Settings, job_parser, parse, print_config, refusals
from pipeline.config import ConfigError, RelabelConfig, load_config

if TYPE_CHECKING:
    from pipeline.relabel import RunSummary

JOB = "jobs.relabel"
EXIT_OK, EXIT_BROKEN, EXIT_REFUSED, EXIT_FAILURES = 0, 1, 2, 3
EXIT_NO_DATASET, EXIT_NOTHING_SUCCEEDED = 4, 5
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
    from pipeline.stopping import RunStopped

    configure_logging(cfg.job.log_level)
    logging.getLogger("pipeline").debug("jobs.relabel: pipeline imported")  # bench.startup's mark
    try:
        summary = run(cfg)
    except ConfigError as err:
        print(f"jobs.relabel: {err}", file=sys.stderr)
        return EXIT_REFUSED
    except RunStopped as stop:
        print(f"jobs.relabel: {stop}; the run record says stopped", file=sys.stderr, flush=True)
        return stop.exit_code
    except Exception:
        logging.getLogger("pipeline").exception("jobs.relabel: the run broke")
        return EXIT_BROKEN
    print(format_summary(summary), flush=True)
    code, reason = exit_status(summary, cfg.job.fail_on_errors)
    if reason:
        print(f"jobs.relabel: {reason} (exit {code})", file=sys.stderr)
    return code


def exit_status(summary: RunSummary, fail_on_errors: bool) -> tuple[int, str]:
    """The exit status of a completed run and why (``""`` for 0); the order is 4, 5, 3 (module docstring)."""
    if summary.missing_sources:
        return EXIT_NO_DATASET, "no dataset found under " + ", ".join(summary.missing_sources)
    if summary.nothing_succeeded:
        return (
            EXIT_NOTHING_SUCCEEDED,
            f"nothing succeeded: {summary.failures} failure(s), no episode published",
        )
    if summary.failures and fail_on_errors:
        return EXIT_FAILURES, f"{summary.failures} failure(s) recorded and job.fail_on_errors=true"
    return EXIT_OK, ""


def exit_now(code: int) -> NoReturn:
    """Ends the process with ``code`` at once: everything the run writes is written by now.

    The outputs, the run record and the summary are complete when the run returns (the streams are
    flushed here). Ray is shut down first (:func:`pipeline.stopping.stop_ray`: a local Ray's processes
    stopped, a cluster told this driver is gone and left running). Then the process ends without the
    interpreter's teardown: a second or more of unloading torch and the rest, and half a second that
    Ray's exit hook sleeps. Worker lines Ray had not yet forwarded to the driver's log when the run
    ended may be cut; they are in the Ray session's log files, and every failure is in the summary and
    the run record.
    """
    if "ray" in sys.modules:  # --help, --print-config and refusals never import it
        from pipeline.stopping import stop_ray

        stop_ray()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more can be said
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
