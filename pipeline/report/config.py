"""Settings of the report and evaluation jobs, loaded beside the relabel config from one ``key=value`` list.

Both jobs read what a relabel run wrote and need some relabel keys (``output.uri``, storage options,
``success.threshold``, the model and frame settings), plus a few of their own. One command line carries
both: keys whose first part names a field of the job's schema go to it, every other key goes through
:func:`pipeline.config.load_config` unchanged, so a typo in either half stops the job naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from omegaconf import OmegaConf

from pipeline.config import RelabelConfig, load_config, structured_config


@dataclass(frozen=True)
class ReportConfig:
    """How the HTML report is drawn and where it goes."""

    out: str | None = None  # folder for index.html and one page per dataset; None: <output.uri>/_report
    strip_frames: int = 6  # frames shown per episode, evenly spaced from first to last
    thumb_height: int = 72  # pixels; the width follows the camera's aspect ratio
    max_episodes: int = 200  # per-episode sections per dataset page (dataset plots always use all)
    dpi: int = 80


@dataclass(frozen=True)
class ReportJob:
    """``python -m jobs.report`` keys besides the relabel ones."""

    dataset: str | None = None  # one dataset id (e.g. so100/pick_cube); None: every dataset found
    report: ReportConfig = field(default_factory=ReportConfig)


def load_job_config[JobT](overrides: list[str], schema: type[JobT]) -> tuple[RelabelConfig, JobT]:
    """Split ``key=value`` overrides between the relabel config and a job's own schema, and load both.

    Args:
        overrides: dotlist entries, e.g. ``["output.uri=s3://b/labels", "dataset=so100/pick_cube"]``.
        schema: a dataclass whose fields are the job's own top-level keys.

    Returns:
        The validated relabel config and the job's settings.

    Raises:
        ConfigError: an unknown key or a value of the wrong type, in either half.
    """
    own_keys = {f.name for f in fields(schema)}
    own = [item for item in overrides if item.split("=", 1)[0].split(".", 1)[0] in own_keys]
    cfg = load_config([item for item in overrides if item not in own])
    return cfg, structured_config(schema, OmegaConf.from_dotlist(own))


def threshold_origin(overrides: list[str]) -> str:
    """Where ``success.threshold`` came from, in words, for the report to say."""
    if any(item.split("=", 1)[0] == "success.threshold" for item in overrides):
        return "given as success.threshold=... (overriding conf/relabel.yaml)"
    return "success.threshold from conf/relabel.yaml (override with success.threshold=...)"
