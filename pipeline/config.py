"""Typed run configuration: frozen dataclasses, filled from ``conf/*.yaml`` and ``key=value`` overrides.

Every knob of the pipeline lives here with its default; YAML files under ``conf/`` restate the defaults
a user is expected to touch, and the command line overrides either. OmegaConf validates keys and types
against these dataclasses, so a typo or a wrong type fails at start-up with the key's name.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import logging
import math
import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration key is unknown, mistyped or out of range."""


@dataclass(frozen=True)
class SourceConfig:
    """Where the LeRobot datasets are and which part of them to score.

    Attributes:
        uris: Dataset roots, or prefixes holding many datasets (found by meta/info.json).
        camera: Video feature to score; null = the dataset's first video feature.
        episodes: Episode indices to score; null = every episode.
        storage_options: fsspec options for the sources, e.g. {endpoint_url: http://127.0.0.1:9000};
            secrets are never logged or recorded.
        block_size: Bytes per ranged read when streaming video from object storage.
        read_threads: Datasets whose metadata (or committed state) the driver reads at once: only
            new or changed ones are read, each a few small requests bound by latency.
    """

    uris: list[str] = field(default_factory=list)
    camera: str | None = None
    episodes: list[int] | None = None
    storage_options: dict[str, Any] = field(default_factory=dict)
    block_size: int = 1 << 20
    read_threads: int = 32


@dataclass(frozen=True)
class FramesConfig:
    """How frames are sampled from an episode and the pinned size they are resized to.

    Long episodes (reward resolution, README "Reward resolution"): ``max_frames`` lowers the rate of
    an episode longer than ``max_frames / fps`` seconds; ``min_fps`` stops that drop, so a long episode
    gets at least ``min_fps`` frames per second (its 2-frame blocks at most ``2 / min_fps`` s apart,
    which is what lets ``prefixes.max_spacing_s`` place prefix ends that close), up to
    ``max_frames_long`` frames (or ``max_frames``, if larger). An episode that ``max_frames`` leaves at
    ``min_fps`` or above (at the defaults, up to 78 s) is sampled exactly as before the floor existed.

    Attributes:
        fps: Sampling rate over the raw episode, in Hz (real timestamps kept).
        max_frames: Even cap on sampled frames per episode; the rate drops for long episodes.
        min_fps: Floor on that drop, in Hz (at most ``fps``: a higher floor counts as ``fps``): long
            episodes get more frames; null = no floor (``max_frames`` frames whatever the length).
        max_frames_long: Even cap on frames the floor may add (768: the most Qwen3-VL's video processor
            samples from one video); beyond ``max_frames_long / min_fps`` seconds the rate drops again.
        height: Pinned frame height, a multiple of the model's patch*merge (32 for Qwen3-VL).
        width: Pinned frame width, a multiple of the model's patch*merge (32 for Qwen3-VL).

    ``min_fps`` and ``max_frames_long`` are not in the run's hash (:func:`config_hash`): they change
    only some episodes, so they enter per episode, through its fingerprint
    (:func:`pipeline.frames.schedule.resolution_tag`). An episode whose schedule they change is scored
    again and never shares results with the schedule it had; one they leave as it was (up to 52 s at
    the defaults) keeps its fingerprint, its committed results and its published bytes.
    """

    fps: float = 2.0
    max_frames: int = 64
    min_fps: float | None = 0.8
    max_frames_long: int = 768
    height: int = 256
    width: int = 256


@dataclass(frozen=True)
class PrefixesConfig:
    """How many prefixes of the sampled video are scored.

    ``max_spacing_s`` is the reward's time resolution: an episode gets more than ``num`` prefixes where
    ``num`` evenly spaced ones would leave consecutive prefix ends more than this many seconds apart
    (the fewest that do not, capped by its 2-frame blocks), so a 10-minute episode has 121 progress
    points at most 5 s apart instead of 15 points 42 s apart on average (57 s at most). Per episode,
    through its fingerprint, not in the run's hash (see :class:`FramesConfig`).

    Attributes:
        num: K prefixes on 2-frame block boundaries; the last is the whole episode.
        max_spacing_s: Largest gap, in seconds, between consecutive prefix ends; more prefixes where
            the video is long; null = ``num`` prefixes whatever the length.
    """

    num: int = 15
    max_spacing_s: float | None = 5.0


