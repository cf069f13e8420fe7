"""Cached prefix scoring: one forward over the whole video, then every prefix's suffix in one batched pass.

Prefix k of the sampled video is a token-prefix of the full prompt (frames are sampled once per episode
and prefixes end on temporal blocks), the vision tower attends within blocks only, and the M-RoPE
positions of a truncated video equal the full video's. So the KV cache of the full context holds every
prefix's context: each prefix's text suffix attends to the cache up to its own cut, plus causally to
itself, at the positions it would have after its own truncated video. The K suffixes are packed into one
row with a 4-D additive mask instead of replicating the cache K times. Result: the same numbers as
``reference_scores`` (within float32 rounding) for about the price of one forward.

Only the forward passes run per episode. Token ids come from the processor's text path without pixel
work (:func:`~pipeline.scoring.inputs.encode_prompt_tokens`); the uint8 frames go to the device
(pinned, non-blocking on CUDA) and are patchified and normalised there; positions, cuts, masks and
readout indices depend only on the episode's token layout, so they are built once per layout and kept
on the device (:class:`ScoringPlan`), within a byte budget (long episodes have layouts of their own).

Long episodes (many prefixes, README "Reward resolution"): the suffix passes run from the longest
prefixes to the shortest, and before each pass the cache is cropped to the longest cut that pass needs,
so a pass attends to (and its mask spans) only the context its prefixes see, not the whole video. An
episode whose prefixes fit one pass (``scoring.suffix_chunk``, 16, at least ``prefixes.num``) is scored
by exactly the same operations as before. Suffix positions are read off the full prompt's positions
where the token after the cut is text (Qwen3-VL), checked against ``get_rope_index`` on the shortest
and a middle prefix; otherwise (Qwen2.5-VL) each comes from ``get_rope_index`` as before.
"""

from __future__ import annotations

import time
import warnings
from collections import OrderedDict, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline.frames.schedule import TEMPORAL_BLOCK
from pipeline.scoring.inputs import EpisodeClip, block_ends, encode_prompt_tokens, video_pixels
from pipeline.scoring.model import LoadedModel

# Plans kept per scorer. A plan holds its masks on the device (about 6 MB in fp32 for K=15 over 64
# frames at 256²); episodes of one dataset share a handful of layouts, so a few dozen cover them. A long
# episode's plan is larger (about 120 MB in fp32 for K=121 over 482 frames) and rarely shared, so the
# cache is also bounded in bytes: the least recently used plans go first, the newest always stays.
PLAN_CACHE_SIZE = 32
PLAN_CACHE_BYTES = 1 << 30


class StageClock:
    """Wall seconds per named stage, summed over calls; synchronises CUDA at each boundary.

    The synchronisation makes asynchronous device work count in the stage that launched it, so it is
    for measuring only: the pipeline scores without a clock.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)

    def sync(self) -> None:
        """Wait for the device (CUDA) to finish the work queued so far."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block as stage ``name``."""
        self.sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.seconds[name] += time.perf_counter() - start


def _stage(clock: StageClock | None, name: str) -> Any:
    return clock.stage(name) if clock is not None else nullcontext()


def suffix_positions(
    model: torch.nn.Module, tokens: dict[str, torch.Tensor], cut: int, blocks: int
) -> torch.Tensor:
    """M-RoPE positions (3, S) of the suffix as it would sit after a video truncated to ``blocks`` blocks.

    ``tokens`` holds the episode's ``input_ids`` (context, suffix, then the answer), token types and
    grid. Derived from the model's own ``get_rope_index`` on the prefix's tokens (integer work only), so
    it holds for any Qwen-VL family and version instead of a hand-written rule; never from
    ``rope_deltas``.
    """
    ids, types = tokens["input_ids"], tokens["mm_token_type_ids"]
    suffix = slice(tokens["context_len"], ids.shape[1] - 1)
    ids = torch.cat([ids[:, :cut], ids[:, suffix]], dim=1)
    types = torch.cat([types[:, :cut], types[:, suffix]], dim=1)
    grid = tokens["video_grid_thw"].clone()
    grid[0, 0] = blocks
    positions, _ = model.model.get_rope_index(ids, types, video_grid_thw=grid, **_rope_extra(tokens))
    return positions[:, 0, cut:]


