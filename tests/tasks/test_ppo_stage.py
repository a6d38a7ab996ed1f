"""Tests for the PPO stage: resume after a kill, atomic checkpoints, the over-optimisation record.

Everything is tiny: 2-layer GPT-2 SFT and RM built from config, a profile
folder with a handful of prompts, gold answers and pretraining text.
"""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from instructflow.models.lm import load_causal_lm, save_model
from instructflow.models.numeric import NonFiniteError, in_stage
from instructflow.models.reward_model import reward_model_from_causal_lm
from instructflow.tasks.checkpoints import RESUME, prepare_out_dir
from instructflow.tasks.ppo import CURVE_JSON, CURVE_PNG, run_ppo
from instructflow.tasks.ppo_config import SMOKE_OVERRIDES, PPOStageConfig
from instructflow.tasks.ppo_resume import find_resume, read_resume, write_resume
from instructflow.tasks.ppo_selection import new_history, record_evaluation
from instructflow.tasks.registry_weights import same_weights
from instructflow.tasks.stage import DONE_MARKER
from instructflow.tasks.tables import write_jsonl
from instructflow.world import layout
from instructflow.world.judge import GoldJudge
from tests.models.test_lm import CORPUS, save_tiny_checkpoint

WORDS = ["stone", "apple", "tarn", "velm", "orsk", "bex"]
CFG = PPOStageConfig(
    iterations=4,
    rollout_batch=8,
    minibatch_size=4,
    ppo_epochs=1,
    lr=1e-3,
    max_new_tokens=4,
    eval_every=2,
    eval_prompts=4,
    checkpoint_every=2,
    reference_samples=8,
    patience=100,
    ptx_block_size=16,
    ptx_batch_size=2,
)

pytestmark = pytest.mark.usefixtures("one_thread")


class Killed(Exception):
    """Stands in for the process being killed."""


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """SFT and RM checkpoints and a profile folder (prompts, gold key, pretraining text)."""
    root = tmp_path_factory.mktemp("ppo-stage")
    sft = save_tiny_checkpoint("gpt2", root / "sft")
    rm, rm_tokenizer = reward_model_from_causal_lm(sft, seed=3)
    save_model(rm, rm_tokenizer, root / "rm")
    profile = root / "profile"

    def prompts(split: str, n: int, offset: int) -> list[dict]:
        return [
            {
                "prompt_id": f"ppo-{offset + i:03d}",
                "user_id": f"u-{split}-{i % 3}",
                "split": split,
                "family": "reverse",
                "prompt": f"reverse the word {WORDS[i % len(WORDS)]}",
            }
            for i in range(n)
        ]

    train, valid = prompts("train", 12, 0), prompts("valid", 6, 100)
    write_jsonl(profile / layout.PPO_TRAIN, train)
    write_jsonl(profile / layout.PPO_VALID, valid)
    key = [
        {
            "prompt_id": r["prompt_id"],
            "family": "reverse",
            "kind": "words",
            "answer": r["prompt"].split()[-1][::-1],
            "slots": {},
        }
        for r in train + valid
    ]
    write_jsonl(profile / layout.GOLD_KEY, key)
    docs = [{"doc_id": f"doc-{i}", "text": text} for i, text in enumerate(CORPUS)]
    write_jsonl(profile / layout.PRETRAIN_TRAIN, docs)
    write_jsonl(profile / layout.PRETRAIN_VALID, docs[:6])
    return {"sft": sft, "rm": root / "rm", "profile": profile}


def iteration_logger(steps: list[int], kill_at: int | None = None):
    def log(step: int, metrics: dict, *_progress) -> None:
        if "ppo/kl" in metrics:  # an iteration's metrics (validation points come separately)
            steps.append(step)
            if step == kill_at:
                raise Killed

    return log


def run(
    world, out: Path, log, stage: str = "ppo", ptx_gamma: float = 0.0, cfg: PPOStageConfig = CFG
) -> dict:
    return run_ppo(stage, world["sft"], world["rm"], world["profile"], cfg, ptx_gamma, 0, out, log)


# ---------------------------------------------------------------- resume


