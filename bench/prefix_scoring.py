"""Benchmark: cached prefix scoring vs one forward per prefix vs a single plain forward.

Prints, from one run on the same frames: the floor (one forward of the full prompt), the cached scorer
(one context forward + batched suffix passes), the naive scorer (one forward per prefix), the ratios
naive/cached and cached/floor, the largest |difference| between cached and naive, and peak RSS.

Then the cached scorer's time per stage (tokens, plan, host-to-device copy, pixel patchify/normalise,
vision forward, language-model context forward, suffix forward, log-softmax readout), its non-forward
share, and, measured in the same run, the host work the scorer did per episode before (the processor
call on the frames, and positions and masks rebuilt for every episode), plus the bytes one episode
puts in the object store as uint8 frames vs float32 pixels.

    python -m bench.prefix_scoring [--frames 64] [--prefixes 15] [--size 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from devkit.tiny_model import ensure_tiny_model
from pipeline.config import ModelConfig, ScoringConfig
from pipeline.frames.schedule import episode_schedule
from pipeline.scoring.cached import StageClock
from pipeline.scoring.inputs import EpisodeClip, encode_video_prompt
from pipeline.scoring.scorer import PrefixScorer

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "models"
RAW_FPS = 30.0


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: allocator, kernels, lazy inits
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the figures side by side."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="model folder or hub id (default: the bench-size tiny Qwen3-VL)")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--prefixes", type=int, default=15)
    parser.add_argument("--size", type=int, default=256, help="frame height and width (multiple of 32)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    model_path = args.model or str(ensure_tiny_model(CACHE / "bench-qwen3_vl-s0", "qwen3_vl", "bench", 0))
    scorer = PrefixScorer(ModelConfig(path=model_path, device=args.device, dtype=args.dtype), ScoringConfig())
    loaded = scorer.loaded
    params = sum(p.numel() for p in loaded.model.parameters())

    # A 30 fps episode long enough that 2 fps sampling yields the requested frame count.
    num_raw = int((args.frames - 1) * RAW_FPS / 2.0) + 1
    schedule = episode_schedule(num_raw, RAW_FPS, 2.0, args.frames, args.prefixes)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (len(schedule.raw_indices), args.size, args.size, 3), dtype=np.uint8)
    task = "pick up the red cube and put it in the box"
    clip = EpisodeClip(frames, schedule.raw_indices, RAW_FPS, num_raw, schedule.prefix_ends)

    def floor() -> None:
        batch = encode_video_prompt(
            loaded.processor, scorer._prompt(task), frames, schedule.raw_indices, RAW_FPS, clip.sampled_fps
        )
        with torch.inference_mode():
            loaded.model(**{k: v.to(loaded.device) for k, v in batch.items()}, logits_to_keep=1)

    rss_start = _peak_rss_mib()
    t_floor = _median_seconds(floor, args.repeats)
    rss_floor = _peak_rss_mib()
    t_cached = _median_seconds(lambda: scorer.score(clip, task), args.repeats)
    rss_cached = _peak_rss_mib()
    t_naive = _median_seconds(lambda: scorer.score_reference(clip, task), args.repeats)
    rss_naive = _peak_rss_mib()
    diff = np.abs(scorer.score(clip, task).log_p_true - scorer.score_reference(clip, task).log_p_true).max()

    print(f"model: {model_path} ({params / 1e6:.2f} M parameters, {loaded.dtype}, {loaded.device})")
    print(
        f"input: {len(frames)} frames {args.size}x{args.size}, K={len(schedule.prefix_ends)} prefixes "
        f"ending at {schedule.prefix_ends.tolist()}, {args.threads} threads, median of {args.repeats}"
    )
    print(f"{'path':<44}{'seconds':>10}")
    print(f"{'floor: one forward of the full prompt':<44}{t_floor:>10.3f}")
    print(f"{'cached: context forward + batched suffixes':<44}{t_cached:>10.3f}")
    print(f"{'naive: one forward per prefix':<44}{t_naive:>10.3f}")
    print(f"naive / cached = {t_naive / t_cached:.2f}x   (target >= 5)")
    print(f"cached / floor = {t_cached / t_floor:.3f}x  (target <= 1.15)")
    print(f"max |cached - naive| log P(True) = {diff:.2e}")
    print(
        f"peak RSS MiB: start {rss_start:.0f}, after floor {rss_floor:.0f}, after cached {rss_cached:.0f}, "
        f"after naive {rss_naive:.0f}"
    )
    print()
    stage_breakdown(scorer, clip, task, args.repeats)


FORWARD_STAGES = ("vision forward", "context forward (language model)", "suffix forward")


def _time_vision(model: torch.nn.Module, clock: StageClock) -> list[torch.utils.hooks.RemovableHandle]:
    """Hooks that time the vision tower inside the context forward as its own stage."""
    started: list[float] = []

    def before(*_: object) -> None:
        clock.sync()
        started.append(time.perf_counter())

    def after(*_: object) -> None:
        clock.sync()
        clock.seconds["vision forward"] += time.perf_counter() - started.pop()

    visual = model.model.visual
    return [visual.register_forward_pre_hook(before), visual.register_forward_hook(after)]


def stage_breakdown(scorer: PrefixScorer, clip: EpisodeClip, task: str, repeats: int) -> None:
    """Print the cached scorer's per-stage times (plans cached, as in steady state) and the old host work."""
    loaded = scorer.loaded
    scorer.score(clip, task)  # warm-up; leaves this layout's plan cached, as after a dataset's first episode
    clock = StageClock(loaded.device)
    hooks = _time_vision(loaded.model, clock)
    start = time.perf_counter()
    for _ in range(repeats):
        scorer.score(clip, task, clock)
    wall = (time.perf_counter() - start) / repeats
    for hook in hooks:
        hook.remove()
    stages = {name: seconds / repeats for name, seconds in clock.seconds.items()}
    stages["context forward (language model)"] = stages.pop("context forward") - stages["vision forward"]
    print(f"cached scorer per episode, by stage (mean of {repeats}, plan cached):")
    print(f"{'stage':<40}{'seconds':>10}{'share':>8}")
    for name, seconds in sorted(stages.items(), key=lambda item: -item[1]):
        print(f"{name:<40}{seconds:>10.4f}{seconds / wall:>8.1%}")
    forward = sum(stages[name] for name in FORWARD_STAGES)
    print(f"{'wall (with clock synchronisation)':<40}{wall:>10.4f}")
    print(f"non-forward share: {(wall - forward) / wall:.1%} (target <= 10%)")

    cold = StageClock(loaded.device)
    scorer.cached.plans.clear()
    scorer.score(clip, task, cold)
    previous = _median_seconds(
        lambda: encode_video_prompt(
            loaded.processor, scorer._prompt(task), clip.frames, clip.raw_indices, clip.raw_fps,
            clip.sampled_fps,
        ),
        repeats,
    )  # fmt: skip
    print(
        f"before, per episode on the scorer: processor call {previous:.4f} s + positions and masks "
        f"{cold.seconds['plan (positions, masks)']:.4f} s; now {stages['tokens and layout']:.4f} s tokens, "
        f"plan built once per layout ({cold.seconds['plan (positions, masks)']:.4f} s on a miss), "
        f"{stages['pixels (patchify, normalise)']:.4f} s pixels on {loaded.device}"
    )
    pixels = clip.frames.size * np.dtype(np.float32).itemsize
    print(
        f"object store per episode: uint8 frames {clip.frames.nbytes / 2**20:.1f} MiB "
        f"vs float32 pixels {pixels / 2**20:.1f} MiB"
    )


if __name__ == "__main__":
    main()
