"""The model card: a registered version's description, written from the run's lineage, metrics and gate."""

import re

import pytest

from instructflow.tasks.judge_trust import judge_is_trustworthy
from instructflow.tasks.model_card import (
    approval_section,
    model_card,
    registry_status,
    reward_model_card,
    with_champion_status,
    with_human_verdict,
)
from instructflow.tasks.report import empty_report, to_markdown
from instructflow.tasks.stage_notes import MEASURES

LINEAGE = {
    "profile": "smoke",
    "dvc_data_md5": "0123abcd.dir",
    "prefect_flow_run_id": "7f0c",
    "prefect_flow_run_url": "http://127.0.0.1:4200/runs/flow-run/7f0c",
    "mlflow_parent_run_id": "ab12",
    "mlflow_parent_run_url": "http://127.0.0.1:5000/#/experiments/1/runs/ab12",
}
GATE = {
    "incumbent": "champion v3",
    "evidence": "held-out labelers",
    "prompts": 40,
    "win_rate": {"mean": 0.625, "ci95": [0.55, 0.7]},
    "public_suite": {"challenger": 0.45, "incumbent": 0.4375},
    "promoted": False,
    "awaiting_approval": True,
    "reason": "beats champion v3",
}


def test_the_card_holds_data_version_metrics_gate_evidence_decision_and_the_flow_run_link():
    card = model_card("policy", "4", LINEAGE, {"gold_score": 0.5, "kl_to_sft": 1.25}, GATE)
    assert card.startswith("# policy v4\n")
    assert "- data version (DVC md5): `0123abcd.dir`" in card
    assert "- gold_score: 0.500" in card and "- kl_to_sft: 1.250" in card
    assert "- played: champion v3 (held-out labelers, 40 prompts)" in card
    assert "- win rate: 0.625 (95% CI 0.550-0.700)" in card
    # the public suite's figures, each named by its side
    assert "- public-suite accuracy: this version 0.450 vs champion v3 0.438" in card
    assert "- decision: passed, awaiting a person's approval: beats champion v3" in card
    # the runs' ids link their pages
    url = LINEAGE["prefect_flow_run_url"]
    assert f"- Prefect flow run: [`7f0c`]({url})" in card
    url = LINEAGE["mlflow_parent_run_url"]
    assert f"- MLflow parent run: [`ab12`]({url})" in card


def test_without_a_known_page_the_run_ids_stay_text():
    lineage = {"prefect_flow_run_id": "7f0c", "mlflow_parent_run_id": "ab12"}
    card = model_card("p", "4", lineage, {}, GATE)
    assert "- Prefect flow run: `7f0c`\n" in card
    assert "- MLflow parent run: `ab12`\n" in card
    assert "](" not in card


def test_the_card_names_the_candidate_and_says_when_ppo_kept_sfts_weights():
    note = "ppo_ptx kept its starting weights (SFT's): ..."
    card = model_card("p", "4", {}, {}, GATE | {"candidate": "ppo_ptx", "candidate_note": note})
    assert "- policy: `ppo_ptx` (the run's candidate)\n" in card
    assert f"- note: {note}\n" in card
    assert "kept its starting weights" not in model_card("p", "4", {}, {}, GATE)


def test_the_reward_models_card_names_its_policy_lineage_and_figures():
    card = reward_model_card("rm", "2", LINEAGE, {"accuracy": 0.75}, ("policy", "5"))
    assert card.startswith("# rm v2\n")
    assert "registered beside policy v5" in card
    assert "- data version (DVC md5): `0123abcd.dir`" in card
    assert f"- MLflow parent run: [`ab12`]({LINEAGE['mlflow_parent_run_url']})" in card
    assert "- accuracy: 0.750" in card


def test_the_reward_models_card_keeps_training_readings_out_of_its_evaluation():
    # given the reward model stage's figures, with its readings of how it trained
    metrics = {"accuracy_vs_gold": 0.446, "peak_memory_mb": 869.973, "trainable_fraction": 1.0}
    card = reward_model_card("rm", "2", LINEAGE, metrics, ("policy", "5"))
    # then the Evaluation section holds what the model scored, and the machine's peak memory
    # and the share of weights that trained stand apart, under Training
    evaluation = card.split("## Evaluation\n\n", 1)[1].split("\n\n", 1)[0]
    assert evaluation == "- accuracy_vs_gold: 0.446"
    assert card.endswith("## Training\n\n- peak_memory_mb: 869.973\n- trainable_fraction: 1.000\n")


