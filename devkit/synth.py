"""Synthetic LeRobot datasets (v3.0 and v2.1 layouts) whose frames identify themselves.

Every video frame is a grid of large black/white cells that encodes ``(camera_id, episode_index,
frame_index)`` plus a checksum, so a test can check which frame a reader returned even after lossy AV1
encoding and resizing. Actions and states are deterministic functions of ``(episode_index, frame_index)``.

* :func:`write_v30_dataset` writes through lerobot's own recording API (``LeRobotDataset.create`` /
  ``add_frame`` / ``save_episode`` / ``finalize``), so the layout is whatever lerobot 0.6.1 produces:
  all episodes of a camera packed into one mp4.
* :func:`write_v21_dataset` writes the legacy v2.1 layout by hand (lerobot 0.6.1 only writes v3.0):
  one parquet per episode and one mp4 per episode and camera.

Both writers can break one episode's video on purpose (``corrupt_episode``, ``missing_video_episode``)
to exercise error handling downstream.

Example:
    python -m devkit.synth --out /tmp/toy --version v3.0 --episodes 6 --length 40 --gop 30
"""

from __future__ import annotations

import argparse
import json
import math
import os
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datasets.utils import logging as datasets_logging
from lerobot.configs.video import RGBEncoderConfig
from lerobot.datasets.compute_stats import compute_episode_stats, get_feature_stats
from lerobot.datasets.dataset_metadata import LeRobotDatasetMetadata
from lerobot.datasets.feature_utils import get_hf_features_from_features
from lerobot.datasets.lerobot_dataset import LeRobotDataset
from lerobot.datasets.utils import (
    DEFAULT_CHUNK_SIZE,
    INFO_PATH,
    LEGACY_EPISODES_PATH,
    LEGACY_EPISODES_STATS_PATH,
    LEGACY_TASKS_PATH,
    serialize_dict,
)
from lerobot.datasets.video_utils import get_video_info
from lerobot.utils.constants import DEFAULT_FEATURES
from PIL import Image, ImageFilter

__all__ = [
    "DEFAULT_CAMERAS",
    "DEFAULT_LENGTHS",
    "DEFAULT_TASKS",
    "V21_DATA_PATH",
    "V21_VIDEO_PATH",
    "frame_code",
    "main",
    "make_frame",
    "quiet_encoders",
    "synth_action",
    "synth_state",
    "task_for_episode",
    "write_v21_dataset",
    "write_v30_dataset",
]

# lerobot 0.6.1 only keeps the v3.0 templates; these are the v2.1 ones (see convert_dataset_v21_to_v30.py).
V21_DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
V21_VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
V21_CODEBASE_VERSION = "v2.1"

DEFAULT_CAMERAS = ("observation.images.front", "observation.images.wrist")
DEFAULT_TASKS = ("pick up the red cube", "open the top drawer", "push the blue block to the goal")
DEFAULT_LENGTHS = (30, 41, 25)
STATE_DIM = 6
JOINT_NAMES = [f"joint_{i}" for i in range(STATE_DIM)]

