"""Settings of the jobs that read outputs (report, evaluate, pull): those of the run that published them.

A success label, a curated selection and a model control are only meaningful under the settings of the
run that made them, so the readers take ``success.*``, ``curation.*``, ``model.*``, ``frames.*``,
``prefixes.*`` and ``scoring.*`` from the run record of the run that published each dataset
(``<dataset>/_published.json`` names it; ``<output>/_runs/<run id>.json`` holds its resolved config),
never from ``conf/relabel.yaml``. A ``key=value`` on the command line overrides the record, and every
job says which setting came from where (:meth:`RunSettings.origin`).

One command line carries both halves: keys whose first part names a field of the job's own schema go
to it, every other key is a relabel key, checked by :func:`pipeline.config.load_config` so that a typo
in either half stops the job naming the key. ``output.*`` always describes where *this* job reads
(the outputs may have been copied since), never where the run wrote.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from pipeline.config import RelabelConfig, config_with_recorded, dotlist, load_config, structured_config
from pipeline.quality import QualityConfig
from pipeline.runrecord import published_settings
from pipeline.storage import redact

# The settings that decide success and selection, and those that decide the scores (the controls).
DECISION_KEYS = (
    "success.threshold",
    "success.window",
    "curation.enabled",
    "curation.require_success",
    "curation.min_voc",
    "curation.min_final_progress",
)
SCORING_KEYS = (
    "model.path",
    "frames.fps",
    "frames.max_frames",
    "frames.min_fps",
    "frames.max_frames_long",
    "frames.height",
    "frames.width",
    "prefixes.num",
    "prefixes.max_spacing_s",
)


@dataclass(frozen=True)
class ReportConfig:
    """How the HTML report is drawn and where it goes.

    Attributes:
        out: Folder for index.html and one page per dataset; null = <output.uri>/_report.
        strip_frames: Frames shown per episode, evenly spaced from first to last.
        thumb_height: Frame height in pixels; the width follows the camera's aspect ratio.
        max_episodes: Per-episode sections per dataset page (dataset plots always use all).
        dpi: Resolution of the plots.
        quality: Thresholds of the quality flags.
    """

    out: str | None = None
    strip_frames: int = 6
    thumb_height: int = 72
    max_episodes: int = 200
    dpi: int = 80
    quality: QualityConfig = field(default_factory=QualityConfig)


@dataclass(frozen=True)
class ReportJob:
    """``python -m jobs.report`` keys besides the relabel ones.

    Attributes:
        dataset: One dataset id (e.g. so100/pick_cube); null = every dataset found.
        report: How the HTML report is drawn and where it goes.
    """

    dataset: str | None = None
    report: ReportConfig = field(default_factory=ReportConfig)


@dataclass(frozen=True)
class EvaluateConfig:
    """How much of the table the model controls re-score, and where the results go.

    Attributes:
        max_episodes: Episodes re-scored for the controls (three scorer calls each); 0 = none.
        seed: Frame order of the shuffled control.
        out: JSON file for the results; null = evaluation.json next to the episodes table.
    """

    max_episodes: int = 8
    seed: int = 0
    out: str | None = None


@dataclass(frozen=True)
class EvaluateJob:
    """``python -m jobs.evaluate`` keys besides the relabel ones.

    Attributes:
        evaluate: How much the controls re-score, and where the results go.
    """

    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)


def format_value(value: Any) -> str:
    """A setting as it would be typed on the command line (``-6.2``, ``true``, ``null``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:g}"
    return str(value)


