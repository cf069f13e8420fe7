"""Reference scorer: one full forward per prefix, exactly as a user would write it from the paper.

It is the ground truth the cached scorer is tested against, and the baseline of the benchmark.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.scoring.inputs import EpisodeClip, encode_video_prompt
from pipeline.scoring.model import LoadedModel


@torch.inference_mode()
def reference_scores(
    loaded: LoadedModel, prompt: str, clip: EpisodeClip, false_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """log P(answer) and log P(false answer) at the last position, one processor + forward per prefix.

    Args:
        loaded: model, processor and device.
        prompt: the full prompt ending in the scored answer token.
        clip: the episode's sampled frames, their raw indices and timing, and the prefix ends.
        false_id: token id of the companion answer.
    """
    true_lp, false_lp = [], []
    for end in clip.prefix_ends:
        batch = encode_video_prompt(
            loaded.processor,
            prompt,
            clip.frames[:end],
            clip.raw_indices[:end],
            clip.raw_fps,
            clip.sampled_fps,
        )
        batch = {k: v.to(loaded.device) for k, v in batch.items()}
        logits = loaded.model(**batch, logits_to_keep=2).logits[0, 0].float()
        logp = torch.log_softmax(logits, dim=-1)
        true_lp.append(float(logp[batch["input_ids"][0, -1]]))
        false_lp.append(float(logp[false_id]))
    return np.array(true_lp), np.array(false_lp)