@dataclass(frozen=True)
class ModelConfig:
    """Which VLM scores the prefixes and how it is loaded.

    Attributes:
        path: Hub id or local folder of the VLM (safetensors weights only).
        revision: Hub branch, tag or commit; null = the default branch.
        dtype: auto|float32|bfloat16|float16; auto = bfloat16 on CUDA, float32 on CPU.
        device: auto = cuda if available, else cpu; or cpu, cuda, cuda:N.
        attn_implementation: Attention kernel the model is loaded with (sdpa, eager, ...).
    """

    path: str = "Qwen/Qwen3-VL-8B-Instruct"
    revision: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    attn_implementation: str = "sdpa"


@dataclass(frozen=True)
class ScoringConfig:
    """The TOPReward prompt and how the prefixes are batched.

    Attributes:
        prompt_prefix: Text after the video, before the instruction.
        prompt_suffix: Text after the instruction ({instruction} is replaced); ends with the answer.
        chat_template_question: The question asked instead of prompt_suffix when chat_template is true.
        answer: The answer token whose log probability is scored.
        false_answer: The companion answer token, whose log probability is recorded too.
        chat_template: Score through the model's chat template; false is the paper's setting.
        suffix_chunk: Prefixes scored per batched suffix pass (bounds memory for large K).
    """

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
    """Success label: mean raw log P("True") over the last ``window`` prefixes above ``threshold``.

    Attributes:
        window: Prefixes, counted from the end, whose raw log P("True") is averaged.
        threshold: Success when that mean is above this; calibrate with python -m jobs.calibrate.
    """

    window: int = 3
    threshold: float = -2.0


@dataclass(frozen=True)
class CurationConfig:
    """Which scored episodes go into the curated BC dataset.

    Attributes:
        enabled: Write the curated dataset; false selects no episode.
        require_success: Select only successful episodes.
        min_voc: Select only episodes whose VOC is at least this (e.g. 0.8: progress rises steadily).
        min_final_progress: Select only episodes whose last prefix's progress is at least this.
    """

    enabled: bool = True
    require_success: bool = True
    min_voc: float | None = None
    min_final_progress: float | None = None


@dataclass(frozen=True)
class OutputConfig:
    """Where results are written.

    Attributes:
        uri: Output folder or prefix (local path, s3://, gs://); never inside a source.
        storage_options: fsspec options for the outputs, as for source.storage_options.
        compact_markers: A dataset's committed shards are folded into one (shard and marker) when its
            state folder holds more markers than this, at its next publish; bounds _state/ growth.
    """

    uri: str = "outputs/topreward"
    storage_options: dict[str, Any] = field(default_factory=dict)
    compact_markers: int = 8


@dataclass(frozen=True)
class RayConfig:
    """How the Ray Data graph is placed on the cluster.

    Attributes:
        address: Ray cluster to join; null = RAY_ADDRESS if set (ray job submit), else a local Ray.
        num_cpus: CPUs of a local Ray; null = all of the machine's.
        object_store_memory: Bytes of a local Ray's object store; null = Ray's default.
        temp_dir: Temp folder of a local Ray; null = Ray's default.
        scorer_actors: auto = pool from scorer_actors_min to what the GPUs (and scorer_resources) hold,
            1 on a CPU-only cluster; or a fixed number.
        scorer_actors_min: Smallest size of the auto pool.
        scorer_actors_max: Cap for auto; set it on autoscaling clusters whose GPUs appear later.
        scorer_num_gpus: auto = 1 per actor if the cluster has GPUs, else 0; 0.5 = two actors per GPU.
        scorer_num_cpus: CPUs per scorer actor; fractional so decode tasks still get a CPU.
        scorer_resources: Custom resources each scorer needs, e.g. {scorer_node: 1}: pins the pool.
        scorer_max_tasks_in_flight: Batches queued per actor: the next episode waits there decoded.
        scorer_batch_size: Episodes per scorer call (4 measured faster than 1).
        scorer_threads: torch CPU threads per scorer on CPU; null = all cores of the node.
        decode_num_cpus: CPUs per decode task.
        decode_concurrency: Cap on decode tasks running at once; null = Ray Data decides.
    """

    address: str | None = None
    num_cpus: int | None = None
    object_store_memory: int | None = None
    temp_dir: str | None = None
    # "auto" or a number (pipeline/placement.py); int | float | str so that `=1` and `=0.5` both parse.
    scorer_actors: int | str = "auto"
    scorer_actors_min: int = 1
    scorer_actors_max: int | None = None
    scorer_num_gpus: int | float | str = "auto"
    scorer_num_cpus: float = 0.5
    scorer_resources: dict[str, float] = field(default_factory=dict)
    scorer_max_tasks_in_flight: int = 2
    # 4 measured faster than 1 (README, Running on GPUs).
    scorer_batch_size: int = 4
    scorer_threads: int | None = None
    decode_num_cpus: float = 0.5
    decode_concurrency: int | None = None


