"""Turning one episode's frames and prompt into model inputs, and locating its temporal blocks.

Two ways to the same tensors: :func:`encode_video_prompt` calls the Hugging Face processor on the frames
and the prompt (what a user writes; the reference scorer and the tests use it), while the pipeline's
scorer splits that work so that nothing heavy runs on the host: :func:`encode_prompt_tokens` produces the
processor's token ids, token types and video grid from the frame count and size alone, and
:func:`video_pixels` turns uint8 frames into the processor's ``pixel_values_videos`` with the video
processor's own patchify and rescale-and-normalise, on whatever device the frames are on. The tests
check both against the processor, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers.video_utils import make_batched_metadata


@dataclass(frozen=True)
class EpisodeClip:
    """One episode as the scorers take it: sampled frames, their raw indices, timing, prefix ends."""

    frames: np.ndarray
    raw_indices: np.ndarray
    raw_fps: float
    num_raw: int
    prefix_ends: np.ndarray

    @property
    def sampled_fps(self) -> float:
        """The episode's sampling rate (the same for the full video and every prefix)."""
        return len(self.frames) * self.raw_fps / self.num_raw

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> EpisodeClip:
        """The clip of a decoded pipeline row (``pipeline.frames.decode.decode_episode`` output)."""
        return cls(
            frames=np.asarray(row["frames"]),
            raw_indices=np.asarray(row["frame_indices"]),
            raw_fps=float(row["fps"]),
            num_raw=int(row["length"]),
            prefix_ends=np.asarray(row["prefix_ends"]),
        )


def _video_metadata(raw_indices: np.ndarray, raw_fps: float, sampled_fps: float) -> dict[str, Any]:
    """The metadata that pins timestamps and sampling rate (see :func:`encode_video_prompt`)."""
    return {
        "fps": float(raw_fps),
        "total_num_frames": len(raw_indices) * raw_fps / sampled_fps,
        "frames_indices": [int(i) for i in raw_indices],
    }


def _check_patch_grid(processor: Any, height: int, width: int) -> None:
    factor = processor.video_processor.patch_size * processor.video_processor.merge_size
    if height % factor or width % factor:
        raise ValueError(f"frames are {height}x{width}; the model needs multiples of {factor}")


def encode_video_prompt(
    processor: Any,
    prompt: str,
    frames: np.ndarray,
    raw_indices: np.ndarray,
    raw_fps: float,
    sampled_fps: float,
) -> dict[str, torch.Tensor]:
    """Run the processor on one prompt and its already-sampled, already-resized frames.

    Sampling and resizing are pinned here because the processor's defaults would resample the frames
    and pick a resolution from the frame count, so a prefix would not be a truncation of the video.
    The original frame indices and the raw fps give the real timestamps (Qwen3-VL). The clip's length
    is stated so that its sampling rate is the episode's, ``sampled_fps``, for the whole video and for
    every prefix alike: Qwen2.5-VL scales temporal positions by it.
    """
    _check_patch_grid(processor, *frames.shape[1:3])
    batch = processor(
        text=[prompt],
        videos=[frames],
        video_metadata=[_video_metadata(raw_indices, raw_fps, sampled_fps)],
        do_sample_frames=False,
        do_resize=False,
        cap_pixels_per_frame=False,
        return_tensors="pt",
    )
    batch.pop("video_metadata", None)
    return dict(batch)


def encode_prompt_tokens(processor: Any, prompt: str, clip: EpisodeClip) -> dict[str, torch.Tensor]:
    """The processor's text-side outputs for ``prompt`` and ``clip``, without touching a pixel.

    ``input_ids``, ``mm_token_type_ids``, ``video_grid_thw`` and, for Qwen2.5-VL, ``second_per_grid_ts``
    depend on the frames only through their count and size, so they are built from those with the
    processor's own placeholder expansion (``replace_video_token``: timestamps and one pad per merged
    patch), text replacement and tokenizer; only the pixel work of ``processor(...)`` is skipped.
    """
    frames = clip.frames
    height, width = frames.shape[1:3]
    _check_patch_grid(processor, height, width)
    vp = processor.video_processor
    grid = torch.tensor(
        [[math.ceil(len(frames) / vp.temporal_patch_size), height // vp.patch_size, width // vp.patch_size]]
    )
    metadata = make_batched_metadata(
        [frames], video_metadata=[_video_metadata(clip.raw_indices, clip.raw_fps, clip.sampled_fps)]
    )
    videos = {"video_grid_thw": grid, "video_metadata": metadata}
    replacement = processor.replace_video_token(videos, video_idx=0)
    text, _ = processor.get_text_with_replacements([prompt], videos_replacements=[replacement])
    input_ids = processor.tokenizer(text, return_tensors="pt")["input_ids"]
    out = {
        "input_ids": input_ids,
        "mm_token_type_ids": torch.tensor(processor.create_mm_token_type_ids(input_ids.tolist())),
        "video_grid_thw": grid,
    }
    if "second_per_grid_ts" in processor.model_input_names:
        # Qwen2.5-VL's processor adds the temporal patch's duration at the sampled rate.
        out["second_per_grid_ts"] = torch.tensor([vp.temporal_patch_size / metadata[0].sampled_fps])
    return out


def video_pixels(video_processor: Any, frames: torch.Tensor) -> torch.Tensor:
    """``pixel_values_videos`` (patches, C*T*P*P) float32 of uint8 frames (N, H, W, 3), on their device.

    The video processor's own ``patchify`` runs on the uint8 frames (a permutation, so a quarter of the
    bytes of float pixels are moved), then its fused rescale-and-normalise runs on the patches viewed as
    (patches, C, T*P, P): the same per-channel elementwise arithmetic as the processor's, which does it
    before patchifying, so the result is identical.
    """
    vp = video_processor
    patches, *_ = vp.patchify(
        frames.permute(0, 3, 1, 2)[None],
        patch_size=vp.patch_size,
        merge_size=vp.merge_size,
        temporal_patch_size=vp.temporal_patch_size,
    )
    patches = patches[0]
    channels = frames.shape[-1]
    pixels = vp.rescale_and_normalize(
        patches.reshape(patches.shape[0], channels, -1, vp.patch_size),
        vp.do_rescale,
        vp.rescale_factor,
        vp.do_normalize,
        vp.image_mean,
        vp.image_std,
    )
    return pixels.reshape(patches.shape[0], -1)


def block_ends(
    input_ids: torch.Tensor, video_token_id: int, vision_end_id: int, num_blocks: int
) -> np.ndarray:
    """Token position just after each temporal block: the cut for a prefix of that many blocks.

    Qwen3-VL wraps every block in its own ``<|vision_start|>…<|vision_end|>`` (HF nests them inside the
    template's wrapper), so a block ends after its ``<|vision_end|>``; Qwen2.5-VL has one run of pads and
    one closing token, so a block ends after its last pad. The text after the last block is the suffix
    every prefix shares.
    """
    ids = input_ids[0]
    pads = torch.nonzero(ids == video_token_id).flatten()
    if pads.numel() == 0 or pads.numel() % num_blocks:
        raise ValueError(f"{pads.numel()} video tokens cannot be split into {num_blocks} temporal blocks")
    per_block = pads.numel() // num_blocks
    after_pads = pads[per_block - 1 :: per_block] + 1
    wrapped = int((ids == vision_end_id).sum()) >= num_blocks
    if wrapped and not bool((ids[after_pads] == vision_end_id).all()):
        raise ValueError("expected <|vision_end|> after every temporal block")
    return (after_pads + 1 if wrapped else after_pads).numpy()
