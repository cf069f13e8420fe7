"""Benchmark: the full Ray Data pipeline vs a bare Python loop, and memory as the dataset doubles.

One run, side by side, on a synthetic LeRobot v3.0 dataset served by moto S3 on 127.0.0.1:

* bare loop: catalog, then for each episode decode + cached scorer + labels in one process;
* Ray: the ``pipeline.relabel`` Ray Data graph (decode, scorer actor pool, labels, committed shards).

Each is run on N and 2N episodes. Throughput is reported for the whole run (start-up included: model
load, actor start) and in steady state (between the first and the last finished episode), which is
what matters for a nightly run over thousands of episodes. Peak RSS of the driver and of the Ray worker
processes is sampled during each Ray run: it should stay flat when the data doubles.

With ``--batch-sizes 1,4`` it instead runs only the Ray graph on N episodes once per
``ray.scorer_batch_size`` and prints their steady-state rates side by side (episodes per scorer call).

    python -m bench.relabel_throughput [--episodes 24] [--length 300] [--model-size bench] [key=value ...]
    python -m bench.relabel_throughput --batch-sizes 1,4 [--episodes 12]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import psutil
import ray

from devkit.local_s3 import local_s3
from devkit.synth import write_v30_dataset
from devkit.tiny_model import ensure_tiny_model
from pipeline.catalog import list_episodes
from pipeline.config import RelabelConfig, config_hash, load_config
from pipeline.frames.decode import decode_episode
from pipeline.relabel import build_dataset
from pipeline.scoring.inputs import EpisodeClip
from pipeline.scoring.scorer import PrefixScorer
from pipeline.sinks import committed_state, read_rows, state_uri
from pipeline.stages.label import label_episode
from pipeline.storage import upload_dataset

CACHE = Path(__file__).resolve().parent.parent / ".cache"


class RssSampler:
    """Samples the peak RSS of the Ray worker processes (all non-driver Ray processes) in a thread."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peak_worker_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            for proc in psutil.process_iter(["pid", "cmdline", "memory_info"]):
                cmd = " ".join(proc.info["cmdline"] or [])
                if proc.info["pid"] != me and proc.info["memory_info"] and "ray::" in cmd:
                    self.peak_worker_mib = max(self.peak_worker_mib, proc.info["memory_info"].rss / 2**20)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _steady_rate(done_at: list[float]) -> float:
    """Episodes/s between the first and the last finished episode (start-up excluded)."""
    span = done_at[-1] - done_at[0]
    return (len(done_at) - 1) / span if span > 0 else float("nan")


def bare_loop(cfg: RelabelConfig) -> tuple[float, float]:
    """Catalog, model load, then decode/score/label per episode in one process: (seconds, steady eps/s)."""
    start = time.perf_counter()
    scorer = PrefixScorer(cfg.model, cfg.scoring)
    done_at = []
    for record in list_episodes(cfg.source):
        row = decode_episode(
            record.to_row(), cfg.frames, cfg.prefixes, cfg.source.storage_options, cfg.source.block_size
        )
        scores = scorer.score(EpisodeClip.from_row(row), row["task"])
        row.update(log_p_true=scores.log_p_true, log_p_false=scores.log_p_false)
        label_episode(row)
        done_at.append(time.perf_counter())
    return done_at[-1] - start, _steady_rate(done_at)


def ray_run(cfg: RelabelConfig) -> tuple[float, float, float]:
    """The Ray Data graph over every episode: (seconds, steady eps/s, peak Ray worker RSS MiB).

    Steady state comes from the scorer's per-episode ``scored_at`` stamps in the committed shards: rows
    reach the driver only in shard-sized groups.
    """
    rows = [{k: v for k, v in r.to_row().items() if k != "tasks"} for r in list_episodes(cfg.source)]
    chash = config_hash(cfg)
    with RssSampler() as sampler:
        start = time.perf_counter()
        for _ in build_dataset(rows, cfg, chash).iter_rows():
            pass
        elapsed = time.perf_counter() - start
    folder = state_uri(cfg.output.uri, chash, rows[0]["dataset_id"])
    options = cfg.output.storage_options
    shards = read_rows(folder, committed_state(folder, options).values(), options)
    stamps = sorted(t.timestamp() for t in shards.column("scored_at").to_pylist())
    return elapsed, _steady_rate(stamps), sampler.peak_worker_mib


