"""`torch_compile: true` trains SFT and the reward model through a compiled trunk, to the same weights.

Each stage's plain function runs twice on the same tiny world, eager and
compiled: the compiled run must have compiled graphs (dynamo's counters), save
the same state-dict keys (nothing renamed by a wrapper) and end at the eager
run's weights and metrics up to float rounding (inductor fuses and reorders
ops). The models are tiny, so a few-step run is close to rounding apart.
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from instructflow.models.runtime import compiled_trunk
from instructflow.tasks.reward_model import RewardModelConfig, train_reward_model
from instructflow.tasks.sft import SFTConfig, finetune
from instructflow.world import layout
from tests.models.test_lm import save_tiny_checkpoint
from tests.tasks.test_kill_resume import make_world

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def _noop(*_args) -> None:
    pass


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, str]:
    return make_world(tmp_path_factory.mktemp("compile-world"))


def _sft(world: dict, out: Path, compiled: bool) -> dict:
    cfg = SFTConfig(epochs=2, lr=1e-3, batch_size=4, torch_compile=compiled)
    table = Path(world["profile"]) / layout.FLAN_MIXTURE
    return finetune(Path(world["base"]), table, None, "mixture", cfg, 0, out, _noop)


def _reward_model(world: dict, out: Path, compiled: bool) -> dict:
    cfg = RewardModelConfig(epochs=2, lr=1e-3, batch_size=4, torch_compile=compiled)
    args = (Path(world["base"]), Path(world["comparisons"]), Path(world["profile"]))
    return train_reward_model(*args, cfg, 0, out, _noop)


def _figures(metrics: dict) -> dict:
    # Wall time, throughput and memory depend on the process, not on the training.
    return {
        k: v
        for k, v in metrics.items()
        if not any(m in k for m in ("peak_memory", "seconds", "per_second"))
    }


@pytest.mark.parametrize("stage", [_sft, _reward_model], ids=["sft", "reward_model"])
def test_a_compiled_stage_trains_to_the_eager_weights(stage, world, tmp_path):
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    eager = stage(world, tmp_path / "eager", compiled=False)
    assert not torch._dynamo.utils.counters["stats"]["unique_graphs"]
    compiled = stage(world, tmp_path / "compiled", compiled=True)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1, "nothing was compiled"
    assert _figures(compiled).keys() == _figures(eager).keys()
    for key, value in _figures(eager).items():
        assert compiled[key] == pytest.approx(value, rel=1e-3, abs=1e-4), key
    before = load_file(str(tmp_path / "eager" / "model" / "model.safetensors"))
    after = load_file(str(tmp_path / "compiled" / "model" / "model.safetensors"))
    assert sorted(after) == sorted(before)
    base = load_file(str(Path(world["base"]) / "model.safetensors"))
    trained = [k for k in before if k in base and base[k].shape == before[k].shape]
    moved = max(float((before[k] - base[k]).abs().max()) for k in trained)
    assert moved > 1e-3, "the weights did not train, so equal weights would prove nothing"
    for key in before:
        torch.testing.assert_close(after[key], before[key], rtol=1e-3, atol=1e-4, msg=key)


def test_compiled_trunk_compiles_in_place_and_returns_to_eager(tmp_path):
    from instructflow.models.lm import load_causal_lm

    model, _ = load_causal_lm(save_tiny_checkpoint("gpt2", tmp_path / "m"))
    keys = list(model.state_dict())
    with compiled_trunk(model):
        assert model.transformer._compiled_call_impl is not None
        assert list(model.state_dict()) == keys
    assert model.transformer._compiled_call_impl is None
    with compiled_trunk(model, enabled=False):
        assert model.transformer._compiled_call_impl is None
