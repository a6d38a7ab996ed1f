"""`overlong: truncate` on a conversation drops whole earliest turns (tasks/lengths.py)."""

import pytest

from instructflow.models.tokenizer import train_tokenizer
from instructflow.tasks.conversations import render
from instructflow.tasks.dataset_items import Item
from instructflow.tasks.lengths import LengthCheck

TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer():
    texts = [f"Say the word {w} twice." for w in "apple river stone cloud".split()] * 5
    tok = train_tokenizer(texts, vocab_size=300)
    tok.chat_template = TEMPLATE
    return tok


def _item(turns, tokenizer) -> Item:
    prompt = render(turns, tokenizer)
    return Item("t.jsonl", 1, prompt, ["apple"], [0], None, None, None, None, turns=turns)


def _turn(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def test_the_earliest_turns_go_whole_and_the_system_turn_and_last_user_turn_stay(tokenizer):
    # given a system turn, two long early exchanges and a short last question
    turns = [
        _turn("system", "Say it."),
        _turn("user", "Say the word river twice. " * 6),
        _turn("assistant", "river river"),
        _turn("user", "Say the word stone twice. " * 6),
        _turn("assistant", "stone stone"),
        _turn("user", "Say the word apple twice."),
    ]
    item = _item(turns, tokenizer)
    last_two = [turns[0], *turns[3:]]
    unbounded = LengthCheck(tokenizer, max_len=10**6, max_new_tokens=8)
    check = LengthCheck(tokenizer, unbounded.need(render(last_two, tokenizer), ["apple"]), 8)
    assert check.need(item.prompt, item.responses) > check.max_len

    # when it is cut to fit
    cut = check.shorten(item)

    # then the first exchange is gone whole, the template's markup intact
    assert cut.turns == last_two
    assert cut.prompt == render(last_two, tokenizer)
    assert cut.prompt.startswith("<|system|>Say it.\n<|user|>")
    assert check.need(cut.prompt, cut.responses) <= check.max_len


def test_a_last_turn_too_long_alone_has_its_rendered_start_cut(tokenizer):
    turns = [
        _turn("user", "Say the word river twice."),
        _turn("assistant", "river river"),
        _turn("user", "Say the word apple twice. " * 20),
    ]
    check = LengthCheck(tokenizer, max_len=48, max_new_tokens=8)
    cut = check.shorten(_item(turns, tokenizer))
    assert cut is not None and cut.turns == turns  # the text's start cut, as before
    assert cut.prompt.endswith("<|assistant|>") and not cut.prompt.startswith("<|user|>")
    assert check.need(cut.prompt, cut.responses) <= check.max_len


def _markup_as_special_tokens():
    """A tokenizer with TEMPLATE, whose markers are special tokens (as ChatML's are)."""
    texts = [f"Say the word {w} twice." for w in "apple river stone cloud".split()] * 5
    tokenizer = train_tokenizer(texts, vocab_size=300)
    tokenizer.chat_template = TEMPLATE
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|user|>", "<|assistant|>"]})
    return tokenizer


def test_a_cut_prompt_keeps_the_templates_special_tokens():
    # given a template whose markup is special tokens (ChatML's <|im_start|>, Llama 3's
    # headers) and a last user turn too long alone
    tokenizer = _markup_as_special_tokens()
    turns = [_turn("user", "Say the word apple twice. " * 20)]
    rendered = render(turns, tokenizer)
    check = LengthCheck(tokenizer, max_len=48, max_new_tokens=8)

    # when its rendered start is cut
    cut = check.shorten(_item(turns, tokenizer))

    # then what is left is the rendered text's end as it was, generation prompt included
    # (decoded without the special tokens it read '... twice.', no assistant marker)
    assert cut is not None and cut.prompt.endswith("\n<|assistant|>")
    assert rendered.endswith(cut.prompt) and len(cut.prompt) < len(rendered)
    assert check.need(cut.prompt, cut.responses) <= check.max_len


def test_a_cut_that_leaves_only_the_templates_markup_drops_the_row():
    # given a room so small that cutting the rendered start leaves only what the template
    # puts after the question ('\n<|assistant|>'), the same for every row
    tokenizer = _markup_as_special_tokens()
    turns = [_turn("user", "Say the word apple twice. " * 20)]
    unbounded = LengthCheck(tokenizer, max_len=10**6, max_new_tokens=8)
    check = LengthCheck(tokenizer, unbounded.need("\n<|assistant|>", ["apple"]), 8)

    # when it is cut, then it is dropped (None), not kept with no question in it
    assert check.shorten(_item(turns, tokenizer)) is None
    # while a room that keeps a word of the question still cuts it
    roomier = LengthCheck(tokenizer, unbounded.need("apple twice. \n<|assistant|>", ["apple"]), 8)
    assert roomier.shorten(_item(turns, tokenizer)).prompt.endswith("twice. \n<|assistant|>")
