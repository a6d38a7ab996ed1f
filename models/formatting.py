"""How a prompt and a response become one training string.

Every stage (SFT, sampling, reward model, PPO, evaluation) goes through these
two functions so that the text a policy sees at training time is exactly the
text it sees at evaluation time.

A prompt of plain text is framed as `Q: <prompt>\nA:`, and its response starts
with a space: in the pretraining corpus an answer word follows a space in
running text ("the capital of Velm is Orsk"), and a BPE tokenizer gives
" Orsk" and "Orsk" different ids. Keeping the space lets facts learned in
pretraining transfer to answers.

A prompt the tokenizer's chat template rendered (it ends where the template
opens the assistant's turn, e.g. ChatML's `<|im_start|>assistant\n`) is
already what a chat model is conditioned on: it gets no frame, and its
response follows the template's opening directly, as the model will meet it
when served with its own template (TRL trains chat data the same way).
"""

import re
import weakref

PROMPT_PREFIX = "Q: "
RESPONSE_PREFIX = "\nA:"

_HEADERS: "weakref.WeakKeyDictionary[object, str]" = weakref.WeakKeyDictionary()


def assistant_opening(tokenizer) -> str:
    """The text the tokenizer's chat template puts after a conversation to open the
    assistant's turn (`add_generation_prompt`); "" without a template, or with one that
    adds nothing or fails on a one-turn conversation."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        return ""
    if tokenizer not in _HEADERS:
        turn = [{"role": "user", "content": "x"}]
        try:
            closed, opened = (
                tokenizer.apply_chat_template(turn, tokenize=False, add_generation_prompt=g)
                for g in (False, True)
            )
        except Exception:  # the template is the user's code; render() names its refusals
            closed = opened = ""
        _HEADERS[tokenizer] = opened[len(closed) :] if opened.startswith(closed) else ""
    return _HEADERS[tokenizer]


def is_templated(prompt: str, tokenizer=None) -> bool:
    """Whether `prompt` was rendered by the tokenizer's chat template for a reply."""
    opening = assistant_opening(tokenizer)
    return bool(opening) and prompt.endswith(opening)


def format_prompt(prompt: str, tokenizer=None) -> str:
    """The text a policy is conditioned on; the response follows it directly."""
    if is_templated(prompt, tokenizer):
        return prompt
    return f"{PROMPT_PREFIX}{prompt}{RESPONSE_PREFIX}"


def format_response(response: str, prompt: str = "", tokenizer=None) -> str:
    """The completion text as the policy should produce it after `prompt` (before EOS)."""
    return response if is_templated(prompt, tokenizer) else f" {response}"


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def parse_response(completion: str) -> str:
    """Turn a raw decoded completion back into a response string.

    Byte-level decoding of an untrained model's tokens can produce control
    characters; they carry nothing a labeler could read, so they are dropped.
    """
    return _CONTROL.sub("", completion).strip()
