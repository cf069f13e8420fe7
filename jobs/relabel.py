"""Relabel LeRobot datasets with TOPReward progress and success labels.

    python -m jobs.relabel source.uris='[s3://fleet/so100/pick_cube]' output.uri=s3://fleet-labels/topreward
    ray job submit --working-dir . -- python -m jobs.relabel source.uris='[...]' output.uri=...

Any key of conf/relabel.yaml can be overridden as ``key=value``. Under ``ray job submit`` it joins the
cluster it was submitted to; standalone it starts a local Ray. Episodes already committed for the same
config are skipped, so re-running (or running nightly) scores only what is new.
"""

from __future__ import annotations

import logging
import sys

from pipeline.config import ConfigError, load_config
from pipeline.relabel import format_summary, run


def main(argv: list[str] | None = None) -> int:
    """Run the relabel job; exit status 0 when the run completes, 2 on a config error.

    Failed episodes do not fail the job: they are recorded with their reason in ``episodes.parquet`` and
    listed in the summary, and the next run retries them.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(sys.argv[1:] if argv is None else argv)
    except ConfigError as err:
        print(f"jobs.relabel: {err}", file=sys.stderr)
        return 2
    if not cfg.source.uris:
        print("jobs.relabel: source.uris is empty; pass source.uris='[s3://bucket/dataset]'", file=sys.stderr)
        return 2
    summary = run(cfg)
    print(format_summary(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
