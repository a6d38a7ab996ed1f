"""Train/validation/test splits of a user's dataset: by user when every row names one, else by prompt.

The key of a row is its ``user_id`` when every row of every table has one
(so no user's prompts reach two splits, as InstructGPT splits), otherwise its
prompt's content before rendering (conversations.split_key: so one prompt never
lands in two splits, whichever table it is in and whether as text or as a
conversation). A key's split is the one its rows state, if they do; every row of a key
must agree (a user in two splits is refused, naming both places). A key no
row places gets a split from a stable hash of the key: the same key lands in
the same split on every machine and every run, and adding rows never moves
an existing key. A table whose rows carry user ids except a few is refused,
naming those rows: silently splitting the whole dataset by prompt instead
would let one user's prompts reach two splits.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from instructflow.tasks.tables import Problem

SPLIT_RULES = ("user_id", "prompt_hash")
# The user_id a dataset's row without one gets in the stage tables (one per prompt):
# tables.py's schemas want one, and no real user is named so.
ANONYMOUS_USER = "anon-"


def split_by_user(rows: list[dict]) -> bool:
    """Whether the judge's split (judge.split_for_judge) keeps each user's rows in one part
    (else each prompt's)."""
    return len({row.get("user_id") for row in rows} - {None}) >= 2


def tested_on(rows: list[dict]) -> str:
    """Whom the judge's test part holds, in words: "of other users", or "on other prompts"
    when the rows name no users or only the made-up one per prompt (ANONYMOUS_USER)."""
    named = {str(row["user_id"]) for row in rows if row.get("user_id") is not None}
    real_users = split_by_user(rows) and not all(u.startswith(ANONYMOUS_USER) for u in named)
    return "of other users" if real_users else "on other prompts"


TEST_USERS, TEST_PROMPTS = "test users", "test prompts"


def held_out_group(split_rule: str | None) -> str:
    """What a test split holds out, for headings: TEST_USERS (the embedded world, and a
    dataset split by user_id) or TEST_PROMPTS (a dataset without user ids, split by prompt)."""
    return TEST_PROMPTS if split_rule == "prompt_hash" else TEST_USERS


@dataclass(frozen=True)
class Keyed:
    """One row as the splitter sees it: where it is, its key, and the split it states (or None)."""

    file: str
    row: int
    key: str
    stated: str | None


def hash_split(key: str, valid_fraction: float, test_fraction: float) -> str:
    """A split from sha256(key): uniform in [0, 1), test first, then valid, else train."""
    u = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:15], 16) / 16**15
    if u < test_fraction:
        return "test"
    if u < test_fraction + valid_fraction:
        return "valid"
    return "train"


def stated_splits(rows: Iterable[Keyed], rule: str) -> tuple[dict[str, str], list[Problem]]:
    """Each key's split, and a Problem for every row that states a split its key's other rows contradict."""
    field = "user_id" if rule == "user_id" else "split"
    first: dict[str, Keyed] = {}
    problems: list[Problem] = []
    for row in rows:
        if row.stated is None:
            continue
        seen = first.setdefault(row.key, row)
        if seen.stated != row.stated:
            who = f"user {row.key!r}" if rule == "user_id" else "this prompt"
            message = (
                f"{who} is in split {row.stated!r} here but in split {seen.stated!r}"
                f" at {seen.file} row {seen.row}"
            )
            problems.append(Problem(row.file, row.row, field, message))
    splits = {key: row.stated for key, row in first.items() if row.stated is not None}
    return splits, problems


def split_of(splits: dict[str, str], key: str, valid_fraction: float, test_fraction: float) -> str:
    """The stated split of a key, else its hash split."""
    return splits.get(key) or hash_split(key, valid_fraction, test_fraction)


MAX_ROWS_SHOWN = 10


def missing_user_ids(rows: Iterable[tuple[str, int, str | None]]) -> list[Problem]:
    """Rows (file, row, user_id) without a user id in a table whose other rows have one."""
    by_file: dict[str, list[tuple[int, str | None]]] = defaultdict(list)
    for file, row, user in rows:
        by_file[file].append((row, user))
    problems = []
    for file, entries in by_file.items():
        missing = [row for row, user in entries if not user]
        if not missing or len(missing) == len(entries):
            continue
        have = len(entries) - len(missing)
        message = (
            f"missing while {have} other rows of this table have one: give every row its "
            "user_id (splits are by user only when every row has one), or leave the column "
            "out to split by prompt"
        )
        problems += [Problem(file, row, "user_id", message) for row in missing[:MAX_ROWS_SHOWN]]
        if len(missing) > MAX_ROWS_SHOWN:
            more = f"and {len(missing) - MAX_ROWS_SHOWN} more rows without a user_id"
            problems.append(Problem(file, 0, "user_id", more))
    return problems


