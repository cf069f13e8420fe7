"""bfloat16 scoring exercised on CPU: cached vs reference within bf16 rounding, and bf16 progress vs fp32.

Measured on the tiny Qwen3-VL (these clips and two more, 64x64, K=8 and 15): max |cached - reference|
log-prob 7.7e-3 (the prototype saw 1.3e-2 at its shapes), bf16 vs fp32 raw log P("True") up to 1.6e-2,
progress Spearman(bf16, fp32) 1.000 and identical VOC on every clip. The two paths run the same weights
through different shapes (one context forward plus packed suffixes vs one forward per prefix), so bf16
rounds their sums differently: one bf16 ulp of a logit between 2 and 4 is 2^-6 = 1.6e-2 in log P.
The bound, 3e-2, is two such ulps: about 4x the largest difference measured; a real error (wrong
positions or masks) moves scores by 0.1-0.7 (tests/test_scoring_exact.py controls).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from pipeline.config import ModelConfig, ScoringConfig
from pipeline.frames.schedule import episode_schedule
from pipeline.labels import minmax_normalize, value_order_correlation
from pipeline.scoring.inputs import EpisodeClip
from pipeline.scoring.scorer import PrefixScorer

BF16_BOUND = 3e-2
RAW_FPS = 10.0
TASK = "pick up the red cube"
CLIPS = [(61, 8, 0), (150, 15, 1)]  # raw length, prefixes, seed


def _clip(num_raw: int, num_prefixes: int, seed: int) -> EpisodeClip:
    schedule = episode_schedule(num_raw, RAW_FPS, 2.0, 16, num_prefixes)
    frames = np.random.default_rng(seed).integers(
        0, 256, (len(schedule.raw_indices), 64, 64, 3), dtype=np.uint8
    )
    return EpisodeClip(frames, schedule.raw_indices, RAW_FPS, num_raw, schedule.prefix_ends)


@pytest.fixture(scope="module")
def scorers(tiny_model_dir):
    def load(dtype: str) -> PrefixScorer:
        return PrefixScorer(ModelConfig(path=str(tiny_model_dir), dtype=dtype, device="cpu"), ScoringConfig())

    return load("bfloat16"), load("float32")


@pytest.mark.parametrize(("num_raw", "num_prefixes", "seed"), CLIPS)
def test_bf16_cached_matches_reference_within_rounding(scorers, num_raw, num_prefixes, seed):
    bf16, _ = scorers
    assert bf16.loaded.dtype == torch.bfloat16
    assert next(bf16.loaded.model.parameters()).dtype == torch.bfloat16
    clip = _clip(num_raw, num_prefixes, seed)
    fast, slow = bf16.score(clip, TASK), bf16.score_reference(clip, TASK)
    diff = max(
        np.abs(fast.log_p_true - slow.log_p_true).max(), np.abs(fast.log_p_false - slow.log_p_false).max()
    )
    print(f"bf16 max |cached - reference| = {diff:.2e}")
    # Above fp32 rounding (~1e-6): bf16 really ran. Below two bf16 ulps of the logits: no real error.
    assert 1e-4 < diff < BF16_BOUND


@pytest.mark.parametrize(("num_raw", "num_prefixes", "seed"), CLIPS)
def test_bf16_progress_agrees_with_fp32(scorers, num_raw, num_prefixes, seed):
    bf16, fp32 = scorers
    clip = _clip(num_raw, num_prefixes, seed)
    low, full = bf16.score(clip, TASK).log_p_true, fp32.score(clip, TASK).log_p_true
    assert np.abs(low - full).max() < 2 * BF16_BOUND
    progress_low, progress_full = minmax_normalize(low), minmax_normalize(full)
    rho = spearmanr(progress_low, progress_full).statistic
    voc_low, voc_full = value_order_correlation(progress_low), value_order_correlation(progress_full)
    print(f"bf16 vs fp32: Spearman {rho:.3f}, VOC {voc_low:.3f} vs {voc_full:.3f}")
    assert rho >= 0.95
    assert abs(voc_low - voc_full) <= 0.05
