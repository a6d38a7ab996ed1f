"""Registered models load the way MLflow users expect, in a process that never imported the project:
the policy through the transformers flavor (a text-generation pipeline), the reward model as a
pyfunc with a documented signature."""

import json
import logging
import os
import subprocess
import sys
import warnings

import mlflow
from mlflow import MlflowClient

from instructflow.models.lm import context_length, load_causal_lm
from instructflow.tasks import registry, registry_rival, tracking
from instructflow.tasks.registry_config import REWARD_MODEL
from instructflow.tasks.registry_flavors import log_policy

# One fresh process loads both (an interpreter with mlflow and transformers costs seconds to
# start): the policy first, and which project modules were loaded is read right after it,
# before the reward model's pyfunc is loaded.
LOAD_BOTH = """
import json, sys, mlflow, pandas as pd
pipe = mlflow.transformers.load_model("models:/instructflow-policy@champion")
out = pipe("Q: reverse stone\\nA:", max_new_tokens=4, do_sample=False)
project = [m for m in sys.modules if m.partition(".")[0] in ("instructflow", "tasks", "models", "flows", "world")]
policy = {"kind": type(pipe).__name__, "text": out[0]["generated_text"], "project": project}
rm = mlflow.pyfunc.load_model("models:/instructflow-reward-model/1")
rows = pd.DataFrame({"prompt": ["Add 2 and 3.", "Say hi."], "response": ["5", "hi"]})
scored = {"rewards": list(rm.predict(rows)), "inputs": rm.metadata.get_input_schema().input_names()}
print(json.dumps({"policy": policy, "scored": scored}))
"""


