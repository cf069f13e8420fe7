"""Benchmark: LeRobot 0.6.1's own TOPReward (``compute_topreward_progress``) against this pipeline.

Both run on the same synthetic LeRobot v3.0 datasets (one camera, 64x64, 10 s and 60 s episodes) with the
same tiny random Qwen3-VL, on CPU, each contender in its own process. Printed side by side:

* wall time per episode, steady state (in-process, model loaded, first episode of a run left out) and
  whole process (start to exit: imports, model load, dataset open, scoring, writing, over the episodes);
* VLM passes per episode: calls of the language model and of the vision tower, counted by forward hooks
  on the loaded model (the same hooks for both);
* scaling from 10 s to 60 s episodes;
* max |Δ raw log P("True")| where both score the same frames and the same prefixes: a 2 fps dataset, so
  that LeRobot (all raw frames, metadata fps 2) and the pipeline (sampled at 2 fps) see the same frames
  with the same timestamps, compared on the even-length prefixes (the pipeline's prefixes end on Qwen's
  2-frame blocks; LeRobot scores every length). Once on the exact uint8 frames LeRobot fed its processor,
  once with the pipeline decoding the video itself.

LeRobot's dense default scores every prefix length 1..N; ``num_samples=15`` scores 15 evenly spaced ones.
Its first one-frame prefix crashes in Qwen3-VL's ``smart_resize`` ("t:1 must be larger than
temporal_factor:2"). The workaround, applied in LeRobot's process only and printed with the results: that
size computation is asked for ``max(t, 2)`` frames, so a one-frame prefix is sized like a two-frame one
(64x64 here, as every other prefix) and Qwen's ``patchify`` pads it to two frames by repeating it, as it
already does for every odd-length prefix. Nothing else of LeRobot's code path changes.

    python -m bench.vs_lerobot [--size tiny|bench] [--fps 10] [--episodes 2] [--dense-long-episodes 1]

About 3.5 minutes on 2 CPU cores with the tiny model, most of it LeRobot's dense default on one 60 s
episode (600 prefixes); with ``--size bench`` that one episode alone takes about 20 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CACHE = PROJECT_ROOT / ".cache"
# LeRobot's TOPReward reads this camera by default (TOPRewardConfig.image_key); the synthetic datasets
# are written with it so LeRobot runs unconfigured.
CAMERA = "observation.images.top"
FRAME_SIZE = 64
SHORT_S, LONG_S = 10, 60
# The comparison dataset is recorded at LeRobot's TOPReward metadata rate (TOPRewardConfig.fps, 2.0) so
# that LeRobot's timestamps are true and the pipeline's 2 fps sampling keeps every raw frame.
COMPARE_FPS = 2
WORKAROUND = (
    "LeRobot's one-frame prefix crashes in Qwen3-VL smart_resize ('t:1 must be larger than "
    "temporal_factor:2'); workaround in LeRobot's process only: smart_resize is asked for max(t, 2) frames, "
    "so a one-frame prefix is sized like a two-frame one (64x64, as every prefix here) and Qwen's patchify "
    "pads it to 2 frames by repeating it, as it does for every odd-length prefix."
)


# ----------------------------------------------------------------------------------------- counting


def count_vlm_passes(model: Any, counts: Counter | None = None) -> Counter:
    """Count forward calls of the VLM's language model and vision tower with forward hooks.

    Returns the Counter (``counts`` or a new one) that the hooks update in place: ``llm`` (language-model
    passes) and ``vision`` (vision-tower passes).
    """
    counts = Counter() if counts is None else counts
    for module in model.modules():
        name = type(module).__name__
        kind = "llm" if name.endswith("TextModel") else "vision" if name.endswith("VisionModel") else None
        if kind:
            module.register_forward_hook(lambda *_args, kind=kind: counts.update([kind]))
    return counts


def _timed_episodes(fn: Callable[..., Any], counts: Counter, log: list[dict]) -> Callable[..., Any]:
    """Wrap a per-episode function: record its wall time and the VLM passes it made."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        before = Counter(counts)
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        spent = Counter(counts)
        spent.subtract(before)
        log.append({"seconds": time.perf_counter() - start, **spent})
        return result

    return wrapper