def test_the_registered_model_says_there_is_no_champion_yet_and_why():
    versions = {
        "1": {"gate_promote": "False", "gate_reason": "CI too wide"},
        "2": {"gate_promote": "False", "gate_reason": "win rate 0.48 <= 0.5"},
    }
    text = registry_status("policy", versions, {"challenger": "2"})
    assert (
        "**No champion yet**: no version has passed the gate (latest: v2, win rate 0.48 <= 0.5)"
        in text
    )
    assert "`challenger` is the latest run's candidate" in text
    assert "`models:/policy@champion` loads it" in text
    # a version that passed but waits for a person is not 'no version passed'
    versions["2"] = {"gate_promote": "True", "gate_reason": "beats sft; approval required"}
    text = registry_status("policy", versions, {"challenger": "2"})
    assert "no version has been promoted (latest: v2, beats sft; approval required)" in text


def test_the_registered_model_names_its_champion_and_since_which_run_and_decision():
    url = LINEAGE["mlflow_parent_run_url"]
    versions = {
        "1": {"promoted_by": "gate", "gate_reason": "beats sft", "mlflow_parent_run_id": "ab12"}
        | {"mlflow_parent_run_url": url},
        "2": {"gate_reason": "CI too wide", "mlflow_parent_run_id": "cd34"},
    }
    text = registry_status("policy", versions, {"champion": "1", "challenger": "2"})
    assert f"**Champion: v1**, promoted by the gate of run [`ab12`]({url}): beats sft" in text
    assert "Challenger: v2 (run `cd34`): CI too wide" in text
    versions["2"] |= {"promoted_by": "manual", "promotion_reason": "reads better"}
    text = registry_status("policy", versions, {"champion": "2", "challenger": "2"})
    assert "**Champion: v2**, promoted by hand (`instructflow promote`): reads better" in text
    assert "Challenger" not in text  # the champion itself


def test_without_approval_the_decision_is_the_gates():
    gate = GATE | {"awaiting_approval": False, "promoted": True}
    assert "- decision: promoted: beats champion v3" in model_card("p", "4", {}, {}, gate)
    gate = GATE | {"awaiting_approval": False, "promoted": False, "reason": "CI too wide"}
    card = model_card("p", "4", {}, {}, gate)
    assert "- decision: not promoted: CI too wide" in card
    assert "Prefect flow run page" not in card  # no Prefect server: no link


def test_the_approval_section_says_who_decided_why_and_where_champion_is():
    text = approval_section("rejected", "bo", "KL too high", "3", moved=False)
    assert text == (
        "\n## Approval\n\n- decision: rejected by bo (left `champion` unchanged; champion: v3)\n"
        "- reason: KL too high\n"
    )
    moved = approval_section("approved", "ana", "wins", "4", moved=True, note="")
    assert "- decision: approved by ana (moved `champion` here; champion: v4)" in moved


def test_peoples_verdict_closes_the_card_once_however_often_it_is_imported():
    card = model_card("p", "4", {}, {}, GATE)
    human = GATE | {
        "incumbent": "sft",
        "evidence": "human",
        "prompts": 10,
        "win_rate": {"mean": 0.25, "ci95": [0.0, 0.5]},
        "awaiting_approval": False,
        "promoted": False,
        "reason": "win rate vs sft 0.250 has 95% CI lower end 0.000 <= 0.5",
    }
    once = with_human_verdict(card, human)
    assert once.startswith(card)  # the automatic gate's section stays as it was
    assert once[len(card) :] == (
        "\n## People's rankings\n\n"
        "- played: sft (human, 10 prompts)\n"
        "- win rate: 0.250 (95% CI 0.000-0.500)\n"
        "- decision: not promoted: win rate vs sft 0.250 has 95% CI lower end 0.000 <= 0.5\n"
    )
    approved = once + approval_section("approved", "ana", "reads well", "4", moved=True)
    again = with_human_verdict(approved, human | {"prompts": 12})
    assert again.count("## People's rankings") == 1
    assert "- played: sft (human, 12 prompts)" in again and again.startswith(card)
    assert "## Approval\n\n- decision: approved by ana" in again  # kept