# Frame code: the 30-bit word (camera, episode, frame, 8-bit CRC) is drawn COPIES times, one bit per black or
# white cell; each copy fills a WORD_ROWS x GRID_COLS band, and a per-bit majority vote reads it back. Two
# measures keep SVT-AV1 at lerobot's settings (crf 30, preset 12) from breaking it; both came from
# stress-encoding thousands of codes at 64..256 px:
# * with hard cell edges it left stale or misplaced blocks in ~0.1-0.5% of inter frames above 64 px, so the
#   edges are softened with a Gaussian blur (no failure left after that);
# * it readily predicts one band from an identical one, copying the same error into two copies, so every copy
#   scatters the bits in its own order and flips them with its own checkerboard.
# The CRC (and the copies' agreement) turns garbage frames into an error instead of a wrong code.
CAMERA_BITS, EPISODE_BITS, FRAME_BITS, CHECK_BITS = 2, 8, 12, 8
MAX_CAMERAS, MAX_EPISODES, MAX_FRAMES = 1 << CAMERA_BITS, 1 << EPISODE_BITS, 1 << FRAME_BITS
PAYLOAD_BITS = CAMERA_BITS + EPISODE_BITS + FRAME_BITS
WORD_BITS = PAYLOAD_BITS + CHECK_BITS
GRID_COLS, WORD_ROWS, COPIES = 10, 3, 3
GRID_ROWS = WORD_ROWS * COPIES
assert WORD_ROWS * GRID_COLS == WORD_BITS
# _LAYOUT[copy, bit] is the cell of that bit inside the copy's band. The (stride, offset) pairs keep the three
# cells of any bit at least 5 cells apart (Chebyshev) on the 9x10 board; the strides are coprime with 30.
_LAYOUT = np.array(
    [
        [(bit * stride + offset) % WORD_BITS for bit in range(WORD_BITS)]
        for stride, offset in ((1, 0), (11, 25), (1, 20))
    ]
)
_CELL_ROW, _CELL_COL = np.divmod(np.arange(WORD_BITS), GRID_COLS)
# Distinct masks keep even the two equally ordered bands (0 and 2) from looking alike.
_MASK = np.stack([(_CELL_ROW + _CELL_COL) % 2 == 0, (_CELL_ROW + _CELL_COL) % 2 == 1, _CELL_COL % 2 == 1])
# Decoded frames of a synthetic video have a few split votes at most; noise or a foreign image has many.
MAX_SPLIT_VOTES = WORD_BITS // 5
# Blur radius as a fraction of the shorter side: about a quarter of a cell, so cell centres stay saturated.
BLUR_FRACTION = 1 / 40

# v2.1 episodes_stats.jsonl predates the quantile columns that lerobot 0.6.1 computes.
V21_STAT_KEYS = ("min", "max", "mean", "std", "count")


def _to_bits(value: int, width: int) -> list[int]:
    return [(value >> (width - 1 - i)) & 1 for i in range(width)]


def _from_bits(bits: Sequence[int]) -> int:
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return value


def _checksum(payload: int) -> int:
    return zlib.crc32(payload.to_bytes(3, "big")) & ((1 << CHECK_BITS) - 1)


def make_frame(
    camera_id: int, episode_index: int, frame_index: int, size: tuple[int, int] = (64, 64)
) -> np.ndarray:
    """Draws the self-identifying frame for one camera, episode and frame.

    Args:
        camera_id: Camera number, ``0 <= camera_id < 4`` (its position in the ``cameras`` tuple).
        episode_index: Episode number, ``0 <= episode_index < 256``.
        frame_index: Frame number inside the episode, ``0 <= frame_index < 4096``.
        size: ``(height, width)`` in pixels. 64x64 and larger survive AV1 at crf 30 and resizing down to
            32x32; cells are 1/9 of the height and 1/10 of the width.

    Returns:
        An ``(height, width, 3)`` uint8 gray RGB image of black and white cells with softened edges.

    Raises:
        ValueError: If an index is out of the encodable range.
    """
    for name, value, limit in (
        ("camera_id", camera_id, MAX_CAMERAS),
        ("episode_index", episode_index, MAX_EPISODES),
        ("frame_index", frame_index, MAX_FRAMES),
    ):
        if not 0 <= value < limit:
            raise ValueError(f"{name}={value} is outside [0, {limit})")
    payload = (camera_id << (EPISODE_BITS + FRAME_BITS)) | (episode_index << FRAME_BITS) | frame_index
    word = [*_to_bits(payload, PAYLOAD_BITS), *_to_bits(_checksum(payload), CHECK_BITS)]
    bands = np.zeros((COPIES, WORD_BITS), dtype=bool)
    for copy in range(COPIES):
        bands[copy, _LAYOUT[copy]] = word
    board = (bands ^ _MASK).reshape(GRID_ROWS, GRID_COLS)
    height, width = size
    rows = np.arange(height) * GRID_ROWS // height
    cols = np.arange(width) * GRID_COLS // width
    gray = Image.fromarray(np.where(board[rows[:, None], cols[None, :]], 255, 0).astype(np.uint8))
    soft = gray.filter(ImageFilter.GaussianBlur(max(1, round(min(size) * BLUR_FRACTION))))
    return np.repeat(np.asarray(soft)[:, :, None], 3, axis=2)


