"""Loading a Qwen-VL checkpoint (hub id or local folder) exactly as a user would."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from pipeline.config import ModelConfig, resolved_dtype

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    """A VLM in eval mode, its processor, and where it runs."""

    model: Any
    processor: Any
    device: torch.device
    dtype: torch.dtype


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` is bfloat16 on CUDA (what the checkpoints ship) and float32 on CPU (exact, and fast there).

    The rule is :func:`pipeline.config.resolved_dtype`, the one the config hash and the driver's
    placement use; a run hands the actor the resolved name, so this only names it.
    """
    return _DTYPES[resolved_dtype(name, device.type)]


def load_model(cfg: ModelConfig) -> LoadedModel:
    """Load model and processor once; safetensors only and no remote code, whatever the source."""
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    processor = AutoProcessor.from_pretrained(cfg.path, revision=cfg.revision, trust_remote_code=False)
    model = AutoModelForImageTextToText.from_pretrained(
        cfg.path,
        revision=cfg.revision,
        dtype=dtype,
        attn_implementation=cfg.attn_implementation,
        use_safetensors=True,
        trust_remote_code=False,
    )
    model.to(device).eval()
    return LoadedModel(model=model, processor=processor, device=device, dtype=dtype)