def main(argv: list[str] | None = None) -> None:
    """Run both paths on N and 2N episodes and print the comparison."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--episodes", type=int, default=24, help="N; the second size is 2N")
    parser.add_argument("--length", type=int, default=300, help="frames per episode (30 fps)")
    parser.add_argument("--model-size", choices=("tiny", "bench"), default="bench")
    parser.add_argument("--frame-size", type=int, default=224, help="pinned frame size (multiple of 32)")
    parser.add_argument("--batch-sizes", help="compare ray.scorer_batch_size values, e.g. 1,4")
    args, overrides = parser.parse_known_args(argv)
    args.overrides = overrides
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
    )

    import s3fs

    model = ensure_tiny_model(
        CACHE / "models" / f"{args.model_size}-qwen3_vl-s0", "qwen3_vl", args.model_size, 0
    )
    with local_s3("bench") as endpoint:
        _compare(args, model, endpoint, s3fs.S3FileSystem(endpoint_url=endpoint, use_listings_cache=False))


def _compare(args: argparse.Namespace, model: Path, endpoint: str, fs: object) -> None:
    sizes = n1, n2 = args.episodes, 2 * args.episodes
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        for n in sizes:
            local = write_v30_dataset(
                Path(tmp) / f"n{n}", repo_id=f"bench/n{n}", lengths=[args.length] * n, fps=30
            )
            upload_dataset(local, fs, f"s3://bench/fleet/n{n}")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)

    def config(n: int, output: str) -> RelabelConfig:
        storage = f"{{endpoint_url: '{endpoint}'}}"
        return load_config(
            [f"source.uris=[s3://bench/fleet/n{n}]", f"source.storage_options={storage}",
             f"output.uri=s3://bench/{output}", f"output.storage_options={storage}", f"model.path={model}",
             f"frames.height={args.frame_size}", f"frames.width={args.frame_size}", "frames.max_frames=32",
             "curation.enabled=false", *args.overrides]
        )  # fmt: skip

    if args.batch_sizes:
        _compare_batch_sizes([int(b) for b in args.batch_sizes.split(",")], config, n1)
        return
    # Warm-ups: first calls pay for imports, kernel selection and Ray's worker processes starting.
    bare_loop(config(n1, "warm-bare"))
    bare = {n: bare_loop(config(n, f"bare{n}")) for n in sizes}
    ray_run(config(n1, "warm-ray"))
    driver_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rays, drivers = {}, {}
    for n in sizes:
        rays[n] = ray_run(config(n, f"ray{n}"))
        drivers[n] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ray.shutdown()

    print(f"dataset: {args.length} frames/episode at 30 fps on moto S3; model {model.name}; 2 CPUs")
    print(f"{'episodes/s':<40}{'N=' + str(n1):>10}{'2N=' + str(n2):>10}")
    for name, runs in (("bare loop", bare), ("Ray pipeline", rays)):
        print(f"{name + ', whole run (with start-up)':<40}{n1 / runs[n1][0]:>10.2f}{n2 / runs[n2][0]:>10.2f}")
        print(f"{name + ', steady state':<40}{runs[n1][1]:>10.2f}{runs[n2][1]:>10.2f}")
    steady = [rays[n][1] / bare[n][1] for n in sizes]
    print(f"Ray / bare loop, steady state: {steady[0]:.0%} at N, {steady[1]:.0%} at 2N (target >= 80%)")
    print(
        f"driver peak RSS MiB: before timed Ray runs {driver_before:.0f}, "
        f"after N {drivers[n1]:.0f}, after 2N {drivers[n2]:.0f}"
    )
    print(f"Ray worker peak RSS MiB: N {rays[n1][2]:.0f}, 2N {rays[n2][2]:.0f} (target: flat)")


def _compare_batch_sizes(batch_sizes: list[int], config: Callable[[int, str], RelabelConfig], n: int) -> None:
    """Steady-state episodes/s of the Ray graph for each scorer batch size, on the same N episodes."""
    ray_run(config(n, "warm-batch"))
    rates = {}
    for size in batch_sizes:
        cfg = config(n, f"batch{size}")
        rates[size] = ray_run(replace(cfg, ray=replace(cfg.ray, scorer_batch_size=size)))[1]
    ray.shutdown()
    print(f"{'episodes per scorer call':<28}" + "".join(f"{size:>10}" for size in batch_sizes))
    print(f"{'steady episodes/s':<28}" + "".join(f"{rates[size]:>10.2f}" for size in batch_sizes))
    base = rates[batch_sizes[0]]
    ratios = "".join(f"{rates[size] / base:>10.2f}" for size in batch_sizes)
    print(f"{'vs ' + str(batch_sizes[0]):<28}{ratios}")


if __name__ == "__main__":
    main()
