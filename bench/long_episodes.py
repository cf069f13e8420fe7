"""Benchmark: reward resolution of 10 s, 2 min and 10 min episodes, before and after the change.

README "Reward resolution".

For each length, scores one synthetic 30 fps episode (``devkit.synth`` self-identifying frames at the
pinned 256x256, the frames the schedule picks) with the bench-size tiny Qwen3-VL
(``devkit.tiny_model``) twice: with the settings before reward resolution, passed explicitly
(``frames.min_fps=null prefixes.max_spacing_s=null``: 64 frames and 15 prefixes at most), and with the
defaults. Prints side by side: frames scored, prefixes, the largest and the mean gap between prefix
ends in seconds, context tokens, scoring seconds (wall and process CPU, the fastest of ``--repeats``
after a warm-up: on a shared machine the fastest run is the one least slowed by others; the plan is
rebuilt every time, as for a long episode whose layout is its own) and peak RSS,
each configuration in a fresh process so its peak is its own. Then the scoring seconds per minute of
video, which is the cost per minute.

    python -m bench.long_episodes [--lengths 10,120,600] [--repeats 2] [--threads 2]

The tiny model's seconds are not a GPU's, and its 4 narrow layers make attention (quadratic in the
context) dominate where a real model's MLPs (linear) do. So the table also gives, from the same token
counts and passes, the dense FLOPs the real Qwen3-VL-8B shape would spend (``8B TFLOP``: an estimate
from its public dimensions, vision tower and mergers included, the suffix masks counted dense as they
are computed; not a measurement), and what that is per minute of video.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "models"
RAW_FPS = 30.0
SIZE = 256
TASK = "pick up the red cube and put it in the box"
SETTINGS = {
    "before": {"frames": {"min_fps": None}, "prefixes": {"max_spacing_s": None}},
    "after": {"frames": {}, "prefixes": {}},
}


def real_shape_tflops(
    shape: str, context_len: int, suffix_len: int, passes: list[tuple[int, int]], blocks: int, size: int
) -> float:
    """Estimated dense TFLOPs of one cached scoring of these token counts by the real ``shape``.

    Args:
        shape: a key of :data:`bench.gpu_throughput.SHAPES` (``2b``, ``4b``, ``8b``).
        context_len: tokens of the context forward.
        suffix_len: tokens of one suffix.
        passes: per suffix pass, (context kept, prefixes packed).
        blocks: 2-frame temporal blocks of the video.
        size: frame height and width (patch 16, temporal patch 2, merge 2).
    """
    from bench.gpu_throughput import HEAD_DIM, SHAPES, VOCAB_SIZE

    text, vision = SHAPES[shape]["text"], SHAPES[shape]["vision"]
    hidden, layers = text["hidden_size"], text["num_hidden_layers"]
    q_dim, kv_dim = text["num_attention_heads"] * HEAD_DIM, text["num_key_value_heads"] * HEAD_DIM
    per_token = (
        2 * layers * (2 * hidden * q_dim + 2 * hidden * kv_dim + 3 * hidden * text["intermediate_size"])
    )
    flops = context_len * per_token + 2 * layers * context_len**2 * q_dim  # causal: half of QK and AV
    for keep, count in passes:
        rows = count * suffix_len
        flops += (
            rows * per_token + 4 * layers * rows * (keep + rows) * q_dim + 2 * count * hidden * VOCAB_SIZE
        )
    v_hidden, patches = vision["hidden_size"], blocks * (size // 16) ** 2
    per_patch = 2 * vision["depth"] * (4 * v_hidden**2 + 2 * v_hidden * vision["intermediate_size"])
    attention = 4 * vision["depth"] * blocks * ((size // 16) ** 2) ** 2 * v_hidden
    mergers = (
        (1 + len(vision["deepstack_visual_indexes"]))
        * (patches // 4)
        * 2
        * ((4 * v_hidden) ** 2 + 4 * v_hidden * hidden)
    )
    return (flops + patches * per_patch + attention + mergers) / 1e12


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(seconds: float, setting: str, repeats: int, threads: int, model: str | None) -> dict[str, float]:
    """Score one synthetic episode of ``seconds`` at 30 fps with ``setting`` in this process.

    Args:
        seconds: episode duration (from the first to the last frame).
        setting: ``before`` (the old schedule, passed explicitly) or ``after`` (the defaults).
        repeats: timed runs after one warm-up.
        threads: torch CPU threads.
        model: model folder; None builds or reuses the bench-size tiny Qwen3-VL.

    Returns:
        Frames, prefixes, gaps, context tokens, the fastest wall and CPU seconds, peak RSS (MiB) before
        and after scoring, and the estimated TFLOPs of the real 8B shape.
    """
    import torch

    from devkit.synth import MAX_FRAMES, make_frame
    from devkit.tiny_model import ensure_tiny_model
    from pipeline.config import FramesConfig, ModelConfig, PrefixesConfig, ScoringConfig
    from pipeline.frames.schedule import config_schedule
    from pipeline.scoring.inputs import EpisodeClip
    from pipeline.scoring.scorer import PrefixScorer

    torch.set_num_threads(threads)
    path = model or str(ensure_tiny_model(CACHE / "bench-qwen3_vl-s0", "qwen3_vl", "bench", 0))
    scorer = PrefixScorer(ModelConfig(path=path), ScoringConfig())
    frames_cfg = FramesConfig(height=SIZE, width=SIZE, **SETTINGS[setting]["frames"])
    prefixes_cfg = PrefixesConfig(**SETTINGS[setting]["prefixes"])
    num_raw = round(seconds * RAW_FPS) + 1
    schedule = config_schedule(num_raw, RAW_FPS, frames_cfg, prefixes_cfg)
    frames = np.stack([make_frame(0, 0, int(i) % MAX_FRAMES, (SIZE, SIZE)) for i in schedule.raw_indices])
    clip = EpisodeClip(frames, schedule.raw_indices, RAW_FPS, num_raw, schedule.prefix_ends)
    tokens, layout = scorer.cached._tokens(scorer._prompt(TASK), clip)
    plan = scorer.cached._plan(layout, tokens)
    suffix_len = tokens["input_ids"].shape[1] - 1 - tokens["context_len"]
    passes = [(chunk.keep, chunk.count) for chunk in plan.chunks]
    blocks = len(schedule.raw_indices) // 2
    tflops = real_shape_tflops("8b", tokens["context_len"], suffix_len, passes, blocks, SIZE)
    rss_loaded = _peak_rss_mib()
    walls, cpus = [], []
    for run in range(repeats + 1):
        scorer.cached.plans.clear()
        wall, cpu = time.perf_counter(), time.process_time()
        scorer.score(clip, TASK)
        if run:  # the first run is the warm-up
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
    gaps = np.diff(schedule.prefix_end_times) if len(schedule.prefix_ends) > 1 else np.zeros(1)
    return {
        "seconds": seconds,
        "frames": len(schedule.raw_indices),
        "prefixes": len(schedule.prefix_ends),
        "max_gap_s": float(gaps.max()),
        "mean_gap_s": float(gaps.mean()),
        "context_tokens": int(tokens["context_len"]),
        "tflops_8b": tflops,
        "wall_s": min(walls),
        "cpu_s": min(cpus),
        "rss_loaded_mib": rss_loaded,
        "rss_peak_mib": _peak_rss_mib(),
    }


def _in_child(seconds: float, setting: str, args: argparse.Namespace) -> dict[str, float]:
    command = [
        sys.executable, "-m", "bench.long_episodes", "--one", f"{seconds}:{setting}",
        "--repeats", str(args.repeats), "--threads", str(args.threads),
    ]  # fmt: skip
    if args.model:
        command += ["--model", args.model]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        raise SystemExit(f"bench.long_episodes: {seconds} s {setting} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _label(seconds: float) -> str:
    return f"{seconds:g} s" if seconds < 60 else f"{seconds / 60:g} min"


def main(argv: list[str] | None = None) -> None:
    """Run every length before and after, each in its own process, and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lengths", default="10,120,600", help="episode durations in seconds")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", help="model folder (default: the bench-size tiny Qwen3-VL)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # SECONDS:SETTING, run by main in a child
    args = parser.parse_args(argv)
    if args.one:
        seconds, setting = args.one.split(":")
        print(json.dumps(measure(float(seconds), setting, args.repeats, args.threads, args.model)))
        return

    lengths = [float(x) for x in args.lengths.split(",")]
    rows = {(s, setting): _in_child(s, setting, args) for s in lengths for setting in SETTINGS}
    print(
        f"bench-size tiny Qwen3-VL, {SIZE}x{SIZE} frames, 30 fps episodes, {args.threads} threads, "
        f"fastest of {args.repeats} after a warm-up, plan rebuilt per run; before = frames.min_fps=null "
        "prefixes.max_spacing_s=null, after = defaults (min_fps 0.8, max_frames_long 768, max_spacing_s 5)"
    )
    header = (
        f"{'episode':<9}{'':<8}{'frames':>7}{'prefixes':>9}{'max gap s':>10}{'mean gap s':>11}"
        f"{'tokens':>8}{'wall s':>9}{'cpu s':>9}{'s/min':>8}{'peak MiB':>10}{'+MiB':>7}{'8B TFLOP':>10}"
        f"{'/min':>7}"
    )
    print(header)
    for seconds in lengths:
        for setting in SETTINGS:
            r = rows[(seconds, setting)]
            print(
                f"{_label(seconds):<9}{setting:<8}{r['frames']:>7}{r['prefixes']:>9}{r['max_gap_s']:>10.2f}"
                f"{r['mean_gap_s']:>11.2f}{r['context_tokens']:>8}{r['wall_s']:>9.2f}{r['cpu_s']:>9.2f}"
                f"{r['wall_s'] / (seconds / 60):>8.2f}{r['rss_peak_mib']:>10.0f}"
                f"{r['rss_peak_mib'] - r['rss_loaded_mib']:>7.0f}{r['tflops_8b']:>10.1f}"
                f"{r['tflops_8b'] / (seconds / 60):>7.1f}"
            )
    print(
        "s/min: scoring wall seconds per minute of video; +MiB: peak RSS above the loaded model and frames; "
        "8B TFLOP: estimated dense FLOPs of the real 8B shape on these tokens, /min: per minute of video"
    )
    for seconds in lengths:
        before, after = rows[(seconds, "before")], rows[(seconds, "after")]
        keys = ("wall_s", "cpu_s", "context_tokens", "prefixes", "tflops_8b")
        ratio = {key: after[key] / before[key] for key in keys}
        print(
            f"{_label(seconds)}: after/before {ratio['wall_s']:.2f}x wall, {ratio['cpu_s']:.2f}x cpu, "
            f"{ratio['context_tokens']:.2f}x tokens, {ratio['prefixes']:.2f}x prefixes, "
            f"{ratio['tflops_8b']:.2f}x 8B FLOPs"
        )


if __name__ == "__main__":
    main()
