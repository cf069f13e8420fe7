"""Decode only the sampled frames of one episode, straight from object storage (PyAV over fsspec).

The video is read through an fsspec file object (ranged reads of ``block_size``), never downloaded
whole. The demuxer seeks to the keyframe before the first wanted frame and reads packets (compressed
bytes, cheap) up to the last wanted one; only the packets a wanted frame depends on — from its keyframe
to itself — are decoded. With LeRobot's keyframe-dense AV1 (``g=2``) that is one or two frames per
sampled frame instead of every frame of the episode.

:func:`decode_episode` is the Ray Data ``map`` function: it never raises, a failure is recorded on the
row (``status="failed"``, ``error``) with empty arrays of the usual dtypes so every block has one schema.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from pipeline.config import FramesConfig, PrefixesConfig
from pipeline.errors import EpisodeError
from pipeline.frames.schedule import FrameSchedule, config_schedule
from pipeline.storage import filesystem_for, redact

log = logging.getLogger(__name__)

# swscale's bicubic widens its kernel when shrinking, so downscaling is anti-aliased, and it is the
# resample Qwen-VL's own processors use; frames are resized exactly once, to the pinned size.
INTERPOLATION = "BICUBIC"


@dataclass(frozen=True)
class DecodedClip:
    """The frames picked for the requested timestamps and what it cost to get them.

    Attributes:
        frames: ``(N, H, W, 3)`` uint8 RGB, one per requested timestamp, in request order.
        frames_decoded: frames the decoder produced (including keyframes and frames in between).
        bytes_read: bytes the demuxer consumed from the file object.
        bytes_fetched: bytes requested from storage (fsspec's block cache; ``bytes_read`` for local files).
    """

    frames: np.ndarray
    frames_decoded: int
    bytes_read: int
    bytes_fetched: int


class _CountingFile:
    """Read-only file wrapper that counts the bytes handed to the demuxer."""

    def __init__(self, file: Any) -> None:
        self._file = file
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        self.bytes_read += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True


def decode_frames(
    video_uri: str,
    timestamps: Sequence[float] | np.ndarray,
    from_timestamp: float,
    size: tuple[int, int],
    storage_options: Mapping[str, Any] | None = None,
    block_size: int = 1 << 20,
    *,
    fps: float,
) -> DecodedClip:
    """Decodes the frames nearest to ``timestamps`` (within half a frame period) of one episode.

    Args:
        video_uri: The mp4 holding the episode (any fsspec URI).
        timestamps: Sorted within-episode times in seconds.
        from_timestamp: Where the episode starts inside the file (non-zero in packed v3.0 files).
        size: ``(height, width)`` every frame is resized to, once, with :data:`INTERPOLATION`.
        storage_options: fsspec options for the URI's filesystem.
        block_size: Bytes per ranged read from storage.
        fps: The raw frame rate; half its period is the matching tolerance.

    Returns:
        The picked frames and the decode/read counters.

    Raises:
        EpisodeError: the file is missing, cannot be opened or decoded, or holds no frame near a
            requested time (fewer frames than the index says). The message names the file, never
            credentials.
    """
    targets = from_timestamp + np.asarray(timestamps, dtype=np.float64)
    if targets.size == 0:
        raise EpisodeError(f"{video_uri}: no timestamps requested")
    fs, path = filesystem_for(video_uri, storage_options)
    try:
        with fs.open(path, "rb", block_size=block_size) as raw:
            counted = _CountingFile(raw)
            with av.open(counted, mode="r") as container:
                frames, decoded = _decode_targets(container, targets, 0.5 / fps, from_timestamp, size)
            cache = getattr(raw, "cache", None)
            fetched = getattr(cache, "total_requested_bytes", counted.bytes_read)
    except EpisodeError as err:
        raise EpisodeError(f"{video_uri}: {err}") from None
    except FileNotFoundError:
        raise EpisodeError(f"{video_uri}: file not found") from None
    except (av.FFmpegError, OSError) as err:
        # strerror drops FFmpeg's trailing "'<none>'"-style context, which names no file anyway.
        reason = redact(f"{type(err).__name__}: {getattr(err, 'strerror', None) or err}", storage_options)
        raise EpisodeError(f"{video_uri}: cannot read video ({reason})") from None
    return DecodedClip(
        frames=frames, frames_decoded=decoded, bytes_read=counted.bytes_read, bytes_fetched=fetched
    )


def _decode_targets(
    container: av.container.InputContainer,
    targets: np.ndarray,
    tolerance: float,
    from_timestamp: float,
    size: tuple[int, int],
) -> tuple[np.ndarray, int]:
    """Seeks, demuxes the wanted span, decodes only the packets the targets depend on, picks the frames."""
    if not container.streams.video:
        raise EpisodeError("no video stream")
    stream = container.streams.video[0]
    time_base = stream.time_base
    # Half a period of slack absorbs float rounding, so the seek never lands one keyframe too late.
    container.seek(int(max(targets[0] - tolerance, 0.0) / time_base), stream=stream, backward=True)
    packets = []
    for packet in container.demux(stream):
        if packet.size == 0 or packet.pts is None:
            continue  # the demuxer's final flush packet
        packets.append(packet)
        # dts never exceeds pts and only grows, so no later packet can hold a wanted frame.
        if packet.dts is not None and float(packet.dts * time_base) > targets[-1] + tolerance:
            break
    if not packets:
        raise EpisodeError(
            f"no frame at or after file time {targets[0]:.3f} s: the video ends before it "
            "(truncated, or fewer frames than the index says)"
        )

    times = np.array([float(packet.pts * time_base) for packet in packets])
    keyframes = np.array([packet.is_keyframe for packet in packets])
    chosen = [_nearest_packet(times, target, tolerance, from_timestamp) for target in targets]
    needed = np.zeros(len(packets), dtype=bool)
    for k in chosen:
        # The last keyframe in decode order at or before the frame in time: decoding starts there.
        starts = np.flatnonzero(keyframes[: k + 1] & (times[: k + 1] <= times[k]))
        if starts.size == 0:
            raise EpisodeError(f"no keyframe before file time {times[k]:.3f} s")
        needed[starts[-1] : k + 1] = True

    wanted_pts = {packets[k].pts for k in chosen}
    picked: dict[int, np.ndarray] = {}
    decoded = 0
    codec = stream.codec_context
    height, width = size
    for run in _runs(needed):
        codec.flush_buffers()  # each run starts at a keyframe with a clean decoder
        # The trailing None drains frames a threaded or reordering decoder still holds.
        for packet in [*(packets[i] for i in run), None]:
            for frame in codec.decode(packet):
                decoded += 1
                if frame.pts in wanted_pts and frame.pts not in picked:
                    picked[frame.pts] = frame.to_ndarray(
                        format="rgb24", width=width, height=height, interpolation=INTERPOLATION
                    )
    missing = [float(packets[k].pts * time_base) for k in chosen if packets[k].pts not in picked]
    if missing:
        raise EpisodeError(f"the decoder produced no frame at file time {missing[0]:.3f} s (corrupt data)")
    return np.stack([picked[packets[k].pts] for k in chosen]), decoded


def _nearest_packet(times: np.ndarray, target: float, tolerance: float, from_timestamp: float) -> int:
    k = int(np.argmin(np.abs(times - target)))
    if abs(times[k] - target) <= tolerance:
        return k
    where = f"episode time {target - from_timestamp:.3f} s (file time {target:.3f} s)"
    if target > times.max():
        raise EpisodeError(
            f"no frame at {where}: the video ends at file time {times.max():.3f} s, "
            "it holds fewer frames than the index says"
        )
    raise EpisodeError(f"no frame within {tolerance * 1e3:.0f} ms of {where}; nearest is at {times[k]:.3f} s")


def _runs(mask: np.ndarray) -> list[range]:
    """Contiguous ``True`` stretches of a boolean mask, as index ranges."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return [range(start, stop) for start, stop in zip(edges[::2], edges[1::2], strict=True)]


def empty_frame_columns(height: int, width: int) -> dict[str, Any]:
    """The frame columns of a failed row: empty arrays with the dtypes and trailing shape of real ones."""
    return {
        "frames": np.zeros((0, height, width, 3), dtype=np.uint8),
        "frame_indices": np.zeros(0, dtype=np.int64),
        "timestamps": np.zeros(0, dtype=np.float64),
        "prefix_ends": np.zeros(0, dtype=np.int64),
        "frames_decoded": 0,
        "bytes_read": 0,
        "bytes_fetched": 0,
    }


def decode_episode(
    row: dict[str, Any],
    frames_cfg: FramesConfig,
    prefixes_cfg: PrefixesConfig,
    storage_options: Mapping[str, Any],
    block_size: int,
) -> dict[str, Any]:
    """Ray Data ``map`` function: schedules and decodes one catalog row's frames; never raises.

    Args:
        row: A catalog row (:class:`pipeline.catalog.EpisodeRecord` schema). Rows already failed pass
            through with empty frame columns.
        frames_cfg: Sampling rate, frame caps, the long-episode rate floor and the pinned
            ``(height, width)``.
        prefixes_cfg: Number of prefixes and their largest spacing (for the schedule's prefix ends).
        storage_options: fsspec options for the video URIs.
        block_size: Bytes per ranged read from storage.

    Returns:
        The row plus ``frames`` (uint8 ``(N, H, W, 3)``), ``frame_indices`` (int64 raw indices),
        ``timestamps`` (float64 within-episode seconds), ``prefix_ends`` (int64 sampled-frame counts),
        ``frames_decoded``, ``bytes_read`` and ``bytes_fetched``. On failure: ``status="failed"``,
        ``error="<dataset_id> episode <i>: <file>: <reason>"`` and empty arrays.
    """
    height, width = frames_cfg.height, frames_cfg.width
    if row.get("status", "ok") != "ok":
        return {**row, **empty_frame_columns(height, width)}
    video_uri = row.get("video_uri", "")
    try:
        schedule = _schedule(row, frames_cfg, prefixes_cfg)
        clip = decode_frames(
            video_uri,
            schedule.timestamps,
            row["from_timestamp"],
            (height, width),
            storage_options,
            block_size,
            fps=row["fps"],
        )
    except Exception as err:  # one bad episode must never stop the map
        reason = str(err) if isinstance(err, EpisodeError) else f"{video_uri}: {type(err).__name__}: {err}"
        error = redact(
            f"{row.get('dataset_id', '?')} episode {row.get('episode_index', '?')}: {reason}", storage_options
        )
        log.warning("decode failed: %s", error)
        return {**row, **empty_frame_columns(height, width), "status": "failed", "error": error}
    return {
        **row,
        "frames": clip.frames,
        "frame_indices": schedule.raw_indices.astype(np.int64),
        "timestamps": schedule.timestamps.astype(np.float64),
        "prefix_ends": schedule.prefix_ends.astype(np.int64),
        "frames_decoded": clip.frames_decoded,
        "bytes_read": clip.bytes_read,
        "bytes_fetched": clip.bytes_fetched,
    }


def _schedule(row: dict[str, Any], frames_cfg: FramesConfig, prefixes_cfg: PrefixesConfig) -> FrameSchedule:
    """The episode's schedule, checked against its span in the video file; errors name the file."""
    try:
        schedule = config_schedule(int(row["length"]), float(row["fps"]), frames_cfg, prefixes_cfg)
    except EpisodeError as err:
        raise EpisodeError(f"{row['video_uri']}: {err}") from None
    span = row["to_timestamp"] - row["from_timestamp"]
    # Frame i covers [i/fps, (i+1)/fps); in a packed v3.0 file a frame starting at or after the span's
    # end belongs to the next episode, so it must never be picked.
    if schedule.timestamps[-1] > span - 0.5 / row["fps"]:
        raise EpisodeError(
            f"{row['video_uri']}: the index says {row['length']} frames but the episode spans only "
            f"{span:.3f} s of video ({row['from_timestamp']:.3f}-{row['to_timestamp']:.3f} s)"
        )
    return schedule