def _cell_core(index: int, count: int, extent: int) -> slice:
    # Sample only the middle half of a cell: edges are blurred by the codec and by resampling.
    start, stop = index * extent / count, (index + 1) * extent / count
    margin = (stop - start) / 4
    lo = math.floor(start + margin)
    return slice(lo, max(lo + 1, math.ceil(stop - margin)))


def frame_code(frame: np.ndarray) -> tuple[int, int, int]:
    """Reads back the code drawn by :func:`make_frame` from a decoded frame of any size.

    Args:
        frame: ``(height, width, 3)`` uint8 RGB image, e.g. a decoded and possibly resized video frame.

    Returns:
        ``(camera_id, episode_index, frame_index)``.

    Raises:
        ValueError: If the array is not HxWx3, or the copies disagree too much or the checksum does not
            match (the frame is not a synthetic frame, or it was decoded into garbage).
    """
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {frame.shape}")
    luma = frame.astype(np.float32).mean(axis=2)
    height, width = luma.shape
    cells = np.array(
        [
            [
                luma[_cell_core(row, GRID_ROWS, height), _cell_core(col, GRID_COLS, width)].mean() > 127.5
                for col in range(GRID_COLS)
            ]
            for row in range(GRID_ROWS)
        ]
    )
    bands = cells.reshape(COPIES, WORD_BITS) ^ _MASK
    votes = sum(bands[copy, _LAYOUT[copy]].astype(int) for copy in range(COPIES))
    word = (2 * votes > COPIES).astype(int)
    payload, check = _from_bits(word[:PAYLOAD_BITS]), _from_bits(word[PAYLOAD_BITS:])
    split_votes = np.count_nonzero((votes > 0) & (votes < COPIES))
    if split_votes > MAX_SPLIT_VOTES or check != _checksum(payload):
        raise ValueError("frame does not carry a valid synthetic frame code")
    return (
        payload >> (EPISODE_BITS + FRAME_BITS),
        (payload >> FRAME_BITS) & (MAX_EPISODES - 1),
        payload & (MAX_FRAMES - 1),
    )


def synth_action(episode_index: int, frame_index: int) -> np.ndarray:
    """Returns the deterministic action recorded at ``(episode_index, frame_index)``.

    The first two components are the indices themselves so a mismatch is readable in a test failure.

    Args:
        episode_index: Episode number.
        frame_index: Frame number inside the episode.

    Returns:
        A float32 array of shape ``(6,)``.
    """
    phase = 0.1 * frame_index + 0.5 * episode_index
    return np.array(
        [episode_index, frame_index, math.sin(phase), math.cos(phase), 0.01 * frame_index, -1.0],
        dtype=np.float32,
    )


def synth_state(episode_index: int, frame_index: int) -> np.ndarray:
    """Returns the deterministic state observed at ``(episode_index, frame_index)``.

    Args:
        episode_index: Episode number.
        frame_index: Frame number inside the episode.

    Returns:
        A float32 array of shape ``(6,)``, half the action of the same frame.
    """
    return (0.5 * synth_action(episode_index, frame_index)).astype(np.float32)


def task_for_episode(episode_index: int, tasks: Sequence[str] = DEFAULT_TASKS) -> str:
    """Returns the task string of an episode: tasks are cycled over episodes.

    Args:
        episode_index: Episode number.
        tasks: The task strings to cycle through.

    Returns:
        The episode's task.
    """
    return tasks[episode_index % len(tasks)]


