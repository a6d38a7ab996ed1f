"""The embedded world's base model, SFT and the FLAN/T0 baselines are keyed by the tables
they read, not by the whole data version: new preference data (RM or PPO prompts, the
evaluation set) recorded with `dvc add data` re-runs comparisons and what follows, while
the base model, SFT and the baselines come from the cache."""

import pytest

from instructflow.flows import stages
from instructflow.flows.params import PipelineParams
from instructflow.world import layout

TABLES = [
    layout.PRETRAIN_TRAIN,
    layout.PRETRAIN_VALID,
    layout.SFT_TRAIN,
    layout.SFT_VALID,
    layout.FLAN_MIXTURE,
    layout.T0_MIXTURE,
    layout.RM_TRAIN,
    layout.PPO_TRAIN,
    layout.EVAL_TEST,
]


class FakeTask:
    version = "v"


@pytest.fixture
def keys(tmp_path, monkeypatch):
    """keys() -> {stage: the inputs its cache key holds}, for the pipeline's first stages."""
    for rel in TABLES:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(f"{rel}\n")
    seen: dict[str, dict] = {}

    def fake_run_stage(task, name, config, inputs, *args, **kwargs):
        seen[name] = inputs
        return {}

    monkeypatch.setattr(stages, "run_stage", fake_run_stage)
    run = stages.Stages(PipelineParams(profile="smoke"), tmp_path, "parent", 1)

    def keys(md5: str) -> dict[str, dict]:
        data_in = {"data_md5": md5}  # as flows/pipeline.py passes it
        run(FakeTask, "base_model", "base", data_in)
        base_in = data_in | {"base": "base_model-1"}
        run(FakeTask, "sft", "sft", base_in, variant="sft")
        for name in ("flan", "t0"):
            run(FakeTask, name, "baselines", base_in, variant=name)
        run(FakeTask, "comparisons", "comparisons", base_in | {"sft": "sft-1"})
        return dict(seen)

    return keys


def test_new_preference_data_leaves_base_model_sft_and_baselines_keys_alone(tmp_path, keys):
    before = keys("md5-1")
    # when RM prompts are added (a new data version)
    with open(tmp_path / layout.RM_TRAIN, "a") as fh:
        fh.write("a new prompt\n")
    after = keys("md5-2")
    # then the stages that never read them keep their keys, the comparisons' changes
    for name in ("base_model", "sft", "flan", "t0"):
        assert after[name] == before[name], name
    assert after["comparisons"] != before["comparisons"]


def test_a_changed_table_changes_the_keys_of_the_stages_that_read_it(tmp_path, keys):
    before = keys("md5-1")
    with open(tmp_path / layout.SFT_VALID, "a") as fh:
        fh.write("another demonstration\n")
    after = keys("md5-2")
    assert after["sft"] != before["sft"]
    assert (after["flan"], after["t0"], after["base_model"]) == (
        before["flan"],
        before["t0"],
        before["base_model"],
    )
    with open(tmp_path / layout.FLAN_MIXTURE, "a") as fh:
        fh.write("another example\n")
    assert keys("md5-3")["flan"] != after["flan"]
    with open(tmp_path / layout.SFT_TRAIN, "a") as fh:  # the tokenizer reads it
        fh.write("one more\n")
    assert keys("md5-4")["base_model"] != after["base_model"]
