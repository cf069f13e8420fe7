"""The cached scorer gives the reference (one forward per prefix) numbers, for both Qwen-VL families."""

import numpy as np
import pytest
import torch

import pipeline.scoring.cached as cached
from pipeline.config import ModelConfig, ScoringConfig
from pipeline.frames.schedule import episode_schedule
from pipeline.scoring.inputs import EpisodeClip, encode_prompt_tokens, encode_video_prompt, video_pixels
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

    def from_full_video(model, tokens, cut, blocks):
        return original(model, tokens, tokens["context_len"], int(tokens["video_grid_thw"][0, 0]))

    clip = _episode(61, 8, size=64)
    _, slow = _both(qwen3_scorer, clip)
    monkeypatch.setattr(cached, "suffix_positions", from_full_video)
    qwen3_scorer.cached.plans.clear()  # plans are built once per layout: rebuild with the broken rule
    fast = qwen3_scorer.score(clip, TASK)
    qwen3_scorer.cached.plans.clear()
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
    qwen3_scorer.cached.plans.clear()
    fast = qwen3_scorer.score(clip, TASK)
    qwen3_scorer.cached.plans.clear()
    assert np.abs(fast.log_p_true - slow.log_p_true)[:-1].max() > 100 * TOL


def test_plan_is_shared_by_episodes_of_one_layout(tiny_model_dir):
    """Other frames and other timestamps of the same token layout reuse the plan, and stay exact."""
    scorer = PrefixScorer(ModelConfig(path=str(tiny_model_dir)), ScoringConfig())
    first = _episode(61, 8, size=64, seed=1)
    # Same frame count and prefix ends, frames from other raw indices: other pixels, other timestamps.
    second = EpisodeClip(
        _episode(61, 8, size=64, seed=2).frames, first.raw_indices + 1, RAW_FPS, 62, first.prefix_ends
    )
    scorer.score(first, TASK)
    fast, slow = _both(scorer, second)
    assert len(scorer.cached.plans) == 1
    np.testing.assert_allclose(fast.log_p_true, slow.log_p_true, rtol=0, atol=TOL)
    longer = _episode(300, 8, size=64, seed=3)
    fast, slow = _both(scorer, longer)
    assert len(scorer.cached.plans) == 2
    np.testing.assert_allclose(fast.log_p_true, slow.log_p_true, rtol=0, atol=TOL)


@pytest.mark.parametrize("family", ["qwen3", "qwen25"])
@pytest.mark.parametrize(("num_raw", "raw_fps"), [(37, 10.0), (2, 10.0), (300, 10.0), (1000, 30.0)])
def test_model_inputs_equal_the_processors(request, family, num_raw, raw_fps):
    """Token ids, types, grid, seconds per patch and pixels built without the processor call are its own."""
    scorer = request.getfixturevalue(f"{family}_scorer")
    processor = scorer.loaded.processor
    schedule = episode_schedule(num_raw, raw_fps, 2.0, 16, 15)
    size = 64 if family == "qwen3" else 56
    frames = np.random.default_rng(num_raw).integers(
        0, 256, (len(schedule.raw_indices), size, size, 3), dtype=np.uint8
    )
    clip = EpisodeClip(frames, schedule.raw_indices, raw_fps, num_raw, schedule.prefix_ends)
    prompt = scorer._prompt(TASK)
    expected = encode_video_prompt(processor, prompt, frames, clip.raw_indices, raw_fps, clip.sampled_fps)
    built = encode_prompt_tokens(processor, prompt, clip)
    built["pixel_values_videos"] = video_pixels(processor.video_processor, torch.from_numpy(frames))
    assert set(expected) - {"attention_mask"} == set(built)
    for key, value in built.items():
        assert value.dtype == expected[key].dtype, key
        assert torch.equal(value, expected[key]), key


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


# Reward resolution (README "Reward resolution"): a long episode gets more frames and prefixes. Its
# suffix passes run longest prefixes first on a cache cropped to each pass's longest cut, and its
# suffix positions are read off the full prompt; both must stay exact per prefix.
RESOLUTION = {"min_fps": 0.8, "max_frames_long": 768, "max_spacing_s": 5.0}


def _long_episode(num_raw: int, size: int, seed: int = 0) -> EpisodeClip:
    schedule = episode_schedule(num_raw, RAW_FPS, 2.0, 16, 15, **RESOLUTION)
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (len(schedule.raw_indices), size, size, 3), dtype=np.uint8)
    return EpisodeClip(frames, schedule.raw_indices, RAW_FPS, num_raw, schedule.prefix_ends)


