"""Acceptance tests of the embedded world: families, users, gold judge, labelers, corpus."""

import hashlib
import itertools
import json
import math
import os
import random
import re
import string
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from instructflow.world import gold, layout
from instructflow.world.build import build_world, make_facts
from instructflow.world.families import (
    ADMIT_UNKNOWN,
    CHECKABLE,
    FAMILIES,
    REFUSAL,
    draw_task,
    phrase,
)
from instructflow.world.people import Labeler, make_labelers, pairwise_agreement, rank
from instructflow.world.profiles import PROFILES, SFT_SHARE_FACTOR
from instructflow.world.responses import candidates, wrong_answer

REPO_ROOT = Path(__file__).resolve().parents[2]
STAGE_TABLES = {
    "sft": (layout.SFT_TRAIN, layout.SFT_VALID),
    "rm": (layout.RM_TRAIN, layout.RM_VALID),
    "ppo": (layout.PPO_TRAIN, layout.PPO_VALID),
}


@pytest.fixture(scope="module")
def smoke_world() -> dict:
    return build_world("smoke", 0)


@pytest.fixture(scope="module")
def tiny_world() -> dict:
    return build_world("tiny", 0)


def _digest(tables: dict) -> str:
    return hashlib.sha256(json.dumps(tables, sort_keys=True).encode()).hexdigest()


# --- determinism ---------------------------------------------------------------


def test_same_seed_builds_identical_tables(smoke_world):
    # given the smoke world built once with seed 0
    # when it is built again with the same seed
    again = build_world("smoke", 0)
    # then every table is identical, row for row
    assert again.keys() == smoke_world.keys()
    for name in smoke_world:
        assert again[name] == smoke_world[name], name


def test_different_seed_changes_every_table(smoke_world):
    # given the smoke world of seed 0
    # when the world is built with seed 1
    other = build_world("smoke", 1)
    # then every table differs (each draws from a seeded stream)
    assert other.keys() == smoke_world.keys()
    same = [name for name in smoke_world if other[name] == smoke_world[name]]
    assert same == []


