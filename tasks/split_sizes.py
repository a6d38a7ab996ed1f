"""Whether each split of a user's dataset holds rows enough: refused when a stage would
read an empty one, warned about when the figures would rest on few rows."""

from __future__ import annotations

from pathlib import Path

from instructflow.tasks.schemas import canonical_split
from instructflow.tasks.tables import Problem


def empty_split_problems(
    split_counts: dict[str, dict[str, int]],
    paths: dict[str, Path],
    stated: dict[str, set[bool]] | None = None,
) -> list[Problem]:
    """A split some stage reads but that got no rows: refused here, not as a crash mid-run.

    `split_counts`: rows per split of each table that has rows (the data summary's);
    `stated`: per table, whether its rows state a split (True, False or both). The tables whose
    rows state one are followed by the other tables' rows of the same prompt (or user):
    without saying so, the refusal asked to fix a `split` column the table did not have. When
    every row states its split, dataset.valid_fraction / test_fraction apply to none: the
    refusal said to change them all the same (a Hub dataset without a validation split, as
    ultrafeedback_binarized, gathered with `data from-hub` ... NAME=train).
    """
    stated = stated or {}
    stating = frozenset(t for t, states in stated.items() if True in states)
    every_row_states = bool(stated) and all(states <= {True} for states in stated.values())
    remedy = (
        "give rows that split in the `split` column: every row states its split, so"
        " dataset.valid_fraction / dataset.test_fraction apply to none (leave `split` empty on"
        " some rows for the stable hash to place them: `instructflow data from-hub` ..."
        " --split NAME=hash)"
        if every_row_states
        else "change dataset.valid_fraction / dataset.test_fraction (or the rows' `split` column)"
    )
    readers: dict[tuple[str, str], list[str]] = {}
    sft_source = "demonstrations" if "demonstrations" in split_counts else "preferences"
    ppo_source = "prompts" if "prompts" in split_counts else "preferences"
    for table, split, reader in (
        (sft_source, "train", "SFT"),
        ("preferences", "train", "the reward model"),
        ("preferences", "valid", "the reward model's validation"),
        ("preferences", "test", "the held-out judge"),
        (ppo_source, "train", "PPO"),
        (ppo_source, "valid", "PPO's checkpoint selection"),
    ):
        readers.setdefault((table, split), []).append(reader)

    def _source(table: str) -> str:
        if table in stating or not (others := sorted(stating & set(split_counts))):
            return ""
        files = ", ".join(paths[t].name for t in others)
        return (
            f"; {paths[table].name} states no split: a row takes the split its prompt (or"
            f" user) has in {files}, which states splits"
        )

    problems = []
    for (table, split), names in readers.items():
        counts = split_counts.get(table, {})
        if counts.get(split, 0) == 0:
            have = ", ".join(f"{s} {counts.get(s, 0)}" for s in ("train", "valid", "test"))
            problems.append(
                Problem(
                    str(paths[table]),
                    0,
                    "split",
                    f"no rows in the {split} split ({have}), needed by {' and '.join(names)}: "
                    f"add rows (from more users), or {remedy}" + _source(table),
                )
            )
    return problems


def thin_splits(
    split_counts: dict[str, dict[str, int]], valid_fraction: float, test_fraction: float
) -> list[str]:
    """A warning for each split that got less than half the share of a table's rows it was
    asked for: with few users a hash split is lumpy, and what the split feeds (the held-out
    judge, the win rates) then rests on few rows."""
    asked = {"valid": valid_fraction, "test": test_fraction}
    warnings = []
    for table, counts in split_counts.items():
        total = sum(counts.values())
        for split, fraction in asked.items():
            got = counts.get(split, 0)
            if total and 0 < got < fraction * total / 2:
                warnings.append(
                    f"{table}: the {split} split got {got} of {total} rows "
                    f"({got / total:.0%}, asked {fraction:.0%}): figures it feeds rest on few "
                    "rows; add users, or state splits in a `split` column"
                )
    return warnings


FEW_TEST_ROWS = 50  # fewer: a win rate's 95% CI is wider than about +-0.14


