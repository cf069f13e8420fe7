"""Checks on the driver before Ray starts: a run that cannot work is refused in seconds, naming the key.

A nightly job that only finds out after Ray started and an actor crashed that ``model.path`` was a typo,
or that it would write its outputs inside its own source prefix, wastes a night and says little. These
checks read a few small files (the model's ``config.json``, the weights listing) and compare URIs; each
failure is a :class:`~pipeline.config.ConfigError` whose message names the config key and its value.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import HfHubHTTPError

from pipeline.config import ConfigError, FramesConfig, ModelConfig, RelabelConfig
from pipeline.storage import is_under, normalize_uri

# Model types the cached scorer is proven exact for (tests/test_scoring_exact.py).
SUPPORTED_MODEL_TYPES = ("qwen3_vl", "qwen2_5_vl")


def check_run(cfg: RelabelConfig) -> None:
    """All driver-side checks of a relabel config (paths, then the model and the frame size).

    Raises:
        ConfigError: naming the key and the value that cannot work.
    """
    check_paths(cfg)
    model_config = check_model(cfg.model)
    check_frame_size(cfg.frames, model_config)


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


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def check_model(model: ModelConfig) -> dict[str, Any]:
    """``model.path`` resolves to a supported Qwen-VL checkpoint with safetensors weights.

    A local folder is inspected directly; a hub id is looked up in the local cache when offline
    (``HF_HUB_OFFLINE=1``) and on the hub otherwise. Only ``config.json`` and the file listing are read.

    Returns:
        The model's ``config.json`` as a dict.
    """
    key = f"config error at 'model.path': {model.path!r}"
    folder = Path(model.path).expanduser()
    if folder.is_dir():
        config_file = folder / "config.json"
        if not config_file.is_file():
            raise ConfigError(f"{key} is a folder without config.json (not a transformers checkpoint)")
        has_weights = any(folder.glob("*.safetensors"))
    elif model.path.startswith(("/", "./", "../", "~")) or model.path.count("/") != 1:
        raise ConfigError(
            f"{key} is neither an existing folder nor a hub id like 'Qwen/Qwen3-VL-8B-Instruct'"
        )
    elif _offline():
        cached = try_to_load_from_cache(model.path, "config.json", revision=model.revision)
        if not isinstance(cached, str):
            raise ConfigError(
                f"{key} is a hub id that is not in the local Hugging Face cache, and HF_HUB_OFFLINE=1 "
                "forbids downloading it; download it first or point model.path at a local folder"
            )
        config_file = Path(cached)
        has_weights = any(config_file.parent.glob("*.safetensors"))
    else:
        try:
            config_file = Path(hf_hub_download(model.path, "config.json", revision=model.revision))
            files = HfApi().list_repo_files(model.path, revision=model.revision)
        except HfHubHTTPError as err:
            raise ConfigError(f"{key} cannot be resolved on the hub: {str(err).splitlines()[0]}") from None
        has_weights = any(name.endswith(".safetensors") for name in files)
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
    return config


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