# ------------------------------------------------------------------------------------------ workers


def lerobot_worker(args: argparse.Namespace) -> dict:
    """Run LeRobot's ``compute_topreward_progress`` on one dataset (HF_LEROBOT_HOME/<repo_id>)."""
    import torch
    import transformers.models.qwen3_vl.video_processing_qwen3_vl as qwen3_video
    from lerobot.rewards.topreward import compute_rabc_weights as lerobot_topreward
    from lerobot.rewards.topreward.processor_topreward import TOPRewardEncoderProcessorStep

    torch.set_num_threads(args.threads)
    smart_resize = qwen3_video.smart_resize

    def smart_resize_min_two(num_frames: int, *rest: Any, temporal_factor: int = 2, **kw: Any) -> Any:
        return smart_resize(max(num_frames, temporal_factor), *rest, temporal_factor=temporal_factor, **kw)

    qwen3_video.smart_resize = smart_resize_min_two

    counts: Counter = Counter()
    episodes: list[dict] = []
    prefixes: list[dict] = []  # per scored prefix of the current episode: length, task, raw reward
    # The last prefix's frames as fed to the processor (only with --capture: holding every prefix's
    # frames would cost LeRobot memory and time it does not spend on its own).
    last_video: dict[str, Any] = {}
    model_cls = lerobot_topreward.TOPRewardModel
    init, compute_reward = model_cls.__init__, model_cls.compute_reward
    encode_batch = TOPRewardEncoderProcessorStep._encode_batch

    def hooked_init(self: Any, config: Any) -> None:
        init(self, config)
        count_vlm_passes(self.model, counts)

    def recorded_reward(self: Any, batch: dict) -> Any:
        reward = compute_reward(self, batch)
        prefixes[-1]["reward"] = float(reward.item())
        return reward

    def recorded_encode(self: Any, videos: Any, tasks: list[str], batch_size: int) -> Any:
        prefixes.append({"length": int(videos.shape[1]), "task": tasks[0]})
        if args.capture:
            last_video["frames"] = videos[0]
        return encode_batch(self, videos, tasks, batch_size)

    model_cls.__init__ = hooked_init
    model_cls.compute_reward = recorded_reward
    TOPRewardEncoderProcessorStep._encode_batch = recorded_encode
    per_episode = lerobot_topreward.compute_instruction_rewards_for_prefixes
    captured: list[dict] = []

    def episode(*a: Any, **kw: Any) -> Any:
        prefixes.clear()
        result = _timed_episodes(per_episode, counts, episodes)(*a, **kw)
        captured.append(
            {
                "lengths": [p["length"] for p in prefixes],
                "rewards": [p["reward"] for p in prefixes],
                "task": prefixes[-1]["task"],
                # The longest prefix is the whole episode as LeRobot's processor got it (T, C, H, W) uint8.
                "frames": last_video["frames"].permute(0, 2, 3, 1).numpy() if args.capture else None,
            }
        )
        return result

    lerobot_topreward.compute_instruction_rewards_for_prefixes = episode
    lerobot_topreward.compute_topreward_progress(
        args.repo_id,
        vlm_name=args.model,
        device="cpu",
        num_samples=args.num_samples,
        episodes=list(range(args.limit)) if args.limit else None,
        output_path=str(Path(args.out).with_suffix(".parquet")),
    )
    if args.capture:
        np.savez(
            args.capture,
            **{f"frames_{i}": c["frames"] for i, c in enumerate(captured)},
            **{f"lengths_{i}": np.asarray(c["lengths"]) for i, c in enumerate(captured)},
            **{f"rewards_{i}": np.asarray(c["rewards"]) for i, c in enumerate(captured)},
            tasks=np.asarray([c["task"] for c in captured]),
        )
    return {"episodes": episodes}


def _pipeline_config(root: str, model: str, *extra: str) -> Any:
    from pipeline.config import load_config

    return load_config(
        [
            f"source.uris=[{root}]",
            f"model.path={model}",
            f"frames.height={FRAME_SIZE}",
            f"frames.width={FRAME_SIZE}",
            *extra,
        ]
    )