def _features(cameras: Sequence[str], size: tuple[int, int]) -> dict[str, dict[str, Any]]:
    features: dict[str, dict[str, Any]] = {
        camera: {"dtype": "video", "shape": (*size, 3), "names": ["height", "width", "channels"]}
        for camera in cameras
    }
    features["observation.state"] = {"dtype": "float32", "shape": (STATE_DIM,), "names": JOINT_NAMES}
    features["action"] = {"dtype": "float32", "shape": (STATE_DIM,), "names": JOINT_NAMES}
    return features


def _encoder(gop: int | None) -> RGBEncoderConfig:
    # g=None on the config would mean "let the codec choose", so None here keeps lerobot's default (g=2).
    return RGBEncoderConfig() if gop is None else RGBEncoderConfig(g=gop)


def _check_args(lengths: Sequence[int], cameras: Sequence[str]) -> None:
    if not lengths or len(lengths) > MAX_EPISODES or not all(0 < n <= MAX_FRAMES for n in lengths):
        raise ValueError(f"need 1..{MAX_EPISODES} episodes of 1..{MAX_FRAMES} frames, got {list(lengths)}")
    if not 0 < len(cameras) <= MAX_CAMERAS:
        raise ValueError(f"need 1..{MAX_CAMERAS} cameras, got {len(cameras)}")


@contextmanager
def quiet_encoders() -> Iterator[None]:
    """Silences what the video encoders print while synthetic videos are written.

    SVT-AV1 prints its banner and settings from C straight to stderr at every encoder start unless its
    ``SVT_LOG`` level says otherwise (1: errors only). LeRobot's encoder hands libav's log back to FFmpeg's
    own printer (``av.logging.restore_default_callback``), which then prints muxer notes such as
    ``[mp4 @ ...] Starting second pass``; libav's level drops those, and on exit PyAV's logging as it was
    before (by default: libav messages not printed) is put back. The ``datasets`` progress bars of
    LeRobot's episode saving go too.
    """
    svt_log = os.environ.get("SVT_LOG")
    pyav_level = av.logging.get_level()
    bars_were_enabled = datasets_logging.is_progress_bar_enabled()
    os.environ["SVT_LOG"] = "1"
    av.logging.set_libav_level(av.logging.ERROR)
    datasets_logging.disable_progress_bar()
    try:
        yield
    finally:
        if svt_log is None:
            os.environ.pop("SVT_LOG", None)
        else:
            os.environ["SVT_LOG"] = svt_log
        av.logging.set_libav_level(av.logging.INFO)  # FFmpeg's default
        av.logging.set_level(pyav_level)
        if bars_were_enabled:
            datasets_logging.enable_progress_bar()


def _garbage(nbytes: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8).tobytes()


def _corrupt_packets(path: Path, from_s: float, to_s: float, fps: int, seed: int) -> None:
    """Overwrites the payload of every packet with ``from_s <= pts < to_s`` with random bytes.

    The container index (moov) stays intact, so the file still opens and the other episodes still decode;
    only this time range decodes into errors (libdav1d reports InvalidDataError), garbage or repeated frames.
    """
    half_frame = 0.5 / fps
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        regions = [
            (packet.pos, packet.size)
            for packet in container.demux(stream)
            if packet.pts is not None
            and from_s - half_frame <= float(packet.pts * stream.time_base) < to_s - half_frame
        ]
    if not regions:
        raise ValueError(f"no packets between {from_s} s and {to_s} s in {path}")
    with path.open("r+b") as f:
        for pos, size in regions:
            f.seek(pos)
            f.write(_garbage(size, seed + pos))