def read_off_suffix_positions(
    full_positions: torch.Tensor, token_types: torch.Tensor, cut: int, context_len: int, suffix_len: int
) -> torch.Tensor | None:
    """The suffix's M-RoPE positions (3, S) after a cut at ``cut``, read off the full prompt; or None.

    Where the token at ``cut`` in the full prompt is text (Qwen3-VL: the next block's timestamp after a
    block's ``<|vision_end|>``), it continues the same text run the suffix would continue after the
    truncated video, so it has the position the suffix's first token would have, and the suffix's
    text tokens follow one by one on all three axes. None where that does not hold (the token after
    the cut or a suffix token is not text: Qwen2.5-VL's single run of video pads), so the caller asks
    ``get_rope_index``. :class:`CachedScorer` checks the result against ``get_rope_index`` per plan.

    Args:
        full_positions: ``get_rope_index`` of the full prompt, (3, 1, N).
        token_types: the full prompt's token types (N,), 0 = text.
        cut: where the prefix's context ends (a block end).
        context_len: where the full video's context ends (the suffix starts).
        suffix_len: the suffix's length (without the answer token).
    """
    if int(token_types[cut]) != 0 or bool(token_types[context_len : context_len + suffix_len].any()):
        return None
    start = full_positions[:, 0, cut]
    if not bool((start == start[0]).all()):
        return None
    return start[:, None] + torch.arange(suffix_len, dtype=full_positions.dtype)[None, :]