def test_the_champion_section_is_rewritten_not_repeated_even_on_a_card_without_a_title():
    champion = {"promoted_by": "gate", "promoted_at": "t1"}
    replaced = {"replaced_by": "2", "replaced_at": "t2"}
    # a version registered without a description, then replaced
    card = with_champion_status(with_champion_status("", champion), replaced)
    assert card.count("## Champion\n") == 1 and card.startswith("## Champion\n")
    assert "**not champion**" in card and "**champion now**" not in card
    # a titled card keeps its title first and its other sections after the status
    titled = "# card\n\nintro\n\n## Gate\n\npassed\n"
    card = with_champion_status(with_champion_status(titled, champion), replaced)
    assert card.startswith("# card\n\nintro\n\n## Champion\n")
    assert card.count("## Champion\n") == 1 and card.endswith("## Gate\n\npassed\n")
    # and a card that never was champion gets no section
    assert with_champion_status("", {}) == "" and with_champion_status(titled, {}) == titled


def test_the_card_says_who_judged_each_win_rate():
    # given a candidate's figures: held-out labelers' win rate and the held-out judge's
    metrics = {"win_rate_vs_sft": 0.458, "judge_win_rate_vs_sft": 0.453, "likert": 1.42}
    card = model_card("policy", "4", LINEAGE, metrics, GATE)
    # then the card says which is whose, and that the judge's may not be trusted (a smoke
    # run's judge is often at chance: the report's judge block says so, the card did not)
    evaluation = card.split("## Evaluation (test users)\n\n", 1)[1].split("\n\n", 1)[0]
    # (a dataset split by prompt held prompts out, not users)
    by_prompt = model_card("policy", "4", LINEAGE | {"split_rule": "prompt_hash"}, metrics, GATE)
    assert "## Evaluation (test prompts)\n" in by_prompt
    who = evaluation.splitlines()[0]
    assert who.startswith(
        "`win_rate_vs_sft` and `likert` come from the held-out labelers, "
        "`judge_win_rate_vs_sft` from the run's held-out judge, a second reward model"
    )
    assert "It may be untrusted" in who and "report.md" in who and "Held-out judge" in who
    # and a card without the judge's figure has no such line
    plain = model_card("policy", "4", LINEAGE, {"gold_score": 0.5}, GATE)
    assert "held-out judge, a second reward model" not in plain


@pytest.mark.parametrize(
    ("accuracy", "pairs", "trustworthy"),
    [(0.8, 200, True), (0.55, 20, False), (1 / 15, 15, False)],  # the last worse than chance
)
def test_the_card_says_of_the_judge_what_the_runs_report_says(accuracy, pairs, trustworthy):
    # given the run's verdict on its judge (its report's judge block)
    ok, reason = judge_is_trustworthy(accuracy, pairs)
    assert ok is trustworthy
    judge = {"trustworthy": ok, "trust_reason": reason}
    metrics = {"win_rate_vs_sft": 0.458, "judge_win_rate_vs_sft": 0.453}
    # when the card is written with it
    card = model_card("policy", "4", LINEAGE, metrics, GATE, judge=judge)
    # then it says the verdict and its reason, in report.md's words, not "may be"
    report = empty_report({"mlflow_run_id": "r"}) | {"judge": judge | {"training_pairs": 9}}
    report["policies"] = {"ppo": {"judge_win_rate_vs_sft": 0.453}}
    verdict = (
        "The run trusts this judge." if trustworthy else "This judge is not to be trusted here."
    )
    (line,) = [
        line for line in card.splitlines() if "held-out judge, a second reward model" in line
    ]
    assert verdict in line and "may be untrusted" not in card
    # as plain sentences (it was one run-on line of colons: "a reward model not to be
    # trusted here: held-out judge too weak: accuracy ..."), none chaining two colons
    assert all(sentence.count(": ") <= 1 for sentence in line.split(". ")), line

    # that keep every word and figure of the reason
    def words(text: str) -> set[str]:  # a sentence's closing full stop is no part of a word
        return {word.rstrip(".") for word in re.findall(r"[\w.<>=%()-]+", text.lower())}

    assert words(reason) <= words(line), line
    untrusted_in_report = f"not to be trusted here: {reason}" in to_markdown(report)
    assert untrusted_in_report is not trustworthy


