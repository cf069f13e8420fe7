"""An HTML report of the published labels: per dataset, success and VOC distributions, failed episodes
and, per episode, sampled frames above its progress curve and raw log P("True") per prefix.

The names below load on first use, so that ``pipeline.report.outputs`` (what ``jobs.evaluate`` and other
readers use) imports neither matplotlib nor PyAV through this package.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "JobArgs": "pipeline.report.config",
    "ReportConfig": "pipeline.report.config",
    "ReportJob": "pipeline.report.config",
    "RunSettings": "pipeline.report.config",
    "ReportResult": "pipeline.report.pages",
    "load_job_config": "pipeline.report.config",
    "run_report": "pipeline.report.pages",
    "write_report": "pipeline.report.pages",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
