"""The LeRobot v3.0 dataset format, as far as curation writes it, without importing LeRobot.

Importing ``lerobot.datasets`` (any module of it) imports torch, torchvision, transformers and sympy
(its package ``__init__`` does), which costs a publish worker seconds and hundreds of MB before it has
read a byte. Curation needs only the format: path templates, ``info.json``'s fields, the tasks table,
the per-episode stats of the re-indexed integer columns and their aggregation. This module holds them
with numpy and pyarrow only, following LeRobot 0.6.1 to the bit: ``tests/test_curated_format.py``
compares every function here with LeRobot's own (constants, ``info.json`` bytes, ``tasks.parquet``
bytes, ``compute_episode_stats``, ``aggregate_stats``, the stats' serialisation).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

# LeRobot 0.6.1's names (lerobot.datasets.utils, lerobot.utils.constants).
CODEBASE_VERSION = "v3.0"
DEFAULT_CHUNK_SIZE = 1000
DEFAULT_DATA_FILE_SIZE_IN_MB = 100
DEFAULT_VIDEO_FILE_SIZE_IN_MB = 200
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
EPISODES_DIR = "meta/episodes"
DEFAULT_TASKS_PATH = "meta/tasks.parquet"
CHUNK_FILE_PATTERN = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DEFAULT_EPISODES_PATH = EPISODES_DIR + "/" + CHUNK_FILE_PATTERN + ".parquet"
DEFAULT_DATA_PATH = "data/" + CHUNK_FILE_PATTERN + ".parquet"
DEFAULT_VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE_PATTERN + ".mp4"
LEGACY_EPISODES_STATS_PATH = "meta/episodes_stats.jsonl"
LEGACY_TASKS_PATH = "meta/tasks.jsonl"
DEFAULT_FEATURES: dict[str, dict[str, Any]] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
DEFAULT_QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
# LeRobot's RunningQuantileStats default: quantiles are read off histograms of this many bins.
QUANTILE_BINS = 5000

Stats = dict[str, dict[str, np.ndarray]]

_MB = 1024**2


# Layout --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where a dataset's packed files go and when they roll over (``info.json``'s storage settings)."""

    chunks_size: int = DEFAULT_CHUNK_SIZE
    data_files_size_in_mb: float = DEFAULT_DATA_FILE_SIZE_IN_MB
    video_files_size_in_mb: float = DEFAULT_VIDEO_FILE_SIZE_IN_MB
    data_path: str = DEFAULT_DATA_PATH
    video_path: str = DEFAULT_VIDEO_PATH

    @classmethod
    def of(cls, info: dict[str, Any]) -> Layout:
        """The layout a curated copy of a dataset with this ``info.json`` gets: the source's size limits
        (LeRobot's defaults where it has none, as a v2.1 source), LeRobot's default path templates."""
        return cls(
            chunks_size=info.get("chunks_size") or DEFAULT_CHUNK_SIZE,
            data_files_size_in_mb=info.get("data_files_size_in_mb") or DEFAULT_DATA_FILE_SIZE_IN_MB,
            video_files_size_in_mb=info.get("video_files_size_in_mb") or DEFAULT_VIDEO_FILE_SIZE_IN_MB,
        )

    @property
    def data_bytes(self) -> float:
        """The data (and episodes) file size limit in bytes."""
        return self.data_files_size_in_mb * _MB

    @property
    def video_bytes(self) -> float:
        """The video file size limit in bytes."""
        return self.video_files_size_in_mb * _MB

    def data_file(self, index: tuple[int, int]) -> str:
        """The data file at ``(chunk, file)``."""
        return self.data_path.format(chunk_index=index[0], file_index=index[1])

    def video_file(self, key: str, index: tuple[int, int]) -> str:
        """Camera ``key``'s video file at ``(chunk, file)``."""
        return self.video_path.format(video_key=key, chunk_index=index[0], file_index=index[1])


def episodes_file(index: tuple[int, int]) -> str:
    """The episodes index file at ``(chunk, file)``."""
    return DEFAULT_EPISODES_PATH.format(chunk_index=index[0], file_index=index[1])


def next_file_index(index: tuple[int, int], chunks_size: int) -> tuple[int, int]:
    """The ``(chunk, file)`` after ``index`` (LeRobot's ``update_chunk_file_indices``)."""
    chunk, file = index
    return (chunk + 1, 0) if file == chunks_size - 1 else (chunk, file + 1)


# info.json and tasks.parquet -----------------------------------------------------------------------