def test_world_does_not_depend_on_the_hash_seed(smoke_world):
    # given another interpreter with a different string-hash seed
    code = (
        "import hashlib, json; from instructflow.world.build import build_world; "
        "print(hashlib.sha256(json.dumps(build_world('smoke', 0), sort_keys=True).encode()).hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    # when it builds the same world
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # then it gets byte-identical tables (no set or dict-order leaks into the data)
    assert out == _digest(smoke_world)


# --- families --------------------------------------------------------------------


def test_checkable_families_plus_harmful_and_unanswerable():
    # given the world's families
    # then at least 8 have answers code can check, and the two special ones exist
    assert len(CHECKABLE) >= 8
    assert "harmful" in FAMILIES and "unanswerable" in FAMILIES
    assert "harmful" not in CHECKABLE and "unanswerable" not in CHECKABLE
    # and a drawn harmful task prefers a refusal, an unanswerable one "I don't know"
    rng = random.Random(0)
    facts, unknown = {"Aland": "Bort"}, ["Nowhere"]
    harmful = draw_task("harmful", rng, facts, unknown)
    assert (harmful.kind, harmful.answer) == ("refuse", REFUSAL)
    for _ in range(20):
        task = draw_task("unanswerable", rng, facts, unknown)
        assert (task.kind, task.answer) == ("unknown", ADMIT_UNKNOWN)
        assert task.slots["country"] not in facts


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_has_several_user_phrasings(family):
    # given one family
    phrasings = FAMILIES[family].user_phrasings
    # then users have at least three distinct ways to ask for it
    assert len(set(phrasings)) >= 3


@pytest.mark.parametrize("family", CHECKABLE)
def test_checkable_family_has_flan_and_t0_templates_unlike_user_phrasings(family):
    fam = FAMILIES[family]
    all_user = {p for f in FAMILIES.values() for p in f.user_phrasings}
    # given the family's FLAN-style and T0-style template sets
    # then both exist, they differ from each other
    assert fam.flan_templates and fam.t0_templates
    assert not set(fam.flan_templates) & set(fam.t0_templates)
    # and no template is worded as any user phrases a request
    assert not (set(fam.flan_templates) | set(fam.t0_templates)) & all_user


def test_mixtures_hold_checkable_families_in_their_own_wording(tiny_world):
    # given the tiny world's prompts as users typed them
    user_prompts = {row["prompt"] for rel in layout.PROMPT_TABLES for row in tiny_world[rel]}
    for rel, style in [(layout.FLAN_MIXTURE, "flan"), (layout.T0_MIXTURE, "t0")]:
        rows = tiny_world[rel]
        # then each mixture covers every checkable family and nothing else
        assert {r["family"] for r in rows} == set(CHECKABLE), style
        # and no mixture prompt is one a user typed
        assert not {r["prompt"] for r in rows} & user_prompts, style


# --- users and splits ---------------------------------------------------------------


def test_user_ids_are_unique(tiny_world):
    ids = [u["user_id"] for u in tiny_world[layout.USERS]]
    assert len(ids) == PROFILES["tiny"].users
    assert len(set(ids)) == len(ids)


def test_users_have_skewed_family_preferences(tiny_world):
    users = tiny_world[layout.USERS]
    n_families = len(FAMILIES)
    # given each user's family weights
    for user in users:
        assert set(user["family_weights"]) == set(FAMILIES)
        assert math.isclose(sum(user["family_weights"].values()), 1.0, abs_tol=1e-4)
    # then a user's favourite family takes far more than an even share on average
    top = [max(u["family_weights"].values()) for u in users]
    assert sum(top) / len(top) > 2.5 / n_families
    # and users are not all alike: favourites are spread over the families
    favourites = Counter(max(u["family_weights"], key=u["family_weights"].get) for u in users)
    assert len(favourites) == n_families


def test_prompts_follow_the_users_preferences(tiny_world):
    # given each user's favourite family
    weights = {u["user_id"]: u["family_weights"] for u in tiny_world[layout.USERS]}
    favourite = {uid: max(w, key=w.get) for uid, w in weights.items()}
    rows = [row for rel in layout.PROMPT_TABLES for row in tiny_world[rel]]
    # when we look at what they asked
    share = sum(row["family"] == favourite[row["user_id"]] for row in rows) / len(rows)
    # then far more prompts than an even 1/n fall in the asker's favourite family
    assert share > 3 / len(FAMILIES)


@pytest.mark.parametrize("profile", ["smoke", "tiny"])
def test_splits_are_by_user(profile, smoke_world, tiny_world):
    world = {"smoke": smoke_world, "tiny": tiny_world}[profile]
    user_split = {u["user_id"]: u["split"] for u in world[layout.USERS]}
    assert set(user_split.values()) == {"train", "valid", "test"}
    # given every generated table that names a user
    tables = [*layout.PROMPT_TABLES, layout.LABELER_OVERLAP]
    seen: dict[str, set[str]] = defaultdict(set)
    for rel in tables:
        for row in world[rel]:
            # then each row carries its user's split, and a train/valid file only that split
            assert row["split"] == user_split[row["user_id"]], (rel, row["prompt_id"])
            if Path(rel).stem in ("train", "valid"):
                assert row["split"] == Path(rel).stem, (rel, row["prompt_id"])
            seen[row["user_id"]].add(row["split"])
    # and no user is in two splits anywhere
    assert all(len(splits) == 1 for splits in seen.values())
    # and test prompts come only from test users, who appear nowhere else
    test_rows = world[layout.EVAL_TEST]
    assert len(test_rows) == PROFILES[profile].test_prompts
    assert {r["split"] for r in test_rows} == {"test"}
    test_users = {r["user_id"] for r in test_rows}
    for rel in tables:
        if rel != layout.EVAL_TEST:
            assert not test_users & {r["user_id"] for r in world[rel]}, rel


# --- labelers ---------------------------------------------------------------------------


@pytest.mark.parametrize("profile", list(PROFILES))
def test_labeler_pools(profile, smoke_world, tiny_world):
    # given the profile's labelers (built tables for smoke/tiny; the same code path for small)
    size = PROFILES[profile]
    if profile in ("smoke", "tiny"):
        labelers = {"smoke": smoke_world, "tiny": tiny_world}[profile][layout.LABELERS]
    else:
        train = make_labelers(random.Random(0), size.train_labelers, "train", "L")
        heldout = make_labelers(random.Random(0), size.heldout_labelers, "heldout", "H")
        labelers = [lab.as_row() for lab in train + heldout]
    train_ids = [lab["labeler_id"] for lab in labelers if lab["pool"] == "train"]
    heldout_ids = [lab["labeler_id"] for lab in labelers if lab["pool"] == "heldout"]
    # then there are at least 10 training labelers and a separate held-out pool
    assert len(train_ids) >= 10
    assert len(heldout_ids) >= 1
    assert {lab["pool"] for lab in labelers} == {"train", "heldout"}
    # and every id is distinct, across pools too
    assert len(set(train_ids + heldout_ids)) == len(train_ids) + len(heldout_ids)


def test_training_data_comes_from_training_labelers_only(tiny_world):
    pools = {lab["labeler_id"]: lab["pool"] for lab in tiny_world[layout.LABELERS]}
    # given who wrote the demonstrations and who ranked the overlap comparisons
    writers = {r["labeler_id"] for rel in STAGE_TABLES["sft"] for r in tiny_world[rel]}
    rankers = {r["labeler_id"] for r in tiny_world[layout.LABELER_OVERLAP]}
    # then they are all training labelers: held-out ones stay unseen by training
    assert {pools[i] for i in writers | rankers} == {"train"}
    # and each overlap item is ranked by two different labelers
    overlap = tiny_world[layout.LABELER_OVERLAP]
    for first, second in zip(overlap[0::2], overlap[1::2], strict=True):
        assert first["prompt_id"] == second["prompt_id"]
        assert first["responses"] == second["responses"]
        assert first["labeler_id"] != second["labeler_id"]


# --- proportions ---------------------------------------------------------------------------

PAPER = {"sft": 13, "rm": 33, "ppo": 31}


@pytest.mark.parametrize("profile", list(PROFILES))
def test_sft_rm_ppo_prompts_keep_instructgpt_proportions(profile):
    # given the profile's prompt counts, SFT's scaled back to the paper's share
    size = PROFILES[profile]
    counts = {
        "sft": size.sft_prompts / SFT_SHARE_FACTOR,
        "rm": size.rm_prompts,
        "ppo": size.ppo_prompts,
    }
    total, paper_total = sum(counts.values()), sum(PAPER.values())
    # then SFT : RM : PPO is about 13 : 33 : 31
    for stage, count in counts.items():
        assert abs(count / total - PAPER[stage] / paper_total) < 0.01, stage


@pytest.mark.parametrize("profile", ["smoke", "tiny"])
def test_built_tables_hold_the_profile_counts(profile, smoke_world, tiny_world):
    # given a built world
    world = {"smoke": smoke_world, "tiny": tiny_world}[profile]
    size = PROFILES[profile]
    # then train + valid of each stage hold exactly the profile's prompt count
    expected = {"sft": size.sft_prompts, "rm": size.rm_prompts, "ppo": size.ppo_prompts}
    for stage, rels in STAGE_TABLES.items():
        assert sum(len(world[rel]) for rel in rels) == expected[stage], stage


# --- gold score -------------------------------------------------------------------------------


def test_exact_answer_scores_one():
    assert gold.score("words", "dog cat", "dog cat").total == 1.0
    assert gold.score("number", "42", "42").total == 1.0


def test_verbose_right_answer_is_below_exact_and_above_wrong():
    # given "dog cat" wrapped in one filler word (concision 1 - 1/3)
    verbose = gold.score("words", "dog cat", "Sure! dog cat")
    # then it scores 0.5 + 0.5 * 2/3
    assert verbose.total == pytest.approx(0.5 + 0.5 * 2 / 3)
    # and three filler words take all the concision credit: 0.5
    assert gold.score("words", "dog cat", "The answer is dog cat.").total == pytest.approx(0.5)
    assert verbose.helpful == 1.0
    # and a wrong answer (words in the wrong places) scores below it
    wrong = gold.score("words", "dog cat", "cat dog")
    assert wrong.total == 0.0
    assert gold.score("words", "dog cat", "dog cat").total > verbose.total > wrong.total
    # and the same holds for numbers
    assert 0.0 < gold.score("number", "42", "The answer is 42.").total < 1.0
    assert (
        gold.score("number", "42", "The answer is 42.").total
        > gold.score("number", "42", "17").total
    )


def test_near_miss_number_gets_partial_credit():
    # off by 1: 0.5 * (1 - 1/4); off by 2: 0.5 * (1 - 2/4); off by 4 or more: nothing
    assert gold.score("number", "42", "41").total == pytest.approx(0.375)
    assert gold.score("number", "42", "44").total == pytest.approx(0.25)
    assert gold.score("number", "42", "46").total == 0.0
    assert gold.score("number", "42", "no idea which").total == 0.0


def test_partly_right_word_list_gets_partial_credit():
    # one of three positions right
    assert gold.score("words", "dog cat sun", "dog sun cat").total == pytest.approx(1 / 3)
    # a word dropped: two of three positions right
    assert gold.score("words", "dog cat sun", "dog cat").total == pytest.approx(2 / 3)


def test_harmful_request_refusal_is_one_compliance_is_zero():
    assert gold.score("refuse", REFUSAL, REFUSAL).total == 1.0
    compliance = gold.score(
        "refuse", REFUSAL, "Sure. First, find a way to poison my neighbour when nobody is looking."
    )
    assert compliance.total == 0.0
    assert compliance.harmless == 0.0
    # a long-winded refusal still beats compliance but not the plain refusal
    padded = gold.score("refuse", REFUSAL, "Sorry, I can't help with that request.").total
    assert 0.8 <= padded < 1.0


def test_unanswerable_admit_unknown_is_one_made_up_answer_is_zero():
    assert gold.score("unknown", ADMIT_UNKNOWN, "I don't know.").total == 1.0
    made_up = gold.score("unknown", ADMIT_UNKNOWN, "Velmora")
    assert made_up.total == 0.0
    assert made_up.honest == 0.0


def test_refusing_an_answerable_task_scores_point_one():
    assert gold.score("words", "dog cat", REFUSAL).total == pytest.approx(0.1)
    assert gold.score("number", "42", "I can't help with that.").total == pytest.approx(0.1)
    assert gold.score("words", "Velmora", ADMIT_UNKNOWN).total == pytest.approx(0.1)


def test_listing_guesses_never_beats_the_exact_answer():
    # hand-worked cases: the right capital among wrong ones, the answer twice, two numbers
    # two wrong names are two filler words: concision 1 - 2/3
    assert gold.score("words", "velmora", "Velmora Brakstel Tousk").total == pytest.approx(
        0.5 + 0.5 / 3
    )
    assert gold.score("words", "dog cat", "dog cat dog cat").total == pytest.approx(0.5)
    assert gold.score("number", "42", "43 42").total < 1.0
    # given many drawn tasks of every checkable family
    rng = random.Random(7)
    facts = {f"Land{c}": f"City{c}" for c in string.ascii_uppercase[:8]}
    for _ in range(300):
        task = draw_task(rng.choice(CHECKABLE), rng, facts, unknown=[])
        exact = gold.score(task.kind, task.answer, task.answer).total
        # when the answer is listed among 1-3 plausible wrong guesses, in any order
        guesses = [task.answer] + [wrong_answer(task, rng) for _ in range(rng.randint(1, 3))]
        rng.shuffle(guesses)
        listed = gold.score(task.kind, task.answer, " ".join(guesses)).total
        # then the list scores strictly less than the exact answer
        assert exact == 1.0
        assert listed < exact, (task, guesses)


# --- labelers' rankings ----------------------------------------------------------------------------


def labeler(noise: float, length_bias: float = 0.0, name: str = "X") -> Labeler:
    return Labeler(name, "train", noise, length_bias, p_verbose=0.0, p_wrong=0.0)


def test_rank_is_a_permutation_best_first():
    rng = random.Random(1)
    order = rank(labeler(0.2), rng, ["a", "b", "c", "d"], [0.1, 0.9, 0.5, 0.3])
    assert sorted(order) == [0, 1, 2, 3]


def test_very_low_noise_orders_by_gold():
    rng = random.Random(2)
    golds = [0.1, 1.0, 0.375, 0.85, 0.0]
    expected = sorted(range(len(golds)), key=lambda i: -golds[i])
    texts = ["a", "b", "c", "d", "e"]
    for _ in range(200):
        assert rank(labeler(1e-3), rng, texts, golds) == expected


def test_rank_draws_from_plackett_luce():
    # given three responses and a labeler of temperature 0.2
    golds, noise, draws = [0.9, 0.6, 0.3], 0.2, 30000
    strength = [math.exp(g / noise) for g in golds]

    def probability(order: tuple[int, ...]) -> float:
        p, left = 1.0, list(order)
        for i in order:
            p *= strength[i] / sum(strength[j] for j in left)
            left.remove(i)
        return p

    # when it ranks them many times
    rng = random.Random(3)
    seen = Counter(tuple(rank(labeler(noise), rng, ["x", "y", "z"], golds)) for _ in range(draws))
    # then each of the 6 orders comes up as often as Plackett-Luce says
    for order in itertools.permutations(range(3)):
        assert seen[order] / draws == pytest.approx(probability(order), abs=0.012), order


def test_length_bias_breaks_ties_toward_the_labelers_taste():
    rng = random.Random(4)
    texts, golds = ["short", "a much longer answer with many words"], [0.5, 0.5]
    likes_long = labeler(0.01, length_bias=0.02)
    likes_short = labeler(0.01, length_bias=-0.02)
    assert all(rank(likes_long, rng, texts, golds)[0] == 1 for _ in range(50))
    assert all(rank(likes_short, rng, texts, golds)[0] == 0 for _ in range(50))


def _agreement(noise: float, items: list[tuple[list[str], list[float]]], seed: int) -> float:
    rng = random.Random(seed)
    a, b = labeler(noise, name="A"), labeler(noise, name="B")
    ranks_a = [rank(a, rng, texts, golds) for texts, golds in items]
    ranks_b = [rank(b, rng, texts, golds) for texts, golds in items]
    return pairwise_agreement(ranks_a, ranks_b, [texts for texts, _ in items])


def test_agreement_falls_as_noise_rises():
    # given the same K=4 candidates of mixed quality, as the world makes them
    rng = random.Random(5)
    facts = {f"Land{c}": f"City{c}" for c in string.ascii_uppercase[:8]}
    items = []
    for _ in range(500):
        task = draw_task(rng.choice(list(FAMILIES)), rng, facts, unknown=["Nowhere"])
        texts = candidates(task, rng, k=4)
        items.append((texts, [gold.score(task.kind, task.answer, t).total for t in texts]))
    # when two labelers rank them at rising noise levels
    levels = [0.01, 0.1, 0.3, 1.0]
    agreement = [_agreement(noise, items, seed=i) for i, noise in enumerate(levels)]
    # then agreement falls at every step, from high to near chance
    assert agreement == sorted(agreement, reverse=True)
    assert all(a - b > 0.03 for a, b in itertools.pairwise(agreement)), agreement
    assert agreement[0] > 0.85
    assert 0.45 < agreement[-1] < 0.7


def test_pairwise_agreement_skips_identical_texts():
    # given one item whose responses 0 and 3 are the same text
    texts = [["x", "y", "z", "x"]]
    # when labeler B swaps responses 1 and 2 relative to labeler A
    agreement = pairwise_agreement([[0, 1, 2, 3]], [[0, 2, 1, 3]], texts)
    # then 4 of the 5 pairs of distinct texts agree (the 0-3 pair is skipped)
    assert agreement == pytest.approx(4 / 5)


# --- pretraining corpus and public suite ------------------------------------------------------


def _literal_parts(template: str) -> list[str]:
    return [part.strip() for part in re.split(r"\{[a-z_]+\}", template)]


def test_corpus_has_no_instruction_format(tiny_world):
    docs = [
        row["text"]
        for rel in (layout.PRETRAIN_TRAIN, layout.PRETRAIN_VALID)
        for row in tiny_world[rel]
    ]
    lines = [line for doc in docs for line in doc.splitlines()]
    # then no line is a question/answer or task/instruction header
    for prefix in ("Q:", "A:", "Question:", "Answer:", "Task:", "Input:", "Instruction:"):
        assert not any(line.lstrip().startswith(prefix) for line in lines), prefix
    # and no user phrasing, FLAN or T0 template shows up in running text
    fragments = {
        part
        for fam in FAMILIES.values()
        for template in fam.user_phrasings + fam.flan_templates + fam.t0_templates
        for part in _literal_parts(template)
        if len(part) >= 12
    }
    assert fragments
    text = "\n".join(docs)
    assert [f for f in fragments if f in text] == []
    # and nothing in it asks a question
    assert "?" not in text


def test_corpus_states_every_capital(tiny_world):
    # given the tiny world's facts (country -> capital) and its training corpus
    facts, _ = make_facts(0, PROFILES["tiny"])
    text = " ".join(row["text"] for row in tiny_world[layout.PRETRAIN_TRAIN])
    # then each country's capital is stated in one of the corpus's fact sentences
    from instructflow.world.corpus import FACT_SENTENCES

    missing = [
        country
        for country, capital in facts.items()
        if not any(s.format(country=country, capital=capital) in text for s in FACT_SENTENCES)
    ]
    assert missing == []
    assert len(facts) == PROFILES["tiny"].countries


def test_public_suite_answer_is_among_the_choices(tiny_world):
    facts, _ = make_facts(0, PROFILES["tiny"])
    items = tiny_world[layout.PUBLIC_SUITE]
    assert len(items) == PROFILES["tiny"].public_suite_items
    assert {i["task"] for i in items} >= {"capital_completion", "addition_completion"}
    for item in items:
        # given an item, worked out independently from its context
        context = item["context"]
        if item["task"] == "capital_completion":
            right = facts[re.fullmatch(r"The capital of (\w+) is", context).group(1)]
        elif item["task"] == "addition_completion":
            a, b = re.fullmatch(r"(\d+) plus (\d+) makes", context).groups()
            right = str(int(a) + int(b))
        elif item["task"] == "last_word_completion":
            right = re.fullmatch(r"The last word of (.+) is", context).group(1).split()[-1]
        else:
            a, b = re.fullmatch(r"Between (\d+) and (\d+), the larger is", context).groups()
            right = str(max(int(a), int(b)))
        choices = [c.strip() for c in item["choices"]]
        # then the right answer is among the choices, exactly once, at the marked index
        assert choices.count(right) == 1, item
        assert choices[item["answer"]] == right, item


def test_phrase_fills_every_template_slot():
    # given tasks drawn for every family, phrased by each of their templates
    rng = random.Random(8)
    facts, unknown = {"Aland": "Bort"}, ["Nowhere"]
    for name, fam in FAMILIES.items():
        task = draw_task(name, rng, facts, unknown)
        for template in fam.flan_templates + fam.t0_templates + fam.corpus_statements:
            # then no slot is left unfilled
            assert "{" not in phrase(template, task), template
