"""A prompt rendered by a chat template is trained and sampled as the template frames it.

The pipeline's own `Q: ...\\nA:` frame is for plain text; around a rendered conversation it
put the answer after `\\nA: `, where a chat model served with its own template never sees it.
"""

import pytest

from instructflow.models.batching import IGNORE_INDEX, encode_pair, encode_prompt
from instructflow.models.formatting import ChatFrame, chat_frame, format_prompt
from instructflow.models.sampling import encode_prompts
from instructflow.models.tokenizer import train_tokenizer
from instructflow.tasks.conversations import render
from instructflow.tasks.evaluation import fewshot_text

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Llama 2's shape: no generation prompt of its own, the answer a space after [/INST]
INST = (
    "{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
    "{% else %} {{ m['content'] }}</s>{% endif %}{% endfor %}"
)
QUESTION = [{"role": "user", "content": "name a red fruit"}]
# What CHATML renders for QUESTION with add_generation_prompt, written out by hand.
RENDERED = "<|im_start|>user\nname a red fruit<|im_end|>\n<|im_start|>assistant\n"


def _tokenizer(template: str | None):
    texts = [f"name a red fruit: {w}. the {w} is red." for w in "apple cherry berry".split()] * 5
    tokenizer = train_tokenizer(texts, vocab_size=300)
    tokenizer.chat_template = template
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    return tokenizer


@pytest.fixture(scope="module")
def chatml():
    return _tokenizer(CHATML)


def test_the_frame_is_read_from_how_the_template_renders_a_turn_and_its_answer(chatml):
    assert render(QUESTION, chatml) == RENDERED
    assert chat_frame(chatml) == ChatFrame(cue="<|im_end|>\n<|im_start|>assistant\n", lead="")
    assert chat_frame(_tokenizer(INST)) == ChatFrame(cue=" [/INST]", lead=" ")
    assert chat_frame(_tokenizer(None)) is None


def test_a_rendered_prompt_is_followed_by_its_answer_with_no_frame_and_no_space(chatml):
    # when a rendered prompt and its answer are encoded for SFT and the reward model
    input_ids, labels = encode_pair(chatml, RENDERED, "apple", max_len=64)

    # then the text is the rendered prompt, the answer right behind it, and EOS
    assert input_ids[-1] == chatml.eos_token_id
    assert chatml.decode(input_ids[:-1]) == RENDERED + "apple"
    # and only the answer and EOS are trained on, as sampling continues from the prompt
    n_prompt = len(encode_prompt(chatml, RENDERED))
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert chatml.decode(labels[n_prompt:-1]) == "apple"
    assert encode_prompts(chatml, [RENDERED]) == [input_ids[:n_prompt]]


def test_an_answer_goes_where_the_template_puts_one():
    inst = _tokenizer(INST)
    rendered = render(QUESTION, inst)
    assert rendered == "[INST] name a red fruit [/INST]"
    input_ids, _ = encode_pair(inst, rendered, "apple", max_len=64)
    assert inst.decode(input_ids[:-1]) == "[INST] name a red fruit [/INST] apple"


def test_a_text_prompt_keeps_the_q_a_frame_under_a_chat_template(chatml):
    # a prompt given as text is used as it is (docs/own-data.md): the pipeline's frame
    input_ids, _ = encode_pair(chatml, "name a red fruit", "apple", max_len=64)
    assert chatml.decode(input_ids[:-1]) == "Q: name a red fruit\nA: apple"


def test_a_template_that_fails_on_one_turn_or_writes_no_markup_leaves_the_frame():
    failing = _tokenizer("{{ raise_exception('system turn required') }}")
    bare = _tokenizer("{% for m in messages %}{{ m['content'] }}\n{% endfor %}")
    for tokenizer in (failing, bare):
        assert chat_frame(tokenizer) is None
        assert format_prompt(RENDERED, tokenizer) == f"Q: {RENDERED}\nA:"


def test_few_shot_demonstrations_of_rendered_prompts_carry_no_frame(chatml):
    rows = [{"prompt": RENDERED, "response": "apple"}, {"prompt": "name one", "response": "x"}]
    assert fewshot_text(rows, chatml) == f"{RENDERED}apple\n\nQ: name one\nA: x\n\n"
    assert fewshot_text(rows[:1]) == f"Q: {RENDERED}\nA: apple\n\n"


def test_a_template_replaced_on_the_same_tokenizer_is_read_again():
    tokenizer = _tokenizer(CHATML)
    assert chat_frame(tokenizer).cue.endswith("<|im_start|>assistant\n")
    tokenizer.chat_template = INST
    assert chat_frame(tokenizer) == ChatFrame(cue=" [/INST]", lead=" ")


def test_data_validate_shows_the_first_example_as_the_model_reads_it(chatml):
    from types import SimpleNamespace

    from instructflow.tasks.dataset_items import Item
    from instructflow.tasks.dataset_report import training_example

    item = Item("/d/demonstrations.jsonl", 3, RENDERED, ["apple"], [0], None, None, None, None)
    dataset = SimpleNamespace(demonstrations=[item], preferences=[])
    assert training_example(dataset, chatml) == (
        f"demonstrations.jsonl row 3: {RENDERED + 'apple' + chatml.eos_token!r}"
    )
    # a long one keeps its end, where the frame meets the answer
    assert training_example(dataset, chatml, room=20) == (
        f"demonstrations.jsonl row 3: {'...' + (RENDERED + 'apple' + chatml.eos_token)[-20:]!r}"
    )
