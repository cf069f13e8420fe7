"""Tiny random Qwen-VL checkpoints built fully offline, for tests and demos.

The folder written here has the same layout as a hub checkpoint (config, safetensors weights, tokenizer,
processor configs, chat template), so code under test loads it through the ordinary Auto classes and
exercises the same code path as the real Qwen3-VL / Qwen2.5-VL models. Nothing is downloaded: the
tokenizer is a byte-level BPE trained on a small fixed corpus and the weights are random but seeded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    GenerationConfig,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
)
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

FAMILIES = ("qwen3_vl", "qwen2_5_vl")

# Text and vision tower shapes per size. head_dim is spelled out because Qwen2.5-VL derives it from
# hidden_size / num_attention_heads while Qwen3-VL reads it from the config; both must agree.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "text": {
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 32,
        },
        "vision": {"depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 4},
        "deepstack_visual_indexes": [0, 1],
    },
    "bench": {
        "text": {
            "hidden_size": 256,
            "intermediate_size": 512,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 64,
        },
        "vision": {"depth": 4, "hidden_size": 128, "intermediate_size": 256, "num_heads": 4},
        "deepstack_visual_indexes": [0, 1, 2],
    },
}

# Same order as in the real Qwen vocabulary, where these follow the BPE tokens.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Modelled on the Qwen3-VL-Instruct template (minus tools and reasoning): no default system turn, and a
# media item renders as one placeholder wrapped in vision start/end, which the processor then expands.
CHAT_TEMPLATE = """\
{%- for message in messages -%}
{{- '<|im_start|>' + message['role'] + '\\n' -}}
{%- if message['content'] is string -%}
{{- message['content'] -}}
{%- else -%}
{%- for item in message['content'] -%}
{%- if item['type'] == 'image' or 'image' in item or 'image_url' in item -%}
{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}
{%- elif item['type'] == 'video' or 'video' in item -%}
{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}
{%- elif 'text' in item -%}
{{- item['text'] -}}
{%- endif -%}
{%- endfor -%}
{%- endif -%}
{{- '<|im_end|>\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|im_start|>assistant\\n' -}}
{%- endif -%}
"""

# Repeated so that BPE merges the scored answer words (" True", " False", "True") into single tokens.
_PROMPT_PREFIX = "The above video shows a robot manipulation trajectory that completes the following task: "
_PROMPT_SUFFIX = " Decide whether the above statement is True or not. The answer is:"
_TASKS = (
    "pick up the red cube and place it in the bowl",
    "open the top drawer",
    "close the drawer",
    "put the cup on the plate",
    "pick the blue block and put it in the box",
    "open the door of the cabinet",
    "close the lid of the pot",
    "place the cup in the sink",
    "stack the green cube on the yellow cube",
    "push the button",
    "move the spoon to the left of the towel",
    "fold the cloth",
)
_EXTRA_TEXT = (
    "<0.5 seconds> <1.0 seconds> <1.5 seconds> <2.0 seconds> 0 1 2 3 4 5 6 7 8 9 10 12.5 seconds",
    "Describe the robot manipulation trajectory in this video:",
    "True False True False yes no user assistant system",
    "The robot arm moves the gripper, grasps the object, lifts it and releases it.",
)
_MARKER = "TINY_MODEL_COMPLETE.json"
_WEIGHT_SCALE = 3.0


def _corpus() -> list[str]:
    lines = [f"{_PROMPT_PREFIX}{task}{_PROMPT_SUFFIX} True" for task in _TASKS]
    lines += [f"{_PROMPT_PREFIX}{task}{_PROMPT_SUFFIX} False" for task in _TASKS]
    lines += [f"{_PROMPT_PREFIX}{task}{_PROMPT_SUFFIX}True" for task in _TASKS]
    return lines * 4 + list(_EXTRA_TEXT)


def _build_tokenizer() -> Qwen2Tokenizer:
    bpe = Tokenizer(models.BPE())
    # Train with Qwen's own pre-tokenizer so the learnt merges match how Qwen2Tokenizer splits text.
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(_corpus(), trainer)
    trained = json.loads(bpe.to_str())["model"]
    tok = Qwen2Tokenizer(vocab=trained["vocab"], merges=[tuple(m) for m in trained["merges"]])
    tok.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS[1:])})
    # Qwen3-VL-Instruct ends turns (and generation) with <|im_end|>; the TOPReward prompt is cut there.
    tok.eos_token = "<|im_end|>"
    for word in (" True", " False", "True"):
        ids = tok.encode(word, add_special_tokens=False)
        if len(ids) != 1:
            raise RuntimeError(f"tokenizer splits {word!r} into {len(ids)} tokens; extend the corpus")
    return tok


def _mrope_section(head_dim: int) -> list[int]:
    # The (t, h, w) rotary frequency pairs must add up to head_dim / 2; any such split is a valid model.
    quarter = head_dim // 8
    return [2 * quarter, quarter, quarter]


def _token_ids(tok: Qwen2Tokenizer) -> dict[str, int]:
    return {
        "image_token_id": tok.convert_tokens_to_ids("<|image_pad|>"),
        "video_token_id": tok.convert_tokens_to_ids("<|video_pad|>"),
        "vision_start_token_id": tok.convert_tokens_to_ids("<|vision_start|>"),
        "vision_end_token_id": tok.convert_tokens_to_ids("<|vision_end|>"),
    }


def _build_config(family: str, size: str, tok: Qwen2Tokenizer) -> Qwen3VLConfig | Qwen2_5_VLConfig:
    preset = SIZES[size]
    text = dict(preset["text"])
    head_dim = text["head_dim"]
    vision = dict(
        preset["vision"], out_hidden_size=text["hidden_size"], temporal_patch_size=2, spatial_merge_size=2
    )
    special = {
        "vocab_size": len(tok),
        "bos_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    if family == "qwen3_vl":
        text["rope_parameters"] = {
            "rope_type": "default",
            "rope_theta": 5_000_000.0,
            "mrope_section": _mrope_section(head_dim),
            "mrope_interleaved": True,
        }
        vision.update(
            patch_size=16,
            num_position_embeddings=256,
            deepstack_visual_indexes=list(preset["deepstack_visual_indexes"]),
        )
        return Qwen3VLConfig(text_config=text | special, vision_config=vision, **_token_ids(tok))
    if text["hidden_size"] // text["num_attention_heads"] != head_dim:
        raise ValueError(f"size {size!r}: Qwen2.5-VL needs hidden_size / num_attention_heads == head_dim")
    del text["head_dim"]
    text["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": 1_000_000.0,
        "mrope_section": _mrope_section(head_dim),
    }
    # The real tower puts one full-attention block after every 7 windowed ones and ends on a full one;
    # alternating keeps both kinds (and a full last block) at depth 2 and 4.
    vision.update(
        patch_size=14,
        window_size=56,
        fullatt_block_indexes=list(range(1, vision["depth"], 2)),
    )
    return Qwen2_5_VLConfig(text_config=text | special, vision_config=vision, **_token_ids(tok))


def _build_processor(family: str, tok: Qwen2Tokenizer) -> Qwen3VLProcessor | Qwen2_5_VLProcessor:
    # Pixel bounds and normalisation copy the hub checkpoints' processor configs, which differ from the
    # transformers class defaults; frame resolution under test then matches what the real model sees.
    merge = {"temporal_patch_size": 2, "merge_size": 2}
    if family == "qwen3_vl":
        norm = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
        return Qwen3VLProcessor(
            image_processor=Qwen2VLImageProcessor(
                patch_size=16, size={"shortest_edge": 65536, "longest_edge": 16777216}, **norm, **merge
            ),
            tokenizer=tok,
            video_processor=Qwen3VLVideoProcessor(
                patch_size=16, size={"shortest_edge": 4096, "longest_edge": 25165824}, **norm, **merge
            ),
            chat_template=CHAT_TEMPLATE,
        )
    # Qwen2.5-VL ships one preprocessor config (min_pixels 3136, max_pixels 12845056, CLIP normalisation)
    # that also drives its video processor.
    size = {"shortest_edge": 3136, "longest_edge": 12845056}
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(patch_size=14, size=size, **merge),
        tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(patch_size=14, size=size, **merge),
        chat_template=CHAT_TEMPLATE,
    )


def _build_model(
    config: Qwen3VLConfig | Qwen2_5_VLConfig, family: str, seed: int
) -> Qwen3VLForConditionalGeneration | Qwen2_5_VLForConditionalGeneration:
    model_cls = (
        Qwen3VLForConditionalGeneration if family == "qwen3_vl" else Qwen2_5_VLForConditionalGeneration
    )
    torch.manual_seed(seed)
    model = model_cls(config).to(torch.float32).eval()
    # The default init (std 0.02) gives near-uniform next-token distributions, which would hide scoring
    # bugs; larger matrices make log-probs differ by several nats between tokens.
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim >= 2:
                param.mul_(_WEIGHT_SCALE)
    text_cfg = config.text_config
    model.generation_config = GenerationConfig(
        bos_token_id=text_cfg.bos_token_id,
        eos_token_id=[text_cfg.eos_token_id, text_cfg.pad_token_id],
        pad_token_id=text_cfg.pad_token_id,
    )
    return model


def _check_args(family: str, size: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {tuple(SIZES)}")


def build_tiny_model(
    out_dir: str | Path, family: str = "qwen3_vl", size: str = "tiny", seed: int = 0
) -> Path:
    """Writes a complete random Qwen-VL checkpoint folder that loads like a hub checkpoint.

    The folder holds config.json, model.safetensors (float32), generation_config.json, the tokenizer,
    the processor / image / video processor configs and the chat template, plus a completion marker
    written last. The same arguments always produce byte-identical files.

    Args:
        out_dir: Folder to write; created if missing, existing files of the same name are overwritten.
        family: "qwen3_vl" or "qwen2_5_vl".
        size: A key of `SIZES`: "tiny" (about 1 M parameters) or "bench" (about 5 M).
        seed: Seed for the random weights.

    Returns:
        The folder path, loadable with `AutoModelForImageTextToText.from_pretrained` and
        `AutoProcessor.from_pretrained`.

    Raises:
        ValueError: If `family` or `size` is unknown.
    """
    _check_args(family, size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / _MARKER).unlink(missing_ok=True)
    tok = _build_tokenizer()
    config = _build_config(family, size, tok)
    model = _build_model(config, family, seed)
    model.save_pretrained(out, safe_serialization=True)
    _build_processor(family, tok).save_pretrained(out)
    marker = {
        "family": family,
        "size": size,
        "seed": seed,
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }
    (out / _MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
    return out


def read_build_info(model_dir: str | Path) -> dict[str, Any] | None:
    """Returns the build arguments and parameter count of a finished tiny-model folder.

    Args:
        model_dir: A folder written by `build_tiny_model`.

    Returns:
        A dict with keys family, size, seed and num_parameters, or None if the folder is missing or its
        build did not finish.
    """
    marker = Path(model_dir) / _MARKER
    if not marker.is_file():
        return None
    return json.loads(marker.read_text())


def ensure_tiny_model(
    out_dir: str | Path, family: str = "qwen3_vl", size: str = "tiny", seed: int = 0
) -> Path:
    """Builds the tiny model into `out_dir` unless a finished build is already there.

    Safe to call from concurrent processes: each builds into a private temporary folder next to
    `out_dir` and moves the files in one by one with atomic renames, marker last. Concurrent builds
    write byte-identical files, so a reader that sees the marker always sees complete files.

    Args:
        out_dir: Cache folder for the checkpoint.
        family: "qwen3_vl" or "qwen2_5_vl".
        size: "tiny" or "bench".
        seed: Seed for the random weights.

    Returns:
        The folder path.

    Raises:
        ValueError: If `family` or `size` is unknown, or `out_dir` holds a finished build made with
            other arguments.
    """
    _check_args(family, size)
    out = Path(out_dir)
    wanted = {"family": family, "size": size, "seed": seed}
    info = read_build_info(out)
    if info is None:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            build_tiny_model(staging, family, size, seed)
            out.mkdir(exist_ok=True)
            names = [*sorted(p.name for p in staging.iterdir() if p.name != _MARKER), _MARKER]
            for name in names:
                os.replace(staging / name, out / name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        info = read_build_info(out)
    if info is None or {k: info[k] for k in wanted} != wanted:
        raise ValueError(f"{out} holds a tiny model built with {info}, not {wanted}; use another folder")
    return out


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: builds a tiny model and prints its folder and parameter count.

    Args:
        argv: Arguments without the program name; defaults to `sys.argv[1:]`.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="folder to write")
    parser.add_argument("--family", choices=FAMILIES, default="qwen3_vl")
    parser.add_argument("--size", choices=tuple(SIZES), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = build_tiny_model(args.out, args.family, args.size, args.seed)
    print(out)
    print(f"parameters: {read_build_info(out)['num_parameters']:,}")


if __name__ == "__main__":
    main()
