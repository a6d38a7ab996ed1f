"""A base model whose chat template is not valid Jinja: named once, on the template's file."""

from instructflow.tasks.input_checks import base_model_problems
from tests.tiny_models import tiny_llama


def test_a_chat_template_that_is_not_valid_jinja_is_one_problem_of_the_model(tmp_path):
    # given a tiny model whose saved chat template lost a closing brace
    folder = tiny_llama(tmp_path / "llama", ["Say the word apple twice."] * 5, vocab_size=300)
    broken = "{% for m in messages %}{{ m['content'] }{% endfor %}"
    (folder / "chat_template.jinja").write_text(broken)
    # when the base model is checked
    _, problems = base_model_problems(folder)
    # then one problem names the template's file and the syntax error (a dataset's check
    # named each conversation instead: "the base model's chat template refuses this
    # conversation: unexpected '}'", one line per row)
    (problem,) = problems
    assert (problem.file, problem.field) == (str(folder / "chat_template.jinja"), "chat_template")
    assert problem.message.startswith("the chat template is not valid Jinja: unexpected '}'")


def test_a_valid_chat_template_passes(tmp_path):
    folder = tiny_llama(tmp_path / "llama", ["Say the word apple twice."] * 5, vocab_size=300)
    template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    (folder / "chat_template.jinja").write_text(template)
    assert base_model_problems(folder)[1] == []
