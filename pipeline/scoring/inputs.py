"""Turning one episode's frames and prompt into model inputs, and locating its temporal blocks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


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
    height, width = frames.shape[1:3]
    factor = processor.video_processor.patch_size * processor.video_processor.merge_size
    if height % factor or width % factor:
        raise ValueError(f"frames are {height}x{width}; the model needs multiples of {factor}")
    metadata = {
        "fps": float(raw_fps),
        "total_num_frames": len(raw_indices) * raw_fps / sampled_fps,
        "frames_indices": [int(i) for i in raw_indices],
    }
    batch = processor(
        text=[prompt],
        videos=[frames],
        video_metadata=[metadata],
        do_sample_frames=False,
        do_resize=False,
        cap_pixels_per_frame=False,
        return_tensors="pt",
    )
    batch.pop("video_metadata", None)
    return dict(batch)


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
