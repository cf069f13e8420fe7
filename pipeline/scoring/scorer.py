"""The scorer the pipeline calls: a loaded VLM that turns one episode's frames into per-prefix log-probs."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from pipeline.config import ModelConfig, ScoringConfig
from pipeline.scoring.cached import CachedScorer, StageClock
from pipeline.scoring.inputs import EpisodeClip
from pipeline.scoring.model import load_model
from pipeline.scoring.prompt import build_prompt, check_answer_token, false_token_id
from pipeline.scoring.reference import reference_scores


@dataclass(frozen=True)
class PrefixScores:
    """Raw log P("True") and log P(" False") of each prefix, in prefix order."""

    log_p_true: np.ndarray
    log_p_false: np.ndarray


class PrefixScorer:
    """Holds the model and processor (loaded once) and scores episodes with the cached method."""

    def __init__(self, model: ModelConfig, scoring: ScoringConfig) -> None:
        self.model_config = model
        self.scoring = scoring
        self.loaded = load_model(model)
        self.false_id = false_token_id(self.loaded.processor, scoring)
        self.cached = CachedScorer(self.loaded, scoring.suffix_chunk)
        self._prompt = lru_cache(maxsize=256)(self._build_prompt)

    def _build_prompt(self, instruction: str) -> str:
        prompt = build_prompt(self.loaded.processor, instruction, self.scoring)
        last = self.loaded.processor.tokenizer.encode(prompt, add_special_tokens=False)[-1]
        check_answer_token(self.loaded.processor, last, self.scoring)
        return prompt

    def score(self, clip: EpisodeClip, instruction: str, clock: StageClock | None = None) -> PrefixScores:
        """Score every prefix of one episode: one context forward plus batched suffix passes.

        Args:
            clip: sampled frames (N, H, W, 3) uint8 with N even and H, W multiples of the model's patch
                grid, their raw indices (real timestamps), the raw fps and length, and the prefix ends
                (even sampled-frame counts, ascending, the last equal to N).
            instruction: the task text.
            clock: records the time of each scoring stage (benchmarks); None in the pipeline.
        """
        true_lp, false_lp = self.cached(self._prompt(instruction), clip, self.false_id, clock)
        return PrefixScores(true_lp, false_lp)

    def score_reference(self, clip: EpisodeClip, instruction: str) -> PrefixScores:
        """The same scores by one full forward per prefix (slow; the ground truth)."""
        true_lp, false_lp = reference_scores(self.loaded, self._prompt(instruction), clip, self.false_id)
        return PrefixScores(true_lp, false_lp)
