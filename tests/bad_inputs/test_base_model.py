"""Bad base-model directories: refused before any training, naming the directory and the file."""

import json

import pytest

from instructflow.tasks.tables import LINE
from instructflow.world import layout
from tests.bad_inputs.conftest import assert_names, refusal


def with_model(params, folder):
    return params(base_model=str(folder))


def set_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def truncate(path, keep=100):
    path.write_bytes(path.read_bytes()[:keep])


# (id, how to break the copy, file under the model dir ("" = the dir), field, words)
CASES = [
    ("no-config", lambda m: (m / "config.json").unlink(), "", "config.json", "missing"),
    (
        "config-not-json",
        lambda m: (m / "config.json").write_text("{oops"),
        "config.json",
        LINE,
        "json",
    ),
    (
        "unknown-model-type",
        lambda m: set_config(m, model_type="no_such_arch"),
        "config.json",
        "model_type",
        "",
    ),
    (
        "not-a-causal-lm",
        lambda m: set_config(m, model_type="vit"),
        "config.json",
        "model_type",
        "causal",
    ),
    (
        "invalid-config-field",
        lambda m: set_config(m, n_positions=None),
        "config.json",
        "n_positions",
        "expected int",
    ),
    (
        "no-weights",
        lambda m: (m / "model.safetensors").unlink(),
        "",
        "model.safetensors",
        "no weights",
    ),
    (
        "truncated-weights",
        lambda m: truncate(m / "model.safetensors"),
        "model.safetensors",
        LINE,
        "safetensors",
    ),
    (
        "no-tokenizer",
        lambda m: [p.unlink() for p in m.iterdir() if p.name.startswith("tokenizer")],
        "",
        "tokenizer",
        "",
    ),
]


@pytest.mark.parametrize(
    ("breaking", "file", "field", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_a_bad_model_dir_is_refused_naming_it(
    smoke_dir, model_copy, params, breaking, file, field, words
):
    # given a loadable model directory with one thing broken
    breaking(model_copy)
    # then checking the run's inputs names the directory (or its file) and what is wrong
    where = model_copy / file if file else model_copy
    assert_names(refusal(with_model(params, model_copy), smoke_dir), where, 0, field, words)


def test_a_missing_model_dir_is_named(smoke_dir, params, tmp_path):
    missing = tmp_path / "no-model"
    assert_names(
        refusal(with_model(params, missing), smoke_dir), missing, 0, "base_model", "no such"
    )


def test_rows_longer_than_a_small_context_are_named(smoke_dir, model_copy, params):
    # given a model whose context is 48 tokens: the few-shot evaluation prompts cannot fit
    set_config(model_copy, n_positions=48)
    problems = refusal(with_model(params, model_copy), smoke_dir)
    assert_names(problems, smoke_dir / layout.EVAL_TEST, 1, "prompt", "context 48")


def test_the_good_model_dir_passes(smoke_dir, good_model_dir, params):
    from instructflow.tasks.preflight import check_inputs

    check_inputs(with_model(params, good_model_dir), smoke_dir)
