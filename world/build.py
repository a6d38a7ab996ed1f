"""Build every table of the embedded world from a profile and a seed.

The result is a mapping from a path under data/ (see instructflow.world.layout) to its
rows. It depends only on (profile, seed): each part draws from its own
random stream, so adding rows to one table never shifts another.
"""

import random
from dataclasses import asdict

from instructflow.world import corpus, layout
from instructflow.world.families import ALL_FAMILIES, FAMILIES, Task, draw_task, phrase, user_prompt
from instructflow.world.names import distinct_names
from instructflow.world.people import Labeler, User, make_labelers, make_users, rank
from instructflow.world.profiles import PROFILES, SPLIT_FRACTIONS, WORLD_VERSION, WorldSize
from instructflow.world.responses import candidates, demonstration


def _stream(seed: int, name: str) -> random.Random:
    """An independent random stream per purpose, stable across Python versions."""
    return random.Random(f"{seed}:{name}")


def make_facts(seed: int, size: WorldSize) -> tuple[dict[str, str], list[str]]:
    """Countries with capitals (stated by the corpus) and countries that do not exist."""
    rng = _stream(seed, "facts")
    taken: set[str] = set()
    countries = distinct_names(rng, size.countries, 3, taken)
    capitals = distinct_names(rng, size.countries, 2, taken)
    unknown = distinct_names(rng, size.unknown_countries, 3, taken)
    return dict(zip(countries, capitals, strict=True)), unknown


class _PromptMaker:
    """Draws (user, task, prompt text) the way users submit them."""

    def __init__(
        self, seed: int, name: str, users: list[User], facts: dict[str, str], unknown: list[str]
    ):
        self.rng = _stream(seed, name)
        self.users, self.facts, self.unknown = users, facts, unknown

    def draw(self) -> tuple[User, Task, str]:
        user = self.rng.choice(self.users)
        families, weights = zip(*user.family_weights.items(), strict=True)
        family = self.rng.choices(families, weights)[0]
        task = draw_task(family, self.rng, self.facts, self.unknown)
        return user, task, user_prompt(task, self.rng)


def _prompt_row(prompt_id: str, user: User, task: Task, text: str) -> dict:
    return {
        "prompt_id": prompt_id,
        "user_id": user.user_id,
        "split": user.split,
        "family": task.family,
        "prompt": text,
    }


def _gold_row(prompt_id: str, task: Task) -> dict:
    return {
        "prompt_id": prompt_id,
        "family": task.family,
        "kind": task.kind,
        "answer": task.answer,
        "slots": task.slots,
    }