def curated_info(
    source: dict[str, Any],
    features: dict[str, dict[str, Any]],
    layout: Layout,
    *,
    episodes: int,
    frames: int,
    tasks: int,
) -> dict[str, Any]:
    """``info.json`` of a curated dataset, as LeRobot's ``LeRobotDatasetMetadata.create`` and
    ``save_episode`` would write it for these totals.

    Args:
        source: The source's ``info.json`` (fps, robot type and tools are kept).
        features: The features kept (cameras not copied are left out); LeRobot's default features
            replace their entries.
        layout: The curated copy's storage settings.
        episodes: Total episodes.
        frames: Total frames.
        tasks: Total tasks.
    """
    merged = {**json.loads(json.dumps(features)), **json.loads(json.dumps(DEFAULT_FEATURES))}
    has_videos = any(ft["dtype"] == "video" for ft in merged.values())
    info = {
        "codebase_version": CODEBASE_VERSION,
        "fps": source["fps"],
        "features": merged,
        "total_episodes": episodes,
        "total_frames": frames,
        "total_tasks": tasks,
        "chunks_size": layout.chunks_size,
        "data_files_size_in_mb": layout.data_files_size_in_mb,
        "video_files_size_in_mb": layout.video_files_size_in_mb,
        "data_path": layout.data_path,
        "video_path": layout.video_path if has_videos else None,
        "robot_type": source.get("robot_type"),
        "splits": {"train": f"0:{episodes}"} if episodes else {},
    }
    if source.get("tools") is not None:
        info["tools"] = source["tools"]
    return info


def info_bytes(info: dict[str, Any]) -> bytes:
    """``info.json``'s bytes as LeRobot's ``write_info`` writes them."""
    return json.dumps(info, indent=4, ensure_ascii=False).encode()


def tasks_bytes(tasks: list[str]) -> bytes:
    """``meta/tasks.parquet`` for tasks numbered in list order, as LeRobot's ``write_tasks`` writes it:
    a pandas frame indexed by ``task`` with one ``task_index`` column (LeRobot looks tasks up by index)."""
    import pandas as pd  # only when a tasks table is written

    frame = pd.DataFrame({"task_index": range(len(tasks))}, index=pd.Index(tasks, name="task"))
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return buffer.getvalue()


