"""The evaluation harness on generated smoke data with tiny models built from config."""

from instructflow.models.lm import load_causal_lm
from instructflow.tasks.evaluation import EvalConfig, Policy, evaluate, head_to_head
from instructflow.tasks.judge_trust import agreement_block


def test_win_rate_of_a_policy_against_itself_is_one_half_within_its_ci(
    tiny_dirs, generated_root, tmp_path
):
    # given SFT evaluated against an independent sample of itself, also by a held-out judge
    sft_dir, rm_dir = tiny_dirs
    (tmp_path / "model").symlink_to(
        rm_dir.resolve()
    )  # a judge folder (instructflow.tasks.judge's layout)
    cfg = EvalConfig(max_prompts=80, max_new_tokens=8)
    profile = generated_root / "data" / "smoke"
    rows, raw = evaluate([Policy("sft", sft_dir)], sft_dir, rm_dir, profile, cfg, 0, tmp_path)
    row = rows["sft"]
    # then the win rates' CIs (labelers' and judge's) contain 0.5 and KL to itself is 0
    for field in ("win_rate_vs_sft", "judge_win_rate_vs_sft"):
        lo, hi = row[field]["ci95"]
        assert lo <= 0.5 <= hi, field
    # and each sample carries what the judge's agreement with gold is counted from
    block = agreement_block(raw, frozenset())
    assert block["pairs"] > 0 and block["unseen_prompts"] == {
        k: v for k, v in block.items() if k in ("judge", "heldout_labelers", "pairs")
    }
    assert abs(row["kl_to_sft"]) < 1e-4
    # and every field of the contract's policy row is present
    for field in (
        "gold_score",
        "likert",
        "rm_score",
        "public_suite_accuracy",
        "pretrain_perplexity",
        "per_family",
    ):
        assert field in row
    assert len(raw["sft"]) == 80 * cfg.samples_per_prompt


def test_head_to_head_of_identical_policies_is_even(tiny_dirs, generated_root):
    # given the same checkpoint on both sides
    sft_dir, _ = tiny_dirs
    cfg = EvalConfig(max_prompts=60, max_new_tokens=8)
    match = head_to_head(
        Policy("a", sft_dir),
        Policy("b", sft_dir),
        generated_root / "data" / "smoke",
        cfg,
        seed=0,
    )
    # then neither side wins beyond noise, and their public-suite accuracy is the same
    lo, hi = match["win_rate"]["ci95"]
    assert lo <= 0.5 <= hi
    assert match["public_challenger"] == match["public_incumbent"]


def test_fewshot_prefix_shows_demonstrations_in_the_prompt_format(generated_root):
    from instructflow.tasks.evaluation import fewshot_prefix

    prefix = fewshot_prefix(generated_root / "data" / "smoke", 3)
    assert prefix.count("Q: ") == 3 and prefix.count("\nA: ") == 3


def test_tiny_models_load(tiny_dirs):
    model, tokenizer = load_causal_lm(tiny_dirs[0])
    assert model.num_parameters() > 0 and tokenizer.pad_token_id is not None


def _foreign_policy(folder, profile_dir):
    """A policy from another base model: its own, larger tokenizer (ids beyond SFT's vocabulary)."""
    from instructflow.models.lm import GPT2Size, build_gpt2, save_model
    from instructflow.models.tokenizer import train_tokenizer
    from instructflow.tasks.base_model import tokenizer_texts

    tokenizer = train_tokenizer(tokenizer_texts(profile_dir), vocab_size=700)
    model = build_gpt2(tokenizer, GPT2Size(n_layer=1, n_head=2, n_embd=32, n_positions=128), 1)
    save_model(model, tokenizer, folder)
    return folder


def test_a_policy_with_another_tokenizer_is_scored_by_sft_as_text(
    tiny_dirs, generated_root, tmp_path
):
    from instructflow.models.tokenizer import tokenizer_digest
    from instructflow.tasks.evaluation import sample

    # given SFT and a policy whose tokenizer is another (and larger) one
    sft_dir, _ = tiny_dirs
    profile_dir = generated_root / "data" / "smoke"
    foreign = _foreign_policy(tmp_path / "foreign", profile_dir)
    sft = load_causal_lm(sft_dir)
    assert len(load_causal_lm(foreign)[1]) > len(sft[1])
    assert tokenizer_digest(load_causal_lm(foreign)[1]) != tokenizer_digest(sft[1])
    cfg = EvalConfig(max_new_tokens=8)
    prompts = ["reverse stone", "what is 2 + 3?"]
    # when it is sampled and scored by SFT (the KL term)
    out = sample(Policy("foreign", foreign), prompts, cfg, seed=0, sft=sft)
    # then SFT's log-probabilities are those of the texts re-encoded with SFT's tokenizer
    from instructflow.models.sampling import text_response_logprobs

    expected = text_response_logprobs(sft[0], sft[1], prompts, out.texts)
    assert out.sft_logprobs == expected.tolist()
    assert all(lp < 0 for lp in out.sft_logprobs)


def test_head_to_head_against_a_policy_with_another_tokenizer(tiny_dirs, generated_root, tmp_path):
    # given SFT and a rival from another base model (the gate's champion after a change of base)
    sft_dir, _ = tiny_dirs
    profile_dir = generated_root / "data" / "smoke"
    foreign = _foreign_policy(tmp_path / "foreign", profile_dir)
    cfg = EvalConfig(max_prompts=20, max_new_tokens=8)
    # when they play each other, both ways round
    one = head_to_head(Policy("a", sft_dir), Policy("b", foreign), profile_dir, cfg, seed=0)
    two = head_to_head(Policy("b", foreign), Policy("a", sft_dir), profile_dir, cfg, seed=0)
    # then the match is judged on text, with its evidence named
    for match in (one, two):
        assert 0.0 <= match["win_rate"]["mean"] <= 1.0
        assert match["prompts"] == 20 and match["judged_by"] == "held-out labelers"
    assert one["public_challenger"] == two["public_incumbent"]


def test_policies_judged_in_two_lanes_get_the_figures_they_get_one_after_another(
    tiny_dirs, generated_root, tmp_path
):
    import torch

    # given three policies (a lane each for the first and third, the second beside them)
    sft_dir, rm_dir = tiny_dirs
    (tmp_path / "model").symlink_to(rm_dir.resolve())
    cfg = EvalConfig(max_prompts=12, max_new_tokens=6, samples_per_prompt=2)
    profile = generated_root / "data" / "smoke"
    policies = [
        Policy("a", sft_dir),
        Policy("b", sft_dir, "Q: hi\nA: yes\n\n"),
        Policy("c", sft_dir),
    ]
    args = (policies, sft_dir, rm_dir, profile, cfg, 0, tmp_path)
    threads = torch.get_num_threads()
    try:
        # when judged one after another at one thread, then in two lanes of one thread each
        torch.set_num_threads(1)
        alone = evaluate(*args)
        torch.set_num_threads(2)
        in_lanes = evaluate(*args, lanes=2)
    finally:
        torch.set_num_threads(threads)
    # then every figure and every response is the same, in the same order
    assert list(in_lanes[0]) == ["a", "b", "c"]
    assert in_lanes == alone
    # and the policies' seeds differ by place: a and c (one checkpoint) sampled differently
    assert alone[1]["a"] != alone[1]["c"]
