"""Typed run configuration: frozen dataclasses, filled from ``conf/*.yaml`` and ``key=value`` overrides.

Every knob of the pipeline lives here with its default; YAML files under ``conf/`` restate the defaults
a user is expected to touch, and the command line overrides either. OmegaConf validates keys and types
against these dataclasses, so a typo or a wrong type fails at start-up with the key's name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration key is unknown, mistyped or out of range."""


@dataclass(frozen=True)
class SourceConfig:
    """Where the LeRobot datasets are and which part of them to score."""

    uris: list[str] = field(default_factory=list)
    camera: str | None = None
    episodes: list[int] | None = None
    storage_options: dict[str, Any] = field(default_factory=dict)
    block_size: int = 1 << 20


@dataclass(frozen=True)
class FramesConfig:
    """How frames are sampled from an episode and the pinned size they are resized to."""

    fps: float = 2.0
    max_frames: int = 64
    height: int = 256
    width: int = 256


@dataclass(frozen=True)
class PrefixesConfig:
    """How many prefixes of the sampled video are scored."""

    num: int = 15


@dataclass(frozen=True)
class ModelConfig:
    """Which VLM scores the prefixes and how it is loaded."""

    path: str = "Qwen/Qwen3-VL-8B-Instruct"
    revision: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    attn_implementation: str = "sdpa"


@dataclass(frozen=True)
class ScoringConfig:
    """The TOPReward prompt and how the prefixes are batched."""

    prompt_prefix: str = (
        "The above video shows a robot manipulation trajectory that completes the following task: "
    )
    prompt_suffix: str = (
        "{instruction} Decide whether the above statement is True or not. The answer is: True"
    )
    chat_template_question: str = (
        "{instruction} Decide whether the above statement is True or not. The answer is:"
    )
    answer: str = "True"
    false_answer: str = " False"
    chat_template: bool = False
    suffix_chunk: int = 16


@dataclass(frozen=True)
class SuccessConfig:
    """Success label: mean raw log P("True") over the last ``window`` prefixes above ``threshold``."""

    window: int = 3
    threshold: float = -2.0


@dataclass(frozen=True)
class CurationConfig:
    """Which scored episodes go into the curated BC dataset."""

    enabled: bool = True
    require_success: bool = True
    min_voc: float | None = None
    min_final_progress: float | None = None


@dataclass(frozen=True)
class OutputConfig:
    """Where results are written."""

    uri: str = "outputs/topreward"
    storage_options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RayConfig:
    """How the Ray Data graph is placed on the cluster."""

    address: str | None = None
    num_cpus: int | None = None
    object_store_memory: int | None = None
    temp_dir: str | None = None
    # "auto" or a number; see pipeline/placement.py. int | float | str so that `=1` and `=0.5` both parse.
    scorer_actors: int | str = "auto"
    scorer_actors_min: int = 1
    scorer_actors_max: int | None = None
    scorer_num_gpus: int | float | str = "auto"
    scorer_num_cpus: float = 0.5
    scorer_resources: dict[str, float] = field(default_factory=dict)
    scorer_max_tasks_in_flight: int = 2
    # Episodes per scorer call; 4 measured faster than 1 (README, Running on GPUs).
    scorer_batch_size: int = 4
    scorer_threads: int | None = None
    decode_num_cpus: float = 0.5
    decode_concurrency: int | None = None


@dataclass(frozen=True)
class RetryConfig:
    """How failures are retried: episodes across runs, storage requests within one."""

    max_attempts: int = 3
    storage_attempts: int = 8


@dataclass(frozen=True)
class JobConfig:
    """How the job reports: log level, and whether recorded failures make the exit status non-zero."""

    log_level: str = "INFO"
    fail_on_errors: bool = False


@dataclass(frozen=True)
class PublishConfig:
    """How the per-dataset publish tasks run on the cluster (one Ray task per changed dataset)."""

    num_cpus: float = 1.0
    max_parallel: int = 0
    temp_dir: str | None = None
    # Readers resolve the curated pointer once and may read the version it named for hours (training):
    # a version the pointer stopped naming is removed by the first publish at least this much later.
    keep_superseded_s: float = 86400.0