def test_killed_run_resumes_at_its_last_checkpoint_and_ends_like_an_uninterrupted_one(
    world, tmp_path: Path
) -> None:
    # given: a run killed during iteration 3 (of 4), after the checkpoint written at the end of iteration 1
    out = tmp_path / "killed"
    first: list[int] = []
    with pytest.raises(Killed):
        run(world, out, iteration_logger(first, kill_at=3))
    assert first == [0, 1, 2, 3]
    state = read_resume(out)
    assert state["trainer"]["iteration"] == 2
    assert [p["iteration"] for p in state["history"]["points"]] == [0, 2]
    # when: the stage is started again on the same folder
    second: list[int] = []
    metrics = run(world, out, iteration_logger(second))
    # then: it continues with iteration 2 and stops at the configured total, not later
    assert second == [2, 3]
    assert metrics["ppo/iterations_run"] == 4
    curve = json.loads((out / CURVE_JSON).read_text())
    assert [p["iteration"] for p in curve["points"]] == [0, 2, 4]
    # and: the result is the one an uninterrupted run reaches (same seed, restored RNGs)
    clean = tmp_path / "clean"
    reference = run(world, clean, iteration_logger([]))
    assert json.loads((clean / CURVE_JSON).read_text())["points"] == curve["points"]
    # Wall time and peak memory depend on the machine and the process, not on the training.
    machine = {"ppo/seconds_per_iteration": 0, "ppo/peak_memory_mb": 0}
    machine["ppo/process_peak_memory_mb"] = 0
    assert reference | machine == pytest.approx(metrics | machine, nan_ok=True)
    resumed_model, _ = load_causal_lm(out / "model")
    clean_model, _ = load_causal_lm(clean / "model")
    a, b = resumed_model.state_dict(), clean_model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # and: started once more before the wrapper marks it done, a finished run trains no further
    assert read_resume(out)["trainer"]["iteration"] == 4
    third: list[int] = []
    assert run(world, out, iteration_logger(third))["ppo/iterations_run"] == 4 and third == []


def test_prepare_out_dir_keeps_only_an_unfinished_runs_checkpoint(tmp_path: Path) -> None:
    payload = {"history": {"points": []}, "trainer": {"iteration": 2}}
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    write_resume(unfinished, payload)
    (unfinished / "model").mkdir()
    prepare_out_dir(unfinished)
    assert find_resume(unfinished).parent == unfinished / RESUME
    assert (unfinished / "model").exists()

    finished = tmp_path / "finished"
    finished.mkdir()
    write_resume(finished, payload)
    (finished / DONE_MARKER).write_text("{}")
    prepare_out_dir(finished)
    assert finished.exists() and list(finished.iterdir()) == []

    stale = tmp_path / "stale"
    (stale / "model").mkdir(parents=True)
    prepare_out_dir(stale)
    assert list(stale.iterdir()) == []


# ---------------------------------------------------------------- atomic checkpoints


def test_a_failed_checkpoint_write_leaves_the_previous_one_intact(
    tmp_path: Path, monkeypatch
) -> None:
    write_resume(tmp_path, {"history": {"points": [1]}, "trainer": {"iteration": 2}})

    def broken_save(obj, file):
        file.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_resume(tmp_path, {"history": {"points": [1, 2]}, "trainer": {"iteration": 4}})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == [RESUME]  # no temporary or partial folder
    assert read_resume(tmp_path)["trainer"]["iteration"] == 2
    (kept,) = (tmp_path / RESUME).iterdir()
    assert sorted(p.name for p in kept.iterdir()) == ["history.json", "meta.json", "state.pt"]


