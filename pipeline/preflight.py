"""Checks on the driver before Ray starts: a run that cannot work is refused in seconds, naming the key.

A nightly job that only finds out after Ray started and an actor crashed that ``model.path`` was a typo,
or that it would write its outputs inside its own source prefix, wastes a night and says little. These
checks read a few small files (the model's ``config.json``, the weights listing and each safetensors
header, so a truncated download is named here rather than by a dying scorer actor) and compare URIs;
each failure is a :class:`~pipeline.config.ConfigError` whose message names the config key and its value.
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import HfHubHTTPError

from pipeline.config import ConfigError, FramesConfig, ModelConfig, RelabelConfig
from pipeline.storage import canonical_uri, is_under, normalize_uri

log = logging.getLogger(__name__)

# Model types the cached scorer is proven exact for (tests/test_scoring_exact.py).
SUPPORTED_MODEL_TYPES = ("qwen3_vl", "qwen2_5_vl")
# Where the storage clients find credentials on the machine they run on, per canonical scheme.
_CREDENTIAL_ENV = {
    "s3": ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"),
    "gs": ("GOOGLE_APPLICATION_CREDENTIALS",),
}
# Storage option names that carry credentials (s3fs key/secret/token, gcsfs token, client_kwargs).
_CREDENTIAL_OPTION_MARKERS = ("key", "secret", "token", "credential", "profile")
# The index transformers writes next to sharded safetensors weights.
WEIGHTS_INDEX = "model.safetensors.index.json"
# safetensors refuses headers above 100 MB; a larger length is a corrupt first 8 bytes.
MAX_SAFETENSORS_HEADER = 100 * 1000 * 1000
# Bytes per element of the safetensors dtypes (a tensor's byte span must match its shape).
_DTYPE_BYTES = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2,
    "U16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1,
}  # fmt: skip


def check_run(cfg: RelabelConfig) -> None:
    """All driver-side checks of a relabel config (paths, then the model and its weights, the frame size).

    Logs a warning (never refuses) when the run joins a cluster with credentials only this driver has
    (:func:`cluster_credentials_warning`).

    Raises:
        ConfigError: naming the key and the value that cannot work.
    """
    check_paths(cfg)
    model_config = check_model(cfg.model)
    check_frame_size(cfg.frames, model_config)
    warning = cluster_credentials_warning(cfg, os.environ)
    if warning:
        log.warning(warning)


def check_paths(cfg: RelabelConfig) -> None:
    """Sources and output are valid URIs, and the output is neither a source nor inside or around one.

    "Inside" is decided on :func:`~pipeline.storage.canonical_uri` forms, so ``file://<source>/labels``
    or ``s3a://b/src/labels`` for an ``s3://b/src`` source is refused like its plain spelling.
    """
    if not cfg.source.uris:
        raise ConfigError("config error at 'source.uris': empty; pass source.uris='[s3://bucket/dataset]'")
    try:
        output = normalize_uri(cfg.output.uri)
    except ValueError as err:
        raise ConfigError(f"config error at 'output.uri': {err}") from None
    for i, uri in enumerate(cfg.source.uris):
        key = f"source.uris[{i}]"
        try:
            source = normalize_uri(uri)
        except ValueError as err:
            raise ConfigError(f"config error at '{key}': {err}") from None
        # The next run would list the published curated datasets as new sources, or overwrite inputs.
        if is_under(output, source):
            raise ConfigError(
                f"config error at 'output.uri': {cfg.output.uri!r} is inside the source {key}={uri!r}; "
                "write outputs outside every source prefix"
            )
        if is_under(source, output):
            raise ConfigError(
                f"config error at '{key}': {uri!r} is inside output.uri={cfg.output.uri!r}; "
                "the pipeline never reads its own outputs"
            )


def _shipped_env_vars(environ: Mapping[str, str]) -> set[str]:
    """Names of the ``env_vars`` of the job's runtime env (``ray job submit --runtime-env-json``).

    Ray's job supervisor hands the submitted job's config to the driver in ``RAY_JOB_CONFIG_JSON_ENV_VAR``;
    variables named there reach every worker of the job.
    """
    try:
        job = json.loads(environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}"))
        return set((job.get("runtime_env") or {}).get("env_vars") or {})
    except (ValueError, AttributeError, TypeError):
        return set()


def _has_credentials(options: Mapping[str, Any]) -> bool:
    """Whether storage options carry credentials of their own (or ask for anonymous access)."""
    if options.get("anon") is True:
        return True
    for name, value in options.items():
        if isinstance(value, Mapping) and _has_credentials(value):
            return True
        if any(marker in name.lower() for marker in _CREDENTIAL_OPTION_MARKERS):
            return True
    return False


def cluster_credentials_warning(cfg: RelabelConfig, environ: Mapping[str, str]) -> str | None:
    """A warning when the run joins a cluster and its storage credentials exist only on this driver.

    Under ``ray job submit`` (``RAY_ADDRESS`` set) or with ``ray.address``, decode and publish run in Ray
    workers, which do not inherit the driver's environment: ``AWS_*`` or ``GOOGLE_APPLICATION_CREDENTIALS``
    set here and not in the job's runtime env, with no credentials in the storage options, may be missing
    there. Not a refusal: the workers may have their own (an IAM role, a service account).

    Returns:
        The warning, or None when there is nothing to warn about.
    """
    if not (cfg.ray.address or environ.get("RAY_ADDRESS")):
        return None
    shipped = _shipped_env_vars(environ)
    stores = [(uri, cfg.source.storage_options) for uri in cfg.source.uris]
    stores.append((cfg.output.uri, cfg.output.storage_options))
    names: list[str] = []
    for uri, options in stores:
        scheme = canonical_uri(uri).split("://", 1)[0] if "://" in uri else "file"
        if _has_credentials(options):
            continue
        for name in _CREDENTIAL_ENV.get(scheme, ()):
            if name in environ and name not in shipped and name not in names:
                names.append(name)
    if not names:
        return None
    example = ", ".join(f'"{name}": "..."' for name in names)
    return (
        f"the run joins a Ray cluster and its storage credentials ({', '.join(names)}) come from this "
        "driver's environment only; Ray workers (decode, publish) do not inherit it. Unless the workers "
        "have their own (an IAM role, a service account), submit with "
        f"ray job submit --runtime-env-json='{{\"env_vars\": {{{example}}}}}' ..."
    )


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def check_model(model: ModelConfig) -> dict[str, Any]:
    """``model.path`` resolves to a supported Qwen-VL checkpoint with whole safetensors weights.

    A local folder is inspected directly; a hub id is looked up in the local cache when offline
    (``HF_HUB_OFFLINE=1``) and on the hub otherwise. Only ``config.json``, the file listing and, for local
    weights, each safetensors file's header are read (:func:`check_weight_files`).

    Returns:
        The model's ``config.json`` as a dict.
    """
    key = f"config error at 'model.path': {model.path!r}"
    config_file, weights_dir, has_weights = _locate_model(model, key)
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{key}: config.json is unreadable: {err}") from None
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        supported = ", ".join(SUPPORTED_MODEL_TYPES)
        raise ConfigError(f"{key} has model_type {model_type!r}; supported: {supported} (video VLMs)")
    if not has_weights:
        raise ConfigError(f"{key} has no .safetensors weights (only safetensors are loaded)")
    if weights_dir is not None:
        check_weight_files(weights_dir, key)
    return config


def _locate_model(model: ModelConfig, key: str) -> tuple[Path, Path | None, bool]:
    """``(config.json, the local folder of the weights or None on the hub, whether there are weights)``."""
    folder = Path(model.path).expanduser()
    if folder.is_dir():
        config_file = folder / "config.json"
        if not config_file.is_file():
            raise ConfigError(f"{key} is a folder without config.json (not a transformers checkpoint)")
        return config_file, folder, any(folder.glob("*.safetensors"))
    if model.path.startswith(("/", "./", "../", "~")) or model.path.count("/") != 1:
        raise ConfigError(
            f"{key} is neither an existing folder nor a hub id like 'Qwen/Qwen3-VL-8B-Instruct'"
        )
    if _offline():
        cached = try_to_load_from_cache(model.path, "config.json", revision=model.revision)
        if not isinstance(cached, str):
            raise ConfigError(
                f"{key} is a hub id that is not in the local Hugging Face cache, and HF_HUB_OFFLINE=1 "
                "forbids downloading it; download it first or point model.path at a local folder"
            )
        config_file = Path(cached)
        return config_file, config_file.parent, any(config_file.parent.glob("*.safetensors"))
    try:
        config_file = Path(hf_hub_download(model.path, "config.json", revision=model.revision))
        files = HfApi().list_repo_files(model.path, revision=model.revision)
    except HfHubHTTPError as err:
        raise ConfigError(f"{key} cannot be resolved on the hub: {str(err).splitlines()[0]}") from None
    # Weights still on the hub are downloaded (and checked by their hashes) when the actors load them.
    return config_file, None, any(name.endswith(".safetensors") for name in files)


def weight_files(folder: Path, key: str) -> list[Path]:
    """The safetensors files the checkpoint in ``folder`` loads: those its index's ``weight_map`` names
    (every one must exist), or every ``*.safetensors`` file when there is no index.

    Raises:
        ConfigError: the index is unreadable or names a file that is not there.
    """
    index = folder / WEIGHTS_INDEX
    if not index.is_file():
        return sorted(folder.glob("*.safetensors"))
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        names = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ConfigError(f"{key}: {index}: unreadable weights index ({type(err).__name__}: {err})") from None
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise ConfigError(
            f"{key}: {index} names {len(missing)} weight file(s) that are not there: {', '.join(missing[:3])}"
        )
    return [folder / name for name in names]


def check_weight_files(folder: Path, key: str) -> None:
    """Every weight file of the checkpoint in ``folder`` is a whole safetensors file.

    Reads each file's 8-byte header length and JSON header, and checks that every tensor's byte span
    (``data_offsets``) matches its dtype and shape and fits the file: a download cut short or a corrupt
    file is refused here, naming the file, instead of killing the scorer actors after Ray started.

    Raises:
        ConfigError: naming ``model.path`` and the file.
    """
    for path in weight_files(folder, key):
        problem = safetensors_problem(path)
        if problem:
            raise ConfigError(f"{key}: {path}: {problem}; download the checkpoint again")


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole safetensors file, or None when its header and sizes hold."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                return f"{size} bytes, too short for a safetensors header"
            (length,) = struct.unpack("<Q", prefix)
            if length > min(size - 8, MAX_SAFETENSORS_HEADER):
                return f"header length {length} does not fit the file's {size} bytes (truncated or corrupt)"
            header = json.loads(f.read(length))
    except OSError as err:
        return f"unreadable ({err})"
    except ValueError as err:
        return f"corrupt safetensors header ({type(err).__name__}: {err})"
    if not isinstance(header, dict):
        return "corrupt safetensors header (not a JSON object)"
    needed = 0
    for name, tensor in header.items():
        if name == "__metadata__":
            continue
        end, problem = _tensor_span(tensor)
        if problem:
            return f"tensor {name!r}: {problem}"
        needed = max(needed, end)
    if needed > size - 8 - length:
        return f"truncated: {size} bytes, but its header places tensors up to byte {8 + length + needed}"
    return None


def _tensor_span(tensor: Any) -> tuple[int, str | None]:
    """Where one header entry's bytes end in the data section, and why the entry is corrupt (or None)."""
    try:
        begin, end = (int(offset) for offset in tensor["data_offsets"])
        shape, dtype = [int(dim) for dim in tensor["shape"]], str(tensor["dtype"])
    except (KeyError, TypeError, ValueError):
        return 0, "corrupt header entry (no data_offsets, shape or dtype)"
    if not 0 <= begin <= end:
        return 0, f"corrupt data_offsets [{begin}, {end}]"
    width = _DTYPE_BYTES.get(dtype)
    if width is not None and end - begin != math.prod(shape) * width:
        return 0, f"{end - begin} bytes for shape {shape} of {dtype} (corrupt header)"
    return end, None


def patch_factor(model_config: dict[str, Any]) -> int:
    """Pixels per side of one merged vision token: frame sides must be a multiple of it."""
    vision = model_config.get("vision_config") or {}
    return int(vision.get("patch_size", 16)) * int(vision.get("spatial_merge_size", 2))


def check_frame_size(frames: FramesConfig, model_config: dict[str, Any]) -> None:
    """The pinned frame size fits the model's patch grid (the processor would otherwise resize)."""
    factor = patch_factor(model_config)
    for name in ("height", "width"):
        value = getattr(frames, name)
        if value % factor:
            raise ConfigError(
                f"config error at 'frames.{name}': got {value}; must be a multiple of {factor} "
                f"(the model's patch size x spatial merge)"
            )