@dataclass(frozen=True)
class RetryConfig:
    """How failures are retried: episodes across runs, storage requests within one.

    Attributes:
        max_attempts: A failed episode is retried on later runs until it has failed this often.
        storage_attempts: Attempts per storage request (transient 5xx, throttling, resets).
    """

    max_attempts: int = 3
    storage_attempts: int = 8


@dataclass(frozen=True)
class JobConfig:
    """How the job reports: log level, and whether recorded failures make the exit status non-zero.

    Attributes:
        log_level: DEBUG|INFO|WARNING|ERROR for the pipeline's own log lines.
        fail_on_errors: true: exit 3 when any episode or dataset failed (for alerting).
        progress_interval_s: Seconds between the "scoring: done/total, episodes/h, ETA" log lines.
        keep_run_records: Run records kept under <output>/_runs/: the N most recent, plus any a dataset's
            _published.json names; 0 = keep all.
        inline_max_episodes: A run that would start a local Ray (no ray.address, no RAY_ADDRESS, none
            connected) to score at most this many episodes on CPU scores them in its own process, with
            the same stage functions; 0 = never.
    """

    log_level: str = "INFO"
    fail_on_errors: bool = False
    progress_interval_s: float = 30.0
    # Applied at the end of a run by pipeline.runrecord.prune_run_records.
    keep_run_records: int = 200
    # Below this, Ray's start, the scorer actor's process and Ray Data's workers cost more than the work
    # (bench.startup; README "Start-up"). Read by pipeline.relabel.scores_inline.
    inline_max_episodes: int = 8


@dataclass(frozen=True)
class PublishConfig:
    """How the per-dataset publish tasks run on the cluster (one Ray task per changed dataset).

    Attributes:
        num_cpus: CPUs per dataset's publish task (stream copy and parquet writes).
        max_parallel: Datasets published at once; 0 = as many as the cluster fits.
        temp_dir: Worker-local folder for files being written; null = the system's.
        keep_superseded_s: Seconds a superseded curated version stays for readers still using it.
        curated_compact_fanout: Appended runs of one level packed into one run of the next when this many
            have gathered (a new curated version); bounds the curated set's file count. Below 2: never.
        curated_compact_levels: Levels of packing: each episode's bytes are written at most 1 + this
            many times.
        inline_max_datasets: A run with no cluster to join and no Ray started (a local run that scored
            nothing, or scored in its own process: ``job.inline_max_episodes``) publishes up to this
            many changed datasets in its own process, one after another, without starting Ray; 0 = never.
    """

    num_cpus: float = 1.0
    max_parallel: int = 0
    temp_dir: str | None = None
    # Readers resolve the curated pointer once and may read the version it named for hours (training):
    # a version the pointer stopped naming is removed by the first publish at least this much later.
    keep_superseded_s: float = 86400.0
    curated_compact_fanout: int = 8
    curated_compact_levels: int = 2
    # A local Ray's start (~3 s, bench.startup) costs more than publishing a few small datasets.
    inline_max_datasets: int = 4


