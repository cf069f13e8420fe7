"""Which raw frames an episode is scored on, and where its prefixes end.

Frames are sampled once per episode so that every prefix is a leading subset of the full video; that
is what makes a prefix a token-prefix of the full prompt (the basis of cached scoring). Prefixes end on
2-frame temporal blocks because Qwen-VL merges frames in pairs: an odd prefix would repeat its last
frame and shift its last timestamp, and would no longer be a truncation of the full video.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.errors import EpisodeError

TEMPORAL_BLOCK = 2


@dataclass(frozen=True)
class FrameSchedule:
    """Sampled raw frame indices, their timestamps, and the prefix ends (as sampled-frame counts)."""

    raw_indices: np.ndarray
    timestamps: np.ndarray
    prefix_ends: np.ndarray

    @property
    def prefix_last_raw(self) -> np.ndarray:
        """Raw index of the last frame each prefix shows."""
        return self.raw_indices[self.prefix_ends - 1]


def sample_frame_indices(num_raw: int, raw_fps: float, fps: float, max_frames: int) -> np.ndarray:
    """Raw frame indices sampled at about ``fps``, spread evenly from the first to the last frame.

    The count is even, at least 2, at most ``max_frames`` and at most the raw length (rounded down to
    even); long episodes get a lower effective rate rather than more frames.

    Raises:
        EpisodeError: the episode has fewer than 2 frames.
    """
    if num_raw < TEMPORAL_BLOCK:
        raise EpisodeError(f"episode has {num_raw} frame(s); at least {TEMPORAL_BLOCK} are needed")
    if raw_fps <= 0:
        raise EpisodeError(f"raw fps must be > 0, got {raw_fps}")
    ceiling = min(max_frames, num_raw)
    ceiling -= ceiling % TEMPORAL_BLOCK
    wanted = round((num_raw - 1) / raw_fps * fps) + 1
    count = int(np.clip(wanted + wanted % TEMPORAL_BLOCK, TEMPORAL_BLOCK, ceiling))
    # Round half up (not numpy's half-to-even) so indices never collide when the step is near 1.
    indices = np.floor(np.linspace(0, num_raw - 1, count) + 0.5).astype(np.int64)
    return indices


def prefix_block_ends(num_frames: int, num_prefixes: int) -> np.ndarray:
    """Prefix ends, in sampled frames, on block boundaries, evenly spaced, the last the whole video.

    Args:
        num_frames: sampled frame count (even).
        num_prefixes: wanted K; capped at the number of blocks.
    """
    if num_frames < TEMPORAL_BLOCK or num_frames % TEMPORAL_BLOCK:
        raise EpisodeError(f"sampled frame count must be even and >= 2, got {num_frames}")
    blocks = num_frames // TEMPORAL_BLOCK
    k = min(num_prefixes, blocks)
    if k == 1:
        return np.array([num_frames], dtype=np.int64)
    ends = np.floor(np.linspace(1, blocks, k) + 0.5).astype(np.int64)
    return ends * TEMPORAL_BLOCK


def episode_schedule(
    num_raw: int, raw_fps: float, fps: float, max_frames: int, num_prefixes: int
) -> FrameSchedule:
    """The full schedule for one episode: sampled frames, real timestamps and prefix ends."""
    raw = sample_frame_indices(num_raw, raw_fps, fps, max_frames)
    return FrameSchedule(
        raw_indices=raw, timestamps=raw / raw_fps, prefix_ends=prefix_block_ends(len(raw), num_prefixes)
    )
