"""Benchmark: publish cost against dataset depth, and the curated set's file count over many nights.

One v3.0 source of E+1 episodes per size (10 recorded by lerobot, then replicated by stream copy with
:func:`replicate_dataset`: packets and rows are copied, not re-encoded, so building 5,000 episodes takes
seconds), fake committed labels (``devkit.fake_labels``: every episode selected), and the publish task's
body, :func:`pipeline.publish.publish_dataset`, run in a fresh subprocess per case so that its wall time
and peak memory are the publishing process's own. Prints side by side:

(a) for each E: the first publish of E episodes and the publish of one more (+1; the fastest of
    ``--repeats`` from the same first publish), wall time (and the part in ``write_curated_dataset``) and
    peak RSS of the process during the publish (and RSS after its imports and when the publish starts,
    and how long importing ``pipeline.publish`` took). The +1 episode is recorded in a later session, as
    a night adds it: LeRobot's recorder (``LeRobotDataset.resume``) writes it to new data, episodes index
    and video files (:func:`append_session`); the +1 of an episode already in the first session's files
    (the source's E+1th) is printed too;
    the growth exponent x of the first publish (time ~ E^x between the smallest and largest E) and the
    +1 ratio between the largest and smallest E, of the publish alone and with the import a fresh worker
    pays first (the first task of a Ray worker process, a one-dataset job);
(b) the compaction simulation: a first publish of ``--start`` episodes, then ``--nights`` nights of one
    new episode each (published in-process, ``publish.keep_superseded_s=0``: each night is a day later);
    files under ``curated/`` after night 10 and the last night, and the bytes written under
    ``curated/`` over all nights against the data added (the growth of a fresh publish of the same
    selection), by kind: all files, data and videos, the episodes index, the single files (info, stats,
    tasks, progress). Files kept by a compaction's hard links are counted apart: no byte is written.
    Simulated once per ``--nights-frame-sizes``: the bench's tiny 64x64 frames (13 kB episodes, against
    which LeRobot's fixed per-night metadata weighs most) and a camera's 480x640 (108 kB episodes, still
    a tenth of a real 10 s recording).

    python -m bench.publish_depth [--sizes 100,1000,5000] [--nights 100] [--start 10] [--length 20]
                                  [--frame-size 64x64] [--nights-frame-sizes 64x64,480x640] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from devkit.files import file_states, written_files

FPS = 10
# Recorded by lerobot once; every larger source is a stream copy of these.
BASE_EPISODES = 10
CAMERAS = ("observation.images.front", "observation.images.wrist")
# The synthetic recorder's frames in (a): about 13 kB per 20-frame episode over both cameras (--frame-size
# gives larger ones; publish time follows the episodes and rows, not their pixels).
DEFAULT_FRAME_SIZE = (64, 64)


# Building sources ----------------------------------------------------------------------------------


def base_dataset(folder: Path, length: int, size: tuple[int, int] = DEFAULT_FRAME_SIZE) -> Path:
    """A v3.0 dataset of ``BASE_EPISODES`` episodes of ``length`` frames of ``size`` (height, width),
    recorded through lerobot."""
    from devkit.synth import write_v30_dataset

    return write_v30_dataset(folder, lengths=[length] * BASE_EPISODES, fps=FPS, size=size)


def _replicate_video(base: Path, dest: Path, copies: int) -> float:
    """Writes ``copies`` copies of the base mp4 back to back (packets stream-copied, timestamps shifted);
    returns the base file's duration in seconds (the shift between copies)."""
    with av.open(str(base)) as source:
        stream = source.streams.video[0]
        packets = [p for p in source.demux(stream) if p.pts is not None]
        start = min(p.pts for p in packets)
        span = max(p.pts + p.duration for p in packets) - start
        dest.parent.mkdir(parents=True, exist_ok=True)
        with av.open(str(dest), "w", options={"movflags": "faststart"}) as out:
            copy = out.add_stream_from_template(template=stream, opaque=True)
            copy.time_base = stream.time_base
            times = [(p.pts, p.dts) for p in packets]
            for index in range(copies):
                # The same packets again, one span later (mux writes each one before it is shifted again).
                for packet, (pts, dts) in zip(packets, times, strict=True):
                    packet.pts, packet.dts = pts + index * span, dts + index * span
                    packet.stream = copy
                    out.mux(packet)
        return float(span * stream.time_base)