def test_qwen3_long_episode_cached_equals_reference(qwen3_scorer):
    clip = _long_episode(1201, size=64)  # 2 min at 10 fps: 98 frames, 25 prefixes, 9 passes of 3
    assert (len(clip.frames), len(clip.prefix_ends)) == (98, 25)
    fast, slow = _both(qwen3_scorer, clip)
    np.testing.assert_allclose(fast.log_p_true, slow.log_p_true, rtol=0, atol=TOL)
    np.testing.assert_allclose(fast.log_p_false, slow.log_p_false, rtol=0, atol=TOL)


def test_qwen25_long_episode_cached_equals_reference(qwen25_scorer):
    clip = _long_episode(901, size=56)  # 90 s: positions come from get_rope_index per prefix
    assert len(clip.prefix_ends) > 15
    fast, slow = _both(qwen25_scorer, clip)
    np.testing.assert_allclose(fast.log_p_true, slow.log_p_true, rtol=0, atol=TOL)
    np.testing.assert_allclose(fast.log_p_false, slow.log_p_false, rtol=0, atol=TOL)


@pytest.mark.parametrize("family", ["qwen3", "qwen25"])
def test_read_off_suffix_positions_are_get_rope_index(request, family):
    """Qwen3-VL: read off for every prefix and equal to get_rope_index; Qwen2.5-VL: not read off."""
    scorer = request.getfixturevalue(f"{family}_scorer")
    clip = _long_episode(901, size=64 if family == "qwen3" else 56)
    tokens, layout = scorer.cached._tokens(scorer._prompt(TASK), clip)
    model, context_len = scorer.loaded.model, tokens["context_len"]
    suffix_len = tokens["input_ids"].shape[1] - 1 - context_len
    full, _ = model.model.get_rope_index(
        tokens["input_ids"], tokens["mm_token_type_ids"], video_grid_thw=tokens["video_grid_thw"],
        **cached._rope_extra(tokens),
    )  # fmt: skip
    types = tokens["mm_token_type_ids"][0]
    for cut, blocks in zip(layout.cuts, layout.blocks, strict=True):
        read = cached.read_off_suffix_positions(full, types, cut, context_len, suffix_len)
        if family == "qwen25" and cut < context_len:
            assert read is None
        else:
            assert torch.equal(read, cached.suffix_positions(model, tokens, cut, blocks))


def test_passes_run_longest_first_and_one_pass_is_uncropped(qwen3_scorer, tiny_model_dir):
    clip = _long_episode(1801, size=64)
    tokens, layout = qwen3_scorer.cached._tokens(qwen3_scorer._prompt(TASK), clip)
    plan = qwen3_scorer.cached._plan(layout, tokens)
    keeps = [chunk.keep for chunk in plan.chunks]
    assert keeps[0] == tokens["context_len"] and keeps == sorted(keeps, reverse=True)
    assert sum(chunk.count for chunk in plan.chunks) == len(clip.prefix_ends)
    # K <= suffix_chunk: one pass over the whole context, as before passes were cropped.
    one = PrefixScorer(ModelConfig(path=str(tiny_model_dir)), ScoringConfig(suffix_chunk=16))
    short = _episode(61, 15, size=64)
    tokens, layout = one.cached._tokens(one._prompt(TASK), short)
    (chunk,) = one.cached._plan(layout, tokens).chunks
    assert chunk.keep == tokens["context_len"] and chunk.count == len(short.prefix_ends)


def test_plan_cache_is_bounded_in_bytes(tiny_model_dir):
    scorer = PrefixScorer(ModelConfig(path=str(tiny_model_dir)), ScoringConfig(suffix_chunk=4))
    scorer.cached.plan_cache_bytes = 1  # every plan is over budget: only the newest stays
    for num_raw in (301, 601, 901):
        fast, slow = _both(scorer, _long_episode(num_raw, size=64))
        np.testing.assert_allclose(fast.log_p_true, slow.log_p_true, rtol=0, atol=TOL)
        assert len(scorer.cached.plans) == 1
    assert next(iter(scorer.cached.plans.values())).nbytes > 0


def test_read_only_frames_score_the_same_without_a_warning(qwen3_scorer):
    """Frames that arrive through Ray's object store are read-only: scored as a writable copy would be,
    with no PyTorch warning in the actor's log."""
    import warnings

    clip = _episode(37, 4, size=64)
    frozen = clip.frames.copy()
    frozen.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_only = qwen3_scorer.score(
            EpisodeClip(frozen, clip.raw_indices, clip.raw_fps, clip.num_raw, clip.prefix_ends), TASK
        )
    np.testing.assert_array_equal(read_only.log_p_true, qwen3_scorer.score(clip, TASK).log_p_true)
