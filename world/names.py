"""Words and made-up names of the embedded world.

Everything is a fixed list or built from syllables by a seeded generator, so
the world is the same on every machine for the same seed.
"""

import random

NOUNS = (
    "cat dog sun moon tree lamp river stone bird fish cup door road hill ship "
    "book rain star leaf coin bell rope wolf bear frog boat cake kite milk salt "
    "sand wind snow fire gold iron silk wool corn rice pear plum nut egg owl"
).split()

PEOPLE = "Mira Tomas Ilse Bruno Keva Orin Sela Dario Nina Pavel Ruth Yuri".split()

_ONSETS = [
    "b",
    "d",
    "f",
    "g",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "z",
    "br",
    "st",
    "tr",
    "kr",
]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou"]
_CODAS = ["", "", "n", "r", "s", "l", "k", "m"]


def made_up_name(rng: random.Random, syllables: int) -> str:
    """A pronounceable capitalised name such as 'Velmora' or 'Orsk'."""
    parts = [
        rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)
    ]
    return "".join(parts).capitalize()


def distinct_names(rng: random.Random, count: int, syllables: int, taken: set[str]) -> list[str]:
    """`count` new names, none in `taken` (which is updated)."""
    names: list[str] = []
    while len(names) < count:
        name = made_up_name(rng, syllables)
        if name not in taken:
            taken.add(name)
            names.append(name)
    return names