def few_test_rows(
    split_counts: dict[str, dict[str, int]], test_prompts: int | None = None
) -> list[str]:
    """A warning when the preferences' test split holds fewer than FEW_TEST_ROWS rows, however
    fair its share: the held-out judge rests on them, and the win rates on them and the
    prompts table's test rows. 0.98 / sqrt(n): a 95% CI's half-width near 0.5 on n prompts.
    `test_prompts`: the distinct prompts of those rows (the evaluation's, eval/test.jsonl);
    without it, the rows of both tables (a prompts table repeating the preferences' prompts
    is then counted twice)."""
    got = split_counts.get("preferences", {}).get("test", 0)
    if not 0 < got < FEW_TEST_ROWS:
        return []
    prompts = test_prompts or got + split_counts.get("prompts", {}).get("test", 0)
    win_rates = (
        f"; so do the win rates (a win rate on {prompts} prompts is known to about "
        f"+-{0.98 / prompts**0.5:.2f})"
        if prompts < FEW_TEST_ROWS
        else ""
    )
    return [
        f"preferences: the test split holds only {got} rows: the held-out judge trains on some "
        f"and is measured on the rest{win_rates}; add rows, or raise dataset.test_fraction"
    ]


def judge_groups_problems(groups: int, path: Path) -> list[Problem]:
    """A problem when the preferences' test split holds fewer than two groups (users, or
    prompts without users; `groups` counts them): the held-out judge trains on some of
    them and is measured on the others (tasks/judge.py split_for_judge), so with one it
    failed mid-run, after SFT and the reward model had trained, with a traceback."""
    if groups >= 2:
        return []
    message = (
        f"the test split holds {groups} user (or prompt, without user ids) of preferences: the "
        "held-out judge trains on some of the test split's users and is measured on others, "
        "so it needs at least 2; add test rows, or raise dataset.test_fraction (or change the "
        "rows' `split` column)"
    )
    return [Problem(str(path), 0, "split", message)]


def held_out_document(n: int, row: dict) -> bool:
    """Whether pretraining document `n` measures perplexity rather than joining PPO-ptx's
    mix: the split its row states (valid or test: held out), else every 10th document."""
    stated = canonical_split(row.get("split"))
    if isinstance(stated, str):
        return stated != "train"
    return n % 10 == 0


def pretrain_split(rows: list[dict], path: Path) -> tuple[list[Problem], list[str]]:
    """A pretrain table whose documents are all held out is refused: PPO-ptx would mix
    nothing and fail after SFT, the reward model and PPO had trained (a table of one
    document, or every row stating valid or test). One with none held out is warned
    about: no policy's perplexity is measured then."""
    held_out = sum(held_out_document(n, row) for n, row in enumerate(rows))
    counts = f"train {len(rows) - held_out}, held out {held_out}"
    if held_out == len(rows):
        why = (
            f"no documents for PPO-ptx's mix ({counts}; held out: the rows whose split is"
            " valid or test, else every 10th): add documents, or state split train on some"
        )
        return [Problem(str(path), 0, "split", why)], []
    if held_out == 0:
        return [], [
            f"{path.name}: no document is held out ({counts}): pretrain_perplexity is not"
            " measured; state split valid on some rows"
        ]
    return [], []


def ptx_mix_problems(dataset, tokenizer, block_size: int) -> list[Problem]:
    """A pretrain table whose train documents fill no block of `block_size` tokens is
    refused: PPO-ptx packs them into such blocks (models.lm_training.pack_corpus: each
    document, then EOS) and with none it failed after SFT, the reward model and PPO had
    trained. `dataset`: a loaded instructflow.tasks.dataset.Dataset; none without a pretrain table."""
    rows = dataset.extra.get("pretrain")
    if not rows:
        return []
    texts = [row["text"] for n, row in enumerate(rows) if not held_out_document(n, row)]
    ids = (tokenizer(" " + text, add_special_tokens=False)["input_ids"] for text in texts)
    tokens = sum(len(one) + 1 for one in ids)
    if tokens >= block_size:
        return []
    path = Path(dataset.summary["dir"]) / dataset.summary["tables"]["pretrain"]["file"]
    why = (
        f"PPO-ptx's mix ({len(texts)} documents) holds {tokens} tokens, fewer than one block"
        f" of ppo.ptx_block_size = {block_size}: add text, or lower ppo.ptx_block_size"
    )
    return [Problem(str(path), 0, "text", why)]