@quiet_encoders()
def write_v30_dataset(
    root: str | Path,
    repo_id: str = "synth/toy",
    lengths: Sequence[int] = DEFAULT_LENGTHS,
    fps: int = 10,
    tasks: Sequence[str] = DEFAULT_TASKS,
    cameras: Sequence[str] = DEFAULT_CAMERAS,
    size: tuple[int, int] = (64, 64),
    gop: int | None = None,
    seed: int = 0,
    *,
    corrupt_episode: int | None = None,
    missing_video_episode: int | None = None,
) -> Path:
    """Writes a LeRobot v3.0 dataset through lerobot's recording API.

    Each episode is encoded on its own (so it starts on a keyframe) and then stream-copied onto the end
    of one packed mp4 per camera, ``videos/<camera>/chunk-000/file-000.mp4``, as lerobot does when
    recording.

    Args:
        root: Dataset folder to create; it must not exist yet.
        repo_id: Repository id stored in the metadata (nothing is pushed).
        lengths: Number of frames of each episode.
        fps: Frames per second.
        tasks: Task strings, cycled over episodes.
        cameras: Video feature keys; a camera's position is the ``camera_id`` in its frame codes.
        size: ``(height, width)`` of the frames.
        gop: Keyframe interval passed to the encoder as ``RGBEncoderConfig(g=gop)``; ``None`` keeps
            lerobot's default (2).
        seed: Seed of the random bytes written by ``corrupt_episode``.
        corrupt_episode: Episode whose packets are overwritten with random bytes, in every camera's packed
            mp4 (located by its ``from_timestamp``/``to_timestamp`` and the packets' byte positions). The
            container index stays valid, so the file opens and every other episode decodes intact (each
            episode starts on a keyframe); decoding this episode raises ``av.InvalidDataError`` for most
            packets, and the frames that do come out are fewer, garbage, or repeats of an earlier frame.
        missing_video_episode: Episode whose packed mp4 is deleted for every camera. Because files are
            packed, every episode stored in the same file (by default all of them) loses its video too.

    Returns:
        The dataset root.
    """
    _check_args(lengths, cameras)
    root = Path(root)
    dataset = LeRobotDataset.create(
        repo_id=repo_id,
        fps=fps,
        features=_features(cameras, size),
        root=root,
        robot_type="synth",
        use_videos=True,
        video_backend="pyav",
        rgb_encoder=_encoder(gop),
    )
    for episode_index, length in enumerate(lengths):
        task = task_for_episode(episode_index, tasks)
        for frame_index in range(length):
            frame = {
                camera: make_frame(camera_id, episode_index, frame_index, size)
                for camera_id, camera in enumerate(cameras)
            }
            frame["observation.state"] = synth_state(episode_index, frame_index)
            frame["action"] = synth_action(episode_index, frame_index)
            frame["task"] = task
            dataset.add_frame(frame)
        dataset.save_episode()
    dataset.finalize()

    if corrupt_episode is not None or missing_video_episode is not None:
        meta = LeRobotDatasetMetadata(repo_id, root=root)
        for camera in cameras:
            if corrupt_episode is not None:
                episode = meta.episodes[corrupt_episode]
                _corrupt_packets(
                    root / meta.get_video_file_path(corrupt_episode, camera),
                    episode[f"videos/{camera}/from_timestamp"],
                    episode[f"videos/{camera}/to_timestamp"],
                    fps,
                    seed,
                )
            if missing_video_episode is not None:
                (root / meta.get_video_file_path(missing_video_episode, camera)).unlink(missing_ok=True)
    return root


def _encode_mp4(frames: Sequence[np.ndarray], path: Path, fps: int, encoder: RGBEncoderConfig) -> None:
    # Same codec options as lerobot's encode_video_frames, so v2.1 and v3.0 videos only differ in layout.
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(
            encoder.vcodec, rate=fps, options=encoder.get_codec_options(as_strings=True)
        )
        stream.pix_fmt = encoder.pix_fmt
        stream.width, stream.height = width, height
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def _v21_video_info(path: Path) -> dict[str, Any]:
    # v2.1 stored only stream-derived keys, with the depth flag under the "video." prefix.
    info = get_video_info(path)
    info["video.is_depth_map"] = info.pop("is_depth_map")
    return info


