"""The pretraining corpus and the held-out "public NLP" suite.

The corpus states the world's facts and shows its skills in running text
("The words cat dog sun, read backwards, are sun dog cat."), never as an
instruction followed by an answer. A model pretrained on it knows things but
does not follow instructions, as GPT-3 did not.

The public suite asks multiple-choice completions in the corpus's own style;
a policy that forgets the corpus while it learns to follow instructions pays
the "alignment tax" here.
"""

import random

from instructflow.world.families import CHECKABLE, FAMILIES, draw_task, phrase
from instructflow.world.names import NOUNS, PEOPLE

FACT_SENTENCES = (
    "The capital of {country} is {capital}.",
    "{capital} is the capital of {country}.",
    "In {country}, the government sits in {capital}.",
    "Travellers to {country} often arrive in {capital}, its capital.",
)
STORY_SENTENCES = (
    "{person} walked to {capital} with a {noun}.",
    "{person} saw a {noun} near the river in {country}.",
    "In {capital} the {noun} market opens early.",
    "{person} and {other} shared a {noun} on the road to {capital}.",
)


def _story(rng: random.Random, facts: dict[str, str]) -> str:
    country = rng.choice(sorted(facts))
    person, other = rng.sample(PEOPLE, 2)
    return rng.choice(STORY_SENTENCES).format(
        person=person,
        other=other,
        noun=rng.choice(NOUNS),
        country=country,
        capital=facts[country],
    )


def _fact(rng: random.Random, facts: dict[str, str]) -> str:
    country = rng.choice(sorted(facts))
    return rng.choice(FACT_SENTENCES).format(country=country, capital=facts[country])


def _skill(rng: random.Random, facts: dict[str, str]) -> str:
    family = FAMILIES[rng.choice([f for f in CHECKABLE if FAMILIES[f].corpus_statements])]
    task = draw_task(family.name, rng, facts, unknown=[])
    return phrase(rng.choice(family.corpus_statements), task)


def document(rng: random.Random, facts: dict[str, str]) -> str:
    """A short paragraph mixing stories, facts and worked skills."""
    makers = [_story, _fact, _fact, _skill, _skill, _skill]
    return " ".join(rng.choice(makers)(rng, facts) for _ in range(rng.randint(3, 6)))


def public_suite_item(rng: random.Random, facts: dict[str, str]) -> dict:
    """One multiple-choice completion in the corpus's style."""
    task_name = rng.choice(
        ["capital_completion", "addition_completion", "last_word_completion", "larger_completion"]
    )
    if task_name == "capital_completion":
        country = rng.choice(sorted(facts))
        right = facts[country]
        wrong = rng.sample([c for c in sorted(facts.values()) if c != right], 3)
        context = f"The capital of {country} is"
    elif task_name == "addition_completion":
        a, b = rng.randint(0, 49), rng.randint(0, 49)
        right = str(a + b)
        deltas = [1, 2, 10] + ([-1, -2, -10] if a + b >= 10 else [])
        wrong = [str(a + b + d) for d in rng.sample(deltas, 3)]
        context = f"{a} plus {b} makes"
    elif task_name == "last_word_completion":
        ws = rng.sample(NOUNS, 4)
        right, wrong = ws[-1], ws[:3]
        context = f"The last word of {' '.join(ws)} is"
    else:
        a, b = rng.sample(range(100), 2)
        right, wrong = str(max(a, b)), [str(min(a, b))]
        context = f"Between {a} and {b}, the larger is"
    choices = [right, *wrong]
    rng.shuffle(choices)
    # Choices are continuations, written with the space that follows the context.
    return {
        "task": task_name,
        "context": context,
        "choices": [f" {c}" for c in choices],
        "answer": choices.index(right),
    }
