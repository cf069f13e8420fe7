"""Write an HTML report of the published labels: an index and one self-contained page per dataset.

    python -m jobs.report output.uri=s3://fleet-labels/topreward [dataset=so100/pick_cube]
    python -m jobs.report output.uri=... report.out=report/ success.threshold=-3.0 [key=value ...]

Reads ``<output.uri>/<robot>/<task>/episodes.parquet`` and the sampled frames from each episode's source
video (``output.storage_options`` and ``source.storage_options`` as for jobs.relabel). Pages go to
``report.out``, by default ``<output.uri>/_report/``; open ``index.html`` in a browser, no server needed.
Each dataset's success and curation are decided with the settings of the run that published it (its run
record); a ``key=value`` given here (``success.threshold=-3``) overrides them, and the pages say which
setting came from where.
"""

from __future__ import annotations

import sys

from pipeline.config import ConfigError
from pipeline.report import ReportJob, load_job_config, write_report


def main(argv: list[str] | None = None) -> int:
    """Write the report and print each dataset's settings and the index page's URI; exit 2 on a config
    error."""
    overrides = list(sys.argv[1:] if argv is None else argv)
    if any(arg in ("-h", "--help") for arg in overrides):
        print(__doc__)
        return 0
    try:
        index = write_report(load_job_config(overrides, ReportJob), progress=print)
    except ConfigError as err:
        print(f"jobs.report: {err}", file=sys.stderr)
        return 2
    print(f"report: {index}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