def test_a_corrupted_newest_checkpoint_falls_back_to_the_one_before(tmp_path: Path, capsys) -> None:
    # given two checkpoints, the newer one damaged on disk (one byte flipped)
    write_resume(tmp_path, {"history": {}, "trainer": {"iteration": 2}})
    write_resume(tmp_path, {"history": {}, "trainer": {"iteration": 4}})
    state = find_resume(tmp_path) / "state.pt"
    blob = bytearray(state.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    state.write_bytes(bytes(blob))
    # then its digest gives it away, and the stage resumes from the one before, with a warning
    assert read_resume(tmp_path)["trainer"]["iteration"] == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "sha256" in line and line.endswith("trying the one at step 2")


# ---------------------------------------------------------------- checkpoint choice


def test_extra_kl_must_pay_for_itself_in_validation_rm() -> None:
    cfg = PPOStageConfig(kl_price=0.1, patience=2, kl_budget=8.0)
    history = new_history()
    sft_scores = torch.tensor([-1.0, 1.0, -1.0, 1.0])  # sd ~1.15
    scale = float(sft_scores.std())

    def observe(iteration: int, kl: float, rm: float) -> bool:
        point = {"iteration": iteration, "kl": kl, "rm": rm, "gold": 0.0}
        return record_evaluation(history, point, sft_scores, cfg)

    assert observe(0, 0.0, 0.0)  # SFT is kept until something beats it
    assert observe(5, 1.0, 0.3 * scale)  # +0.3 sd for 1 nat: worth it (objective 0.2)
    assert not observe(10, 4.0, 0.45 * scale)  # +0.15 sd for 3 more nats: not worth it (0.05)
    assert history["chosen"] == 1 and history["stop_reason"] is None
    assert not observe(15, 9.0, 2.0 * scale)  # past the KL budget: never kept, and the run stops
    assert "kl_budget" in history["stop_reason"]
    assert [round(p["objective"], 6) for p in history["points"]] == [0.0, 0.2, 0.05, 1.1]


def test_patience_runs_out_without_a_better_checkpoint() -> None:
    cfg = PPOStageConfig(patience=2)
    history = new_history()
    scores = torch.tensor([0.0, 2.0])
    for iteration, rm in [(0, 0.0), (5, -0.1), (10, -0.2)]:
        record_evaluation(
            history, {"iteration": iteration, "kl": 0.5, "rm": rm, "gold": 0.0}, scores, cfg
        )
    assert history["chosen"] == 0 and "did not improve" in history["stop_reason"]


# ---------------------------------------------------------------- outputs


def test_ppo_ptx_writes_model_curve_and_namespaced_summary(
    world, tmp_path: Path, monkeypatch
) -> None:
    # A random policy's gold is 0 everywhere; a made-up judge makes the gold summary non-trivial.
    monkeypatch.setattr(
        GoldJudge, "score", lambda self, prompt_id, response: 0.1 + len(response) % 7 / 10
    )
    out = tmp_path / "ptx"
    cfg = CFG.model_copy(update={"min_gain": -1e9})  # every evaluation replaces the kept one
    metrics = run(world, out, iteration_logger([]), stage="ppo_ptx", ptx_gamma=1.0, cfg=cfg)
    assert (out / "model" / "model.safetensors").exists() and (out / CURVE_PNG).stat().st_size > 0
    curve = json.loads((out / CURVE_JSON).read_text())
    first = curve["points"][0]
    assert all(p["gold_se"] >= 0 for p in curve["points"])  # the plot's error bars
    # At iteration 0 the policy is the reference: its KL and objective are 0 up to the float
    # rounding between generation's cached logits and the reference's full forward pass.
    assert curve["ptx_gamma"] == 1.0 and first["iteration"] == 0
    assert first["kl"] == pytest.approx(0.0, abs=1e-5)
    assert first["objective"] == pytest.approx(0.0, abs=1e-5)
    expected = {
        "chosen_iteration",
        "peak_gold",
        "chosen_gold",
        "gold_fraction_of_peak",
        "iterations_run",
        "seconds_per_iteration",
    }
    assert {f"ppo_ptx/{k}" for k in expected} <= set(metrics)
    assert metrics["ppo_ptx/chosen_iteration"] == 4
    # its peak memory: its own, and its process's whole, which holds the own and more
    own, whole = metrics["ppo_ptx/peak_memory_mb"], metrics["ppo_ptx/process_peak_memory_mb"]
    assert whole > own >= 0
    assert metrics["ppo_ptx/gold_fraction_of_peak"] == pytest.approx(
        metrics["ppo_ptx/chosen_gold"] / metrics["ppo_ptx/peak_gold"]
    )
    # the kept model is the last evaluated policy here, not SFT
    kept, _ = load_causal_lm(out / "model")
    sft, _ = load_causal_lm(world["sft"])
    assert any(
        not torch.equal(a, b)
        for a, b in zip(kept.state_dict().values(), sft.state_dict().values(), strict=True)
    )
    assert not same_weights(out / "model", world["sft"])


def test_stopping_rule_keeps_sft_when_nothing_beats_it(world, tmp_path: Path, capsys) -> None:
    # given: a user's own data, which has no gold judge
    profile = tmp_path / "profile"
    shutil.copytree(world["profile"], profile)
    (profile / layout.GOLD_KEY).unlink()
    # when: no later evaluation can gain 1e9, so patience 1 stops at the first one after SFT
    cfg = CFG.model_copy(update={"min_gain": 1e9, "patience": 1})
    steps: list[int] = []
    metrics = run({**world, "profile": profile}, tmp_path / "out", iteration_logger(steps), cfg=cfg)
    # then: the run stops early and keeps SFT; gold is simply not known
    assert steps == [0, 1] and metrics["ppo/stopped_early"] == 1.0
    assert metrics["ppo/chosen_iteration"] == 0
    # and the log says so where the progress lines end (it just stopped printing them)
    assert (
        f"[ppo] stopped at iteration 2/{cfg.iterations}: validation objective"
        in capsys.readouterr().out
    )
    assert math.isnan(metrics["ppo/chosen_gold"]) and math.isnan(
        metrics["ppo/gold_fraction_of_peak"]
    )
    # and no gold peak is claimed: NaN (not logged to MLflow), not iteration 0
    assert math.isnan(metrics["ppo/peak_gold"]) and math.isnan(metrics["ppo/peak_gold_iteration"])
    curve = json.loads((tmp_path / "out" / CURVE_JSON).read_text())
    assert "did not improve" in curve["stop_reason"]
    kept, _ = load_causal_lm(tmp_path / "out" / "model")
    sft, _ = load_causal_lm(world["sft"])
    assert all(
        torch.equal(a, b)
        for a, b in zip(kept.state_dict().values(), sft.state_dict().values(), strict=True)
    )
    # and the gate can tell from the files alone that the candidate is SFT's weights
    assert same_weights(tmp_path / "out" / "model", world["sft"])


def test_smoke_overrides_are_valid_config() -> None:
    cfg = PPOStageConfig(**SMOKE_OVERRIDES)
    assert cfg.iterations < PPOStageConfig().iterations
    with pytest.raises(ValueError):
        run_ppo("ppo-ptx", Path("."), Path("."), Path("."), cfg, 0.0, 0, Path("."), print)


def test_a_nan_reward_stops_ppo_naming_stage_iteration_and_quantity(world, tmp_path: Path) -> None:
    # given a reward model whose score head gives NaN
    rm, tokenizer = reward_model_from_causal_lm(world["rm"])
    with torch.no_grad():
        for name, param in rm.named_parameters():
            if "score" in name:
                param.fill_(float("nan"))
    save_model(rm, tokenizer, tmp_path / "nan-rm")
    broken = dict(world, rm=tmp_path / "nan-rm")
    # then the stage stops, naming the stage, the iteration and the quantity
    with pytest.raises(NonFiniteError, match=r"stage ppo, iteration 1: reward \(RM score\) is nan"):
        with in_stage("ppo"):
            run(broken, tmp_path / "out", iteration_logger([]))
    # and left no checkpoint to resume from
    assert find_resume(tmp_path / "out") is None


def test_the_iteration_line_leaves_out_a_gold_score_there_is_none_of(monkeypatch, capsys):
    from instructflow.tasks import ppo as ppo_stage

    monkeypatch.setattr(ppo_stage.tracking, "log_step_metrics", lambda *a, **k: None)
    metrics = {"ppo/reward_rm": 0.5, "ppo/kl": 0.01, "ppo/clipfrac": 0.1, "ppo/seconds": 2.0}
    log = ppo_stage._ppo_logger("ppo")
    # on the embedded world the gold score is shown, with the iteration of how many
    log(3, metrics | {"ppo/reward_gold": 0.25}, 10, "iteration")
    assert capsys.readouterr().out == (
        "[ppo] iteration 4/10 (40%): reward_rm=0.5, reward_gold=0.25, kl=0.01, clipfrac=0.1, "
        "seconds=2\n"
    )
    # on a user's dataset (no gold: NaN) it is left out
    log(4, metrics | {"ppo/reward_gold": float("nan")})
    assert capsys.readouterr().out == (
        "[ppo] iteration 4: reward_rm=0.5, kl=0.01, clipfrac=0.1, seconds=2\n"
    )


def test_a_launched_ppo_process_prints_the_line_this_process_prints(tmp_path, capsys):
    # given the spec ppo_task hands to launched processes (--processes N), through its pickle
    import pickle

    from instructflow.tasks import launch_worker
    from instructflow.tasks import ppo as ppo_stage

    spec = {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "log_prefix": None}
    spec |= {"label": "ppo", "run_id": None, "console": ppo_stage.console_figures}
    log, _flush = launch_worker._logger(pickle.loads(pickle.dumps(spec)))
    # when rank 0 logs a trainer's iteration on a user's dataset (no gold, no ptx: NaN)
    # and a validation point
    nan = float("nan")
    iteration = {"ppo/reward_rm": 0.5, "ppo/score": -0.3, "ppo/kl": 0.01, "ppo/beta": 0.2}
    iteration |= {"ppo/clipfrac": 0.1, "ppo/ptx_loss": nan, "ppo/seconds": 2.0}
    log(3, iteration | {"ppo/reward_gold": nan}, 10, "iteration")
    log(4, {"ppo/valid_rm": 0.02, "ppo/valid_gold": nan, "ppo/valid_kl": 0.0})
    # then its line is the in-process one: the iteration's figures, no nan, no validation line
    assert capsys.readouterr().out == (
        "[ppo] iteration 4/10 (40%): reward_rm=0.5, kl=0.01, clipfrac=0.1, seconds=2\n"
    )
