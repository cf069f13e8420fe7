"""Benchmark: selective frame decoding from S3 vs decoding the whole packed file.

Writes synthetic LeRobot v3.0 datasets (lerobot's own writer; keyframe-dense AV1 ``g=2`` as lerobot
records it, and ``g=30``), uploads them to a moto S3 server it starts on 127.0.0.1 and stops at the end,
then decodes every episode's sampled frames with :func:`pipeline.frames.decode.decode_episode` and
prints, side by side per GOP: frames decoded / frames used, bytes read / bytes of the episode's video
span, and time per episode against a naive baseline that decodes the whole packed file.

    python -m bench.decode [--episodes 20] [--length 300] [--fps 30] [--size 64] [--sample-fps 2]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from devkit.synth import DEFAULT_CAMERAS, write_v30_dataset
from pipeline.catalog import list_episodes
from pipeline.config import FramesConfig, PrefixesConfig, SourceConfig
from pipeline.frames.decode import INTERPOLATION, decode_episode
from pipeline.storage import filesystem_for, upload_dataset

BUCKET = "bench"


@dataclass
class Figures:
    """Per-episode means for one dataset."""

    used: float
    decoded: float
    read: float
    fetched: float
    span: float
    selective_ms: float
    naive_ms: float
    identical: bool


@contextlib.contextmanager
def moto_s3() -> Iterator[dict[str, str]]:
    """A moto S3 server on a free loopback port with one bucket; yields fsspec storage options."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per ranged GET otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        options = {"key": "bench", "secret": "bench-secret", "endpoint_url": f"http://127.0.0.1:{port}"}
        fs, _ = filesystem_for(f"s3://{BUCKET}", options)
        fs.mkdir(BUCKET)
        yield options
    finally:
        server.stop()


def span_bytes(video: Path, rows: list[dict]) -> list[int]:
    """Compressed bytes of each episode's packets (pts in [from, to)) in a local copy of the packed file."""
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        packets = [(float(p.pts * stream.time_base), p.size) for p in container.demux(stream) if p.size]
    times, sizes = np.array([t for t, _ in packets]), np.array([s for _, s in packets])
    half = 0.5 / rows[0]["fps"]
    return [
        int(sizes[(times >= row["from_timestamp"] - half) & (times < row["to_timestamp"] - half)].sum())
        for row in rows
    ]


def naive_decode(row: dict, out: dict, size: tuple[int, int], options: dict, block_size: int) -> np.ndarray:
    """Baseline: decode every frame of the packed file, keep the scheduled ones (same resize)."""
    fs, path = filesystem_for(row["video_uri"], options)
    wanted = {round((row["from_timestamp"] + t) * row["fps"]) for t in out["timestamps"]}
    picked = {}
    with fs.open(path, "rb", block_size=block_size) as f, av.open(f) as container:
        for frame in container.decode(video=0):
            index = round(frame.time * row["fps"])
            if index in wanted:
                picked[index] = frame.to_ndarray(
                    format="rgb24", height=size[0], width=size[1], interpolation=INTERPOLATION
                )
    return np.stack([picked[i] for i in sorted(picked)])


def measure(
    rows: list[dict], spans: list[int], frames: FramesConfig, options: dict, block_size: int, naive_runs: int
) -> Figures:
    """Decodes every episode selectively, and ``naive_runs`` of them (spread out) the naive way."""
    prefixes = PrefixesConfig()
    decode_episode(rows[0], frames, prefixes, options, block_size)  # warm-up: S3 client, codec init
    outs, seconds = [], []
    for row in rows:
        start = time.perf_counter()
        out = decode_episode(row, frames, prefixes, options, block_size)
        seconds.append(time.perf_counter() - start)
        if out["status"] != "ok":
            raise RuntimeError(out["error"])
        outs.append(out)
    naive_seconds, identical = [], True
    for i in np.linspace(0, len(rows) - 1, naive_runs).round().astype(int):
        start = time.perf_counter()
        baseline = naive_decode(rows[i], outs[i], (frames.height, frames.width), options, block_size)
        naive_seconds.append(time.perf_counter() - start)
        identical &= np.array_equal(baseline, outs[i]["frames"])
    return Figures(
        used=statistics.mean(len(o["frame_indices"]) for o in outs),
        decoded=statistics.mean(o["frames_decoded"] for o in outs),
        read=statistics.mean(o["bytes_read"] for o in outs),
        fetched=statistics.mean(o["bytes_fetched"] for o in outs),
        span=statistics.mean(spans),
        selective_ms=1e3 * statistics.mean(seconds),
        naive_ms=1e3 * statistics.mean(naive_seconds),
        identical=identical,
    )


