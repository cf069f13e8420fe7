"""Benchmark: the nightly publish, incremental and parallel (issue: publishing at fleet scale).

Builds a synthetic LeRobot v3.0 source (lerobot's recorder for a few episodes, then lerobot's
``aggregate_datasets`` to replicate them by stream copy), commits fake labels for several datasets
(``devkit.fake_labels``: the real shard layout, made-up scores, every episode selected), starts a local
Ray and publishes to local disk with :func:`pipeline.publish.publish_all`. Prints side by side:

(a) a no-op run over a history of N and 4N committed episodes per dataset: wall time (median of 5) and
    bytes written (measured on the files: every byte of every file whose size or mtime changed);
(b) k new episodes on top of 4N: curated video bytes written against the packet bytes of those k
    episodes, and against what a full rebuild of the curated set writes;
(c) the first publish of 8 datasets as Ray tasks with the default placement (``publish.num_cpus=1``:
    as many at once as there are CPUs) against ``publish.max_parallel=1`` (one after another);
(d) what the versioned curated layout costs a reader: resolving the pointer (one small read) against
    opening the version it names with ``LeRobotDataset``.

    python -m bench.nightly [--n 50] [--k 5] [--datasets 3] [--parallel 8] [--length 20]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import ray

from devkit.fake_labels import commit_scores, job_for, lengths_of
from devkit.synth import write_v30_dataset
from pipeline.config import PublishConfig, load_config
from pipeline.curated.pointer import resolve_curated
from pipeline.layout import CURATED_DIR, RECORD_FILE
from pipeline.publish import PublishOutcome, publish_all

# No-op runs are milliseconds: the median of a few is reported.
NOOP_REPEATS = 5
# Pointer reads are sub-millisecond on local disk: the median of many.
RESOLVE_REPEATS = 200


def _source(folder: Path, episodes: int, length: int) -> Path:
    """A v3.0 dataset of ``episodes`` short episodes: 10 recorded, replicated by lerobot's aggregation."""
    from lerobot.datasets.aggregate import aggregate_datasets

    base = write_v30_dataset(folder / "base", lengths=[length] * 10, fps=10)
    copies = math.ceil(episodes / 10)
    aggregate_datasets(
        [f"bench/base{i}" for i in range(copies)],
        "bench/source",
        roots=[base] * copies,
        aggr_root=folder / "fleet" / "source",
    )
    return folder / "fleet" / "source"


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def _written(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> int:
    """Bytes of every file that is new or whose size or mtime changed."""
    return sum(size for path, (size, mtime) in after.items() if before.get(path) != (size, mtime))


def _publish(source: Path, output: Path, ids: list[str], publish: PublishConfig) -> tuple[float, list]:
    cfg = load_config([f"output.uri={output}", "model.path=fake/vlm", "success.threshold=-1"])
    cfg = replace(cfg, publish=publish)
    jobs = [job_for(str(source), dataset_id, str(output), {}) for dataset_id in ids]
    started = time.perf_counter()
    outcomes = publish_all(jobs, cfg, connect=lambda: None)
    elapsed = time.perf_counter() - started
    failed = [o.error for o in outcomes if o.status == "failed"]
    if failed:
        raise SystemExit(f"publish failed: {failed}")
    return elapsed, outcomes


def _commit(source: Path, output: Path, ids: list[str], episodes: range) -> None:
    lengths = lengths_of(source)
    for dataset_id in ids:
        commit_scores(str(source), dataset_id, str(output), dict.fromkeys(episodes, 0.0), lengths, {})


@ray.remote(num_cpus=0)
def _import_publish() -> None:
    import pipeline.publish  # noqa: F401  (what every publish task imports first)


def _warm_up(workers: int) -> None:
    """Starts Ray's worker processes and their imports before anything is timed (a one-off per worker)."""
    ray.get([_import_publish.remote() for _ in range(workers)])


def _row(label: str, *cells: str) -> str:
    return f"{label:<44}" + "".join(f"{cell:>16}" for cell in cells)


def main(argv: list[str] | None = None) -> None:
    """Runs the three measurements and prints them side by side."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50, help="history size N (episodes per dataset)")
    parser.add_argument("--k", type=int, default=5, help="new episodes for (b)")
    parser.add_argument("--datasets", type=int, default=3, help="datasets in the history of (a)")
    parser.add_argument("--parallel", type=int, default=8, help="datasets published in (c)")
    parser.add_argument("--length", type=int, default=20, help="frames per episode")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every dataset here is local; nothing may reach a hub
    work = Path(tempfile.mkdtemp(prefix="bench-nightly-"))
    try:
        source = _source(work, 4 * args.n + args.k, args.length)
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        # The default placement (publish.num_cpus=1: as many tasks as CPUs) against one task at a time.
        parallel, serial = PublishConfig(), PublishConfig(max_parallel=1)
        _warm_up(args.parallel)
        ids = [f"fleet/ds{i}" for i in range(args.datasets)]

        # (a) no-op runs over a history of N and 4N episodes per dataset.
        noop: dict[int, tuple[float, int, float]] = {}
        for history in (args.n, 4 * args.n):
            output = work / f"out-{history}"
            _commit(source, output, ids, range(history))
            first, _ = _publish(source, output, ids, parallel)
            before = _snapshot(output)
            runs = [_publish(source, output, ids, parallel) for _ in range(NOOP_REPEATS)]
            assert all(o.status == "unchanged" for _, outcomes in runs for o in outcomes)
            elapsed = statistics.median(seconds for seconds, _ in runs)
            noop[history] = (elapsed, _written(before, _snapshot(output)), first)

        # (b) k new episodes on top of 4N, on one dataset.
        output = work / f"out-{4 * args.n}"
        _commit(source, output, ids[:1], range(4 * args.n, 4 * args.n + args.k))
        _, (grown,) = _publish(source, output, ids[:1], parallel)
        # What a rebuild of the same selection writes: the whole curated set again.
        shutil.rmtree(output / ids[0] / CURATED_DIR)
        (output / ids[0] / RECORD_FILE).unlink()
        _, (rebuilt,) = _publish(source, output, ids[:1], parallel)
        reader = _reader_costs(output / ids[0] / CURATED_DIR)

        # (c) first publish of `parallel` datasets: parallel Ray tasks vs one after another.
        many = [f"fleet/p{i}" for i in range(args.parallel)]
        timings = {}
        for name, publish in (("serial", serial), ("parallel", parallel)):
            output = work / f"out-{name}"
            _commit(source, output, many, range(args.n))
            timings[name], _ = _publish(source, output, many, publish)
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)

    n, n4 = noop[args.n], noop[4 * args.n]
    print(f"\nbench.nightly: {args.datasets} datasets, N={args.n}, k={args.k}, {args.length} frames/episode,")
    print(f"local disk, Ray with {os.cpu_count()} CPUs (workers started before timing)\n")
    print(_row("(a) no-op run", f"N={args.n}", f"4N={4 * args.n}", "4N/N"))
    print(
        _row(
            f"  wall time of publish_all [s] (median of {NOOP_REPEATS})",
            f"{n[0]:.3f}",
            f"{n4[0]:.3f}",
            f"{n4[0] / n[0]:.2f}",
        )
    )
    print(_row("  bytes written", f"{n[1]}", f"{n4[1]}", "target 0"))
    print(_row("  (first publish, for scale) [s]", f"{n[2]:.1f}", f"{n4[2]:.1f}", f"{n4[2] / n[2]:.2f}"))
    print()
    _summary_b(grown, rebuilt, args.k)
    print()
    print(_row(f"(c) first publish of {args.parallel} datasets", "parallel", "serial", "serial/par."))
    print(
        _row(
            f"  wall time [s] (N={args.n} episodes each)",
            f"{timings['parallel']:.1f}",
            f"{timings['serial']:.1f}",
            f"{timings['serial'] / timings['parallel']:.2f}",
        )
    )
    print()
    print(_row(f"(d) a reader of the curated set (4N+{args.k} episodes)", "pointer", "open", "pointer/open"))
    print(
        _row(
            f"  median time [ms] (pointer: of {RESOLVE_REPEATS}; open: of 3)",
            f"{reader[0] * 1e3:.3f}",
            f"{reader[1] * 1e3:.1f}",
            f"{reader[0] / reader[1]:.4f}",
        )
    )


def _reader_costs(curated: Path) -> tuple[float, float]:
    """Median seconds to resolve the pointer, and to open the version it names with LeRobotDataset."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    def timed(action) -> float:
        start = time.perf_counter()
        action()
        return time.perf_counter() - start

    resolve = statistics.median(timed(lambda: resolve_curated(str(curated))) for _ in range(RESOLVE_REPEATS))
    root = resolve_curated(str(curated))
    opened = statistics.median(
        timed(lambda: LeRobotDataset("bench/curated", root=root, video_backend="pyav")) for _ in range(3)
    )
    return resolve, opened


def _summary_b(grown: PublishOutcome, rebuilt: PublishOutcome, k: int) -> None:
    ratio = grown.video_bytes_written / grown.video_packet_bytes
    print(_row(f"(b) {k} new episodes on 4N", "appended", "full rebuild", "append/k eps"))
    print(_row("  curated episodes copied", f"{grown.curated_added}", f"{rebuilt.curated_added}", ""))
    print(
        _row(
            "  curated video bytes written",
            f"{grown.video_bytes_written}",
            f"{rebuilt.video_bytes_written}",
            f"{ratio:.3f}",
        )
    )
    print(
        _row("  video packet bytes of the copied episodes", f"{grown.video_packet_bytes}", "", "target<=1.2")
    )
    print(
        _row(
            "  all bytes written (data, meta, parquet)",
            f"{grown.bytes_written}",
            f"{rebuilt.bytes_written}",
            "",
        )
    )


if __name__ == "__main__":
    main()
