"""Benchmark: scorer throughput of a random-weight Qwen3-VL in the real 2B/4B/8B shape (no download).

The model is built from a ``Qwen3VLConfig`` with the dimensions of the public checkpoints
(``Qwen/Qwen3-VL-{2B,4B,8B}-Instruct`` config.json), directly on the target device and in the target
dtype, with random weights: nothing is downloaded and nothing is materialised on the host first. Token
ids and the processor come from the devkit's tiny Qwen3-VL (same special tokens, patch 16, merge 2);
the vocabulary keeps the real size so the LM head costs what it costs.

One episode is ``--seconds`` of video sampled at 2 fps (30 s: 60 frames) at ``--size``², K prefixes.
Printed, side by side from one run: seconds per episode cached and naive (one forward per prefix),
episodes per hour on one device, FLOPs per episode (counted by ``torch.utils.flop_counter`` on a cached
episode; the dense suffix mask is counted as computed, since it is), achieved FLOP/s and MFU against the
device's dense peak, max |cached - naive| log P("True") in the run's dtype, and peak memory.

``--scale N`` divides depths, widths and heads by N (head_dim stays 128) so that the same script runs on
a CPU in seconds (``tests/test_gpu_bench.py``); figures at a scale are not the real shape's.

    python -m bench.gpu_throughput [--shape 8b] [--scale 1] [--seconds 30] [--size 256] [--prefixes 15]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoConfig, AutoProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration

from devkit.tiny_model import ensure_tiny_model
from pipeline.config import ScoringConfig
from pipeline.frames.schedule import episode_schedule
from pipeline.scoring.cached import CachedScorer
from pipeline.scoring.inputs import EpisodeClip
from pipeline.scoring.model import LoadedModel, resolve_device, resolve_dtype
from pipeline.scoring.prompt import build_prompt, false_token_id
from pipeline.scoring.reference import reference_scores

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "models"
RAW_FPS = 30.0
SAMPLING_FPS = 2.0
HEAD_DIM = 128

# From the public config.json of Qwen/Qwen3-VL-{2B,4B,8B}-Instruct (text_config / vision_config).
SHAPES: dict[str, dict[str, Any]] = {
    "2b": {
        "text": {"hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 28,
                 "num_attention_heads": 16, "num_key_value_heads": 8, "tie_word_embeddings": True},
        "vision": {"depth": 24, "hidden_size": 1024, "intermediate_size": 4096, "num_heads": 16,
                   "deepstack_visual_indexes": [5, 11, 17]},
    },
    "4b": {
        "text": {"hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
                 "num_attention_heads": 32, "num_key_value_heads": 8, "tie_word_embeddings": True},
        "vision": {"depth": 24, "hidden_size": 1024, "intermediate_size": 4096, "num_heads": 16,
                   "deepstack_visual_indexes": [5, 11, 17]},
    },
    "8b": {
        "text": {"hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36,
                 "num_attention_heads": 32, "num_key_value_heads": 8, "tie_word_embeddings": False},
        "vision": {"depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "num_heads": 16,
                   "deepstack_visual_indexes": [8, 16, 24]},
    },
}  # fmt: skip
VOCAB_SIZE = 151936
# Dense (no sparsity) peak FLOP/s per device for bf16/fp16 tensor-core math, from the vendors' sheets.
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12}


def shape_config(shape: str, scale: int, tiny_dir: Path) -> Qwen3VLConfig:
    """The Qwen3-VL config of ``shape`` divided by ``scale``, with the tiny model's special token ids."""
    base = AutoConfig.from_pretrained(tiny_dir)
    dims = SHAPES[shape]
    heads = max(1, dims["text"]["num_attention_heads"] // scale)
    text = base.text_config.to_dict() | dims["text"] | {
        "hidden_size": max(HEAD_DIM, dims["text"]["hidden_size"] // scale),
        "intermediate_size": max(HEAD_DIM, dims["text"]["intermediate_size"] // scale),
        "num_hidden_layers": max(1, dims["text"]["num_hidden_layers"] // scale),
        "num_attention_heads": heads,
        "num_key_value_heads": max(1, min(heads, dims["text"]["num_key_value_heads"] // scale)),
        "head_dim": HEAD_DIM,
        "vocab_size": VOCAB_SIZE,
        "rope_parameters": {"rope_type": "default", "rope_theta": 5_000_000.0,
                            "mrope_section": [24, 20, 20], "mrope_interleaved": True},
    }  # fmt: skip
    depth = max(1, dims["vision"]["depth"] // scale)
    vision_heads = max(1, dims["vision"]["num_heads"] // scale)
    vision = base.vision_config.to_dict() | {
        "depth": depth,
        "hidden_size": max(16 * vision_heads, dims["vision"]["hidden_size"] // scale),
        "intermediate_size": max(16, dims["vision"]["intermediate_size"] // scale),
        "num_heads": vision_heads,
        "out_hidden_size": text["hidden_size"],
        "num_position_embeddings": 2304,
        "deepstack_visual_indexes": sorted(
            {min(i // scale, depth - 1) for i in dims["vision"]["deepstack_visual_indexes"]}
        ),
    }
    ids = {key: getattr(base, key) for key in base.to_dict() if key.endswith("_token_id")}
    return Qwen3VLConfig(
        text_config=text, vision_config=vision, tie_word_embeddings=text["tie_word_embeddings"], **ids
    )


def build_model(config: Qwen3VLConfig, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Random weights, allocated and initialised on ``device`` in ``dtype`` (never on the host first)."""
    with torch.device(device):
        model = Qwen3VLForConditionalGeneration._from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model.eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(fn: Any, repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB (CUDA allocated)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (process peak RSS)"


def _peak_flops(device: torch.device, dtype: torch.dtype) -> tuple[float, str] | None:
    if device.type != "cuda" or dtype not in (torch.bfloat16, torch.float16):
        return None
    name = torch.cuda.get_device_name(device)
    for key, flops in PEAK_FLOPS.items():
        if key in name:
            return flops, name
    return None


def main(argv: list[str] | None = None) -> None:
    """Build the model, score episodes cached and naive, and print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", choices=sorted(SHAPES), default="8b")
    parser.add_argument("--scale", type=int, default=1, help="divide depths, widths and heads by this")
    parser.add_argument("--seconds", type=float, default=30.0, help="episode length (sampled at 2 fps)")
    parser.add_argument("--size", type=int, default=256, help="frame height and width (multiple of 32)")
    parser.add_argument("--prefixes", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=5, help="cached episodes timed (median)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    tiny_dir = ensure_tiny_model(CACHE / "tiny-qwen3_vl-s0", "qwen3_vl", "tiny", 0)
    config = shape_config(args.shape, args.scale, tiny_dir)
    started = time.perf_counter()
    model = build_model(config, device, dtype)
    _sync(device)
    built = time.perf_counter() - started
    processor = AutoProcessor.from_pretrained(tiny_dir)
    loaded = LoadedModel(model=model, processor=processor, device=device, dtype=dtype)
    scoring = ScoringConfig()
    prompt = build_prompt(processor, "pick up the red cube and put it in the box", scoring)
    false_id = false_token_id(processor, scoring)
    scorer = CachedScorer(loaded, scoring.suffix_chunk)

    num_raw = int(args.seconds * RAW_FPS)
    schedule = episode_schedule(num_raw, RAW_FPS, SAMPLING_FPS, 64, args.prefixes)
    frames = np.random.default_rng(0).integers(
        0, 256, (len(schedule.raw_indices), args.size, args.size, 3), dtype=np.uint8
    )
    clip = EpisodeClip(frames, schedule.raw_indices, RAW_FPS, num_raw, schedule.prefix_ends)

    cached = scorer(prompt, clip, false_id)  # warm-up: kernels, allocator, this layout's plan
    t_cached = _median_seconds(lambda: scorer(prompt, clip, false_id), args.repeats, device)
    naive = reference_scores(loaded, prompt, clip, false_id)  # warm-up of the growing shapes
    t_naive = _median_seconds(lambda: reference_scores(loaded, prompt, clip, false_id), 1, device)
    with FlopCounterMode(display=False) as counter:
        scorer(prompt, clip, false_id)
    flops = counter.get_total_flops()
    diff = float(np.abs(cached[0] - naive[0]).max())

    params = sum(p.numel() for p in model.parameters())
    text, vision = config.text_config, config.vision_config
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"shape: qwen3-vl-{args.shape} / scale {args.scale}: {params / 1e9:.3f} B parameters "
        f"(text {text.num_hidden_layers} layers x {text.hidden_size}, vision {vision.depth} x "
        f"{vision.hidden_size}), {str(dtype).removeprefix('torch.')} on {device} ({where})"
    )
    tokens = next(iter(scorer.plans.values())).context_positions.shape[-1]
    print(
        f"episode: {len(frames)} frames {args.size}x{args.size} "
        f"({args.seconds:g} s at {SAMPLING_FPS:g} fps), "
        f"K={len(clip.prefix_ends)}, {tokens} context tokens"
    )
    print(f"build seconds: {built:.2f}")
    print(f"cached seconds/episode: {t_cached:.4f} (median of {args.repeats})")
    print(f"naive seconds/episode: {t_naive:.4f}")
    print(f"naive / cached: {t_naive / t_cached:.2f}x")
    print(f"episodes/hour (cached, one device): {3600 / t_cached:.0f}")
    print(f"FLOPs/episode (cached, counted): {flops:.3e}")
    print(f"achieved TFLOP/s: {flops / t_cached / 1e12:.3f}")
    peak = _peak_flops(device, dtype)
    if peak:
        print(f"MFU: {flops / t_cached / peak[0]:.1%} of {peak[0] / 1e12:.0f} TFLOP/s ({peak[1]}, dense)")
    else:
        print(f"MFU: n/a (no dense peak figure for {where} in {str(dtype).removeprefix('torch.')})")
    print(f"max |cached - naive| log P(True) ({str(dtype).removeprefix('torch.')}): {diff:.3e}")
    print(f"peak memory: {_peak_memory(device)}")


if __name__ == "__main__":
    main()