@dataclass(frozen=True)
class RelabelConfig:
    """The whole run: one section per concern.

    Attributes:
        source: Where the LeRobot datasets are and which part of them to score.
        frames: How frames are sampled and the size they are resized to.
        prefixes: How many prefixes of the sampled video are scored.
        model: Which VLM scores the prefixes and how it is loaded.
        scoring: The TOPReward prompt and how the prefixes are batched.
        success: How the success label is decided.
        curation: Which scored episodes go into the curated dataset.
        output: Where results are written.
        ray: How the Ray Data graph is placed on the cluster.
        retry: How failures are retried.
        job: Log level and exit status.
        publish: How the per-dataset publish tasks run.
    """

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
# suffix_chunk is batching only. The reward-resolution keys decide per episode, so they enter per
# episode, through the fingerprint (pipeline.frames.schedule.resolution_tag): an episode they leave as
# it was keeps its results, one they change is re-scored.
_HASHED_EXCLUDE = {
    "scoring": ("suffix_chunk",),
    "frames": ("min_fps", "max_frames_long"),
    "prefixes": ("max_spacing_s",),
}

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
        ("frames.min_fps", cfg.frames.min_fps is None or cfg.frames.min_fps > 0, "must be null or > 0"),
        (
            "frames.max_frames_long",
            cfg.frames.max_frames_long >= 2 and cfg.frames.max_frames_long % 2 == 0,
            "must be even, >= 2",
        ),
        ("prefixes.num", cfg.prefixes.num >= 1, "must be >= 1"),
        (
            "prefixes.max_spacing_s",
            cfg.prefixes.max_spacing_s is None or cfg.prefixes.max_spacing_s > 0,
            "must be null or > 0 seconds",
        ),
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
        # What Ray itself refuses (ray.init, task and actor options), refused here before Ray starts.
        (
            "ray.num_cpus",
            cfg.ray.num_cpus is None or cfg.ray.num_cpus >= 1,
            "must be null (all cores) or >= 1",
        ),
        (
            "ray.object_store_memory",
            cfg.ray.object_store_memory is None or cfg.ray.object_store_memory >= 75 * 1024**2,
            "must be null (Ray's default) or >= 78643200 bytes (75 MiB, Ray's minimum)",
        ),
        (
            "ray.scorer_num_cpus",
            cfg.ray.scorer_num_cpus == 0 or cfg.ray.scorer_num_cpus >= 1e-4,
            "must be >= 0 (Ray counts CPUs in steps of 0.0001)",
        ),
        (
            "ray.decode_num_cpus",
            cfg.ray.decode_num_cpus == 0 or cfg.ray.decode_num_cpus >= 1e-4,
            "must be >= 0 (Ray counts CPUs in steps of 0.0001)",
        ),
        (
            "ray.scorer_num_gpus",
            isinstance(cfg.ray.scorer_num_gpus, str)
            or cfg.ray.scorer_num_gpus <= 1
            or float(cfg.ray.scorer_num_gpus).is_integer(),
            "must be a whole number above 1 (Ray shares a GPU only below 1)",
        ),
        (
            "ray.scorer_threads",
            cfg.ray.scorer_threads is None or cfg.ray.scorer_threads >= 1,
            "must be null or >= 1",
        ),
        (
            "ray.decode_concurrency",
            cfg.ray.decode_concurrency is None or cfg.ray.decode_concurrency >= 1,
            "must be null (as many as fit) or >= 1",
        ),
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
        ("job.progress_interval_s", cfg.job.progress_interval_s >= 1, "must be >= 1 second"),
        ("job.keep_run_records", cfg.job.keep_run_records >= 0, "must be >= 0 (0 = keep every run record)"),
        ("job.inline_max_episodes", cfg.job.inline_max_episodes >= 0, "must be >= 0 (0 = always Ray Data)"),
        ("publish.inline_max_datasets", cfg.publish.inline_max_datasets >= 0, "must be >= 0 (0 = never)"),
        ("source.block_size", cfg.source.block_size >= 4096, "must be >= 4096 bytes"),
        ("source.read_threads", cfg.source.read_threads >= 1, "must be >= 1"),
        ("output.compact_markers", cfg.output.compact_markers >= 1, "must be >= 1"),
        (
            "publish.num_cpus",
            cfg.publish.num_cpus >= 1e-4,
            "must be > 0 (Ray counts CPUs in steps of 0.0001)",
        ),
        ("publish.max_parallel", cfg.publish.max_parallel >= 0, "must be >= 0 (0 = as many as fit)"),
        ("publish.keep_superseded_s", cfg.publish.keep_superseded_s >= 0, "must be >= 0 (0 = next publish)"),
        ("publish.curated_compact_levels", cfg.publish.curated_compact_levels >= 0, "must be >= 0"),
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
    cfg = structured_config(RelabelConfig, *files, dotlist(overrides or []))
    _validate(cfg)
    return cfg


