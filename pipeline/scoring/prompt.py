"""The TOPReward prompt (method.md §A.2): the text whose last token, "True", is scored."""

from __future__ import annotations

from typing import Any

from pipeline.config import ScoringConfig


def _user_turn(prompt_text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt_text}]}]


def build_prompt(processor: Any, instruction: str, scoring: ScoringConfig) -> str:
    """The full prompt text for one episode, with one video placeholder, ending in the scored answer.

    Without chat template (the paper's setting) the user turn holding the video and the prompt prefix is
    rendered, cut at the tokenizer's eos token (dropping ``<|im_end|>`` and any assistant turn), and the
    instruction sentence ending in " True" is appended. With ``scoring.chat_template`` the question is
    asked inside the user turn and "True" follows the generation prompt.

    Args:
        processor: a Hugging Face VLM processor with a chat template.
        instruction: the episode's task text, verbatim.
        scoring: prompt texts and the chat-template switch.
    """
    tokenizer = processor.tokenizer
    if scoring.chat_template:
        question = scoring.prompt_prefix + scoring.chat_template_question.format(instruction=instruction)
        rendered = processor.apply_chat_template(
            _user_turn(question), add_generation_prompt=True, tokenize=False
        )
        return rendered + scoring.answer
    rendered = processor.apply_chat_template(
        _user_turn(scoring.prompt_prefix), add_generation_prompt=False, tokenize=False
    )
    head = rendered.split(tokenizer.eos_token)[0]
    return head + scoring.prompt_suffix.format(instruction=instruction)


def check_answer_token(processor: Any, token_id: int, scoring: ScoringConfig) -> None:
    """Fail loudly if the prompt's last token is not the whole answer (the tokenizer split "True").

    Raises:
        ValueError: the last token decodes to something other than the answer.
    """
    decoded = processor.tokenizer.decode([token_id])
    if decoded.strip() != scoring.answer.strip():
        raise ValueError(f"the prompt's last token is {decoded!r}, not the answer {scoring.answer!r}")


def false_token_id(processor: Any, scoring: ScoringConfig) -> int:
    """Token id of the companion answer (" False"), recorded next to "True".

    Raises:
        ValueError: the tokenizer splits the companion answer into several tokens.
    """
    ids = processor.tokenizer.encode(scoring.false_answer, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"answer {scoring.false_answer!r} is {len(ids)} tokens for this tokenizer; need 1")
    return ids[0]