class _Heard(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _fresh_process(code: str, tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_registered_policy_and_reward_model_load_without_the_project(
    tiny_dirs, tmp_path, monkeypatch
):
    # given the tiny policy registered as champion and a reward model beside it
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracking.setup()
    sft_dir, rm_dir = tiny_dirs
    heard = _Heard()
    logging.getLogger("mlflow.transformers").addHandler(heard)
    with mlflow.start_run() as pipeline_run:
        pass
    with mlflow.start_run() as logging_run, warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        version = registry.register(str(sft_dir), registry.POLICY_MODEL, "policy", {})
        by_pipeline = {"mlflow_parent_run_id": pipeline_run.info.run_id}
        registry.register(str(rm_dir), REWARD_MODEL, "reward_model", by_pipeline)
    logging.getLogger("mlflow.transformers").removeHandler(heard)
    # and registering a local checkpoint printed no hub lookups nor a missing input example
    assert not [m for m in heard.messages if "hub" in m or "license" in m], heard.messages
    assert not [w for w in warned if "input example" in str(w.message)]
    MlflowClient().set_registered_model_alias(registry.POLICY_MODEL, "champion", version)
    # and a version is listed on its pipeline run's page ("Registered models": versions whose
    # run_id is the run), else on the run that logged it
    listed = {
        run.info.run_id: [
            v.name for v in MlflowClient().search_model_versions(f"run_id='{run.info.run_id}'")
        ]
        for run in (pipeline_run, logging_run)
    }
    assert listed == {
        pipeline_run.info.run_id: [REWARD_MODEL],
        logging_run.info.run_id: [registry.POLICY_MODEL],
    }
    # and the logged model's page links the version made from it, as mlflow.register_model's does
    source = MlflowClient().get_model_version(registry.POLICY_MODEL, version).source
    logged = source.removeprefix("models:/")  # the logged model it was made from
    links = MlflowClient().get_logged_model(logged).tags["mlflow.modelVersions"]
    assert json.loads(links) == [{"name": registry.POLICY_MODEL, "version": int(version)}]

    # when a fresh process loads the champion with mlflow.transformers alone (then the RM)
    loaded = _fresh_process(LOAD_BOTH, tmp_path)
    policy, scored = loaded["policy"], loaded["scored"]
    # then it is a text-generation pipeline that continues the prompt, and no project module loaded
    assert policy["kind"] == "TextGenerationPipeline"
    assert policy["text"].startswith("Q: reverse stone\nA:") and len(policy["text"]) > 20
    assert policy["project"] == []

    # and the reward model scores rows through its pyfunc, whose signature names its inputs
    assert len(scored["rewards"]) == 2 and all(isinstance(r, float) for r in scored["rewards"])
    assert scored["inputs"] == ["prompt", "response"]

    # and the pipeline's own code reads the registered policy back as a checkpoint
    model, tokenizer = load_causal_lm(
        registry_rival.local_checkpoint(registry.POLICY_MODEL, version)
    )
    assert tokenizer.pad_token_id is not None and model.num_parameters() > 0


def test_a_served_policy_takes_generation_settings_per_request(tiny_dirs, tmp_path, monkeypatch):
    # given the tiny policy logged as the registry logs it
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracking.setup()

    with mlflow.start_run():
        info = log_policy(str(tiny_dirs[0]), "policy")
    # when it is loaded as a pyfunc (what `mlflow models serve` runs)
    served = mlflow.pyfunc.load_model(info.model_uri)
    # then its signature declares the generation settings, each defaulting to what the
    # text-generation pipeline uses without them (MLflow drops undeclared params), but new
    # tokens that leave half the tiny model's context to the prompt
    defaults = {p.name: p.default for p in served.metadata.get_params_schema().params}
    half = context_length(load_causal_lm(tiny_dirs[0])[0]) // 2
    assert half < 256  # the tiny model's context is shorter than the pipeline's 256 new tokens
    assert defaults == {"max_new_tokens": half, "do_sample": True, "temperature": 0.7, "top_p": 1.0}
    # and a request's max_new_tokens and do_sample reach the generation
    prompt = "Q: reverse stone\nA:"
    greedy = {"max_new_tokens": 3, "do_sample": False}
    out = [served.predict([prompt], params=greedy)[0] for _ in range(2)]
    assert out[0] == out[1] and out[0].startswith(prompt)
    _, tokenizer = load_causal_lm(tiny_dirs[0])
    assert 0 < len(tokenizer(out[0][len(prompt) :])["input_ids"]) <= 3


# A context long enough that max_new_tokens keeps the pipeline's default (the cut to half
# the context is the 256-position test's).
UNBOUNDED = 10**6


def _param_defaults(signature) -> dict:
    return {p.name: p.default for p in signature.params.params}


def test_the_policy_signature_defaults_are_what_the_pipeline_generates_with(tiny_dirs, monkeypatch):
    import torch
    from transformers import pipeline

    from instructflow.tasks.registry_flavors import GENERATION_PARAMS, policy_signature

    # given the tiny policy as a text-generation pipeline (what the transformers flavor
    # loads), its generation config setting none of the signature's settings
    model, tokenizer = load_causal_lm(tiny_dirs[0])
    assert not set(GENERATION_PARAMS) & set(model.generation_config.to_diff_dict())
    pipe = pipeline("text-generation", model=model, tokenizer=tokenizer)
    defaults = _param_defaults(policy_signature(model.generation_config, UNBOUNDED))
    passed: dict = {}
    generate = model.generate

    def generate_short(*args, **kwargs):
        passed.update(kwargs)  # a 128-position model cannot sample the default 256 tokens
        return generate(*args, **{**kwargs, "max_new_tokens": 4})

    monkeypatch.setattr(model, "generate", generate_short)
    # when it samples without settings
    prompt = "Q: reverse stone\nA:"
    torch.manual_seed(0)
    text = pipe(prompt)[0]["generated_text"]
    # then what it passes to generate() is the signature's defaults
    given = passed.keys() & defaults.keys()
    assert given and {k: passed[k] for k in given} == {k: defaults[k] for k in given}
    # and set to their defaults, those it leaves to generate() (top_p) sample the same text
    left = {k: v for k, v in defaults.items() if k not in given}
    torch.manual_seed(0)
    assert pipe(prompt, **left)[0]["generated_text"] == text


def test_the_policy_signature_takes_the_models_generation_config_where_it_sets_a_value():
    from transformers import GenerationConfig

    from instructflow.tasks.registry_flavors import (
        GENERATION_PARAMS,
        PIPELINE_DEFAULTS,
        policy_signature,
    )

    # given models whose generation configs set the settings, each off the pipeline's
    sampling = GenerationConfig(max_new_tokens=32, do_sample=True, temperature=0.9, top_p=0.8)
    greedy = GenerationConfig(max_new_tokens=16, do_sample=False)
    for own in (sampling, greedy):
        set_here = {k: v for k, v in own.to_diff_dict().items() if k in GENERATION_PARAMS}
        assert all(v != PIPELINE_DEFAULTS[k] for k, v in set_here.items() if k != "do_sample")
        # then the signature's defaults are the model's where it sets one, else the pipeline's
        assert _param_defaults(policy_signature(own, UNBOUNDED)) == PIPELINE_DEFAULTS | set_here
    assert {sampling.do_sample, greedy.do_sample} == {True, False}


def test_the_policy_signature_needs_no_private_attribute_of_the_pipeline(monkeypatch):
    from transformers import GenerationConfig, TextGenerationPipeline

    from instructflow.tasks.registry_flavors import PIPELINE_DEFAULTS, policy_signature

    # given a transformers whose text-generation pipeline lacks the private class attribute
    # its defaults were read from (a release may rename it; the registry stage, a run's last,
    # failed on it)
    monkeypatch.delattr(TextGenerationPipeline, "_default_generation_config")
    # then a model's signature is still made, with the documented defaults
    assert _param_defaults(policy_signature(GenerationConfig(), UNBOUNDED)) == PIPELINE_DEFAULTS


def _served_own_gpt2(tmp_path, monkeypatch, positions: int):
    """An own GPT-2 built from config with `positions` positions, logged as the registry logs
    it: (tokenizer, model, size, the served pyfunc)."""
    from instructflow.models.lm import build_gpt2, save_model
    from instructflow.models.lm_size import GPT2Size
    from tests.models.test_lm import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    size = GPT2Size(n_layer=2, n_head=2, n_embd=32, n_positions=positions)
    model_dir = tmp_path / "own-gpt2"
    model = build_gpt2(tokenizer, size, seed=0)
    save_model(model, tokenizer, model_dir)
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracking.setup()
    with mlflow.start_run():
        info = log_policy(str(model_dir), "policy")
    return tokenizer, model, size, mlflow.pyfunc.load_model(info.model_uri)


def test_a_served_policy_with_256_positions_answers_a_request_that_sets_no_length(
    tmp_path, monkeypatch
):
    # given an own GPT-2 built from config with 256 positions, logged as the registry logs it
    tokenizer, _, size, served = _served_own_gpt2(tmp_path, monkeypatch, 256)
    # when a request sets no max_new_tokens (greedy: the same tokens each time)
    prompt = "Q: reverse the word stone\nA:"
    out = served.predict([prompt], params={"do_sample": False})[0]
    # then it answers within the model's positions, with room left for the prompt
    default = {p.name: p.default for p in served.metadata.get_params_schema().params}
    prompt_tokens = len(tokenizer(prompt)["input_ids"])
    assert prompt_tokens + default["max_new_tokens"] <= size.n_positions
    assert out.startswith(prompt)


def test_a_served_policy_keeps_the_last_tokens_of_a_prompt_too_long_for_its_context(
    tmp_path, monkeypatch
):
    import pytest
    import torch

    # given an own GPT-2 built from config with 64 positions, logged as the registry logs it
    tokenizer, model, size, served = _served_own_gpt2(tmp_path, monkeypatch, 64)
    # and prompts that leave fewer than max_new_tokens of the 64 positions: one that fits
    # alone, one longer than the context itself
    new = 8
    for repeats in (6, 8):
        prompt = "Q: reverse the word stone " * repeats + "\nA:"
        ids = tokenizer(prompt)["input_ids"]
        assert len(ids) + new > size.n_positions
        # when it is asked for an answer (greedy: the same tokens each time)
        out = served.predict([prompt], params={"max_new_tokens": new, "do_sample": False})[0]
        # then it answers (it ran past the position table: IndexError), after the whole
        # prompt, what the model says after the prompt's last 64 - 8 tokens (its start cut,
        # as dataset.overlong: truncate cuts a dataset's prompts)
        kept = torch.tensor([ids[-(size.n_positions - new) :]])
        expected = model.eval().generate(
            kept, attention_mask=torch.ones_like(kept), max_new_tokens=new, do_sample=False
        )
        said = tokenizer.decode(expected[0, kept.shape[1] :], skip_special_tokens=True)
        assert said and out == prompt + said, repeats
    # and max_new_tokens that leaves no position for the prompt is refused, saying why
    with pytest.raises(Exception, match="exceeds the models max length"):
        served.predict([prompt], params={"max_new_tokens": size.n_positions})
