"""Write an HTML report of the published labels: an index and one self-contained page per dataset.

    python -m jobs.report output.uri=s3://fleet-labels/topreward [dataset=so100/pick_cube]
    python -m jobs.report output.uri=... report.out=report/ success.threshold=-3.0 [key=value ...]

Reads ``<output.uri>/<robot>/<task>/episodes.parquet`` and the sampled frames from each episode's source
video (``output.storage_options`` and ``source.storage_options`` as for jobs.relabel). Pages go to
``report.out``, by default ``<output.uri>/_report/``; open ``index.html`` in a browser, no server needed.
Each dataset's success and curation are decided with the settings of the run that published it (its run
record); a ``key=value`` given here (``success.threshold=-3``) overrides them, and the pages say which
setting came from where. ``--config FILE`` gives settings as a YAML (they count as given, like
``key=value``); ``--print-config`` prints, per dataset, the settings the report would use.

The index (``index.html``) is the fleet page: totals, the trend over the runs under ``_runs/``, and every
dataset, failing ones first. A dataset whose files cannot be read does not stop the report: it is
printed and listed on the index with the file and the reason. ``dataset=`` rewrites only that
dataset's page and leaves the index as it was. Exit codes: 0 every dataset written; 2 refused in one
line (a config error, a dataset= not found; nothing written); 3 some dataset not readable (every other
one written, the unreadable ones printed and listed on the index).
"""

from __future__ import annotations

import sys

from pipeline.cli import Exit, Settings, job_parser, parse, print_config, refusals
from pipeline.config import RelabelConfig
from pipeline.report.config import JobArgs, ReportJob, load_job_config, printed_settings

JOB = "jobs.report"
# What the report reads and decides with; other relabel keys are accepted and checked.
READ_SECTIONS = ("output", "source", "success", "curation")

# Some dataset could not be read (listed on the index page and printed); every other page was written.
EXIT_UNREADABLE = 3


def main(argv: list[str] | None = None) -> int:
    """Write the report and print each dataset's settings and the index page's URI.

    Returns 0 when every dataset was written, 2 on a config error (nothing written), and
    :data:`EXIT_UNREADABLE` (3) when some dataset could not be read: the others are written, and the
    unreadable ones are printed and listed on the index page (file and reason)."""
    try:
        job_args = command_line(argv)
    except Exit as done:
        return done.code
    from pipeline.report import run_report  # matplotlib and PyAV: only for a report

    try:
        with refusals(JOB):  # a config error, credentials missing: one line, exit 2
            result = run_report(job_args, progress=print)
    except Exit as done:
        return done.code
    print(f"report: {result.uri}", flush=True)
    if result.unreadable:
        print(
            f"jobs.report: {len(result.unreadable)} dataset(s) not readable, {len(result.written)} written:",
            *(f"  {u.line()}" for u in result.unreadable),
            sep="\n",
            file=sys.stderr,
        )
        return EXIT_UNREADABLE
    return 0


def command_line(argv: list[str] | None) -> JobArgs[ReportJob]:
    """The report's settings from the command line (``sys.argv[1:]`` when ``argv`` is None).

    Raises:
        Exit: nothing to run: ``--help`` or ``--print-config`` printed (0), or refused in one line (2).
    """
    parser = job_parser(
        JOB,
        __doc__,
        Settings(ReportJob, title="report settings (key=value, or in a --config file)"),
        Settings(RelabelConfig, READ_SECTIONS, "relabel settings it reads with (the run's, unless given)"),
    )
    with refusals(JOB):
        command = parse(parser, argv)
        job_args = load_job_config(command.overrides, ReportJob)
        if command.print_config:
            raise Exit(print_config(_settings_documents(job_args)))
    return job_args


def _settings_documents(job_args: JobArgs[ReportJob]) -> list[tuple[str, object]]:
    """The job's settings, then each dataset's as it would be decided (its run's record, overrides)."""
    from pipeline.layout import OutputLayout
    from pipeline.report.outputs import find_datasets

    base = job_args.base
    datasets = find_datasets(base.output.uri, base.output.storage_options)
    if job_args.job.dataset is not None:
        datasets = [name for name in datasets if name == job_args.job.dataset]
    uris = [OutputLayout(base.output.uri).dataset(name).base for name in datasets]
    return printed_settings(job_args.job, base, [(uri, job_args.settings(uri)) for uri in uris])


if __name__ == "__main__":
    sys.exit(main())