def _by_split(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {"train": [], "valid": [], "test": []}
    for row in rows:
        out[row["split"]].append(row)
    return out


def _prompt_tables(
    seed: int, size: WorldSize, users: list[User], writers: list[Labeler], facts, unknown
):
    """SFT demonstrations, RM, PPO and test prompts, plus the gold key for all of them."""
    trainable = [u for u in users if u.split in ("train", "valid")]
    test_users = [u for u in users if u.split == "test"]
    tables: dict[str, list[dict]] = {}
    gold: list[dict] = []
    tasks_by_id: dict[str, Task] = {}
    for stage, count, pool in [
        ("sft", size.sft_prompts, trainable),
        ("rm", size.rm_prompts, trainable),
        ("ppo", size.ppo_prompts, trainable),
        ("eval", size.test_prompts, test_users),
    ]:
        maker = _PromptMaker(seed, f"prompts:{stage}", pool, facts, unknown)
        write_rng = _stream(seed, f"demonstrations:{stage}")
        rows = []
        for i in range(count):
            user, task, text = maker.draw()
            prompt_id = f"{stage}-{i:06d}"
            row = _prompt_row(prompt_id, user, task, text)
            if stage == "sft":
                writer = write_rng.choice(writers)
                row |= {
                    "response": demonstration(task, writer, write_rng),
                    "labeler_id": writer.labeler_id,
                }
            rows.append(row)
            gold.append(_gold_row(prompt_id, task))
            tasks_by_id[prompt_id] = task
        if stage == "eval":
            tables[layout.EVAL_TEST] = rows
        else:
            split = _by_split(rows)
            tables[f"{stage}/train.jsonl"] = split["train"]
            tables[f"{stage}/valid.jsonl"] = split["valid"]
    tables[layout.GOLD_KEY] = gold
    return tables, tasks_by_id


def _mixture(seed: int, name: str, count: int, facts, unknown) -> list[dict]:
    """A FLAN- or T0-style mixture: each checkable family's task in that style's templates.

    Public NLP data sets have no refusals and no "I don't know", so neither
    mixture has the harmful or unanswerable family: a real gap of these baselines.
    """
    rng = _stream(seed, f"mixture:{name}")
    families = [f for f in ALL_FAMILIES if getattr(FAMILIES[f], f"{name}_templates")]
    rows = []
    for i in range(count):
        family = FAMILIES[families[i % len(families)]]
        task = draw_task(family.name, rng, facts, unknown)
        template = rng.choice(getattr(family, f"{name}_templates"))
        rows.append(
            {
                "example_id": f"{name}-{i:06d}",
                "family": family.name,
                "prompt": phrase(template, task),
                "response": task.answer,
            }
        )
    rng.shuffle(rows)
    return rows


def _overlap_comparisons(
    seed: int, size: WorldSize, rm_rows: list[dict], tasks_by_id, labelers: list[Labeler]
) -> list[dict]:
    """Candidates for some RM prompts, each ranked by two different training labelers."""
    from instructflow.world.gold import score

    rng = _stream(seed, "overlap")
    rows = []
    for item in rm_rows[: size.overlap_items]:
        task = tasks_by_id[item["prompt_id"]]
        responses = candidates(task, rng, k=4)
        golds = [score(task.kind, task.answer, r).total for r in responses]
        for suffix, labeler in zip("ab", rng.sample(labelers, 2), strict=True):
            rows.append(
                {
                    "comparison_id": f"{item['prompt_id']}-{suffix}",
                    "prompt_id": item["prompt_id"],
                    "user_id": item["user_id"],
                    "split": item["split"],
                    "prompt": item["prompt"],
                    "responses": responses,
                    "ranking": rank(labeler, rng, responses, golds),
                    "labeler_id": labeler.labeler_id,
                }
            )
    return rows


def build_world(profile: str, seed: int) -> dict[str, object]:
    """All tables of the world for (profile, seed): path under data/ -> rows (or a dict for JSON)."""
    size = PROFILES[profile]
    facts, unknown = make_facts(seed, size)
    users = make_users(_stream(seed, "users"), size.users, ALL_FAMILIES, SPLIT_FRACTIONS)
    train_labelers = make_labelers(
        _stream(seed, "labelers:train"), size.train_labelers, "train", "L"
    )
    heldout_labelers = make_labelers(
        _stream(seed, "labelers:heldout"), size.heldout_labelers, "heldout", "H"
    )

    tables, tasks_by_id = _prompt_tables(seed, size, users, train_labelers, facts, unknown)
    rm_all = tables[layout.RM_TRAIN]
    tables[layout.LABELER_OVERLAP] = _overlap_comparisons(
        seed, size, rm_all, tasks_by_id, train_labelers
    )
    mixture_size = len(tables[layout.SFT_TRAIN])  # the same budget of examples as SFT
    tables[layout.FLAN_MIXTURE] = _mixture(seed, "flan", mixture_size, facts, unknown)
    tables[layout.T0_MIXTURE] = _mixture(seed, "t0", mixture_size, facts, unknown)

    doc_rng = _stream(seed, "corpus")
    docs = [
        corpus.document(doc_rng, facts)
        for _ in range(size.pretrain_docs + size.pretrain_valid_docs)
    ]
    tables[layout.PRETRAIN_TRAIN] = [
        {"doc_id": f"doc-{i:06d}", "text": t} for i, t in enumerate(docs[: size.pretrain_docs])
    ]
    tables[layout.PRETRAIN_VALID] = [
        {"doc_id": f"doc-{i:06d}", "text": t}
        for i, t in enumerate(docs[size.pretrain_docs :], start=size.pretrain_docs)
    ]
    suite_rng = _stream(seed, "public_suite")
    tables[layout.PUBLIC_SUITE] = [
        {"item_id": f"pub-{i:05d}", **corpus.public_suite_item(suite_rng, facts)}
        for i in range(size.public_suite_items)
    ]
    tables[layout.USERS] = [asdict(u) for u in users]
    tables[layout.LABELERS] = [lab.as_row() for lab in train_labelers + heldout_labelers]
    tables[layout.MANIFEST] = {
        "profile": profile,
        "seed": seed,
        "world_version": WORLD_VERSION,
        "families": ALL_FAMILIES,
        "sizes": asdict(size),
    }
    return tables