# Stats ---------------------------------------------------------------------------------------------


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a/b": 1}`` (LeRobot's ``flatten_dict``)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else key
        if isinstance(value, dict):
            flat |= flatten(value, name)
        else:
            flat[name] = value
    return flat


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"a/b": 1}`` -> ``{"a": {"b": 1}}`` (LeRobot's ``unflatten_dict``)."""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split("/")
        inner = tree
        for part in parents:
            inner = inner.setdefault(part, {})
        inner[leaf] = value
    return tree


def serialize_stats(stats: dict[str, Any]) -> dict[str, Any]:
    """Stats as JSON values, flattened to ``feature/stat`` keys and nested back (LeRobot's
    ``serialize_dict``): arrays become (nested) lists."""
    flat = {}
    for key, value in flatten(stats).items():
        if isinstance(value, np.ndarray):
            flat[key] = value.tolist()
        elif isinstance(value, np.generic):
            flat[key] = value.item()
        elif isinstance(value, list | int | float):
            flat[key] = value
        else:
            raise TypeError(f"stats value {key} of type {type(value).__name__} cannot be serialised")
    return unflatten(flat)


def stats_to_numpy(stats: dict[str, Any]) -> Stats:
    """JSON stats as numpy arrays of at least one dimension (LeRobot's ``cast_stats_to_numpy``)."""
    return unflatten({key: np.atleast_1d(np.array(value)) for key, value in flatten(stats).items()})


def stored(stats: dict[str, Any]) -> Stats:
    """Stats exactly as a JSON or parquet round trip gives them back (float64 / int64 arrays), so that
    stats computed now and stats read back later aggregate to the same bits."""
    return stats_to_numpy(serialize_stats(stats))


def stats_json(stats: Stats) -> bytes:
    """``meta/stats.json``: keys sorted, so equal stats give equal bytes, and without indentation.

    LeRobot writes it indented (``write_json``) and reads it with ``json.load``, which takes either: an
    append rewrites this file every night, and the indentation of the nested per-channel lists was two
    thirds of its bytes (12.6 kB -> 4.3 kB for a two-camera dataset)."""
    return json.dumps(serialize_stats(stats), sort_keys=True, separators=(",", ":")).encode()


def _quantile(cumulative: np.ndarray, edges: np.ndarray, target: float) -> float:
    # RunningQuantileStats._compute_single_quantile, given the histogram's cumulative sum (which it
    # computes anew for every quantile: the same numbers).
    position = int(np.searchsorted(cumulative, target))
    if position == 0:
        return edges[0]
    if position >= len(cumulative):
        return edges[-1]
    before = cumulative[position - 1]
    inside = cumulative[position] - before
    if inside == 0:
        return edges[position]
    return edges[position] + (target - before) / inside * (edges[position + 1] - edges[position])


def column_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """Per-episode stats of one scalar column (shape ``(n,)``), as LeRobot's ``compute_episode_stats``
    gives them for a 1-D numeric feature: min, max, mean, std, count and the histogram quantiles."""
    batch = values.reshape(-1, 1)
    count = batch.shape[0]
    keys = [f"q{int(q * 100):02d}" for q in DEFAULT_QUANTILES]
    if count < 2:  # _compute_basic_stats: quantiles are the mean
        stats = {
            "min": np.min(batch, axis=0),
            "max": np.max(batch, axis=0),
            "mean": np.mean(batch, axis=0),
            "std": np.std(batch, axis=0),
            "count": np.array([count]),
        }
        stats |= {key: stats["mean"].copy() for key in keys}
    else:  # RunningQuantileStats: one update with the whole episode, then get_statistics
        batch = batch.astype(np.result_type(batch.dtype, np.float32), copy=False)
        mean, squares = np.mean(batch, axis=0), np.mean(batch**2, axis=0)
        low, high = np.min(batch, axis=0), np.max(batch, axis=0)
        edges = np.linspace(low[0] - 1e-10, high[0] + 1e-10, QUANTILE_BINS + 1)
        cumulative = np.cumsum(np.zeros(QUANTILE_BINS) + np.histogram(batch[:, 0], bins=edges)[0])
        # The running update's first step, kept literally: x + (x - x) * 1 is x, bit for bit.
        mean += (np.mean(batch, axis=0) - mean) * (count / count)
        squares += (np.mean(batch**2, axis=0) - squares) * (count / count)
        stats = {
            "min": low.copy(),
            "max": high.copy(),
            "mean": mean.copy(),
            "std": np.sqrt(np.maximum(0, squares - mean**2)),
            "count": np.array([count]),
        }
        for key, q in zip(keys, DEFAULT_QUANTILES, strict=True):
            stats[key] = np.array([_quantile(cumulative, edges, q * count)])
    # _reshape_for_vector_stats with keepdims for 1-D data: every stat of shape (1,).
    return {key: value if key == "count" else value.reshape(1) for key, value in stats.items()}


def aggregate_stats(stats_list: list[dict[str, dict[str, np.ndarray]]]) -> Stats:
    """LeRobot's ``aggregate_stats``: per feature, min of mins, max of maxes, count-weighted mean,
    variance by the parallel algorithm, count-weighted quantiles, summed counts."""
    keys = {key for stats in stats_list for key in stats}
    return {key: _aggregate_feature([stats[key] for stats in stats_list if key in stats]) for key in keys}


def _aggregate_feature(stats_list: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    means = np.stack([s["mean"] for s in stats_list])
    variances = np.stack([s["std"] ** 2 for s in stats_list])
    counts = np.stack([s["count"] for s in stats_list])
    total = counts.sum(axis=0)
    while counts.ndim < means.ndim:
        counts = np.expand_dims(counts, axis=-1)
    mean = (means * counts).sum(axis=0) / total
    variance = ((variances + (means - mean) ** 2) * counts).sum(axis=0) / total
    aggregated = {
        "min": np.min(np.stack([s["min"] for s in stats_list]), axis=0),
        "max": np.max(np.stack([s["max"] for s in stats_list]), axis=0),
        "mean": mean,
        "std": np.sqrt(variance),
        "count": total,
    }
    for key in [k for k in stats_list[0] if k.startswith("q") and k[1:].isdigit()]:
        if all(key in s for s in stats_list):
            aggregated[key] = (np.stack([s[key] for s in stats_list]) * counts).sum(axis=0) / total
    return aggregated


# Stats are folded into the running aggregate this many episodes at a time.
STATS_BLOCK = 256


class StatsSum:
    """The aggregate of a base (or nothing) and episodes added one by one, folded in blocks of
    ``STATS_BLOCK`` (memory: one block, whatever the number of episodes).

    The result is :func:`aggregate_stats` of ``[base, *episodes]`` when fewer than ``STATS_BLOCK``
    episodes are added (an append), and a fixed fold of it otherwise: the same episodes in the same
    order give the same bits.
    """

    def __init__(self, base: Stats | None = None) -> None:
        self._total = base
        self._pending: list[Stats] = []

    def add(self, stats: Stats) -> None:
        """Adds one episode's stats."""
        self._pending.append(stats)
        if len(self._pending) >= STATS_BLOCK:
            self._fold()

    def _fold(self) -> None:
        parts = self._pending if self._total is None else [self._total, *self._pending]
        self._total, self._pending = aggregate_stats(parts), []

    def result(self) -> Stats:
        """The aggregate so far (the base itself when nothing was added)."""
        if self._pending:
            self._fold()
        if self._total is None:
            raise ValueError("no stats were added")
        return self._total