@dataclass(frozen=True)
class RelabelConfig:
    """The whole run."""

    source: SourceConfig = field(default_factory=SourceConfig)
    frames: FramesConfig = field(default_factory=FramesConfig)
    prefixes: PrefixesConfig = field(default_factory=PrefixesConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    success: SuccessConfig = field(default_factory=SuccessConfig)
    curation: CurationConfig = field(default_factory=CurationConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    job: JobConfig = field(default_factory=JobConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)


# Sections whose values change the numbers a run produces; paths and placement do not. The model's
# device enters as its class (cpu/cuda: bf16 on a GPU scores differently from fp32 on a CPU), not the
# ordinal ("cuda:1" scores as "cuda:0" does).
_HASHED_SECTIONS = ("model", "scoring", "frames", "prefixes")
_HASHED_EXCLUDE = {"scoring": ("suffix_chunk",)}

AUTO = "auto"
# ``model.dtype: auto`` per device class: what the checkpoints ship on CUDA, exact (and fast) fp32 on CPU.
_AUTO_DTYPES = {"cuda": "bfloat16", "cpu": "float32"}


# Upper bounds that catch unit mistakes (a frame rate in Hz, not mHz or a frame count).
MAX_SAMPLING_FPS = 60.0


def _non_finite_keys(node: Any, prefix: str = "") -> list[str]:
    """Dotted keys of every NaN or infinite float in the config (a NaN threshold silently fails all)."""
    if isinstance(node, dict):
        return [key for name, value in node.items() for key in _non_finite_keys(value, f"{prefix}{name}.")]
    if isinstance(node, float) and not math.isfinite(node):
        return [prefix.rstrip(".")]
    return []


def _validate(cfg: RelabelConfig) -> None:
    """Range checks; every message names the key and the value it got."""
    full = asdict(cfg)
    for key in _non_finite_keys({k: v for k, v in full.items() if k not in ("source", "output")}):
        section, name = key.split(".", 1)
        raise ConfigError(f"config error at '{key}': {full[section][name]!r} is not a finite number")
    checks = [
        ("frames.fps", 0 < cfg.frames.fps <= MAX_SAMPLING_FPS, f"must be > 0 and <= {MAX_SAMPLING_FPS}"),
        (
            "frames.max_frames",
            cfg.frames.max_frames >= 2 and cfg.frames.max_frames % 2 == 0,
            "must be even, >= 2",
        ),
        ("frames.height", cfg.frames.height > 0, "must be > 0"),
        ("frames.width", cfg.frames.width > 0, "must be > 0"),
        ("prefixes.num", cfg.prefixes.num >= 1, "must be >= 1"),
        ("scoring.suffix_chunk", cfg.scoring.suffix_chunk >= 1, "must be >= 1"),
        ("success.window", cfg.success.window >= 1, "must be >= 1"),
        (
            "ray.scorer_actors",
            cfg.ray.scorer_actors == "auto"
            or (isinstance(cfg.ray.scorer_actors, int) and cfg.ray.scorer_actors >= 1),
            "must be auto or an integer >= 1",
        ),
        (
            "ray.scorer_num_gpus",
            cfg.ray.scorer_num_gpus == "auto"
            or (not isinstance(cfg.ray.scorer_num_gpus, str) and cfg.ray.scorer_num_gpus >= 0),
            "must be auto or a number >= 0 (0.5: two actors per GPU)",
        ),
        ("ray.scorer_actors_min", cfg.ray.scorer_actors_min >= 1, "must be >= 1"),
        (
            "ray.scorer_actors_max",
            cfg.ray.scorer_actors_max is None or cfg.ray.scorer_actors_max >= cfg.ray.scorer_actors_min,
            "must be null or >= ray.scorer_actors_min",
        ),
        ("ray.scorer_resources", all(v > 0 for v in cfg.ray.scorer_resources.values()), "must be > 0 each"),
        ("ray.scorer_max_tasks_in_flight", cfg.ray.scorer_max_tasks_in_flight >= 1, "must be >= 1"),
        ("ray.scorer_batch_size", cfg.ray.scorer_batch_size >= 1, "must be >= 1"),
        (
            "model.dtype",
            cfg.model.dtype in ("auto", "float32", "bfloat16", "float16"),
            "must be auto|float32|bfloat16|float16",
        ),
        ("retry.max_attempts", cfg.retry.max_attempts >= 1, "must be >= 1"),
        ("retry.storage_attempts", cfg.retry.storage_attempts >= 1, "must be >= 1"),
        (
            "job.log_level",
            cfg.job.log_level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"),
            "must be DEBUG|INFO|WARNING|ERROR",
        ),
        ("source.block_size", cfg.source.block_size >= 4096, "must be >= 4096 bytes"),
        ("publish.num_cpus", cfg.publish.num_cpus > 0, "must be > 0"),
        ("publish.max_parallel", cfg.publish.max_parallel >= 0, "must be >= 0 (0 = as many as fit)"),
        ("publish.keep_superseded_s", cfg.publish.keep_superseded_s >= 0, "must be >= 0 (0 = next publish)"),
    ]
    for key, ok, requirement in checks:
        if not ok:
            section, name = key.split(".", 1)
            raise ConfigError(f"config error at '{key}': got {full[section][name]!r}; {requirement}")


def load_config(overrides: list[str] | None = None, yaml_path: str | Path | None = None) -> RelabelConfig:
    """Build the run config from the dataclass defaults, a YAML file and ``key=value`` overrides.

    Args:
        overrides: dotlist entries such as ``["frames.fps=4", "source.uris=[s3://b/ds]"]``.
        yaml_path: YAML to merge under the overrides; ``conf/relabel.yaml`` when None (skipped when the
            package runs from an installed wheel without it).

    Returns:
        The frozen, validated config.

    Raises:
        ConfigError: an unknown key, a value of the wrong type, or an out-of-range value.
    """
    default_yaml = CONF_DIR / "relabel.yaml"
    if yaml_path is None and not default_yaml.exists():
        # An installed wheel has no conf/: the dataclass defaults, which the YAML restates, stand alone.
        files = []
    else:
        path = Path(yaml_path) if yaml_path is not None else default_yaml
        if not path.exists():
            raise ConfigError(f"config error: no such file {path}")
        files = [OmegaConf.load(path)]
    cfg = structured_config(RelabelConfig, *files, OmegaConf.from_dotlist(list(overrides or [])))
    _validate(cfg)
    return cfg


def structured_config[T](schema: type[T], *sources: Any) -> T:
    """``schema`` filled from OmegaConf sources (YAML nodes, dotlists), checked against its types.

    Raises:
        ConfigError: one line naming the key that is unknown or has a value of the wrong type.
    """
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), *sources))
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        reason = str(err).splitlines()[0]
        raise ConfigError(
            f"config error at '{key}': {reason}" if key else f"config error: {reason}"
        ) from None
    except ValueError as err:
        raise ConfigError(f"config error: {err}") from None


