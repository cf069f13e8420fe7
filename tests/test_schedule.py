"""Frame sampling and prefix schedules: the properties exact cached scoring relies on."""

import numpy as np
import pytest

from pipeline.errors import EpisodeError
from pipeline.frames.schedule import episode_schedule, prefix_block_ends, sample_frame_indices

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
