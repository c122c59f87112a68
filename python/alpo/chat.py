"""Chat-template rendering of translation prompts and tokenization with exact ids.

Training, sampling and translation must see the same tokens: the prompt as the model gets it
when generating (chat template with the generation prompt), and the answer as the tokens that
follow it. `encode` tokenizes the whole conversation once and cuts it where the prompt text ends,
so `prompt_ids + answer_ids` is exactly the tokenization of the whole text; it checks that the
prompt ids equal the prompt tokenized alone (what a sampler feeds the model) and raises if a
tokenizer merges across the boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from alpo.exceptions import InputError
from alpo.prompts import to_messages

__all__ = [
    "CHATML_TEMPLATE",
    "Encoded",
    "answer_suffix",
    "chat_prompt",
    "conversation_ids",
    "encode",
]

#: The ChatML template (Qwen's), used for tokenizers that come without a chat template.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Encoded:
    """One tokenized example: the prompt ids (masked in the loss) and the answer ids."""

    prompt_ids: list[int]
    answer_ids: list[int]

    @property
    def input_ids(self) -> list[int]:
        return self.prompt_ids + self.answer_ids

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.answer_ids)


def chat_prompt(tokenizer: Any, prompt: str) -> str:
    """The text the model sees before its answer: system and user turns in the tokenizer's chat
    template (ChatML if it has none), ending with the assistant's generation prompt."""
    template = getattr(tokenizer, "chat_template", None) or CHATML_TEMPLATE
    text = tokenizer.apply_chat_template(
        to_messages(prompt), chat_template=template, add_generation_prompt=True, tokenize=False
    )
    return str(text)


def answer_suffix(tokenizer: Any) -> str:
    """What ends an answer: the end-of-turn token, so the model learns to stop."""
    eos = tokenizer.eos_token
    if not eos:
        raise InputError("the tokenizer has no end-of-sequence token to end answers with")
    return str(eos)


def encode(tokenizer: Any, prompt: str, answer: str) -> Encoded:
    """Token ids of `prompt` (chat-rendered) and `answer` (plus the end-of-turn token)."""
    prompt_text = chat_prompt(tokenizer, prompt)
    whole = tokenizer(
        prompt_text + answer + answer_suffix(tokenizer),
        add_special_tokens=False,
        return_offsets_mapping=True,
    )
    ids = list(whole["input_ids"])
    cut = next(
        (i for i, (start, _) in enumerate(whole["offset_mapping"]) if start >= len(prompt_text)),
        len(ids),
    )
    prompt_ids = ids[:cut]
    alone = list(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
    if alone != prompt_ids:
        raise InputError("the tokenizer merges tokens across the end of the prompt")
    return Encoded(prompt_ids, ids[cut:])


def conversation_ids(tokenizer: Any, messages: Sequence[dict[str, str]]) -> list[int]:
    """Token ids of a conversation in the tokenizer's chat template (ChatML if none), ready for
    the assistant's turn; Qwen3's thinking is switched off (templates without the switch
    ignore it)."""
    template = getattr(tokenizer, "chat_template", None) or CHATML_TEMPLATE
    text = tokenizer.apply_chat_template(
        list(messages),
        chat_template=template,
        add_generation_prompt=True,
        tokenize=False,
        enable_thinking=False,
    )
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