def test_a_version_trained_with_lora_says_so_with_each_stage_s_adapter_settings():
    from instructflow.flows.params import PipelineParams
    from instructflow.tasks.model_lineage import lora_lineage

    # given a run whose SFT, RM and PPO trained LoRA adapters (merged into plain weights)
    params = PipelineParams(
        profile="smoke",
        sft={"lora": {"r": 4, "alpha": 8}},
        reward_model={"lora": {"r": 4, "alpha": 8, "target_modules": "all-linear"}},
        ppo={"lora": {"r": 16, "alpha": 32, "target_modules": ["c_attn", "c_proj"]}},
    )
    # when its policy's lineage and card are written
    lineage = LINEAGE | lora_lineage(params, "ppo_ptx")
    card = model_card("policy", "4", lineage, {"gold_score": 0.5}, GATE)
    # then a tag and the card's lineage name the adapters merged into the policy's weights:
    # SFT's and PPO's (they said nothing of LoRA), not the reward model's
    said = "sft r=4 alpha=8; ppo r=16 alpha=32 on c_attn, c_proj"
    assert lineage["lora"] == said
    assert f"- LoRA (adapters merged into these weights): `{said}`" in card
    # and the reward model's name SFT's (it starts from SFT's weights) and its own, not PPO's
    rm_said = "sft r=4 alpha=8; reward_model r=4 alpha=8 on all-linear"
    assert lora_lineage(params, "reward_model") == {"lora": rm_said}
    # and an SFT candidate's names SFT's alone
    assert lora_lineage(params, "sft") == {"lora": "sft r=4 alpha=8"}
    # and a run without adapters adds no such tag
    assert lora_lineage(PipelineParams(profile="smoke"), "ppo") == {}


def test_a_reward_model_trained_without_lora_says_none_though_the_policy_did():
    from instructflow.flows.params import PipelineParams
    from instructflow.tasks.model_lineage import lora_lineage

    # given a run whose PPO alone trained LoRA adapters
    params = PipelineParams(profile="smoke", ppo={"lora": {"r": 16, "alpha": 32}})
    # then the policy's lineage names them and the reward model's has no LoRA tag
    assert lora_lineage(params, "ppo") == {"lora": "ppo r=16 alpha=32"}
    assert lora_lineage(params, "reward_model") == {}


def test_the_registered_models_description_says_how_to_make_a_version_champion():
    # given a registered model with a challenger and no champion
    versions = {"1": {"gate_promote": "False", "gate_reason": "win rate vs sft 0.456"}}
    # when its description (MLflow's registered model page) is written
    text = registry_status("instructflow-policy-smoke", versions, {"challenger": "1"})
    # then it names the command that moves `champion` for this model, and warns that
    # MLflow's own "Promote model" button, the obvious one on a version's page, does not
    command = "`instructflow promote --model instructflow-policy-smoke --version N --reason"
    assert command in text
    assert "**Promote model** button does not" in text


def test_the_cards_figures_carry_their_units_and_scales():
    # given a policy's figures as the evaluation reports them
    metrics = {"likert": 4.5, "kl_to_sft": 1.25, "response_length": 9.0, "policy": "ppo"}
    # when its model card is written
    card = model_card("policy", "4", LINEAGE, metrics, GATE)
    # then each known measure says its unit or scale (a Likert 4.5 out of what? KL in what?)
    assert "- likert: 4.500 (held-out labelers, 1-7)\n" in card
    assert "- kl_to_sft: 1.250 (nats per response, a sampled estimate" in card
    assert "- response_length: 9.000 (words)\n" in card


def test_the_gate_section_says_its_win_rate_is_its_own_match_not_the_evaluations():
    # given a card whose Evaluation and gate each show a win rate against SFT
    card = model_card("p", "4", LINEAGE, {"win_rate_vs_sft": 0.5}, GATE | {"incumbent": "sft"})
    # then the gate's section says first that its figure is its own match's, so two win
    # rates that differ do not read as a contradiction
    evaluation, gate = card.split("\n## Promotion gate\n\n")
    first = gate.splitlines()[0]
    assert "`win_rate_vs_sft`" in first and not first.startswith("- ")
    assert "- win_rate_vs_sft: 0.500" in evaluation


