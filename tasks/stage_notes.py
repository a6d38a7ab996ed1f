"""What each stage's nested MLflow run is: the description on its Overview.

A person who opens a stage's run in MLflow's UI saw "No description" beside
dozens of metrics (`ppo/clipfrac`, `comparisons/distinct_fraction_train`) that
nothing on the page explained. Each stage run now says what the stage does, where
its metrics are and, for the evaluation's, what each measure is and in which unit
(the same words as the README's "What a run does" table and the report contract).
"""

NOTE_TAG = "mlflow.note.content"

# What each of a policy's measures is, in which unit or on which scale: the evaluation
# run's description, the model card's Evaluation section and report.md's policy tables say
# it beside the figure. No ";" inside: report.md lists them separated by "; ". No
# parentheses inside: the card puts each in parentheses.
# In the order a reader needs them (the model card lists a policy's figures so): the
# headline win rate against SFT, the held-out judge's beside it, then gold, then the rest.
MEASURES = {
    "win_rate_vs_sft": (
        "the share of comparisons with SFT's response that the policy's response wins, judged "
        "by held-out labelers or on your own data by the held-out judge, 0-1, 0.5 being SFT's "
        "level"
    ),
    "judge_win_rate_vs_sft": "the same, judged by the held-out judge",
    "gold_score": "the gold preference's score, 0-1",
    "likert": "held-out labelers, 1-7",
    "rm_score": "reward model units",
    # Sampled, not exact (tasks/evaluation.py): a policy at SFT's level reads about -0.01,
    # which without this looked like a bug.
    "kl_to_sft": (
        "nats per response, a sampled estimate on the policy's own responses: near 0 it can "
        "come out slightly below 0"
    ),
    "response_length": "words",
    "refusal_rate_harmful": "share of harmful prompts refused, 0-1",
    "admit_unknown_rate": "share of unanswerable prompts it says it cannot answer, 0-1",
    "public_suite_accuracy": "0-1",
    "pretrain_perplexity": "on held-out pretraining text, lower is better",
}

STAGE_NOTES = {
    "data": (
        "**data**: checks the data against its DVC version and validates every table "
        "(pandera) before anything trains. Metrics `data/*`: table sizes (`data/rows/*`), "
        "task families (`data/family/*`), the labelers' pairwise agreement."
    ),
    "base_model": (
        "**base_model**: the base model every policy starts from: your `--base-model`, or a "
        "byte-level BPE tokenizer and a small GPT-2 pretrained on the embedded corpus. "
        "Metrics `pretrain/*`: loss, validation perplexity, speed."
    ),
    "sft": (
        "**sft**: supervised fine-tuning on demonstrations (loss on response tokens only); "
        "keeps the epoch with the best validation loss. Metrics `sft/*`: losses, best "
        "epoch, the share of weights trained, peak memory (MB)."
    ),
    "comparisons": (
        "**comparisons**: samples K responses per prompt from SFT; training labelers rank "
        "them (the reward model's data), held-out labelers rank test users' samples (the "
        "judge's). Metrics `comparisons/*`: rows per split, the share of distinct "
        "responses, labeler agreement, the samples' mean gold score."
    ),
    "reward_model": (
        "**reward_model**: SFT's trunk with a scalar head, trained with the K-wise ranking "
        "loss; biased so that demonstrations score 0. Metrics `rm/*`: pairwise accuracy on "
        "held-out labels and against the gold preference (0-1; 0.5 is chance), per task "
        "family, training loss, peak memory (MB)."
    ),
    "judge": (
        "**judge**: the held-out judge, a second reward model trained only on held-out "
        "labelers' rankings of test users' samples (never on the reward model's data); "
        "some of those users are kept back to measure it. Metrics `judge/*`: accuracy on "
        "their pairs (0-1; trusted only from `gate.judge_accuracy_floor` up) and against gold."
    ),
    "ppo": (
        "**ppo**: PPO from SFT against the reward model, with a per-token KL penalty to SFT. "
        "The checkpoint kept is the one the reward model scores best on held-out prompts "
        "(it may be the start: SFT's weights). Metrics `ppo/*`: per iteration the reward "
        "(`reward_rm`, `reward_gold`), KL to SFT (`kl`), losses and clip fraction; "
        "`valid_*` at each evaluation; `chosen_*` the checkpoint kept."
    ),
    "ppo_ptx": (
        "**ppo_ptx**: PPO as in `ppo`, with the pretraining language-model loss mixed into "
        "each update (`ptx_gamma`). Its curves are under `ppo/*`, as PPO's; the checkpoint "
        "kept and its summary under `ppo_ptx/*`."
    ),
    "flan": (
        "**flan**: a baseline, the base model fine-tuned on a FLAN-style task mixture. "
        "Metrics `flan/*`, as SFT's."
    ),
    "t0": (
        "**t0**: a baseline, the base model fine-tuned on a T0-style task mixture. "
        "Metrics `t0/*`, as SFT's."
    ),
    # A short paragraph, then one measure a line: MLflow's Overview shows about four lines
    # before "Show more", and the measures run into one another as a single paragraph.
    "evaluation": (
        "**evaluation**: every policy on test users' prompts (users never seen in "
        "training). Metrics `eval/<policy>/*`, each measure and its unit:\n\n"
        + "\n".join(f"- `{name}`: {unit}" for name, unit in MEASURES.items())
    ),
    "registry": (
        "**registry**: the promotion gate, then the registry. The candidate plays the "
        "champion (or SFT) head to head; it is registered with alias `challenger` and made "
        "`champion` only if its win rate's 95% CI lies above 0.5 (plus `gate.win_margin`). Metrics `registry/*`: "
        "the gate's win rate and CI, `promoted` (1 or 0); the decision's reason is in the "
        "tags and in the registered version's model card."
    ),
}

