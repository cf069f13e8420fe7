"""Cached prefix scoring: one forward over the whole video, then every prefix's suffix in one batched pass.

Prefix k of the sampled video is a token-prefix of the full prompt (frames are sampled once per episode
and prefixes end on temporal blocks), the vision tower attends within blocks only, and the M-RoPE
positions of a truncated video equal the full video's. So the KV cache of the full context holds every
prefix's context: each prefix's text suffix attends to the cache up to its own cut, plus causally to
itself, at the positions it would have after its own truncated video. The K suffixes are packed into one
row with a 4-D additive mask instead of replicating the cache K times. Result: the same numbers as
``reference_scores`` (within float32 rounding) for about the price of one forward.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.frames.schedule import TEMPORAL_BLOCK
from pipeline.scoring.inputs import EpisodeClip, block_ends, encode_video_prompt
from pipeline.scoring.model import LoadedModel


def suffix_positions(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    cut: int,
    blocks: int,
    suffix_ids: torch.Tensor,
) -> torch.Tensor:
    """M-RoPE positions (3, S) of the suffix as it would sit after a video truncated to ``blocks`` blocks.

    Derived from the model's own ``get_rope_index`` on the prefix's token ids (integer work only), so it
    holds for any Qwen-VL family and version instead of a hand-written rule; never from ``rope_deltas``.
    """
    ids = torch.cat([batch["input_ids"][:, :cut], suffix_ids[None]], dim=1)
    mm = torch.cat([batch["mm_token_type_ids"][:, :cut], torch.zeros_like(suffix_ids)[None]], dim=1)
    grid = batch["video_grid_thw"].clone()
    grid[0, 0] = blocks
    extra = {"second_per_grid_ts": batch["second_per_grid_ts"]} if "second_per_grid_ts" in batch else {}
    positions, _ = model.model.get_rope_index(ids, mm, video_grid_thw=grid, **extra)
    return positions[:, 0, -suffix_ids.numel() :]


def packed_suffix_mask(
    cuts: list[int], context_len: int, suffix_len: int, dtype: torch.dtype
) -> torch.Tensor:
    """Additive mask (1, 1, c*S, L + c*S): suffix i sees the context up to ``cuts[i]`` and itself causally."""
    count = len(cuts)
    allow = torch.zeros(count * suffix_len, context_len + count * suffix_len, dtype=torch.bool)
    causal = torch.ones(suffix_len, suffix_len, dtype=torch.bool).tril()
    for i, cut in enumerate(cuts):
        rows = slice(i * suffix_len, (i + 1) * suffix_len)
        allow[rows, :cut] = True
        own = context_len + i * suffix_len
        allow[rows, own : own + suffix_len] = causal
    mask = torch.zeros(allow.shape, dtype=dtype).masked_fill(~allow, torch.finfo(dtype).min)
    return mask[None, None]


@torch.inference_mode()
def cached_scores(
    loaded: LoadedModel, prompt: str, clip: EpisodeClip, false_id: int, suffix_chunk: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """log P(answer) and log P(false answer) for every prefix, from one context forward.

    Arguments are those of ``reference_scores``; ``suffix_chunk`` bounds how many suffixes share one pass
    (memory grows with chunk x suffix length x context length in the mask and attention).
    """
    model, processor, device = loaded.model, loaded.processor, loaded.device
    batch = encode_video_prompt(
        processor, prompt, clip.frames, clip.raw_indices, clip.raw_fps, clip.sampled_fps
    )
    num_blocks = int(batch["video_grid_thw"][0, 0])
    tokenizer = processor.tokenizer
    ends = block_ends(
        batch["input_ids"],
        tokenizer.convert_tokens_to_ids(processor.video_token),
        tokenizer.convert_tokens_to_ids("<|vision_end|>"),
        num_blocks,
    )
    context_len = int(ends[-1])
    full_positions, _ = model.model.get_rope_index(
        batch["input_ids"],
        batch["mm_token_type_ids"],
        video_grid_thw=batch["video_grid_thw"],
        **({"second_per_grid_ts": batch["second_per_grid_ts"]} if "second_per_grid_ts" in batch else {}),
    )
    # The answer token is the target, not an input: the logits before it are what is scored.
    suffix_ids = batch["input_ids"][0, context_len:-1]
    target_id = int(batch["input_ids"][0, -1])
    suffix_len = suffix_ids.numel()

    context = model(
        input_ids=batch["input_ids"][:, :context_len].to(device),
        position_ids=full_positions[:, :, :context_len].to(device),
        pixel_values_videos=batch["pixel_values_videos"].to(device),
        video_grid_thw=batch["video_grid_thw"].to(device),
        **({"second_per_grid_ts": batch["second_per_grid_ts"]} if "second_per_grid_ts" in batch else {}),
        use_cache=True,
        logits_to_keep=1,
    )
    cache = context.cache

    blocks_per_prefix = [int(end) // TEMPORAL_BLOCK for end in clip.prefix_ends]
    true_lp: list[np.ndarray] = []
    false_lp: list[np.ndarray] = []
    for start in range(0, len(blocks_per_prefix), suffix_chunk):
        chunk = blocks_per_prefix[start : start + suffix_chunk]
        cuts = [int(ends[b - 1]) for b in chunk]
        positions = torch.cat(
            [suffix_positions(model, batch, cut, b, suffix_ids) for cut, b in zip(cuts, chunk, strict=True)],
            1,
        )
        mask = packed_suffix_mask(cuts, context_len, suffix_len, loaded.dtype)
        readout = torch.tensor([i * suffix_len + suffix_len - 1 for i in range(len(chunk))])
        out = model(
            input_ids=suffix_ids.repeat(len(chunk))[None].to(device),
            position_ids=positions[:, None].to(device),
            attention_mask=mask.to(device),
            cache=cache,
            use_cache=True,
            logits_to_keep=readout.to(device),
        )
        # Drop the suffix keys/values so the cache holds the context alone for the next chunk.
        cache.crop(-len(chunk) * suffix_len)
        logp = torch.log_softmax(out.logits[0].float(), dim=-1)
        true_lp.append(logp[:, target_id].cpu().numpy())
        false_lp.append(logp[:, false_id].cpu().numpy())
    return np.concatenate(true_lp).astype(np.float64), np.concatenate(false_lp).astype(np.float64)