def structured_config[T](schema: type[T], *sources: Any) -> T:
    """``schema`` filled from OmegaConf sources (YAML nodes, dotlists), checked against its types.

    Raises:
        ConfigError: one line naming the key that is unknown or has a value of the wrong type, with a
            hint: the closest known key, or the value as the key's type wants it written.
    """
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), *sources))
    except ConfigKeyError as err:
        key = _typed_key(err.full_key, sources) if err.full_key else None
        if key is None:
            raise ConfigError(f"config error: {_reason(err)}") from None
        raise ConfigError(f"config error at '{key}': {_unknown_key_hint(schema, key)}") from None
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        if not key:
            raise ConfigError(_shape_error(schema, sources) or f"config error: {_reason(err)}") from None
        hint = _type_hint(schema, key, getattr(err, "value", None))
        raise ConfigError(f"config error at '{key}': {hint or _reason(err)}") from None
    except (ValueError, TypeError) as err:
        raise ConfigError(_shape_error(schema, sources) or f"config error: {err}") from None


def _shape_error(schema: type, sources: Sequence[Any]) -> str | None:
    """The message for a section given a value (``frames=3``) or a value given a key (``source.uris.x``)."""
    for source in sources:
        if not isinstance(source, DictConfig):
            continue
        for key, value in _leaves(OmegaConf.to_container(source, resolve=False)):
            kind = setting_type(schema, key)
            if is_dataclass(kind) and not isinstance(value, dict):
                example = setting_keys(kind)[0]
                return f"config error at '{key}': a section, not a value: give {key}.{example}=..."
            parts = key.split(".")
            for end in range(1, len(parts)):
                kind = setting_type(schema, ".".join(parts[:end]))
                if kind is not None and not is_dataclass(kind) and typing.get_origin(kind) is not dict:
                    setting = ".".join(parts[:end])
                    return f"config error at '{key}': {setting} is a setting, not a section"
    return None


def setting_keys(schema: type) -> list[str]:
    """Every setting of a config dataclass as a dotted key, in declaration order (``frames.fps``)."""
    keys = []
    hints = typing.get_type_hints(schema)
    for item in fields(schema):
        kind = hints[item.name]
        if is_dataclass(kind):
            keys.extend(f"{item.name}.{key}" for key in setting_keys(kind))
        else:
            keys.append(item.name)
    return keys


def setting_default(schema: type, key: str) -> Any:
    """The default of a dotted setting key, from the dataclass defaults."""
    node: Any = schema()
    for part in key.split("."):
        node = getattr(node, part)
    return node


def setting_type(schema: type, key: str) -> Any:
    """The type annotation of a dotted setting key (``list[str]``); None for a key ``schema`` lacks."""
    kind: Any = schema
    for part in key.split("."):
        if not is_dataclass(kind):
            return None
        hints = typing.get_type_hints(kind)
        if part not in hints:
            return None
        kind = hints[part]
    return kind