def _v21_episode_stats(
    columns: dict[str, np.ndarray], videos: dict[str, np.ndarray], features: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    stats = compute_episode_stats(columns, features)
    for camera, frames in videos.items():
        # compute_episode_stats reads video stats from image files; the frames are in memory here, so
        # reduce them the same way: per channel over (frame, height, width), scaled to [0, 1].
        camera_stats = get_feature_stats(frames.transpose(0, 3, 1, 2), axis=(0, 2, 3), keepdims=True)
        stats[camera] = {
            key: value if key == "count" else np.squeeze(value / 255.0, axis=0)
            for key, value in camera_stats.items()
        }
    return {key: {name: stats[key][name] for name in V21_STAT_KEYS} for key in stats}


def _v21_video_path(episode_index: int, camera: str) -> str:
    return V21_VIDEO_PATH.format(
        episode_chunk=episode_index // DEFAULT_CHUNK_SIZE, video_key=camera, episode_index=episode_index
    )


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


@quiet_encoders()
def write_v21_dataset(
    root: str | Path,
    repo_id: str = "synth/toy",
    lengths: Sequence[int] = DEFAULT_LENGTHS,
    fps: int = 10,
    tasks: Sequence[str] = DEFAULT_TASKS,
    cameras: Sequence[str] = DEFAULT_CAMERAS,
    size: tuple[int, int] = (64, 64),
    gop: int | None = None,
    seed: int = 0,
    *,
    corrupt_episode: int | None = None,
    missing_video_episode: int | None = None,
) -> Path:
    """Writes the LeRobot v2.1 on-disk layout by hand (lerobot 0.6.1 can only write v3.0).

    Layout: ``meta/info.json`` (``codebase_version: "v2.1"``), ``meta/episodes.jsonl``,
    ``meta/tasks.jsonl``, ``meta/episodes_stats.jsonl``, one parquet per episode under
    :data:`V21_DATA_PATH` and one AV1 (libsvtav1, yuv420p, lerobot's codec options) mp4 per episode and
    camera under :data:`V21_VIDEO_PATH`. ``lerobot.scripts.convert_dataset_v21_to_v30`` accepts it.

    Args:
        root: Dataset folder to create; it must not exist yet.
        repo_id: Repository id; v2.1 did not store it, it is accepted for symmetry with
            :func:`write_v30_dataset`.
        lengths: Number of frames of each episode.
        fps: Frames per second.
        tasks: Task strings, cycled over episodes.
        cameras: Video feature keys; a camera's position is the ``camera_id`` in its frame codes.
        size: ``(height, width)`` of the frames.
        gop: Keyframe interval (``g``) of the encoder; ``None`` keeps lerobot's default (2).
        seed: Seed of the random bytes written by ``corrupt_episode``.
        corrupt_episode: Episode whose mp4 (every camera) is overwritten with random bytes of the same
            size, so opening it fails with ``av.InvalidDataError``.
        missing_video_episode: Episode whose mp4 (every camera) is deleted.

    Returns:
        The dataset root.
    """
    del repo_id  # v2.1 metadata has no repo id field.
    _check_args(lengths, cameras)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=False)
    (root / "meta").mkdir()
    features = {**_features(cameras, size), **DEFAULT_FEATURES}
    schema = get_hf_features_from_features(features).arrow_schema
    encoder = _encoder(gop)
    episode_tasks = [task_for_episode(episode_index, tasks) for episode_index in range(len(lengths))]
    # Like lerobot, number tasks in order of first appearance.
    task_indices = {task: index for index, task in enumerate(dict.fromkeys(episode_tasks))}

    episodes_rows, stats_rows = [], []
    global_index = 0
    for episode_index, (length, task) in enumerate(zip(lengths, episode_tasks, strict=True)):
        episode_chunk = episode_index // DEFAULT_CHUNK_SIZE
        frame_indices = np.arange(length, dtype=np.int64)
        columns = {
            "observation.state": np.stack([synth_state(episode_index, i) for i in range(length)]),
            "action": np.stack([synth_action(episode_index, i) for i in range(length)]),
            "timestamp": (frame_indices / fps).astype(np.float32),
            "frame_index": frame_indices,
            "episode_index": np.full(length, episode_index, dtype=np.int64),
            "index": frame_indices + global_index,
            "task_index": np.full(length, task_indices[task], dtype=np.int64),
        }
        table = pa.Table.from_pydict({key: list(value) for key, value in columns.items()}, schema=schema)
        data_path = root / V21_DATA_PATH.format(episode_chunk=episode_chunk, episode_index=episode_index)
        data_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, data_path)

        videos = {
            camera: np.stack([make_frame(camera_id, episode_index, i, size) for i in range(length)])
            for camera_id, camera in enumerate(cameras)
        }
        for camera, frames in videos.items():
            video_path = root / _v21_video_path(episode_index, camera)
            _encode_mp4(list(frames), video_path, fps, encoder)
            if "info" not in features[camera]:
                features[camera]["info"] = _v21_video_info(video_path)

        episodes_rows.append({"episode_index": episode_index, "tasks": [task], "length": length})
        stats = _v21_episode_stats(columns, videos, features)
        stats_rows.append({"episode_index": episode_index, "stats": serialize_dict(stats)})
        global_index += length

    total_episodes = len(lengths)
    info = {
        "codebase_version": V21_CODEBASE_VERSION,
        "robot_type": "synth",
        "total_episodes": total_episodes,
        "total_frames": global_index,
        "total_tasks": len(task_indices),
        "total_videos": total_episodes * len(cameras),
        "total_chunks": math.ceil(total_episodes / DEFAULT_CHUNK_SIZE),
        "chunks_size": DEFAULT_CHUNK_SIZE,
        "fps": fps,
        "splits": {"train": f"0:{total_episodes}"},
        "data_path": V21_DATA_PATH,
        "video_path": V21_VIDEO_PATH,
        "features": {key: {**ft, "shape": list(ft["shape"])} for key, ft in features.items()},
    }
    (root / INFO_PATH).write_text(json.dumps(info, indent=4))
    _write_jsonl(root / LEGACY_EPISODES_PATH, episodes_rows)
    _write_jsonl(root / LEGACY_TASKS_PATH, [{"task_index": i, "task": t} for t, i in task_indices.items()])
    _write_jsonl(root / LEGACY_EPISODES_STATS_PATH, stats_rows)

    for camera in cameras:
        if corrupt_episode is not None:
            video_path = root / _v21_video_path(corrupt_episode, camera)
            video_path.write_bytes(_garbage(video_path.stat().st_size, seed))
        if missing_video_episode is not None:
            (root / _v21_video_path(missing_video_episode, camera)).unlink()
    return root


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point; prints the dataset root.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.
    """
    parser = argparse.ArgumentParser(prog="python -m devkit.synth", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="dataset folder to create (must not exist)")
    parser.add_argument("--version", choices=("v3.0", "v2.1"), default="v3.0")
    parser.add_argument("--repo-id", default="synth/toy")
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--length", type=int, default=40, help="frames per episode")
    parser.add_argument("--lengths", help="comma-separated frames per episode; overrides --episodes/--length")
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--size", type=int, default=64, help="frame height and width in pixels")
    parser.add_argument("--gop", type=int, default=None, help="keyframe interval (default: lerobot's, 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corrupt-episode", type=int, default=None)
    parser.add_argument("--missing-video-episode", type=int, default=None)
    args = parser.parse_args(argv)

    lengths = [int(n) for n in args.lengths.split(",")] if args.lengths else [args.length] * args.episodes
    writer = write_v30_dataset if args.version == "v3.0" else write_v21_dataset
    root = writer(
        args.out,
        repo_id=args.repo_id,
        lengths=lengths,
        fps=args.fps,
        size=(args.size, args.size),
        gop=args.gop,
        seed=args.seed,
        corrupt_episode=args.corrupt_episode,
        missing_video_episode=args.missing_video_episode,
    )
    print(root)


if __name__ == "__main__":
    main()
