"""Which raw frames an episode is scored on, and where its prefixes end.

Frames are sampled once per episode so that every prefix is a leading subset of the full video; that
is what makes a prefix a token-prefix of the full prompt (the basis of cached scoring). Prefixes end on
2-frame temporal blocks because Qwen-VL merges frames in pairs: an odd prefix would repeat its last
frame and shift its last timestamp, and would no longer be a truncation of the full video.

Reward resolution (README "Reward resolution"). The per-frame reward is interpolated between the
prefix ends, so the time between two consecutive ends is the shortest event the reward can show. Two
settings bound it for long episodes, and leave every episode that already met them untouched:

* ``frames.min_fps`` stops the rate drop that ``frames.max_frames`` imposes on long episodes, up to
  ``frames.max_frames_long`` frames, so their blocks stay close enough together for the next rule;
* ``prefixes.max_spacing_s`` adds prefixes (beyond ``prefixes.num``) until no two consecutive prefix
  ends are further apart than that many seconds, or every block ends one.
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from pipeline.errors import EpisodeError

if TYPE_CHECKING:
    from pipeline.config import FramesConfig, PrefixesConfig

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

    @property
    def prefix_end_times(self) -> np.ndarray:
        """Within-episode time, in seconds, of the last frame each prefix shows."""
        return self.timestamps[self.prefix_ends - 1]


def _even_at_least(count: int) -> int:
    return count + count % TEMPORAL_BLOCK


def sample_frame_indices(
    num_raw: int,
    raw_fps: float,
    fps: float,
    max_frames: int,
    min_fps: float | None = None,
    max_frames_long: int | None = None,
) -> np.ndarray:
    """Raw frame indices sampled at about ``fps``, spread evenly from the first to the last frame.

    The count is even, at least 2, at most ``max_frames`` and at most the raw length (rounded down to
    even); long episodes get a lower effective rate rather than more frames. With ``min_fps`` the rate
    never drops below ``min(min_fps, fps)`` (frames counted from the first to the last,
    ``(n - 1) / duration``) while that takes at most ``max_frames_long`` frames; beyond, the episode
    gets ``max_frames_long``.
    An episode that ``max_frames`` leaves at ``min_fps`` or above is sampled exactly as without it.

    Args:
        num_raw: raw frames in the episode.
        raw_fps: the episode's frame rate.
        fps: wanted sampling rate.
        max_frames: even cap on the count at the ``fps`` rate.
        min_fps: floor on the rate of long episodes (null: none).
        max_frames_long: even cap on the count the floor may reach (null: ``max_frames``).

    Raises:
        EpisodeError: the episode has fewer than 2 frames, or its fps is not positive.
    """
    if num_raw < TEMPORAL_BLOCK:
        raise EpisodeError(f"episode has {num_raw} frame(s); at least {TEMPORAL_BLOCK} are needed")
    if raw_fps <= 0:
        raise EpisodeError(f"raw fps must be > 0, got {raw_fps}")
    usable = num_raw - num_raw % TEMPORAL_BLOCK
    duration = (num_raw - 1) / raw_fps
    ceiling = min(max_frames, num_raw)
    ceiling -= ceiling % TEMPORAL_BLOCK
    wanted = round(duration * fps) + 1
    count = int(np.clip(_even_at_least(wanted), TEMPORAL_BLOCK, ceiling))
    if min_fps is not None:
        if min_fps >= fps:  # the floor is the rate itself: fps up to max_frames_long
            floor = _even_at_least(wanted)
        else:  # round() first: 600 s at 0.8 Hz is 480 gaps, not 480.00000000000006 (one frame more)
            floor = _even_at_least(math.ceil(round(duration * min_fps, 9)) + 1)
        long_cap = max(max_frames_long if max_frames_long is not None else max_frames, max_frames)
        count = max(count, min(floor, long_cap - long_cap % TEMPORAL_BLOCK, usable))
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


def _widest_gap(timestamps: np.ndarray, ends: np.ndarray) -> float:
    return float(np.diff(timestamps[ends - 1]).max()) if len(ends) > 1 else 0.0


def spaced_prefix_ends(
    timestamps: np.ndarray, num_prefixes: int, max_spacing_s: float | None, slack_s: float = 0.0
) -> np.ndarray:
    """Prefix ends for frames at ``timestamps``: ``num_prefixes``, or more where they are too far apart.

    Starts from :func:`prefix_block_ends` with ``num_prefixes``; if two consecutive ends are more than
    ``max_spacing_s + slack_s`` seconds apart (the time between the last frames the two prefixes show),
    it takes the fewest evenly spaced ends that are not, up to one per block (when the blocks
    themselves are further apart than that, every block ends a prefix). Ends that already meet the
    spacing are returned as they are, so an episode that met it keeps its prefixes exactly.

    Args:
        timestamps: within-episode seconds of the sampled frames (even count, ascending).
        num_prefixes: the K asked for (``prefixes.num``).
        max_spacing_s: the largest gap allowed between consecutive prefix ends; null: no limit.
        slack_s: tolerance on that gap. Sampled frames sit on raw frames, up to half a raw period off
            their even spacing, so a gap that is ``max_spacing_s`` in sampled-frame steps can measure
            one raw period more; :func:`episode_schedule` passes that period, so that a rate of
            exactly two blocks per ``max_spacing_s`` needs two blocks per prefix, not one.
    """
    num_frames = len(timestamps)
    ends = prefix_block_ends(num_frames, num_prefixes)
    if max_spacing_s is None:
        return ends
    # A hair of float tolerance: a gap of exactly the spacing plus one raw frame must count as within.
    allowed = max_spacing_s + slack_s + 1e-9
    if _widest_gap(timestamps, ends) <= allowed:
        return ends
    blocks = num_frames // TEMPORAL_BLOCK
    span = float(timestamps[TEMPORAL_BLOCK * blocks - 1] - timestamps[TEMPORAL_BLOCK - 1])
    # Fewer than span / spacing + 1 ends cannot fit; rounding ends to blocks may need a few more.
    k = max(len(ends) + 1, math.ceil(span / allowed) + 1)
    while k < blocks:
        ends = prefix_block_ends(num_frames, k)
        if _widest_gap(timestamps, ends) <= allowed:
            return ends
        k += 1
    return prefix_block_ends(num_frames, blocks)


def episode_schedule(
    num_raw: int,
    raw_fps: float,
    fps: float,
    max_frames: int,
    num_prefixes: int,
    *,
    min_fps: float | None = None,
    max_frames_long: int | None = None,
    max_spacing_s: float | None = None,
) -> FrameSchedule:
    """The full schedule for one episode: sampled frames, real timestamps and prefix ends.

    The keyword arguments are the reward-resolution settings (``frames.min_fps``,
    ``frames.max_frames_long``, ``prefixes.max_spacing_s``); left at None the schedule is the one
    before they existed (``max_frames`` frames and ``num_prefixes`` prefixes whatever the length).
    """
    raw = sample_frame_indices(num_raw, raw_fps, fps, max_frames, min_fps, max_frames_long)
    timestamps = raw / raw_fps
    return FrameSchedule(
        raw_indices=raw,
        timestamps=timestamps,
        prefix_ends=spaced_prefix_ends(timestamps, num_prefixes, max_spacing_s, slack_s=1 / raw_fps),
    )


def config_schedule(
    num_raw: int, raw_fps: float, frames: FramesConfig, prefixes: PrefixesConfig
) -> FrameSchedule:
    """:func:`episode_schedule` with a run's ``frames`` and ``prefixes`` settings.

    Args:
        num_raw: raw frames in the episode.
        raw_fps: the episode's frame rate.
        frames: a :class:`pipeline.config.FramesConfig`.
        prefixes: a :class:`pipeline.config.PrefixesConfig`.
    """
    return episode_schedule(
        num_raw,
        raw_fps,
        frames.fps,
        frames.max_frames,
        prefixes.num,
        min_fps=frames.min_fps,
        max_frames_long=frames.max_frames_long,
        max_spacing_s=prefixes.max_spacing_s,
    )


@functools.lru_cache(maxsize=4096)
def resolution_tag(num_raw: int, raw_fps: float, frames: FramesConfig, prefixes: PrefixesConfig) -> str:
    """What the reward-resolution settings change in one episode's schedule: ``""`` when nothing.

    ``frames.min_fps``, ``frames.max_frames_long`` and ``prefixes.max_spacing_s`` are not in the config
    hash: they decide per episode, so they enter per episode, through its fingerprint
    (:meth:`pipeline.catalog.EpisodeRecord.fingerprint`). An episode they leave as it was without them
    (every one up to 52 s at the defaults) gets ``""`` and keeps the fingerprint, the committed results
    and the published bytes it had; one they change gets a digest of its schedule (sampled raw frames
    and prefix ends), so results committed under another schedule are stale for it, and two settings
    that give it the same schedule share its results. Cached: a fleet's episodes share few lengths.

    Args:
        num_raw: raw frames in the episode.
        raw_fps: the episode's frame rate.
        frames: the run's :class:`pipeline.config.FramesConfig`.
        prefixes: the run's :class:`pipeline.config.PrefixesConfig`.
    """
    try:
        schedule = config_schedule(num_raw, raw_fps, frames, prefixes)
        plain = config_schedule(
            num_raw, raw_fps, replace(frames, min_fps=None), replace(prefixes, max_spacing_s=None)
        )
    except EpisodeError:
        return ""  # an unscorable episode: scoring records why; its fingerprint stays the source's
    if np.array_equal(schedule.raw_indices, plain.raw_indices) and np.array_equal(
        schedule.prefix_ends, plain.prefix_ends
    ):
        return ""
    digest = hashlib.sha256(schedule.raw_indices.astype("<i8").tobytes())
    digest.update(schedule.prefix_ends.astype("<i8").tobytes())
    return digest.hexdigest()[:16]
