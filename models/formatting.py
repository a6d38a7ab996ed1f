"""How a prompt and a response become one training string.

Every stage (SFT, sampling, reward model, PPO, evaluation) goes through these
two functions so that the text a policy sees at training time is exactly the
text it sees at evaluation time.

The response starts with a space: in the pretraining corpus an answer word
follows a space in running text ("the capital of Velm is Orsk"), and a BPE
tokenizer gives " Orsk" and "Orsk" different ids. Keeping the space lets
facts learned in pretraining transfer to answers.
"""

import re

PROMPT_PREFIX = "Q: "
RESPONSE_PREFIX = "\nA:"


def format_prompt(prompt: str) -> str:
    """The text a policy is conditioned on; the response follows it directly."""
    return f"{PROMPT_PREFIX}{prompt}{RESPONSE_PREFIX}"


def format_response(response: str) -> str:
    """The completion text as the policy should produce it (before EOS)."""
    return f" {response}"


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def parse_response(completion: str) -> str:
    """Turn a raw decoded completion back into a response string.

    Byte-level decoding of an untrained model's tokens can produce control
    characters; they carry nothing a labeler could read, so they are dropped.
    """
    return _CONTROL.sub("", completion).strip()