def pipeline_worker(args: argparse.Namespace) -> dict:
    """Decode, score (cached PrefixScorer) and label every episode of one dataset, as a Ray worker does."""
    import torch

    from pipeline.catalog import list_episodes
    from pipeline.frames.decode import decode_episode
    from pipeline.scoring.inputs import EpisodeClip
    from pipeline.scoring.scorer import PrefixScorer
    from pipeline.stages.label import label_episode

    torch.set_num_threads(args.threads)
    cfg = _pipeline_config(args.root, args.model)
    scorer = PrefixScorer(cfg.model, cfg.scoring)
    counts = count_vlm_passes(scorer.loaded.model)
    episodes: list[dict] = []

    def one(row: dict) -> dict:
        decoded = decode_episode(
            row, cfg.frames, cfg.prefixes, cfg.source.storage_options, cfg.source.block_size
        )
        scores = scorer.score(EpisodeClip.from_row(decoded), row["task"])
        decoded.update(log_p_true=scores.log_p_true, log_p_false=scores.log_p_false)
        return label_episode(decoded)

    timed = _timed_episodes(one, counts, episodes)
    for record in list_episodes(cfg.source):
        labelled = timed(record.to_row())
        episodes[-1].update(frames=len(labelled["frame_indices"]), prefixes=len(labelled["log_p_true"]))
    return {"episodes": episodes}


def compare_worker(args: argparse.Namespace) -> dict:
    """Score LeRobot's captured frames with the pipeline and compare raw log P on the shared prefixes."""
    from lerobot.rewards.topreward.configuration_topreward import TOPRewardConfig

    from pipeline.catalog import list_episodes
    from pipeline.frames.decode import decode_episode
    from pipeline.scoring.inputs import EpisodeClip
    from pipeline.scoring.scorer import PrefixScorer

    captured = np.load(args.capture)
    lerobot_fps = TOPRewardConfig().fps
    rows = [r.to_row() for r in list_episodes(_pipeline_config(args.root, args.model).source)]
    longest = max(row["length"] for row in rows)
    # Every raw frame sampled (2 fps of a 2 fps video) and one prefix per 2-frame block.
    cfg = _pipeline_config(
        args.root,
        args.model,
        f"frames.fps={lerobot_fps}",
        f"frames.max_frames={longest + longest % 2}",
        f"prefixes.num={longest}",
    )
    scorer = PrefixScorer(cfg.model, cfg.scoring)
    same_frames, own_decode, pixel_diff, compared = [], [], 0, 0
    for i, row in enumerate(rows):
        frames, lengths = captured[f"frames_{i}"], captured[f"lengths_{i}"]
        lerobot = dict(zip(lengths.tolist(), captured[f"rewards_{i}"].tolist(), strict=True))
        decoded = decode_episode(
            row, cfg.frames, cfg.prefixes, cfg.source.storage_options, cfg.source.block_size
        )
        clip = EpisodeClip.from_row(decoded)
        if not np.array_equal(clip.raw_indices, np.arange(len(frames))) or clip.raw_fps != lerobot_fps:
            raise RuntimeError("the comparison dataset must be sampled frame for frame at LeRobot's fps")
        ends = clip.prefix_ends
        theirs = np.array([lerobot[int(e)] for e in ends])
        own = scorer.score(clip, row["task"]).log_p_true
        exact = scorer.score(
            EpisodeClip(frames, np.arange(len(frames)), lerobot_fps, len(frames), ends),
            str(captured["tasks"][i]),
        ).log_p_true
        same_frames.append(float(np.abs(exact - theirs).max()))
        own_decode.append(float(np.abs(own - theirs).max()))
        pixel_diff = max(pixel_diff, int(np.abs(clip.frames.astype(int) - frames.astype(int)).max()))
        compared += len(ends)
    return {
        "prefixes": compared,
        "episodes": len(rows),
        "max_abs_same_frames": max(same_frames),
        "max_abs_own_decode": max(own_decode),
        "max_pixel_diff": pixel_diff,
    }


WORKERS = {"lerobot": lerobot_worker, "pipeline": pipeline_worker, "compare": compare_worker}


# ------------------------------------------------------------------------------------------- driver