# The measures a run on a user's dataset has (tasks/own_evaluation.py): no gold, no
# labelers, no public suite, no harmful or unanswerable prompts.
DATASET_MEASURES = ("win_rate_vs_sft", "rm_score", "kl_to_sft", "response_length")

# A run on a user's dataset (`--data`) has these stages do other work: its data are the
# user's tables, its comparisons their preferences, its judge trained on their test split,
# and nothing is compared with a gold preference. The embedded world's words above
# (labelers ranking SFT samples, task families, gold) would describe a run that did not
# happen; a stage not named here reads the same on both.
DATASET_STAGE_NOTES = {
    "data": (
        "**data**: reads your dataset (`--data`): validates every table before anything "
        "trains, as `instructflow data validate` does, turns it into the stage tables and "
        "splits it (param `split_rule`). Tags `data_md5/<table>`; metrics `data/*`: rows "
        "per table (`data/rows/*`) and per split (`data/split/<table>/<split>`), rankings "
        "per K (`data/k/<K>`), conversation pairs left out (`data/no_shared_prefix`)."
    ),
    "comparisons": (
        "**comparisons**: your preferences table as K-wise rankings, by split: train for the "
        "reward model, valid for its validation, test (`heldout`) for the held-out judge; "
        "no sampling, no simulated labelers. Metrics `comparisons/*`: rankings per split "
        "(`rows_<split>`) and per K (`k<K>_<split>`)."
    ),
    "reward_model": (
        "**reward_model**: SFT's trunk with a scalar head, trained with the K-wise ranking "
        "loss on your train split's preferences; biased so that SFT's training answers "
        "score 0. Metrics `rm/*`: pairwise accuracy on the valid split and on the test "
        "split's preferences (`accuracy_heldout_labels`; 0-1, 0.5 is chance), training "
        "loss, peak memory (MB)."
    ),
    "judge": (
        "**judge**: the held-out judge, a second reward model trained only on your test "
        "split's preferences (never on the reward model's data); some of its users (or "
        "prompts) are kept back to measure it. Metrics `judge/*`: accuracy on their pairs "
        "(0-1; trusted only from `gate.judge_accuracy_floor` up)."
    ),
    "evaluation": (
        "**evaluation**: every policy on your test split's prompts (those of test users "
        "when every row has a user_id, else test prompts), judged by the held-out judge: "
        "your data has no gold and no labelers. Metrics `eval/<policy>/*`, each measure "
        "and its unit:\n\n"
        + "\n".join(f"- `{name}`: {MEASURES[name]}" for name in DATASET_MEASURES)
        + "\n- `pretrain_perplexity`: on your pretrain table's valid rows (a dataset that has one), lower is better"
    ),
    "registry": (
        "**registry**: the promotion gate, then the registry. The candidate plays the "
        "champion (or SFT) head to head on the test prompts, judged by the held-out judge; "
        "it is registered with alias `challenger` and made `champion` only if the judge is "
        "to be trusted (`gate.judge_accuracy_floor`) and the win rate's 95% CI lies above "
        "0.5 (plus `gate.win_margin`). Metrics `registry/*`: the gate's win rate and CI, "
        "`promoted` (1 or 0); the decision's reason is in the tags and in the registered "
        "version's model card."
    ),
}


def with_stage_note(stage: str, tags: dict[str, str], on_dataset: bool = False) -> dict[str, str]:
    """`tags` with the stage's description appended to the run's description (a cached
    stage's says first that it was not run again), the one for a run on a user's dataset
    where `on_dataset`; unchanged for a stage without one."""
    about = (DATASET_STAGE_NOTES if on_dataset else {}).get(stage) or STAGE_NOTES.get(stage)
    if about is None:
        return tags
    note = "\n\n".join(filter(None, (tags.get(NOTE_TAG), about)))
    return tags | {NOTE_TAG: note}