def _rope_extra(tokens: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {"second_per_grid_ts": tokens["second_per_grid_ts"]} if "second_per_grid_ts" in tokens else {}


def packed_suffix_mask(
    cuts: list[int], context_len: int, suffix_len: int, dtype: torch.dtype
) -> torch.Tensor:
    """Additive mask (1, 1, c*S, L + c*S): suffix i sees the context up to ``cuts[i]`` and itself causally.

    Built by comparing column indices with per-row bounds (one pass over the mask, not one per suffix:
    a long episode's masks span tens of thousands of columns).
    """
    count = len(cuts)
    rows = torch.arange(count * suffix_len)
    cols = torch.arange(context_len + count * suffix_len)[None, :]
    row_cut = torch.tensor(cuts, dtype=torch.long).repeat_interleave(suffix_len)[:, None]
    own_start = (context_len + (rows // suffix_len) * suffix_len)[:, None]
    own_last = (context_len + rows)[:, None]  # row r is token r % S of its suffix: it sees up to itself
    allow = (cols < row_cut) | ((cols >= own_start) & (cols <= own_last))
    mask = torch.zeros(allow.shape, dtype=dtype).masked_fill_(~allow, torch.finfo(dtype).min)
    return mask[None, None]


@dataclass(frozen=True)
class Layout:
    """What an episode's positions, cuts and masks depend on: the plan cache's key.

    M-RoPE positions follow from the token types (text or video), the video grid and, for Qwen2.5-VL,
    the seconds per temporal patch; never from the token ids themselves, so episodes whose timestamps
    differ in text but not in token count share a plan.
    """

    token_types: bytes
    grid: tuple[int, ...]
    second_per_grid: tuple[float, ...]
    cuts: tuple[int, ...]
    blocks: tuple[int, ...]


@dataclass(frozen=True)
class SuffixChunk:
    """One packed suffix pass: its positions, mask and readout rows, on the device.

    ``keep`` is the context the pass needs: the longest cut among its prefixes. The cache is cropped to
    it before the pass (passes run from the longest prefixes down, so nothing cropped is needed again).
    """

    count: int
    keep: int
    positions: torch.Tensor
    mask: torch.Tensor
    readout: torch.Tensor


@dataclass(frozen=True)
class ScoringPlan:
    """The context's positions and every suffix chunk of one layout, on the device.

    ``chunks`` are in the order they run: from the longest prefixes to the shortest.
    """

    context_positions: torch.Tensor
    chunks: tuple[SuffixChunk, ...]

    @property
    def nbytes(self) -> int:
        """Bytes the plan's tensors hold."""
        tensors = [self.context_positions]
        for chunk in self.chunks:
            tensors += [chunk.positions, chunk.mask, chunk.readout]
        return sum(t.numel() * t.element_size() for t in tensors)


class CachedScorer:
    """Scores episodes with one context forward plus packed suffix passes; keeps plans per layout."""

    def __init__(
        self, loaded: LoadedModel, suffix_chunk: int = 16, plan_cache_bytes: int = PLAN_CACHE_BYTES
    ) -> None:
        self.loaded = loaded
        self.suffix_chunk = suffix_chunk
        self.plan_cache_bytes = plan_cache_bytes
        self.plans: OrderedDict[Layout, ScoringPlan] = OrderedDict()
        tokenizer = loaded.processor.tokenizer
        self._video_token = tokenizer.convert_tokens_to_ids(loaded.processor.video_token)
        self._vision_end = tokenizer.convert_tokens_to_ids("<|vision_end|>")

    def _plan(self, layout: Layout, tokens: dict[str, Any]) -> ScoringPlan:
        plan = self.plans.get(layout)
        if plan is not None:
            self.plans.move_to_end(layout)
            return plan
        model, device, context_len = self.loaded.model, self.loaded.device, tokens["context_len"]
        suffix_len = tokens["input_ids"].shape[1] - 1 - context_len
        full_positions, _ = model.model.get_rope_index(
            tokens["input_ids"],
            tokens["mm_token_type_ids"],
            video_grid_thw=tokens["video_grid_thw"],
            **_rope_extra(tokens),
        )
        all_positions = self._all_suffix_positions(layout, tokens, full_positions, suffix_len)
        chunks = []
        starts = range(0, len(layout.cuts), self.suffix_chunk)
        for start in reversed(starts):  # longest prefixes first: the cache only ever shrinks
            cuts = list(layout.cuts[start : start + self.suffix_chunk])
            keep = max(cuts)
            positions = torch.cat(all_positions[start : start + self.suffix_chunk], 1)
            chunks.append(
                SuffixChunk(
                    count=len(cuts),
                    keep=keep,
                    positions=positions[:, None].to(device),
                    mask=packed_suffix_mask(cuts, keep, suffix_len, self.loaded.dtype).to(device),
                    readout=torch.tensor([(i + 1) * suffix_len - 1 for i in range(len(cuts))], device=device),
                )
            )
        plan = ScoringPlan(full_positions[:, :, :context_len].to(device), tuple(chunks))
        self.plans[layout] = plan
        while len(self.plans) > 1 and (
            len(self.plans) > PLAN_CACHE_SIZE
            or sum(p.nbytes for p in self.plans.values()) > self.plan_cache_bytes
        ):
            self.plans.popitem(last=False)
        return plan

    def _all_suffix_positions(
        self, layout: Layout, tokens: dict[str, Any], full_positions: torch.Tensor, suffix_len: int
    ) -> list[torch.Tensor]:
        """Every prefix's suffix positions (3, S), read off the full prompt where that is checked exact.

        ``get_rope_index`` per prefix is integer work but walks the whole prefix in Python: seconds
        for a long episode's hundred-odd prefixes. Read-offs are checked against it on the shortest
        prefix and a middle one; a mismatch (or a layout where they do not apply) takes the per-prefix
        path for every prefix.
        """
        model, context_len = self.loaded.model, tokens["context_len"]
        types = tokens["mm_token_type_ids"][0]
        pairs = list(zip(layout.cuts, layout.blocks, strict=True))
        read = [
            read_off_suffix_positions(full_positions, types, cut, context_len, suffix_len) for cut, _ in pairs
        ]
        found = [r for r in read if r is not None]
        if len(found) == len(pairs):
            checks = sorted({0, len(pairs) // 2})
            if all(torch.equal(found[i], suffix_positions(model, tokens, *pairs[i])) for i in checks):
                return found
        return [suffix_positions(model, tokens, cut, b) for cut, b in pairs]

    def _tokens(self, prompt: str, clip: EpisodeClip) -> tuple[dict[str, Any], Layout]:
        tokens: dict[str, Any] = encode_prompt_tokens(self.loaded.processor, prompt, clip)
        num_blocks = int(tokens["video_grid_thw"][0, 0])
        ends = block_ends(tokens["input_ids"], self._video_token, self._vision_end, num_blocks)
        tokens["context_len"] = int(ends[-1])
        blocks = tuple(int(end) // TEMPORAL_BLOCK for end in clip.prefix_ends)
        layout = Layout(
            token_types=tokens["mm_token_type_ids"].numpy().tobytes(),
            grid=tuple(tokens["video_grid_thw"][0].tolist()),
            second_per_grid=tuple(_rope_extra(tokens).get("second_per_grid_ts", torch.zeros(0)).tolist()),
            cuts=tuple(int(ends[b - 1]) for b in blocks),
            blocks=blocks,
        )
        return tokens, layout

    def _frames_to_device(self, frames: np.ndarray) -> torch.Tensor:
        frames = np.ascontiguousarray(frames)
        if self.loaded.device.type == "cuda":
            with warnings.catch_warnings():
                # Frames from Ray's object store are read-only; this tensor is only read, into a copy.
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                host = torch.from_numpy(frames)
            # Page-locked memory lets the copy run asynchronously with the host's next steps.
            return host.pin_memory().to(self.loaded.device, non_blocking=True)
        # On the CPU the tensor is the model's input itself: never a view of read-only memory.
        return torch.from_numpy(frames if frames.flags.writeable else frames.copy())

    @torch.inference_mode()
    def __call__(
        self, prompt: str, clip: EpisodeClip, false_id: int, clock: StageClock | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """log P(answer) and log P(false answer) for every prefix, from one context forward.

        Args:
            prompt: the full prompt ending in the scored answer token.
            clip: the episode's sampled frames, raw indices, timing and prefix ends.
            false_id: token id of the companion answer.
            clock: records the time of each stage (benchmarks); None in the pipeline.
        """
        model, device = self.loaded.model, self.loaded.device
        with _stage(clock, "tokens and layout"):
            tokens, layout = self._tokens(prompt, clip)
            context_len = tokens["context_len"]
            target_id = int(tokens["input_ids"][0, -1])
        with _stage(clock, "plan (positions, masks)"):
            plan = self._plan(layout, tokens)
        with _stage(clock, "host to device"):
            frames = self._frames_to_device(clip.frames)
            ids = tokens["input_ids"][0].to(device, non_blocking=True)
            grid = tokens["video_grid_thw"].to(device)
            extra = {k: v.to(device) for k, v in _rope_extra(tokens).items()}
        with _stage(clock, "pixels (patchify, normalise)"):
            pixels = video_pixels(self.loaded.processor.video_processor, frames)
        with _stage(clock, "context forward"):
            cache = model(
                input_ids=ids[None, :context_len],
                position_ids=plan.context_positions,
                pixel_values_videos=pixels,
                video_grid_thw=grid,
                **extra,
                use_cache=True,
                logits_to_keep=1,
            ).cache
        suffix_ids = ids[context_len:-1]
        picked = []
        cached_len = context_len
        for chunk in plan.chunks:
            with _stage(clock, "suffix forward"):
                if chunk.keep < cached_len:
                    # Shorter prefixes never see past their own cuts: drop the context beyond them.
                    cache.crop(chunk.keep - cached_len)
                    cached_len = chunk.keep
                logits = model(
                    input_ids=suffix_ids.repeat(chunk.count)[None],
                    position_ids=chunk.positions,
                    attention_mask=chunk.mask,
                    cache=cache,
                    use_cache=True,
                    logits_to_keep=chunk.readout,
                ).logits
                # Drop the suffix keys/values so the cache holds the context alone for the next chunk.
                cache.crop(-chunk.count * len(suffix_ids))
            with _stage(clock, "log-softmax and readout"):
                logp = torch.log_softmax(logits[0].float(), dim=-1)
                picked.append(logp[:, [target_id, false_id]])
        with _stage(clock, "log-softmax and readout"):
            # One device-to-host copy per episode: the only point the host waits for the device. The
            # passes ran longest prefixes first; back to prefix order.
            scores = torch.cat(picked[::-1]).double().cpu().numpy()
        return scores[:, 0], scores[:, 1]