def _lookup(tree: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _given(key: str, explicit: tuple[str, ...]) -> bool:
    """Whether ``key`` (or a section holding it, or a key inside it) was given on the command line."""
    return any(key == e or key.startswith(f"{e}.") or e.startswith(f"{key}.") for e in explicit)


@dataclass(frozen=True)
class RunSettings:
    """The settings a reader uses for one dataset, and where each came from.

    Attributes:
        cfg: The run's recorded config, under the command line's overrides; ``output`` is where this
            job reads.
        run_id: The run that published the dataset; None when it has no run record.
        recorded: That run's resolved config as recorded (empty without a record).
        explicit: Dotted keys given on the command line.
        missing: Why there is no run record ("" when there is one).
    """

    cfg: RelabelConfig
    run_id: str | None
    recorded: dict[str, Any]
    explicit: tuple[str, ...]
    missing: str = ""

    def value(self, key: str) -> Any:
        """The setting in effect, by dotted key."""
        node: Any = self.cfg
        for part in key.split("."):
            node = getattr(node, part)
        return node

    def origin(self, key: str) -> str:
        """``key``'s value and where it came from, e.g. ``success.threshold -6.2 from run <id>``."""
        value = format_value(self.value(key))
        if _given(key, self.explicit):
            if self.run_id is None:
                return f"{key}={value} given on the command line"
            recorded = format_value(_lookup(self.recorded, key))
            return f"{key}={value} given on the command line, overriding run {self.run_id}'s {recorded}"
        if self.run_id is None:
            return f"{key} {value} from the defaults ({self.missing})"
        return f"{key} {value} from run {self.run_id}"

    def overridden(self, keys: tuple[str, ...]) -> list[str]:
        """The keys among ``keys`` given on the command line."""
        return [key for key in keys if _given(key, self.explicit)]


@dataclass(frozen=True)
class JobArgs[JobT]:
    """A reader job's command line, split: where to read, the relabel overrides, the job's own keys.

    Attributes:
        base: Defaults under the command line: ``output.uri`` and the storage options to read with.
        overrides: The relabel ``key=value`` entries given (applied over every run record).
        job: The job's own settings.
    """

    base: RelabelConfig
    overrides: list[str]
    job: JobT

    def settings(self, dataset_uri: str) -> RunSettings:
        """The settings for the dataset at ``dataset_uri``: its publishing run's, under the overrides."""
        return load_settings(dataset_uri, self.overrides, self.base)


def load_job_config[JobT](overrides: list[str], schema: type[JobT]) -> JobArgs[JobT]:
    """Split ``key=value`` overrides between the relabel keys and a job's own schema, and check both.

    Args:
        overrides: dotlist entries, e.g. ``["output.uri=s3://b/labels", "dataset=so100/pick_cube"]``.
        schema: a dataclass whose fields are the job's own top-level keys.

    Returns:
        The command line, split and checked; the run settings are read per dataset
        (:meth:`JobArgs.settings`).

    Raises:
        ConfigError: an unknown key or a value of the wrong type, in either half.
    """
    own_keys = {f.name for f in fields(schema)}
    own = [item for item in overrides if item.split("=", 1)[0].split(".", 1)[0] in own_keys]
    relabel = [item for item in overrides if item not in own]
    base = load_config(relabel)
    return JobArgs(base, relabel, structured_config(schema, dotlist(own)))


def load_settings(dataset_uri: str, overrides: list[str], base: RelabelConfig) -> RunSettings:
    """The settings of the run that published ``dataset_uri``, under the command line's overrides.

    Args:
        dataset_uri: one dataset's output folder (``<output.uri>/<robot>/<task>``).
        overrides: relabel ``key=value`` entries given on the command line.
        base: defaults under those overrides; its ``output`` (where to read, with which storage
            options) replaces the recorded one.

    Returns:
        The settings and their origins; without a run record, the defaults under the overrides.

    Raises:
        ConfigError: a recorded or given value is out of range.
    """
    options = base.output.storage_options
    try:
        recorded = published_settings(dataset_uri, options)
        missing = "" if recorded is not None else f"no run record for {dataset_uri}"
    except (OSError, ValueError) as err:  # an unreadable record is reported, like a missing one
        reason = redact(f"{type(err).__name__}: {err}", options)
        recorded, missing = None, f"run record of {dataset_uri} not readable: {reason}"
    config = recorded.config if recorded is not None else {}
    cfg, explicit = config_with_recorded(config, overrides)
    return RunSettings(
        cfg=replace(cfg, output=base.output),
        run_id=recorded.run_id if recorded is not None else None,
        recorded=dict(config),
        explicit=tuple(explicit),
        missing=missing,
    )


def printed_settings(
    job: Any, base: RelabelConfig, datasets: Sequence[tuple[str, RunSettings]]
) -> list[tuple[str, Any]]:
    """What a reader job's ``--print-config`` prints: ``(comment, settings)`` YAML documents.

    First the job's own settings and ``output`` (where it reads), then per dataset the settings it would
    decide and score with: the publishing run's recorded config under what was given (``--config`` and
    ``key=value``), secrets masked when printed (:func:`pipeline.cli.print_config`).

    Args:
        job: the job's own settings (a dataclass instance, e.g. :class:`ReportJob`), or None.
        base: the defaults under what was given; its ``output`` is where the job reads.
        datasets: ``(dataset URI, its settings)`` for each dataset the job would read.
    """
    own = {**(asdict(job) if job is not None else {}), "output": asdict(base.output)}
    documents: list[tuple[str, Any]] = [("the job's own settings; output: where it reads", own)]
    for uri, settings in datasets:
        source = f"run {settings.run_id}'s record" if settings.run_id else f"defaults ({settings.missing})"
        given = ", ".join(settings.explicit) or "none"
        documents.append((f"{uri}: settings from {source}\ngiven: {given}", settings.cfg))
    return documents
