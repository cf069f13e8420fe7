"""Tests for the offline tiny Qwen-VL checkpoint builder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from devkit.tiny_model import build_tiny_model, ensure_tiny_model, main, read_build_info

PROMPT = "The above video shows a robot manipulation trajectory that completes the following task: "
SUFFIX = " Decide whether the above statement is True or not. The answer is: True"

# Frame side per family: a multiple of patch_size * merge_size, so do_resize=False keeps it exact.
FRAME_SIDE = {"qwen3_vl": 64, "qwen2_5_vl": 56}


@pytest.fixture(scope="module", params=["qwen3_vl", "qwen2_5_vl"])
def model_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    family = request.param
    return family, build_tiny_model(tmp_path_factory.mktemp(family), family=family)


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _video_inputs(processor, family: str) -> dict[str, torch.Tensor]:
    side = FRAME_SIDE[family]
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(4, side, side, 3), dtype=np.uint8)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": PROMPT}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    text = text.split(processor.tokenizer.eos_token)[0] + "pick up the cube" + SUFFIX
    kwargs = {}
    if family == "qwen3_vl":
        kwargs["video_metadata"] = [{"fps": 2.0, "total_num_frames": 4, "frames_indices": [0, 1, 2, 3]}]
    inputs = processor(
        text=[text],
        videos=[frames],
        do_sample_frames=False,
        do_resize=False,
        return_tensors="pt",
        **kwargs,
    )
    inputs.pop("video_metadata", None)
    return inputs


def test_loads_through_auto_classes_and_runs_video_forward(model_dir: tuple[str, Path]) -> None:
    family, path = model_dir
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    assert model.config.model_type == family
    assert model.dtype == torch.float32
    inputs = _video_inputs(processor, family)
    video_id = model.config.video_token_id
    merge = processor.video_processor.merge_size
    assert (inputs["input_ids"] == video_id).sum() == inputs["video_grid_thw"].prod() // merge**2
    with torch.no_grad():
        logits = model(**inputs).logits
    assert torch.isfinite(logits).all()
    logp = torch.log_softmax(logits[0, -1].float(), dim=-1)
    assert logp.max() - logp.min() > 1.0


def test_tokenizer_matches_qwen_instruct_conventions(model_dir: tuple[str, Path]) -> None:
    _, path = model_dir
    processor = AutoProcessor.from_pretrained(path)
    tok = processor.tokenizer
    for word in (" True", " False", "True"):
        assert len(tok.encode(word, add_special_tokens=False)) == 1, word
    assert tok.eos_token == "<|im_end|>"
    assert tok.pad_token == "<|endoftext|>"
    config = json.loads((path / "config.json").read_text())
    assert config["video_token_id"] == tok.convert_tokens_to_ids("<|video_pad|>")
    assert config["image_token_id"] == tok.convert_tokens_to_ids("<|image_pad|>")
    assert config["text_config"]["vocab_size"] == len(tok)


def test_chat_template_renders_like_qwen3_vl(model_dir: tuple[str, Path]) -> None:
    _, path = model_dir
    processor = AutoProcessor.from_pretrained(path)
    messages = [
        {"role": "user", "content": [{"type": "video"}, {"type": "image"}, {"type": "text", "text": "hi"}]}
    ]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>"
        "<|vision_start|><|image_pad|><|vision_end|>hi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path: Path) -> None:
    first = _hashes(build_tiny_model(tmp_path / "a", seed=0))
    second = _hashes(build_tiny_model(tmp_path / "b", seed=0))
    other = _hashes(build_tiny_model(tmp_path / "c", seed=1))
    assert first == second
    assert other["model.safetensors"] != first["model.safetensors"]


def test_ensure_builds_once_and_rejects_other_arguments(tmp_path: Path) -> None:
    out = tmp_path / "cache" / "tiny"
    assert ensure_tiny_model(out) == out
    marker_mtime = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    ensure_tiny_model(out)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == marker_mtime
    assert [p.name for p in out.parent.iterdir()] == ["tiny"]
    with pytest.raises(ValueError, match="built with"):
        ensure_tiny_model(out, seed=1)


def test_cli_prints_folder_and_parameter_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--out", str(tmp_path / "m"), "--family", "qwen2_5_vl"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(tmp_path / "m")
    info = read_build_info(tmp_path / "m")
    assert info is not None and info["family"] == "qwen2_5_vl"
    assert lines[1] == f"parameters: {info['num_parameters']:,}"


def test_unknown_family_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown family"):
        build_tiny_model(tmp_path, family="llava")