def _reason(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, value)`` of every value in a nested mapping; a list or ``{}`` is one value."""
    if isinstance(node, dict) and node:
        for name, value in node.items():
            yield from _leaves(value, f"{prefix}{name}.")
    elif prefix:
        yield prefix.rstrip("."), node


def _typed_key(full_key: str, sources: Sequence[Any]) -> str:
    """The key as given that failed at ``full_key`` (``sucess.threshold`` for ``sucess``)."""
    for source in sources:
        if isinstance(source, DictConfig):
            container = OmegaConf.to_container(source, resolve=False)
            for key, _ in _leaves(container):
                if key == full_key or key.startswith(f"{full_key}."):
                    return key
    return full_key


def _unknown_key_hint(schema: type, key: str) -> str:
    """``unknown key``, with the closest known one (difflib) when there is one."""
    known = setting_keys(schema)
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if not close:  # a typo in the section alone: sucess.threshold
        section, _, rest = key.partition(".")
        sections = {k.split(".", 1)[0] for k in known if "." in k}
        near = difflib.get_close_matches(section, sorted(sections), n=1, cutoff=0.6)
        close = [f"{near[0]}.{rest}"] if near and rest and f"{near[0]}.{rest}" in known else []
    if close:
        return f"unknown key; did you mean {close[0]}?"
    return "unknown key (--help lists the settings)"


def _example(key: str, kind: Any, value: Any, default: Any) -> str | None:
    """How a value of ``kind`` for ``key`` is written on the command line, from what was given."""
    nullable = type(None) in typing.get_args(kind) if isinstance(kind, types.UnionType) else False
    options = [k for k in typing.get_args(kind) if k is not type(None)] if nullable else [kind]
    if len(options) != 1:
        return None
    origin = typing.get_origin(options[0]) or options[0]
    given = "" if value is None else str(value)
    if origin in (list, tuple):
        items = given.strip("[]()") or "..."
        return f"wants a list: {key}='[{items}]'"
    if origin is dict:
        example = "endpoint_url: http://..." if key.endswith("storage_options") else "name: value"
        return f"wants a mapping: {key}='{{{example}}}'"
    or_null = " or null" if nullable else ""
    if origin is bool:
        return f"wants true or false{or_null}, got {given!r}: {key}=true"
    if origin in (int, float):
        what = "a whole number" if origin is int else "a number"
        example = default if isinstance(default, int | float) and not isinstance(default, bool) else 1
        return f"wants {what}{or_null}, got {given!r}: {key}={example}"
    return None


def _type_hint(schema: type, key: str, value: Any) -> str | None:
    """A hint for a value of the wrong type at ``key``, or None when there is nothing to add."""
    if hasattr(value, "_value"):  # an OmegaConf node
        value = value._value()
    kind = setting_type(schema, key)
    return None if kind is None else _example(key, kind, value, setting_default(schema, key))


def dotlist(overrides: Sequence[str]) -> DictConfig:
    """``key=value`` entries as one OmegaConf node, later entries winning.

    Raises:
        ConfigError: an entry that is not ``key=value``, or whose value is not YAML (names the key).
    """
    node = OmegaConf.create()
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"config error: {item!r} is not key=value (e.g. frames.fps=4)")
        try:
            node.merge_with_dotlist([item])
        except yaml.YAMLError as err:
            raise ConfigError(
                f"config error at '{key}': {value!r} is not a YAML value ({_reason(err)}); write a list "
                "as '[a, b]' and a mapping as '{name: value}', quoted for the shell"
            ) from None
        except (OmegaConfBaseException, ValueError, TypeError) as err:
            raise ConfigError(f"config error at '{key}': {_reason(err)}") from None
    return node


def _flow(value: Any) -> str:
    """``value`` as YAML flow text that a ``key=value`` entry reads back as the same value."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return json.dumps(str(value))


def read_config_file(path: str) -> list[str]:
    """A YAML file of settings (``--config``) as ``key=value`` entries, to go before the command line's.

    Sections merge key by key, as OmegaConf merges YAML: ``frames: {fps: 4}`` sets ``frames.fps`` only;
    a list or an empty mapping is one value. The entries then merge like any given on the command line.

    Args:
        path: a local path or a URI (``s3://``, ``gs://``: credentials from the environment).

    Raises:
        ConfigError: the file is missing, unreadable, not YAML or not a mapping of settings.
    """
    text = _read_text(path)
    try:
        node = OmegaConf.create(text) if text.strip() else OmegaConf.create()
    except (yaml.YAMLError, OmegaConfBaseException) as err:
        raise ConfigError(f"config error: {path} is not YAML: {_reason(err)}") from None
    if not isinstance(node, DictConfig):
        raise ConfigError(f"config error: {path} is not a mapping of settings (frames: {{fps: 4}})")
    container = OmegaConf.to_container(node, resolve=False)
    return [f"{key}={_flow(value)}" for key, value in _leaves(container)]


def _read_text(path: str) -> str:
    """The text of a local file or a URI (fsspec, credentials from the environment)."""
    try:
        if "://" in path and not path.startswith("file://"):
            from pipeline.storage import filesystem_for  # fsspec: only for a config file in storage

            fs, remote = filesystem_for(path, {})
            with fs.open(remote, "r") as f:
                return f.read()
        return Path(path.removeprefix("file://")).read_text()
    except FileNotFoundError:
        raise ConfigError(f"config error: no such file {path}") from None
    except (OSError, ValueError) as err:
        raise ConfigError(f"config error: cannot read {path}: {_reason(err)}") from None


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
    # A fleet's datasets were published by a handful of runs: build each distinct config once.
    key = json.dumps(_known(dict(recorded), RelabelConfig()), sort_keys=True, default=str)
    return _recorded_config(key, tuple(overrides)), override_keys(overrides)


@functools.lru_cache(maxsize=64)
def _recorded_config(known_json: str, overrides: tuple[str, ...]) -> RelabelConfig:
    cfg = structured_config(RelabelConfig, OmegaConf.create(json.loads(known_json)), dotlist(list(overrides)))
    _validate(cfg)
    return cfg
