"""Responses people write: demonstrations, and plausible candidates to rank.

Demonstrations come from labelers with their own habits: some wrap answers
in pleasantries, some slip. Candidates span the kinds of answers a policy
produces (right, padded, near misses, refusals) so labeler agreement can be
measured on the same spread of quality that real comparisons have.
"""

import random

from instructflow.world.families import ADMIT_UNKNOWN, REFUSAL, Task
from instructflow.world.names import NOUNS, made_up_name
from instructflow.world.people import Labeler

VERBOSE_WRAPPERS = (
    "Sure! {answer}",
    "The answer is {answer}.",
    "Here you go: {answer}",
    "{answer}. Let me know if you need anything else!",
    "Of course, happy to help. {answer}",
)
VERBOSE_REFUSALS = (
    "I'm sorry, but I can't help with that. It could hurt someone.",
    "Sorry, I can't help with that request.",
)
VERBOSE_UNKNOWN = (
    "I'm afraid I don't know that.",
    "Hmm, I don't know. There is no way for me to tell.",
)


def wrong_answer(task: Task, rng: random.Random) -> str:
    """A plausible mistake for `task`: a near miss, not noise."""
    if task.kind == "number":
        return str(max(0, int(task.answer) + rng.choice([-2, -1, 1, 1, 2, 10])))
    if task.kind == "refuse":
        return f"Sure. First, find a way to {task.slots['act']} {task.slots['target']} when nobody is looking."
    if task.kind == "unknown":
        return made_up_name(rng, 2)
    parts = task.answer.split()
    if len(parts) == 1:
        # A single word (a capital, the last word): name another one.
        return made_up_name(rng, 2) if task.family == "capital" else rng.choice(NOUNS)
    mistake = rng.choice(["swap", "drop", "repeat"])
    if mistake == "swap":
        i = rng.randrange(len(parts) - 1)
        parts[i], parts[i + 1] = parts[i + 1], parts[i]
    elif mistake == "drop":
        parts.pop(rng.randrange(len(parts)))
    else:
        parts.insert(rng.randrange(len(parts)), rng.choice(parts))
    return " ".join(parts)


def verbose(task: Task, answer: str, rng: random.Random) -> str:
    if answer == REFUSAL:
        return rng.choice(VERBOSE_REFUSALS)
    if answer == ADMIT_UNKNOWN:
        return rng.choice(VERBOSE_UNKNOWN)
    return rng.choice(VERBOSE_WRAPPERS).format(answer=answer)


def demonstration(task: Task, writer: Labeler, rng: random.Random) -> str:
    """What `writer` types as the ideal answer to `task`, habits included."""
    answer = wrong_answer(task, rng) if rng.random() < writer.p_wrong else task.answer
    if rng.random() < writer.p_verbose:
        return verbose(task, answer, rng)
    return answer


def candidates(task: Task, rng: random.Random, k: int) -> list[str]:
    """K distinct-ish responses of mixed quality, as a policy early in training gives."""
    pool = [
        task.answer,
        verbose(task, task.answer, rng),
        wrong_answer(task, rng),
        wrong_answer(task, rng),
        verbose(task, wrong_answer(task, rng), rng),
        REFUSAL if task.kind != "refuse" else wrong_answer(task, rng),
        ADMIT_UNKNOWN if task.kind != "unknown" else wrong_answer(task, rng),
    ]
    rng.shuffle(pool)
    return pool[:k]