def _run(command: list[str], env: dict[str, str]) -> float:
    """Run one process to completion; returns its whole-process wall time."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} failed:\n{done.stderr[-4000:]}")
    return wall


def _run_worker(kind: str, out: Path, env: dict[str, str], *flags: str) -> tuple[dict, float]:
    """Run one worker process; returns its JSON result and its whole-process wall time."""
    command = [sys.executable, "-m", "bench.vs_lerobot", "--worker", kind, "--out", str(out), *flags]
    wall = _run(command, env)
    return json.loads(out.read_text()), wall


def _steady(episodes: list[dict]) -> float:
    """Median seconds per episode, the first (warm-up) episode left out when there are others."""
    times = [e["seconds"] for e in episodes]
    return float(np.median(times[1:] if len(times) > 1 else times))


def _per_episode(episodes: list[dict], key: str) -> float:
    return float(np.mean([e.get(key, 0) for e in episodes]))


CONTENDERS = {
    "LeRobot dense (default)": ("lerobot", []),
    "LeRobot num_samples=15": ("lerobot", ["--num-samples", "15"]),
    "pipeline (cached, K=15)": ("pipeline", []),
}
OURS = "pipeline (cached, K=15)"


def main(argv: list[str] | None = None) -> None:
    """Build the datasets and model, run every contender in its own process, print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=("tiny", "bench"), default="tiny", help="tiny Qwen3-VL size")
    parser.add_argument("--fps", type=int, default=10, help="raw fps of the 10 s / 60 s datasets")
    parser.add_argument("--episodes", type=int, default=2, help="episodes per dataset")
    parser.add_argument(
        "--dense-long-episodes", type=int, default=1, help="60 s episodes LeRobot's dense default scores"
    )
    parser.add_argument("--threads", type=int, default=2)
    # Worker-side flags (the driver passes them).
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--repo-id", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--num-samples", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--capture", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        Path(args.out).write_text(json.dumps(WORKERS[args.worker](args)))
        return

    from devkit.synth import write_v30_dataset
    from devkit.tiny_model import ensure_tiny_model

    model = str(ensure_tiny_model(CACHE / "models" / f"{args.size}-qwen3_vl-s0", "qwen3_vl", args.size, 0))
    with tempfile.TemporaryDirectory(prefix="vs-lerobot-") as tmp:
        home = Path(tmp) / "lerobot"
        env = {
            **os.environ,
            # LeRobot's compute_topreward_progress opens datasets by repo id under HF_LEROBOT_HOME.
            "HF_LEROBOT_HOME": str(home),
            "HF_HOME": str(CACHE / "huggingface"),
            "HF_HUB_OFFLINE": "1",
            "TQDM_DISABLE": "1",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        datasets = {SHORT_S: "bench/ep10s", LONG_S: "bench/ep60s"}
        for seconds, repo_id in datasets.items():
            lengths = [seconds * args.fps] * args.episodes
            write_v30_dataset(home / repo_id, repo_id, lengths, args.fps, cameras=(CAMERA,))
        compare_id = "bench/compare"
        lengths = [SHORT_S * COMPARE_FPS] * 2
        write_v30_dataset(home / compare_id, compare_id, lengths, COMPARE_FPS, cameras=(CAMERA,))

        results: dict[tuple[str, int], tuple[dict, float]] = {}
        common = ["--model", model, "--threads", str(args.threads)]
        for name, (kind, flags) in CONTENDERS.items():
            for seconds, repo_id in datasets.items():
                dataset = ["--repo-id", repo_id, "--root", str(home / repo_id)]
                if name.startswith("LeRobot dense") and seconds == LONG_S:
                    dataset += ["--limit", str(args.dense_long_episodes)]
                print(f"running {name} on {seconds} s episodes ...", flush=True)
                out = Path(tmp) / f"{kind}-{len(results)}.json"
                results[name, seconds] = _run_worker(kind, out, env, *dataset, *common, *flags)
        # The production entry point: a local Ray started, the Ray Data graph, outputs written, Ray stopped.
        relabel = {}
        for seconds, repo_id in datasets.items():
            print(f"running python -m jobs.relabel on {seconds} s episodes ...", flush=True)
            relabel[seconds] = _run(
                [
                    sys.executable, "-m", "jobs.relabel", f"source.uris=[{home / repo_id}]",
                    f"output.uri={Path(tmp) / 'relabel'}", f"model.path={model}",
                    f"frames.height={FRAME_SIZE}", f"frames.width={FRAME_SIZE}",
                    f"ray.num_cpus={args.threads}", f"ray.scorer_threads={args.threads}",
                ],
                env,
            )  # fmt: skip
        print("running the same-frames comparison ...", flush=True)
        capture = ["--capture", str(Path(tmp) / "compare.npz")]
        _run_worker(
            "lerobot", Path(tmp) / "cmp-lerobot.json", env, "--repo-id", compare_id, *capture, *common
        )
        root = ["--root", str(home / compare_id)]
        compare, _ = _run_worker("compare", Path(tmp) / "cmp.json", env, *root, *capture, *common)
    _print(results, relabel, compare, args, model)


def _print(
    results: dict, relabel: dict[int, float], compare: dict, args: argparse.Namespace, model: str
) -> None:
    print(f"\nvs LeRobot 0.6.1 compute_topreward_progress: {args.size} Qwen3-VL ({model})")
    print(
        f"CPU, {args.threads} threads; synthetic v3.0 datasets, one camera {FRAME_SIZE}x{FRAME_SIZE} at "
        f"{args.fps} fps; LeRobot feeds every raw frame at native size; the pipeline samples 2 fps "
        f"(<= 64 frames) pinned at {FRAME_SIZE}x{FRAME_SIZE}"
    )
    print(f"workaround: {WORKAROUND}\n")
    print(
        f"{'contender':<26}{'episode':>8}{'eps':>5}{'steady s/ep':>13}{'process s/ep':>14}"
        f"{'LLM passes/ep':>15}{'vision/ep':>11}"
    )
    steady: dict[tuple[str, int], float] = {}
    process: dict[tuple[str, int], float] = {}
    for (name, seconds), (result, wall) in results.items():
        episodes = result["episodes"]
        steady[name, seconds] = _steady(episodes)
        process[name, seconds] = wall / len(episodes)
        print(
            f"{name:<26}{seconds:>7}s{len(episodes):>5}{steady[name, seconds]:>13.3f}"
            f"{process[name, seconds]:>14.2f}{_per_episode(episodes, 'llm'):>15.1f}"
            f"{_per_episode(episodes, 'vision'):>11.1f}"
        )
    for seconds, wall in relabel.items():
        name = "pipeline, jobs.relabel+Ray"
        print(
            f"{name:<26}{seconds:>7}s{args.episodes:>5}{'-':>13}{wall / args.episodes:>14.2f}"
            f"{'-':>15}{'-':>11}"
        )
    print("\nsteady = median per-episode time in a warm process (first episode left out when there are two);")
    print("process = whole process wall (start, imports, model load, scoring, writing, exit) / episodes\n")
    for name in CONTENDERS:
        if name == OURS:
            continue
        for seconds in (SHORT_S, LONG_S):
            ratio_steady = steady[name, seconds] / steady[OURS, seconds]
            ratio_process = process[name, seconds] / process[OURS, seconds]
            print(
                f"{name} / pipeline, {seconds} s episodes: steady {ratio_steady:.1f}x, "
                f"whole process {ratio_process:.1f}x"
            )
    print()
    for name in CONTENDERS:
        scaling = steady[name, LONG_S] / steady[name, SHORT_S]
        print(f"scaling 10 s -> 60 s, steady s/ep, {name:<26} {scaling:.1f}x")
    print(
        f"\nsame frames and prefixes ({compare['episodes']} episodes of {SHORT_S} s at {COMPARE_FPS} fps, "
        f"{compare['prefixes']} even-length prefixes), max |Δ raw log P(True)| LeRobot vs pipeline:\n"
        f"  {compare['max_abs_same_frames']:.2e} on the frames LeRobot fed its processor; "
        f"{compare['max_abs_own_decode']:.2e} with the pipeline decoding the video itself "
        f"(max pixel difference of the two decoders: {compare['max_pixel_diff']})"
    )


if __name__ == "__main__":
    main()