def _first_rows(rows: list[int]) -> str:
    """The first five of a warning's rows ("rows 3, 8, 9, 12, 20, ..."): one line however
    many; "row 3" when there is one ("1 pair has equal scores (rows 5)" read as a list cut short)."""
    if len(rows) == 1:
        return f"row {rows[0]}"
    return f"rows {', '.join(map(str, rows[:5]))}{', ...' if len(rows) > 5 else ''}"


def identical_responses(rows: Iterable[tuple[str, int, list[str]]]) -> list[str]:
    """A warning per file whose rankings hold one response twice: (file, row, responses) per row.

    A pairwise row whose rejected equals its chosen is refused; in a K-wise
    ranking two identical responses leave the rest usable, but the pair
    between them orders nothing: it gives the ranking loss no gradient and
    scores as a tie (half right) in every accuracy, pulling it toward 0.5.
    """
    rows_by_file: dict[str, list[int]] = defaultdict(list)
    for file, row, responses in rows:
        texts = [r.strip() for r in responses]
        if len(set(texts)) < len(texts):
            rows_by_file[file].append(row)
    return [
        f"{Path(file).name}: {len(found)} {'ranking holds' if len(found) == 1 else 'rankings hold'}"
        " the same response twice "
        f"({_first_rows(found)}): such a pair orders nothing, and counts as a tie in the"
        " reward model's and the judge's accuracy"
        for file, found in rows_by_file.items()
    ]


def tied_scores(rows: Iterable[tuple[str, int, dict]]) -> list[str]:
    """A warning per file whose pairs' own scores call them a tie: (file, row, meta) per pair.

    A pair trains the reward model to put chosen above rejected. A row whose
    `score_chosen` equals its `score_rejected` (or whose `margin` is 0) says
    its labeler rated the two alike, so that order is not in the data: a
    dataset with many such rows teaches the reward model coin flips.
    """
    rows_by_file: dict[str, list[int]] = defaultdict(list)
    for file, row, meta in rows:
        scores = (meta.get("score_chosen"), meta.get("score_rejected"))
        if (None not in scores and scores[0] == scores[1]) or meta.get("margin") == 0:
            rows_by_file[file].append(row)
    return [
        f"{Path(file).name}: {len(found)} {'pair has' if len(found) == 1 else 'pairs have'}"
        f" equal scores ({_first_rows(found)}): each is trained as chosen over rejected, an"
        " order its scores do not give; drop them if they are ties"
        for file, found in rows_by_file.items()
    ]


def reversed_scores(rows: Iterable[tuple[str, int, dict]]) -> list[str]:
    """A warning per file whose pairs' own scores rate rejected above chosen: (file, row,
    meta) per pair.

    Such a pair trains the reward model the other way round from what its labeler scored:
    chosen and rejected swapped when the table was written, most often. A tie is
    tied_scores' (and a warning too); this is worse, so it is said apart.
    """
    rows_by_file: dict[str, list[int]] = defaultdict(list)
    for file, row, meta in rows:
        chosen, rejected = meta.get("score_chosen"), meta.get("score_rejected")
        margin = meta.get("margin")
        below = chosen is not None and rejected is not None and chosen < rejected
        if below or (margin is not None and margin < 0):
            rows_by_file[file].append(row)
    return [
        f"{Path(file).name}: {len(found)} {'pair rates' if len(found) == 1 else 'pairs rate'}"
        f" rejected above chosen by {'its' if len(found) == 1 else 'their'} own scores"
        " (score_rejected > score_chosen, or a"
        f" negative margin; {_first_rows(found)}): each is trained as chosen over rejected,"
        " the reverse of its scores; swap chosen and rejected there if they were mixed up"
        for file, found in rows_by_file.items()
    ]


def orderless_pairs(preferences: list) -> list[str]:
    """identical_responses, tied_scores and reversed_scores of the preference rows (dataset
    Items: each with its file, row, responses and the row's own scores in meta)."""
    metas = [(i.file, i.row, i.meta) for i in preferences]
    return (
        identical_responses((i.file, i.row, i.responses) for i in preferences)
        + tied_scores(metas)
        + reversed_scores(metas)
    )


