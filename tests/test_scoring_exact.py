"""The cached scorer gives the reference (one forward per prefix) numbers, for both Qwen-VL families."""

import numpy as np
import pytest
import torch

import pipeline.scoring.cached as cached
from pipeline.config import ModelConfig, ScoringConfig
from pipeline.frames.schedule import episode_schedule
from pipeline.scoring.inputs import EpisodeClip
from pipeline.scoring.scorer import PrefixScorer

TOL = 1e-5
RAW_FPS = 10.0
TASK = "pick up the red cube"


@pytest.fixture(scope="module")
def qwen3_scorer(tiny_model_dir):
    return PrefixScorer(ModelConfig(path=str(tiny_model_dir)), ScoringConfig(suffix_chunk=3))


@pytest.fixture(scope="module")
def qwen25_scorer(tiny_qwen25_dir):
    return PrefixScorer(ModelConfig(path=str(tiny_qwen25_dir)), ScoringConfig(suffix_chunk=3))


def _episode(num_raw: int, num_prefixes: int, size: int, max_frames: int = 16, seed: int = 0) -> EpisodeClip:
    schedule = episode_schedule(num_raw, RAW_FPS, 2.0, max_frames, num_prefixes)
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (len(schedule.raw_indices), size, size, 3), dtype=np.uint8)
    return EpisodeClip(frames, schedule.raw_indices, RAW_FPS, num_raw, schedule.prefix_ends)


def _both(scorer, clip):
    return scorer.score(clip, TASK), scorer.score_reference(clip, TASK)


CASES = [
    pytest.param(37, 15, id="odd-raw-length"),
    pytest.param(2, 15, id="two-frame-episode"),
    pytest.param(300, 15, id="longer-than-max-frames"),
    pytest.param(61, 1, id="K=1"),
    pytest.param(61, 2, id="K=2"),
    pytest.param(61, 1000, id="K=all-blocks"),
]


@pytest.mark.parametrize(("num_raw", "num_prefixes"), CASES)
def test_qwen3_cached_equals_reference(qwen3_scorer, num_raw, num_prefixes):
    clip = _episode(num_raw, num_prefixes, size=64)
    fast, slow = _both(qwen3_scorer, clip)
    assert fast.log_p_true.shape == (len(clip.prefix_ends),)
    np.testing.assert_allclose(fast.log_p_true, slow.log_p_true, rtol=0, atol=TOL)
    np.testing.assert_allclose(fast.log_p_false, slow.log_p_false, rtol=0, atol=TOL)
    assert np.all(fast.log_p_true < 0)


@pytest.mark.parametrize(("num_raw", "num_prefixes"), CASES[:4])
def test_qwen25_cached_equals_reference(qwen25_scorer, num_raw, num_prefixes):
    fast, slow = _both(qwen25_scorer, _episode(num_raw, num_prefixes, size=56))
    np.testing.assert_allclose(fast.log_p_true, slow.log_p_true, rtol=0, atol=TOL)
    np.testing.assert_allclose(fast.log_p_false, slow.log_p_false, rtol=0, atol=TOL)


def test_prefixes_see_different_video(qwen3_scorer):
    """Scores change across prefixes: each one really sees its own part of the video."""
    scores = qwen3_scorer.score(_episode(61, 8, size=64), TASK)
    assert np.ptp(scores.log_p_true) > 1e-3


def test_chunking_does_not_change_numbers(tiny_model_dir, qwen3_scorer):
    clip = _episode(61, 1000, size=64)
    one_pass = PrefixScorer(ModelConfig(path=str(tiny_model_dir)), ScoringConfig(suffix_chunk=64)).score(
        clip, TASK
    )
    chunked = qwen3_scorer.score(clip, TASK)
    np.testing.assert_allclose(one_pass.log_p_true, chunked.log_p_true, rtol=0, atol=TOL)


def test_control_wrong_positions_is_detected(qwen3_scorer, monkeypatch):
    """Suffix positions continuing after the full video (not the prefix) must break equality."""
    original = cached.suffix_positions

    def from_full_video(model, batch, cut, blocks, suffix_ids):
        full_blocks = int(batch["video_grid_thw"][0, 0])
        full_cut = len(batch["input_ids"][0]) - suffix_ids.numel() - 1
        return original(model, batch, full_cut, full_blocks, suffix_ids)

    clip = _episode(61, 8, size=64)
    _, slow = _both(qwen3_scorer, clip)
    monkeypatch.setattr(cached, "suffix_positions", from_full_video)
    fast = qwen3_scorer.score(clip, TASK)
    assert np.abs(fast.log_p_true - slow.log_p_true)[:-1].max() > 100 * TOL


def test_control_no_prefix_mask_is_detected(qwen3_scorer, monkeypatch):
    """Suffixes that see the whole video (no per-prefix mask) must break equality."""

    def whole_context(cuts, context_len, suffix_len, dtype):
        mask = cached_mask(cuts, context_len, suffix_len, dtype)
        mask[..., :context_len] = 0.0
        return mask

    cached_mask = cached.packed_suffix_mask
    clip = _episode(61, 8, size=64)
    _, slow = _both(qwen3_scorer, clip)
    monkeypatch.setattr(cached, "packed_suffix_mask", whole_context)
    fast = qwen3_scorer.score(clip, TASK)
    assert np.abs(fast.log_p_true - slow.log_p_true)[:-1].max() > 100 * TOL


def test_packed_mask_shape_and_visibility():
    mask = cached.packed_suffix_mask([3, 5], context_len=6, suffix_len=2, dtype=torch.float32)
    allowed = mask[0, 0] == 0
    assert mask.shape == (1, 1, 4, 10)
    assert allowed[0, :3].all() and not allowed[0, 3:6].any()
    assert allowed[2, :5].all() and not allowed[2, 5]
    assert allowed[1, 6] and allowed[1, 7] and not allowed[0, 7]
    assert allowed[3, 8] and allowed[3, 9] and not allowed[3, 6]


def test_frames_off_the_patch_grid_are_refused(qwen3_scorer):
    with pytest.raises(ValueError, match="multiples of 32"):
        qwen3_scorer.score(_episode(20, 4, size=48), TASK)
