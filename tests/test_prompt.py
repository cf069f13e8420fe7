"""The TOPReward prompt, character for character (method.md §A.2)."""

import pytest
from transformers import AutoProcessor

from pipeline.config import ScoringConfig
from pipeline.scoring.prompt import build_prompt, false_token_id


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    return AutoProcessor.from_pretrained(tiny_model_dir)


def test_prompt_without_chat_template(processor):
    prompt = build_prompt(processor, "put the pen into the cup", ScoringConfig())
    assert prompt == (
        "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>"
        "The above video shows a robot manipulation trajectory that completes the following task: "
        "put the pen into the cup Decide whether the above statement is True or not. The answer is: True"
    )
    ids = processor.tokenizer.encode(prompt, add_special_tokens=False)
    assert processor.tokenizer.decode(ids[-1:]) == " True"


def test_prompt_with_chat_template(processor):
    prompt = build_prompt(processor, "open the drawer", ScoringConfig(chat_template=True))
    assert prompt == (
        "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>"
        "The above video shows a robot manipulation trajectory that completes the following task: "
        "open the drawer Decide whether the above statement is True or not. The answer is:<|im_end|>\n"
        "<|im_start|>assistant\nTrue"
    )


def test_false_token(processor):
    assert processor.tokenizer.decode([false_token_id(processor, ScoringConfig())]) == " False"
    with pytest.raises(ValueError, match="tokens"):
        false_token_id(processor, ScoringConfig(false_answer=" definitely not"))