def replicate_dataset(base: Path, dest: Path, episodes: int, per_file: int = 0) -> Path:
    """A v3.0 dataset of ``episodes`` episodes made of copies of ``base``'s: rows and packets copied,
    indices and timestamps shifted, packed as lerobot packs them (one row group per episode in the data
    files, ten episodes per row group in the episodes index).

    Args:
        base: A v3.0 dataset whose episodes are all in ``file-000`` of chunk 0 (as lerobot records a few).
        dest: Folder to create.
        episodes: Episodes of the new dataset.
        per_file: Episodes per data file and per mp4 (a multiple of the base's), as lerobot's size limits
            would roll them with real episode sizes; 0: all in one file, as tiny episodes are.

    Returns:
        ``dest``.
    """
    info = json.loads((base / "meta" / "info.json").read_text())
    rows = pq.read_table(base / "data" / "chunk-000" / "file-000.parquet")
    index = pq.read_table(base / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    per_copy, frames_per_copy = index.num_rows, rows.num_rows
    length = frames_per_copy // per_copy  # the base's episodes are all this long
    copies = math.ceil(episodes / per_copy)
    copies_per_file = per_file // per_copy if per_file else copies
    files = math.ceil(copies / copies_per_file)
    spans = {}
    for file in range(files):
        in_file = min(copies_per_file, copies - file * copies_per_file)
        for key in CAMERAS:
            spans[key] = _replicate_video(
                base / "videos" / key / "chunk-000" / "file-000.mp4",
                dest / "videos" / key / "chunk-000" / f"file-{file:03d}.mp4",
                in_file,
            )
    data, meta = [], []
    for copy in range(copies):
        file, place = divmod(copy, copies_per_file)
        data.append(_shifted(rows, {"episode_index": copy * per_copy, "index": copy * frames_per_copy}))
        shifts = {
            "episode_index": copy * per_copy,
            "dataset_from_index": copy * frames_per_copy,
            "dataset_to_index": copy * frames_per_copy,
            "data/file_index": file,
        }
        for key, span in spans.items():
            shifts[f"videos/{key}/file_index"] = file
            shifts[f"videos/{key}/from_timestamp"] = place * span
            shifts[f"videos/{key}/to_timestamp"] = place * span
        meta.append(_shifted(index, shifts))
    table = pa.concat_tables(data)
    table = table.filter(pc.less(table["episode_index"], episodes))
    (dest / "data" / "chunk-000").mkdir(parents=True)
    episodes_per_file = copies_per_file * per_copy
    for file in range(files):
        # One row group per episode, as lerobot's recorder writes data files.
        path = dest / "data" / "chunk-000" / f"file-{file:03d}.parquet"
        with pq.ParquetWriter(path, table.schema) as writer:
            for episode in range(file * episodes_per_file, min(episodes, (file + 1) * episodes_per_file)):
                writer.write_table(table.slice(episode * length, length))
    episodes_table = pa.concat_tables(meta)
    episodes_table = episodes_table.filter(pc.less(episodes_table["episode_index"], episodes))
    (dest / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    # Ten episodes per row group, as lerobot's metadata writer flushes them.
    pq.write_table(
        episodes_table, dest / "meta" / "episodes" / "chunk-000" / "file-000.parquet", row_group_size=10
    )
    shutil.copy(base / "meta" / "tasks.parquet", dest / "meta" / "tasks.parquet")
    shutil.copy(base / "meta" / "stats.json", dest / "meta" / "stats.json")
    info.update(total_episodes=episodes, total_frames=table.num_rows, splits={"train": f"0:{episodes}"})
    (dest / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    return dest


def append_session(base: Path, dest: Path) -> int:
    """Adds one episode to the v3.0 dataset ``dest`` as LeRobot's recorder does in a later recording
    session (``LeRobotDataset.resume``): in new data, episodes index and video files after the existing
    ones, with ``info.json``'s totals updated. The episode is a copy of ``base``'s first (its mp4 is the
    base's, whose first episode the new index row addresses). Returns its episode index."""
    info = json.loads((dest / "meta" / "info.json").read_text())
    episode, frames = info["total_episodes"], info["total_frames"]
    rows = pq.read_table(base / "data" / "chunk-000" / "file-000.parquet")
    rows = rows.filter(pc.equal(rows["episode_index"], 0))
    data_file = len(list((dest / "data" / "chunk-000").glob("*.parquet")))
    pq.write_table(
        _shifted(rows, {"episode_index": episode, "index": frames}),
        dest / "data" / "chunk-000" / f"file-{data_file:03d}.parquet",
    )
    shifts = {
        "episode_index": episode,
        "dataset_from_index": frames,
        "dataset_to_index": frames,
        "data/file_index": data_file,
    }
    for key in CAMERAS:
        folder = dest / "videos" / key / "chunk-000"
        video_file = len(list(folder.glob("*.mp4")))
        shutil.copy(
            base / "videos" / key / "chunk-000" / "file-000.mp4", folder / f"file-{video_file:03d}.mp4"
        )
        shifts[f"videos/{key}/file_index"] = video_file
    index_folder = dest / "meta" / "episodes" / "chunk-000"
    index_file = len(list(index_folder.glob("*.parquet")))
    row = pq.read_table(base / "meta" / "episodes" / "chunk-000" / "file-000.parquet").slice(0, 1)
    row = _shifted(row, {**shifts, "meta/episodes/file_index": index_file})
    pq.write_table(row, index_folder / f"file-{index_file:03d}.parquet")
    total = episode + 1
    info.update(total_episodes=total, total_frames=frames + rows.num_rows, splits={"train": f"0:{total}"})
    (dest / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    return episode


def _frame_size(text: str) -> tuple[int, int]:
    """``"HEIGHTxWIDTH"`` as ``(height, width)``."""
    height, width = (int(side) for side in text.lower().split("x"))
    return height, width


def _shifted(table: pa.Table, shifts: dict[str, float]) -> pa.Table:
    for name, shift in shifts.items():
        position = table.schema.get_field_index(name)
        column = table[name]
        table = table.set_column(
            position, table.schema.field(position), pc.add(column, pa.scalar(shift, column.type))
        )
    return table


# One publish, in a fresh process ---------------------------------------------------------------------


def _status_mb(field: str) -> float:
    """A memory figure of this process from ``/proc/self/status`` (kB there), in MB.

    ``VmHWM`` is the peak resident set of this process image: unlike ``getrusage``'s ``ru_maxrss``,
    it does not carry over the parent's size from before ``exec`` (the parent here has LeRobot loaded),
    and it can be reset, so that the peak is the publish's own.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _timed(fn: Callable[..., Any], seconds: list[float]) -> Callable[..., Any]:
    """``fn`` that appends the wall time of each call to ``seconds``."""

    def timed(*args: Any, **kwargs: Any) -> Any:
        begun = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - begun)

    return timed


def _publish_case(spec: dict[str, Any]) -> dict[str, Any]:
    """Commits labels for ``spec['episodes']`` and publishes (the Ray task's body) in this process."""
    # What a fresh publish worker imports first (the task's module), timed alone.
    started = time.perf_counter()
    from pipeline import publish as publish_module

    imported_s = time.perf_counter() - started
    from devkit.fake_labels import commit_scores, job_for, lengths_of
    from pipeline.config import load_config
    from pipeline.curated import source as source_module
    from pipeline.publish import publish_dataset

    rss_imports = _status_mb("VmRSS")
    root, output = spec["root"], spec["output"]
    commit_scores(root, "bench/depth", output, dict.fromkeys(spec["episodes"], 0.0), lengths_of(root), {})
    cfg = load_config([f"output.uri={output}", "model.path=fake/vlm", "success.threshold=-1", *spec["extra"]])
    job = job_for(root, "bench/depth", output, {})
    # The curated part of the publish, and the shared reader's part of that (pipeline.reader: the
    # source's episodes index, not curation's), each timed on its own.
    curated_s, reader_s = [], []
    publish_module.write_curated_dataset = _timed(publish_module.write_curated_dataset, curated_s)
    source_module.read_dataset = _timed(source_module.read_dataset, reader_s)
    # The peak from here on is the publish's own: not the imports', not the fake labels' set-up.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident set (Linux >= 4.0)
    before_mb = _status_mb("VmRSS")
    started, cpu_started = time.perf_counter(), time.process_time()
    outcome = publish_dataset(job, cfg)
    seconds = time.perf_counter() - started
    # This process's CPU time too: on a shared machine the wall time follows the other tenants' load.
    cpu_s = time.process_time() - cpu_started
    if outcome.status != "published":
        raise SystemExit(f"publish failed: {outcome.error}")
    return {
        "seconds": seconds,
        "cpu_s": cpu_s,
        "curated_s": sum(curated_s),
        "reader_s": sum(reader_s),
        "peak_mb": _status_mb("VmHWM"),
        "before_mb": before_mb,
        "imports_mb": rss_imports,
        "import_s": imported_s,
        "mode": outcome.curated_mode,
        "episodes": outcome.curated_episodes,
        "heavy": [m for m in ("torch", "transformers", "lerobot", "sympy") if m in sys.modules],
    }


def _run_case(root: Path, output: Path, episodes: range, extra: list[str]) -> dict[str, Any]:
    spec = {"root": str(root), "output": str(output), "episodes": list(episodes), "extra": extra}
    result = subprocess.run(
        [sys.executable, "-m", "bench.publish_depth", "--case", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if result.returncode != 0:
        raise SystemExit(f"publish case failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def depth(
    work: Path, base: Path, sizes: list[int], repeats: int, per_file: int
) -> dict[int, tuple[dict, dict, dict]]:
    """(a): first and +1 publishes of each size, each in its own process: the +1 episode recorded in a
    later session (:func:`append_session`), and one already in the first session's files; each
    ``repeats`` times from the same first publish (a copy of its output each time), the fastest kept."""

    def fastest(source: Path, output: Path, episode: int) -> dict:
        runs = []
        for repeat in range(repeats):
            again = work / f"{output.name}-{repeat}"
            shutil.copytree(output, again)
            os.sync()  # the copy's writeback must not land in the publish timed next
            runs.append(_run_case(source, again, range(episode, episode + 1), []))
            shutil.rmtree(again)
        return min(runs, key=lambda run: run["seconds"])

    results = {}
    for size in sizes:
        source = replicate_dataset(base, work / f"source-{size}" / "bench" / "depth", size + 1, per_file)
        output = work / f"out-{size}"
        os.sync()
        first = _run_case(source, output, range(size), [])
        in_files = fastest(source, output, size)
        later = fastest(source, output, append_session(base, source))
        results[size] = (first, later, in_files)
        shutil.rmtree(work / f"source-{size}")
        shutil.rmtree(output)
    return results


# Many nights ---------------------------------------------------------------------------------------


# What the bytes written under curated/ are, by kind of file.
KINDS = ("data and videos", "episodes index", "single files")


def file_kind(relative: str) -> str:
    """The kind of a file under ``curated/`` (its path inside a version folder decides)."""
    inner = relative.split("/", 1)[-1]
    if inner.startswith(("data/", "videos/")):
        return KINDS[0]
    return KINDS[1] if inner.startswith("meta/episodes/") else KINDS[2]


def version_bytes(curated: Path) -> dict[str, int]:
    """Bytes of the version the pointer names, by kind and ``all``."""
    from pipeline.curated.pointer import resolve_curated

    root = Path(resolve_curated(str(curated)))
    found = dict.fromkeys((*KINDS, "all"), 0)
    for path in root.rglob("*"):
        if path.is_file():
            size = path.stat().st_size
            found[file_kind(path.relative_to(curated).as_posix())] += size
            found["all"] += size
    return found


def nights(work: Path, base: Path, start: int, count: int) -> dict[str, Any]:
    """(b): a first publish of ``start`` episodes, then ``count`` nights of one more episode each."""
    from devkit.fake_labels import commit_scores, job_for, lengths_of
    from pipeline.config import load_config
    from pipeline.layout import CURATED_DIR
    from pipeline.publish import publish_dataset

    source = replicate_dataset(base, work / "nights-source" / "bench" / "nights", start + count)
    lengths = lengths_of(source)
    output = work / "nights-out"
    cfg = load_config(
        [f"output.uri={output}", "model.path=fake/vlm", "success.threshold=-1", "publish.keep_superseded_s=0"]
    )

    def night(episodes: range) -> Any:
        commit_scores(str(source), "bench/nights", str(output), dict.fromkeys(episodes, 0.0), lengths, {})
        # As a nightly run does: the shards folded once the state folder holds more than compact_markers.
        job = job_for(str(source), "bench/nights", str(output), {}, cfg.output.compact_markers)
        outcome = publish_dataset(job, cfg)
        if outcome.status != "published":
            raise SystemExit(f"publish failed: {outcome.error}")
        return outcome

    night(range(start))
    curated = output / "bench" / "nights" / CURATED_DIR
    initial = version_bytes(curated)
    written = dict.fromkeys((*KINDS, "all", "linked"), 0)
    singles: dict[str, int] = {}  # bytes written of each single file (info.json, stats.json, ...)
    files, modes, seconds = {}, {}, []
    for number in range(1, count + 1):
        before = file_states(curated)
        started = time.perf_counter()
        outcome = night(range(start + number - 1, start + number))
        seconds.append(time.perf_counter() - started)
        modes[outcome.curated_mode] = modes.get(outcome.curated_mode, 0) + 1
        after = file_states(curated)
        for relative, (size, linked) in written_files(before, after).items():
            if linked:  # a new name for stored bytes (a hard link): nothing written
                written["linked"] += size
                continue
            written["all"] += size
            written[file_kind(relative)] += size
            if file_kind(relative) == KINDS[2]:
                name = relative.rsplit("/", 1)[-1]
                singles[name] = singles.get(name, 0) + size
        files[number] = len(after)
    final = version_bytes(curated)
    # The data added: how much a fresh publish of the final selection outgrows one of the first.
    fresh = work / "nights-fresh"
    fresh_cfg = load_config([f"output.uri={fresh}", "model.path=fake/vlm", "success.threshold=-1"])
    commit_scores(str(source), "bench/nights", str(fresh), dict.fromkeys(range(start), 0.0), lengths, {})
    publish_dataset(job_for(str(source), "bench/nights", str(fresh), {}), fresh_cfg)
    fresh_start = version_bytes(fresh / "bench" / "nights" / CURATED_DIR)
    shutil.rmtree(fresh)
    commit_scores(
        str(source), "bench/nights", str(fresh), dict.fromkeys(range(start + count), 0.0), lengths, {}
    )
    publish_dataset(job_for(str(source), "bench/nights", str(fresh), {}), fresh_cfg)
    fresh_end = version_bytes(fresh / "bench" / "nights" / CURATED_DIR)
    return {
        "files": files,
        "written": written,
        "singles": singles,
        "added": {kind: fresh_end[kind] - fresh_start[kind] for kind in fresh_end},
        "initial": initial,
        "final": final,
        "modes": modes,
        "seconds": seconds,
    }


# Report --------------------------------------------------------------------------------------------


def _row(label: str, *cells: str) -> str:
    return f"{label:<46}" + "".join(f"{cell:>16}" for cell in cells)


# (a)'s lines: label, which case (0: first publish, 1: +1 of a later session, 2: +1 in the first
# session's files), the figure, its format.
DEPTH_ROWS = (
    ("  first publish [s]", 0, "seconds", ".2f"),
    ("  first publish, CPU time of the process [s]", 0, "cpu_s", ".2f"),
    ("    of which write_curated_dataset [s]", 0, "curated_s", ".2f"),
    ("  first publish, peak RSS during it [MB]", 0, "peak_mb", ".0f"),
    ("  +1 episode recorded in a later session [s]", 1, "seconds", ".3f"),
    ("  +1 episode publish, CPU time [s]", 1, "cpu_s", ".3f"),
    ("    of which write_curated_dataset [s]", 1, "curated_s", ".3f"),
    ("      of which pipeline.reader [s]", 1, "reader_s", ".3f"),
    ("  +1 episode publish, peak RSS during it [MB]", 1, "peak_mb", ".0f"),
    ("  +1 mode", 1, "mode", "s"),
    ("  RSS after imports [MB]", 1, "imports_mb", ".0f"),
    ("  RSS when the +1 publish starts [MB]", 1, "before_mb", ".0f"),
    ("  import pipeline.publish, fresh process [s]", 1, "import_s", ".2f"),
    ("  +1 episode in the first session's files [s]", 2, "seconds", ".3f"),
    ("    of which pipeline.reader [s]", 2, "reader_s", ".3f"),
    ("  +1 in the first session's files, peak RSS [MB]", 2, "peak_mb", ".0f"),
)


def _print_depth(results: dict[int, tuple[dict, dict, dict]]) -> None:
    sizes = sorted(results)
    print(_row("(a) publish of one dataset of E episodes", *(f"E={size:,}" for size in sizes)))
    for label, case, key, spec in DEPTH_ROWS:
        print(_row(label, *(format(results[size][case][key], spec) for size in sizes)))
    heavy = sorted({m for s in sizes for case in results[s] for m in case["heavy"]})
    print(f"  heavy modules loaded by the publishing process: {heavy or 'none'}")
    if len(sizes) > 1:
        low, high = sizes[0], sizes[-1]
        exponent = math.log(results[high][0]["seconds"] / results[low][0]["seconds"]) / math.log(high / low)
        ratio = results[high][1]["seconds"] / results[low][1]["seconds"]
        curated = results[high][1]["curated_s"] / results[low][1]["curated_s"]
        memory = results[high][1]["peak_mb"] / results[low][1]["peak_mb"]
        cpu = {case: results[high][case]["cpu_s"] / results[low][case]["cpu_s"] for case in (0, 1)}
        print(f"  first publish grows as E^{exponent:.2f} (E={low:,} -> {high:,}; target <= 1.05)")
        print(f"    in CPU time as E^{math.log(cpu[0]) / math.log(high / low):.2f}")
        in_files = results[high][2]["seconds"] / results[low][2]["seconds"]
        print(
            f"  +1 publish E={high:,} / E={low:,}, an episode recorded in a later session (new files, as "
            f"LeRobot's recorder appends): {ratio:.2f}x time (target <= 2), {memory:.2f}x peak RSS"
        )
        print(f"    {cpu[1]:.2f}x CPU time")
        print(
            f"    an episode in the first session's files: {in_files:.2f}x time (parquet footers of files "
            "that hold all E episodes grow with E)"
        )
        # A fresh worker (the first task of a Ray worker process, or a one-dataset job) pays the import too.
        fresh = [results[size][1]["seconds"] + results[size][1]["import_s"] for size in (low, high)]
        print(
            f"    on a fresh worker (import pipeline.publish + publish): {fresh[0]:.2f} s -> "
            f"{fresh[1]:.2f} s, {fresh[1] / fresh[0]:.2f}x"
        )
        print(f"  +1 write_curated_dataset E={high:,} / E={low:,}: {curated:.2f}x time")
        own = [results[size][1]["curated_s"] - results[size][1]["reader_s"] for size in (high, low)]
        print(
            f"  +1 write_curated_dataset less pipeline.reader E={high:,} / E={low:,}: "
            f"{own[0] / own[1]:.2f}x time"
        )


def _print_nights(result: dict[str, Any], start: int, count: int, frame_size: str) -> None:
    files, written, added = result["files"], result["written"], result["added"]
    print(
        f"(b) {count} nights of +1 episode on a first publish of {start} (keep_superseded_s=0), "
        f"{frame_size} frames"
    )
    for number in sorted({min(10, count), count}):
        print(_row(f"  files under curated/ after night {number}", str(files[number])))
    print(_row("  most files under curated/ on any night", str(max(files.values()))))
    print(_row("  publishes by mode", ", ".join(f"{k} {v}" for k, v in sorted(result["modes"].items()))))
    print(_row("", "all files", *(kind for kind in KINDS)))
    kinds = ("all", *KINDS)
    print(_row("  data added [bytes]", *(f"{added[kind]:,}" for kind in kinds)))
    print(_row("  bytes written under curated/", *(f"{written[kind]:,}" for kind in kinds)))
    print(_row("  written / added (target <= 3)", *(f"{written[kind] / added[kind]:.2f}" for kind in kinds)))
    print(_row("  written per night [bytes]", *(f"{written[kind] // count:,}" for kind in kinds)))
    singles = ", ".join(f"{name} {size // count:,}" for name, size in sorted(result["singles"].items()))
    print(f"  single files written per night [bytes]: {singles}")
    print(
        "  data added: what the new episodes add to a fresh publish (one of all "
        f"{start + count} episodes less one of the first {start}), by kind as above; the data and videos "
        "column is the new episodes' curated data and video bytes"
    )
    print(_row("  bytes carried by hard link (not written)", f"{written['linked']:,}"))
    print(
        _row(
            "  version size, first / last night [bytes]",
            f"{result['initial']['all']:,}",
            f"{result['final']['all']:,}",
        )
    )
    nightly = sorted(result["seconds"])
    print(
        _row(
            "  night publish time, median / max [s]",
            f"{nightly[len(nightly) // 2]:.2f}",
            f"{nightly[-1]:.2f}",
        )
    )


def main(argv: list[str] | None = None) -> None:
    """Runs (a) and (b) and prints them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000,5000", help="dataset depths E for (a), comma-separated")
    parser.add_argument("--nights", type=int, default=100, help="nights of +1 episode for (b); 0 skips it")
    parser.add_argument("--start", type=int, default=10, help="episodes of the first publish in (b)")
    parser.add_argument("--length", type=int, default=20, help="frames per episode")
    parser.add_argument(
        "--frame-size",
        default="64x64",
        help="HEIGHTxWIDTH of the recorded frames (larger frames: larger episodes, same metadata)",
    )
    parser.add_argument(
        "--nights-frame-sizes",
        default="64x64,480x640",
        help="HEIGHTxWIDTH of (b)'s recorded frames, comma-separated, one simulation each: the bench's "
        "tiny frames and a camera's (LeRobot's usual 480x640); the same per-night metadata, larger episodes",
    )
    parser.add_argument("--repeats", type=int, default=3, help="+1 publishes per size in (a), fastest kept")
    parser.add_argument(
        "--episodes-per-file",
        type=int,
        default=0,
        help="source episodes per data file and mp4 in (a), a multiple of 10 (0: one file, as 20-frame "
        "episodes pack; 100: as lerobot's 100 MB / 200 MB files hold ~1 MB / 2 MB episodes)",
    )
    parser.add_argument("--case", help=argparse.SUPPRESS)  # one publish, run by (a) in a subprocess
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every dataset here is local
    if args.case:
        print(json.dumps(_publish_case(json.loads(args.case))))
        return
    sizes = sorted(int(size) for size in args.sizes.split(",") if size)
    work = Path(tempfile.mkdtemp(prefix="bench-depth-"))
    try:
        base = base_dataset(work / "base" / "bench" / "base", args.length, _frame_size(args.frame_size))
        results = depth(work, base, sizes, args.repeats, args.episodes_per_file) if sizes else {}
        simulated = {}
        for text in [size for size in args.nights_frame_sizes.split(",") if size] if args.nights else []:
            folder = work / f"nights-{text}"
            recorded = base_dataset(folder / "base" / "bench" / "base", args.length, _frame_size(text))
            simulated[text] = nights(folder, recorded, args.start, args.nights)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    layout = f"{args.episodes_per_file} episodes" if args.episodes_per_file else "all episodes"
    print(
        f"\nbench.publish_depth: {args.length} frames/episode, {args.frame_size} in (a), "
        f"{len(CAMERAS)} cameras, local disk,"
    )
    print(f"source files in (a): {layout} per data file and mp4\n")
    if results:
        _print_depth(results)
        print()
    for text, result in simulated.items():
        _print_nights(result, args.start, args.nights, text)
        print()
    if simulated:
        ratios = ", ".join(
            f"{r['written']['all'] / r['added']['all']:.2f}x with {text} frames "
            f"({r['added']['all'] // args.nights / 1000:.0f} kB episodes)"
            for text, r in simulated.items()
        )
        print(f"(b) all curated bytes written over {args.nights} nights / added (target <= 3): {ratios}")


if __name__ == "__main__":
    main()
