"""How a prompt and a response become one training string.

Every stage (SFT, sampling, reward model, PPO, evaluation) goes through these
two functions so that the text a policy sees at training time is exactly the
text it sees at evaluation time.

A prompt of plain text is framed as `Q: <prompt>\nA:`, and its response starts
with a space: in the pretraining corpus an answer word follows a space in
running text ("the capital of Velm is Orsk"), and a BPE tokenizer gives
" Orsk" and "Orsk" different ids. Keeping the space lets facts learned in
pretraining transfer to answers.

A prompt the tokenizer's chat template rendered for a reply (it ends as the
template ends a user turn and asks for the assistant's: ChatML's
`<|im_end|>\n<|im_start|>assistant\n`, Llama 2's ` [/INST]`) is already what a
chat model is conditioned on: it gets no frame, and its response follows it
as the template places an assistant's answer there (ChatML: directly, Llama
2: after a space), as the model meets it when served with its own template
(TRL trains chat data the same way).
"""

import re
import weakref
from dataclasses import dataclass

PROMPT_PREFIX = "Q: "
RESPONSE_PREFIX = "\nA:"


@dataclass(frozen=True)
class ChatFrame:
    cue: str  # how a prompt rendered for a reply ends: the template's text after a user turn
    lead: str  # whitespace the template puts before the assistant's answer behind `cue`


# Rendered in place of a conversation's text, to find what the template writes around it.
_QUESTION, _ANSWER = "instructflow-question-text", "instructflow-answer-text"
# tokenizer -> (its template, that template's frame): rendering is per call otherwise
_FRAMES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def chat_frame(tokenizer) -> ChatFrame | None:
    """How the tokenizer's chat template frames a reply; None without a template, or with
    one that fails on a one-turn conversation or puts no markup after a user turn."""
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return None
    if _FRAMES.get(tokenizer, (None,))[0] != template:  # new, or its template was replaced
        _FRAMES[tokenizer] = (template, _frame_of(tokenizer))
    return _FRAMES[tokenizer][1]


def _frame_of(tokenizer) -> ChatFrame | None:
    asked = [{"role": "user", "content": _QUESTION}]
    answered = [*asked, {"role": "assistant", "content": _ANSWER}]
    try:
        opened = tokenizer.apply_chat_template(asked, tokenize=False, add_generation_prompt=True)
        whole = tokenizer.apply_chat_template(answered, tokenize=False)
    except Exception:  # the template is the user's code; render() names its refusals
        return None
    at = opened.rfind(_QUESTION)
    cue = opened[at + len(_QUESTION) :] if at >= 0 else ""
    if not cue.strip():  # no markup to know a rendered prompt by
        return None
    answer_at = whole.find(_ANSWER, len(opened)) if whole.startswith(opened) else -1
    between = whole[len(opened) : answer_at] if answer_at >= 0 else ""
    return ChatFrame(cue, between if not between.strip() else "")


def _framed_by(prompt: str, tokenizer) -> ChatFrame | None:
    """The chat frame `prompt` was rendered in, or None (a prompt given as text)."""
    frame = chat_frame(tokenizer)
    return frame if frame and prompt.endswith(frame.cue) else None


def format_prompt(prompt: str, tokenizer=None) -> str:
    """The text a policy is conditioned on; the response follows it directly."""
    if _framed_by(prompt, tokenizer):
        return prompt
    return f"{PROMPT_PREFIX}{prompt}{RESPONSE_PREFIX}"


def format_response(response: str, prompt: str = "", tokenizer=None) -> str:
    """The completion text as the policy should produce it after `prompt` (before EOS)."""
    frame = _framed_by(prompt, tokenizer)
    return f"{frame.lead}{response}" if frame else f" {response}"


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def parse_response(completion: str) -> str:
    """Turn a raw decoded completion back into a response string.

    Byte-level decoding of an untrained model's tokens can produce control
    characters; they carry nothing a labeler could read, so they are dropped.
    """
    return _CONTROL.sub("", completion).strip()