def device_class(device: str) -> str:
    """The kind of device a ``model.device`` names: ``cuda:1`` is ``cuda``; ``auto`` stays ``auto``."""
    return device.split(":", 1)[0].strip().lower()


def resolved_dtype(dtype: str, device: str) -> str:
    """``model.dtype`` on ``device``: ``auto`` is bfloat16 on CUDA and float32 elsewhere; else unchanged.

    With ``device`` still ``auto`` nothing can be said and ``auto`` comes back: a run resolves the device
    first (:func:`pipeline.placement.resolve_model`).
    """
    kind = device_class(device)
    if dtype != AUTO or kind == AUTO:
        return dtype
    return _AUTO_DTYPES.get(kind, "float32")


def config_hash(cfg: RelabelConfig) -> str:
    """A short stable hash of the settings that change the scores (model, prompt, frames, prefixes).

    The model enters with its device class and its dtype resolved on it, so ``dtype=auto`` on a CPU
    hashes as ``float32``/``cpu`` and fp32 scores never share a hash with bf16 ones. A run hashes its
    config after resolving ``device: auto`` (:func:`pipeline.placement.resolve_model`).
    """
    full = asdict(cfg)
    full["model"]["dtype"] = resolved_dtype(cfg.model.dtype, cfg.model.device)
    full["model"]["device"] = device_class(cfg.model.device)
    hashed = {}
    for section in _HASHED_SECTIONS:
        values = dict(full[section])
        for key in _HASHED_EXCLUDE.get(section, ()):
            values.pop(key, None)
        hashed[section] = values
    blob = json.dumps(hashed, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _known(recorded: dict[str, Any], schema: Any, prefix: str = "") -> dict[str, Any]:
    """``recorded`` without the keys ``schema`` (a config dataclass instance) lacks, dropped with a log.

    Records outlive code: a key a later version removed must not stop a job from reading an old run.
    Free-form values (storage options, resources) are kept whole.
    """
    kept = {}
    for name, value in recorded.items():
        if not hasattr(schema, name):
            log.info("recorded config: ignoring %s%s (not a setting of this version)", prefix, name)
            continue
        default = getattr(schema, name)
        if is_dataclass(default) and isinstance(value, dict):
            value = _known(value, default, f"{prefix}{name}.")
        kept[name] = value
    return kept


def override_keys(overrides: list[str]) -> list[str]:
    """The dotted keys of ``key=value`` entries, in order, once each (``+``/``~`` prefixes dropped)."""
    keys = [item.split("=", 1)[0].strip().lstrip("+~") for item in overrides]
    return list(dict.fromkeys(key for key in keys if key))


def config_with_recorded(recorded: dict[str, Any], overrides: list[str]) -> tuple[RelabelConfig, list[str]]:
    """A recorded run's config under explicit overrides: dataclass defaults < ``recorded`` < ``overrides``.

    Jobs that read a run's outputs (report, evaluate, pull) take their settings from the run record of
    the run that published them (:func:`pipeline.runrecord.published_settings`), so they decide success
    and selection as that run did, and can say which key the command line changed.

    Storage options are recorded without secrets, and mappings merge key by key: a recorded
    ``{endpoint_url: ...}`` under a given ``{key: ..., secret: ...}`` holds both, and with none given the
    backend still finds credentials in the job's environment (``AWS_*`` variables, gcloud), because the
    merged options name none.

    Args:
        recorded: A run record's ``config`` (the sections of :class:`RelabelConfig` as plain values), or
            ``{}``. Keys this version does not know are ignored.
        overrides: ``key=value`` entries given explicitly, e.g. ``["success.threshold=-3"]``. A recorded
            ``model.device`` (``cuda``) may need one on a machine without that device.

    Returns:
        The validated config, and the dotted keys the overrides set (e.g. ``["success.threshold"]``).

    Raises:
        ConfigError: an unknown override key, a wrong type, or an out-of-range value (recorded or given).
    """
    known = _known(dict(recorded), RelabelConfig())
    cfg = structured_config(RelabelConfig, OmegaConf.create(known), OmegaConf.from_dotlist(list(overrides)))
    _validate(cfg)
    return cfg, override_keys(overrides)
