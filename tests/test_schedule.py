"""Frame sampling and prefix schedules: the properties exact cached scoring relies on."""

import numpy as np
import pytest

from pipeline.config import FramesConfig, PrefixesConfig
from pipeline.errors import EpisodeError
from pipeline.frames.schedule import (
    config_schedule,
    episode_schedule,
    prefix_block_ends,
    sample_frame_indices,
    spaced_prefix_ends,
)

LENGTHS = [2, 3, 5, 17, 40, 41, 120, 301, 1000, 5000]


@pytest.mark.parametrize("num_raw", LENGTHS)
@pytest.mark.parametrize("raw_fps", [10.0, 30.0])
def test_sampling_properties(num_raw, raw_fps):
    idx = sample_frame_indices(num_raw, raw_fps, fps=2.0, max_frames=64)
    assert idx[0] == 0 and idx[-1] == num_raw - 1
    assert len(idx) % 2 == 0 and 2 <= len(idx) <= 64
    assert np.all(np.diff(idx) > 0)


def test_sampling_rate_follows_fps_until_capped():
    # 30 s at 30 fps sampled at 2 fps: about 61 frames, rounded to even.
    assert len(sample_frame_indices(900, 30.0, 2.0, 64)) == 62
    # 100 s would be 201 frames at 2 fps: capped, so the rate drops.
    assert len(sample_frame_indices(3000, 30.0, 2.0, 64)) == 64
    # A short episode cannot give more frames than it has.
    assert len(sample_frame_indices(5, 30.0, 30.0, 64)) == 4


@pytest.mark.parametrize("num_raw", [0, 1])
def test_too_short_episode_is_a_clear_error(num_raw):
    with pytest.raises(EpisodeError, match="at least 2"):
        sample_frame_indices(num_raw, 10.0, 2.0, 64)


@pytest.mark.parametrize("frames", [2, 4, 10, 30, 64])
@pytest.mark.parametrize("k", [1, 2, 3, 15, 100])
def test_prefix_ends_on_blocks(frames, k):
    ends = prefix_block_ends(frames, k)
    assert len(ends) == min(k, frames // 2)
    assert ends[-1] == frames
    assert np.all(ends % 2 == 0) and np.all(np.diff(ends) > 0)
    if len(ends) > 1:
        assert ends[0] == 2


def test_prefix_ends_are_evenly_spaced():
    ends = prefix_block_ends(64, 15)
    gaps = np.diff(ends // 2)
    assert gaps.max() - gaps.min() <= 1


def test_schedule_timestamps_are_real():
    schedule = episode_schedule(901, 30.0, 2.0, 64, 15)
    np.testing.assert_allclose(schedule.timestamps, schedule.raw_indices / 30.0)
    assert schedule.prefix_last_raw[-1] == 900
    assert len(schedule.prefix_ends) == 15


def test_short_episode_has_fewer_prefixes_than_asked():
    # 10 s at 2 fps is 22 frames, 11 blocks: at most 11 distinct block-boundary prefixes.
    assert len(episode_schedule(301, 30.0, 2.0, 64, 15).prefix_ends) == 11


@pytest.mark.parametrize("num_raw", LENGTHS)
@pytest.mark.parametrize("raw_fps", [10.0, 30.0])
def test_rate_floor_keeps_the_sampling_properties(num_raw, raw_fps):
    idx = sample_frame_indices(num_raw, raw_fps, 2.0, 64, min_fps=0.8, max_frames_long=768)
    assert idx[0] == 0 and idx[-1] == num_raw - 1
    assert len(idx) % 2 == 0 and 2 <= len(idx) <= 768
    assert np.all(np.diff(idx) > 0)


def test_rate_floor_adds_frames_only_where_the_cap_drops_below_it():
    # 78 s at 30 fps: 64 frames are 0.81 fps, above the floor: unchanged.
    assert np.array_equal(
        sample_frame_indices(2341, 30.0, 2.0, 64, min_fps=0.8, max_frames_long=768),
        sample_frame_indices(2341, 30.0, 2.0, 64),
    )
    # 10 min: 0.8 fps from the first to the last frame is 481 frames, rounded up to even.
    assert len(sample_frame_indices(18001, 30.0, 2.0, 64, min_fps=0.8, max_frames_long=768)) == 482
    # 1 h: the floor would need 2,881; max_frames_long caps it.
    assert len(sample_frame_indices(108001, 30.0, 2.0, 64, min_fps=0.8, max_frames_long=768)) == 768
    # The floor never asks for more frames than the episode has.
    assert len(sample_frame_indices(5, 1.0, 2.0, 2, min_fps=0.8, max_frames_long=768)) == 4


def test_spacing_adds_the_fewest_prefixes_that_meet_it():
    timestamps = np.arange(100) * 1.0  # 50 blocks, one every 2 s
    ends = spaced_prefix_ends(timestamps, 5, 5.0)
    gaps = np.diff(timestamps[ends - 1])
    assert gaps.max() <= 5.0 and ends[-1] == 100 and ends[0] == 2
    fewer = prefix_block_ends(100, len(ends) - 1)
    assert np.diff(timestamps[fewer - 1]).max() > 5.0
    # Already within the spacing: exactly prefix_block_ends.
    assert np.array_equal(spaced_prefix_ends(timestamps, 40, 5.0), prefix_block_ends(100, 40))
    assert np.array_equal(spaced_prefix_ends(timestamps, 5, None), prefix_block_ends(100, 5))


def test_spacing_finer_than_the_blocks_ends_a_prefix_on_every_block():
    timestamps = np.arange(20) * 3.0  # blocks 6 s apart
    assert np.array_equal(spaced_prefix_ends(timestamps, 3, 5.0), np.arange(2, 21, 2))


def test_spacing_slack_absorbs_raw_frame_rounding():
    # 21 blocks 2.5 s apart, the later ones a raw frame (1/30 s) late: two blocks per prefix (11
    # prefixes) meet 5 s within one raw frame; without the slack it takes more prefixes.
    timestamps = np.arange(42) * 1.25
    timestamps[21:] += 1 / 30
    loose = spaced_prefix_ends(timestamps, 2, 5.0, slack_s=1 / 30)
    assert np.array_equal(loose, np.arange(2, 43, 4))
    assert len(spaced_prefix_ends(timestamps, 2, 5.0)) > len(loose)


def test_config_schedule_reads_the_settings():
    frames = FramesConfig(fps=2.0, max_frames=64, min_fps=0.8, max_frames_long=768)
    schedule = config_schedule(18001, 30.0, frames, PrefixesConfig(num=15, max_spacing_s=5.0))
    assert len(schedule.raw_indices) == 482 and len(schedule.prefix_ends) == 121
    np.testing.assert_allclose(schedule.prefix_end_times, schedule.timestamps[schedule.prefix_ends - 1])


def test_a_floor_at_or_above_fps_samples_at_fps_up_to_the_long_cap():
    for num_raw in (301, 3001, 18001):
        floored = sample_frame_indices(num_raw, 30.0, 0.5, 16, min_fps=0.8, max_frames_long=768)
        assert np.array_equal(floored, sample_frame_indices(num_raw, 30.0, 0.5, 768))
