"""Smoke test of bench/gpu_throughput.py: the real-shape script, shrunk by --scale, runs on CPU and prints
every figure, each present and sane (no timing is asserted)."""

from __future__ import annotations

import re

import pytest

from bench.gpu_throughput import SHAPES, main, shape_config
from tests.conftest import CACHE

# A 4 s episode (8 frames) at 64x64 through the 8B shape divided by 32 (1 layer, 1 vision block).
SMOKE_ARGS = ["--shape", "8b", "--scale", "32", "--seconds", "4", "--size", "64"]
SMOKE_ARGS += ["--repeats", "1", "--device", "cpu"]


def _figure(out: str, label: str) -> str:
    match = re.search(rf"^{re.escape(label)}: (\S+)", out, flags=re.MULTILINE)
    assert match, f"{label!r} missing from:\n{out}"
    return match.group(1)


def test_real_shapes_match_the_published_configs():
    config = shape_config("8b", 1, CACHE / "models" / "tiny-qwen3_vl-s0")
    text, vision = config.text_config, config.vision_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads) == (4096, 36, 32)
    assert (text.num_key_value_heads, text.head_dim, text.intermediate_size) == (8, 128, 12288)
    assert text.vocab_size == 151936
    assert (vision.depth, vision.hidden_size, vision.intermediate_size) == (27, 1152, 4304)
    assert (vision.num_heads, vision.patch_size, vision.out_hidden_size) == (16, 16, 4096)
    assert vision.deepstack_visual_indexes == [8, 16, 24]
    assert set(SHAPES) == {"2b", "4b", "8b"}


@pytest.mark.usefixtures("tiny_model_dir")
def test_scaled_run_prints_sane_figures(capsys):
    main(SMOKE_ARGS)
    out = capsys.readouterr().out
    assert "scale 32" in out and "float32 on cpu" in out
    cached = float(_figure(out, "cached seconds/episode"))
    naive = float(_figure(out, "naive seconds/episode"))
    assert cached > 0 and naive > 0
    assert float(_figure(out, "episodes/hour (cached, one device)")) == pytest.approx(3600 / cached, rel=0.01)
    flops = float(_figure(out, "FLOPs/episode (cached, counted)"))
    # At least the language model's projections over the context: 2 FLOPs per weight per token.
    text = shape_config("8b", 32, CACHE / "models" / "tiny-qwen3_vl-s0").text_config
    width, attention = text.hidden_size, text.num_attention_heads * text.head_dim
    per_layer = 2 * width * attention + 2 * width * text.num_key_value_heads * text.head_dim
    per_layer += 3 * width * text.intermediate_size
    tokens = int(re.search(r"(\d+) context tokens", out).group(1))
    assert flops > 2 * text.num_hidden_layers * per_layer * tokens
    assert _figure(out, "MFU") == "n/a"  # no peak figure for a CPU
    assert float(_figure(out, "max |cached - naive| log P(True) (float32)")) < 1e-4
    assert float(_figure(out, "peak memory")) > 0