def repeated_rows(tables: dict[str, list[tuple[tuple, str, str, int]]]) -> list[str]:
    """A warning per table whose rows repeat word for word, naming them: (content, split,
    file, row) per row, the content being the prompt's conversations.prompt_key (its turns
    before rendering: the same prompt as text and as a conversation is one) and its responses.

    Rows repeated across splits are the worse case: a test row that is also a training row
    is not held out, and the held-out judge's accuracy and every win rate built on it
    are flattered (a trial's dataset listed each row under two user ids: 56 of 60 test
    rows were training rows, and the judge's accuracy rose from 0.69 to 0.82).
    """
    warnings = []
    for table, rows in tables.items():
        seen: dict[tuple, set[str]] = defaultdict(set)
        repeats: dict[str, list[int]] = defaultdict(list)  # file -> rows repeating an earlier one
        for content, split, file, row in rows:
            if seen[content]:
                repeats[file].append(row)
            seen[content].add(split)
        held_out = sum(split != "train" for _, split, _, _ in rows)
        leaked: dict[str, list[int]] = defaultdict(list)
        for content, split, file, row in rows:
            if split != "train" and "train" in seen[content]:
                leaked[file].append(row)
        if leaked:
            warnings.append(
                f"{table}: {_count(leaked)} of {held_out} validation and test rows "
                f"{'repeats' if _count(leaked) == 1 else 'repeat'} a training row word for word"
                f" ({_where(leaked)}): figures on them (the "
                "held-out judge's accuracy, win rates) are not held out; remove the repeats, "
                "or state splits in a `split` column"
            )
        elif repeats:
            n = _count(repeats)
            warnings.append(
                f"{table}: {n} {'row repeats' if n == 1 else 'rows repeat'} an earlier row word "
                f"for word ({_where(repeats)})"
            )
    return warnings


def _count(rows_by_file: dict[str, list[int]]) -> int:
    return sum(len(rows) for rows in rows_by_file.values())


def _where(rows_by_file: dict[str, list[int]]) -> str:
    """Each file's first rows (_first_rows), e.g. `a.jsonl rows 3, 8; b.jsonl rows 2`."""
    return "; ".join(
        f"{Path(file).name} {_first_rows(rows)}" for file, rows in rows_by_file.items()
    )


def users_across_splits(rows: Iterable[tuple[str, str | None, str]]) -> list[str]:
    """A warning when rows carry user ids yet the dataset was split by prompt (another
    table has none) and some user's rows landed in two splits: (file, user_id, split) per row.

    Each table is checked for rows without a user id (missing_user_ids refuses those), but
    a whole table without the column makes every table split by prompt: a trial gave
    every preference row a user_id and the demonstrations none, and each of its 40 users
    silently had rows in train and test, with nothing said about it.
    """
    rows = list(rows)
    splits_of: dict[str, set[str]] = defaultdict(set)
    for _, user, split in rows:
        if user:
            splits_of[user].add(split)
    if not splits_of or all(user for _, user, _ in rows):
        return []
    crossing = sum(len(s) > 1 for s in splits_of.values())
    if not crossing:
        return []
    without = sorted({Path(file).name for file, user, _ in rows if not user})
    return [
        f"split by prompt, not by user: {', '.join(without)} has no user_id, so "
        f"{crossing} of {len(splits_of)} users have rows in more than one split; give every "
        "table's rows a user_id to split by user, or state splits in a `split` column"
    ]


def prompts_across_splits(rows: Iterable[tuple[str, int, str, str]]) -> list[str]:
    """A warning when one prompt is in two splits: (file, row, prompt key, split) per row.

    Split by user, two users asking the same prompt can land on two sides (split by prompt,
    a prompt has one side, and stated splits that disagree are refused). A test prompt that
    is also a training prompt is trained on by SFT, the reward model and PPO and then
    evaluated: its figures are not held out (InstructGPT deduplicates prompts before it
    splits by user). Not refused: real datasets repeat short prompts ("Hi") across users.
    """
    first: dict[str, tuple[str, int, str]] = {}
    crossing: dict[str, tuple[tuple[str, int, str], tuple[str, int, str]]] = {}
    for file, row, key, split in rows:
        seen = first.setdefault(key, (file, row, split))
        if seen[2] != split and key not in crossing:
            crossing[key] = (seen, (file, row, split))
    if not crossing:
        return []
    (f1, r1, s1), (f2, r2, s2) = next(iter(crossing.values()))
    return [
        f"{len(crossing)} prompt{'s are' if len(crossing) > 1 else ' is'} in more than one "
        f"split (users in different splits asked {'them' if len(crossing) > 1 else 'it'}), e.g. {Path(f1).name} row {r1} ({s1}) "
        f"and {Path(f2).name} row {r2} ({s2}): figures on such a prompt are not held out; "
        "remove its rows from all but one split"
    ]