def test_the_cards_figures_come_headline_first_not_alphabetically():
    # given a candidate's figures as the evaluation reports them, plus one the card
    # has no unit for
    metrics = {
        "admit_unknown_rate": 0.25,
        "gold_score": 0.5,
        "judge_win_rate_vs_sft": 0.453,
        "kl_to_sft": 0.1,
        "likert": 4.5,
        "win_rate_vs_sft": 0.458,
        "zz_extra": 1.0,
    }
    # when its model card is written
    card = model_card("policy", "4", LINEAGE, metrics, GATE)
    figures = [
        line.split(":", 1)[0].removeprefix("- ")
        for line in card.split("## Evaluation (test users)\n\n", 1)[1]
        .split("\n## ", 1)[0]
        .splitlines()
        if line.startswith("- ")
    ]
    # then the win rate against SFT leads, the judge's beside it, then gold (the alphabet
    # put admit_unknown_rate first and the headline figure last)
    assert figures[:3] == ["win_rate_vs_sft", "judge_win_rate_vs_sft", "gold_score"]
    # and every figure is there once, a measure without a unit last
    assert sorted(figures) == sorted(metrics) and figures[-1] == "zz_extra"


def test_a_kl_just_below_zero_is_said_to_be_a_sampled_estimate():
    # given a policy at SFT's level, whose sampled KL came out just below 0
    card = model_card("policy", "4", LINEAGE, {"kl_to_sft": -0.01}, GATE)
    # then its line says the figure is sampled and may dip below 0, rather than reading
    # like a bug (a KL is never negative), in the words every other place uses
    line = next(line for line in card.splitlines() if line.startswith("- kl_to_sft:"))
    assert line.startswith("- kl_to_sft: -0.010 (nats per response")
    assert "sampled estimate" in line and "below 0" in line
    assert f"({MEASURES['kl_to_sft']})" in line
    assert "(" not in line.split(" (", 1)[1], line  # no parentheses within the unit's


def test_the_version_card_says_what_mlflows_promote_button_does_and_what_to_run():
    # given a version's card, read beside MLflow's prominent "Promote model" button
    card = model_card("instructflow-policy-smoke", "4", LINEAGE, {"gold_score": 0.5}, GATE)
    # then it says, above its sections, that the button copies the version into another
    # registered model, and names the command that makes this very version champion
    top = card.split("\n## ", 1)[0]
    assert "**Promote model** button copies this version into another registered model" in top
    command = "`instructflow promote --model instructflow-policy-smoke --version 4 --reason"
    assert command in top
    # and it stays above the Champion section once the registry writes one
    tagged = with_champion_status(card, {"promoted_by": "gate", "promoted_at": "t1"})
    assert tagged.split("\n## ", 1)[0] == top


def test_no_measures_unit_nests_parentheses_in_the_cards_line():
    # given a card with every measure the pipeline reports
    card = model_card("policy", "4", LINEAGE, dict.fromkeys(MEASURES, 0.5), GATE)
    for name, unit in MEASURES.items():
        line = next(line for line in card.splitlines() if line.startswith(f"- {name}:"))
        # then each unit sits in one pair of parentheses, with none inside it
        # (win_rate_vs_sft's "(held-out labelers, or ...)" read as "(... (...) ...)")
        assert f"({unit})" in line, line
        assert "(" not in unit and ")" not in unit, name


def test_the_card_of_a_version_trained_on_a_dataset_names_the_dataset():
    # given a run on a user's dataset: no DVC version, a folder, a split rule, table md5s
    lineage = LINEAGE | {
        "dvc_data_md5": "untracked (no .dvc file: instructflow data add DIR)",
        "data_dir": "/home/me/prefs",
        "split_rule": "prompt_hash",
        "data_md5_preferences": "13786a06",
        "data_md5_demonstrations": "532f0b16",
    }
    gate = GATE | {"evidence": "held-out judge", "public_suite": None}
    # then the policy's card and the reward model's say which data trained it, each
    # table's md5 beside the folder, in "Where it comes from"
    for card in (
        model_card("policy", "1", lineage, {"win_rate_vs_sft": 0.5}, gate),
        reward_model_card("rm", "1", lineage, {}, ("policy", "1")),
    ):
        where = card.split("## Where it comes from")[1]
        assert "- dataset (--data): `/home/me/prefs`" in where
        assert "- split rule: `prompt_hash`" in where
        assert "- md5 of `demonstrations`: `532f0b16`\n- md5 of `preferences`: `13786a06`" in where
    # and an embedded world's card has none of it
    assert "dataset (--data)" not in model_card("policy", "4", LINEAGE, {}, GATE)