def report(results: dict[str, Figures]) -> None:
    """Prints the figures of every dataset side by side."""
    lines = [
        ("frames used / episode", lambda f: f"{f.used:.1f}"),
        ("frames decoded / episode", lambda f: f"{f.decoded:.1f}"),
        ("decoded / used", lambda f: f"{f.decoded / f.used:.2f}"),
        ("episode video span, KiB", lambda f: f"{f.span / 1024:.1f}"),
        ("bytes read by demuxer, KiB", lambda f: f"{f.read / 1024:.1f}"),
        ("read / span", lambda f: f"{f.read / f.span:.2f}"),
        ("bytes fetched from S3, KiB", lambda f: f"{f.fetched / 1024:.1f}"),
        ("fetched / span", lambda f: f"{f.fetched / f.span:.2f}"),
        ("selective decode, ms / episode", lambda f: f"{f.selective_ms:.1f}"),
        ("naive whole-file decode, ms / ep.", lambda f: f"{f.naive_ms:.1f}"),
        ("speed-up", lambda f: f"{f.naive_ms / f.selective_ms:.1f}x"),
        ("same frames as naive", lambda f: "yes" if f.identical else "NO"),
    ]
    print(f"{'':36}" + "".join(f"{name:>22}" for name in results))
    for label, cell in lines:
        print(f"{label:36}" + "".join(f"{cell(figures):>22}" for figures in results.values()))


def main(argv: list[str] | None = None) -> None:
    """Builds the datasets, runs the measurements and prints them."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--length", type=int, default=300, help="frames per episode")
    parser.add_argument("--fps", type=int, default=30, help="raw frame rate")
    parser.add_argument("--size", type=int, default=64, help="recorded frame height and width")
    parser.add_argument("--sample-fps", type=float, default=2.0)
    parser.add_argument("--max-frames", type=int, default=64)
    parser.add_argument("--out-size", type=int, default=256, help="pinned decode size (height and width)")
    parser.add_argument("--block-size", type=int, default=SourceConfig().block_size)
    parser.add_argument(
        "--gops", default="2,30", help="keyframe intervals to compare (2 = lerobot's default)"
    )
    parser.add_argument("--naive-runs", type=int, default=3, help="episodes timed with the naive baseline")
    args = parser.parse_args(argv)

    frames = FramesConfig(
        fps=args.sample_fps, max_frames=args.max_frames, height=args.out_size, width=args.out_size
    )
    results = {}
    with tempfile.TemporaryDirectory() as tmp, moto_s3() as options:
        for gop in (int(g) for g in args.gops.split(",")):
            local = write_v30_dataset(
                Path(tmp) / f"g{gop}",
                repo_id=f"bench/g{gop}",
                lengths=[args.length] * args.episodes,
                fps=args.fps,
                cameras=DEFAULT_CAMERAS[:1],
                size=(args.size, args.size),
                gop=gop,
            )
            uri = upload_dataset(local, filesystem_for(f"s3://{BUCKET}", options)[0], f"s3://{BUCKET}/g{gop}")
            rows = [r.to_row() for r in list_episodes(SourceConfig(uris=[uri], storage_options=options))]
            video = local / rows[0]["video_uri"].removeprefix(uri + "/")
            spans = span_bytes(video, rows)
            results[f"g={gop}"] = measure(rows, spans, frames, options, args.block_size, args.naive_runs)

    print(
        f"\nLeRobot v3.0 on moto S3: {args.episodes} episodes x {args.length} frames at {args.fps} fps, "
        f"{args.size}x{args.size} AV1, all episodes packed in one mp4; sampling {args.sample_fps} fps "
        f"(max {args.max_frames}) resized to {args.out_size}x{args.out_size}; block size "
        f"{args.block_size} B; naive = decode the whole file ({args.naive_runs} episodes)\n"
    )
    report(results)


if __name__ == "__main__":
    main()
