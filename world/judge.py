"""The world's people as the pipeline meets them: a gold judge and labeler pools.

Built from the tables in data/ (the gold key, the labelers), so a stage
needs only the profile folder. Training stages use the labelers (as a real
team uses its contractors); only evaluation and monitoring use the gold judge.
"""

import json
import random
from pathlib import Path

from instructflow.world.gold import score
from instructflow.world.people import Labeler, likert, prefers_first, rank


class GoldJudge:
    """Gold preference scores for (prompt_id, response), from the answer key."""

    def __init__(self, key_rows: list[dict]):
        self._key = {row["prompt_id"]: row for row in key_rows}

    @classmethod
    def load(cls, profile_dir: Path) -> "GoldJudge":
        with open(profile_dir / "gold" / "key.jsonl", encoding="utf-8") as fh:
            return cls([json.loads(line) for line in fh])

    def score(self, prompt_id: str, response: str) -> float:
        row = self._key[prompt_id]
        return score(row["kind"], row["answer"], response).total

    def family(self, prompt_id: str) -> str:
        return self._key[prompt_id]["family"]


class LabelerPool:
    """A pool of simulated labelers (train or heldout), drawing who labels what at random."""

    def __init__(self, labelers: list[Labeler], judge: GoldJudge, seed: int):
        if not labelers:
            raise ValueError("empty labeler pool")
        self.labelers, self.judge = labelers, judge
        self.rng = random.Random(seed)

    @classmethod
    def load(cls, profile_dir: Path, pool: str, judge: GoldJudge, seed: int) -> "LabelerPool":
        with open(profile_dir / "people" / "labelers.jsonl", encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh]
        return cls([Labeler(**r) for r in rows if r["pool"] == pool], judge, seed)

    def pick(self, exclude: str | None = None) -> Labeler:
        choices = [lab for lab in self.labelers if lab.labeler_id != exclude]
        return self.rng.choice(choices)

    def rank(self, labeler: Labeler, prompt_id: str, responses: list[str]) -> list[int]:
        golds = [self.judge.score(prompt_id, r) for r in responses]
        return rank(labeler, self.rng, responses, golds)

    def compare(self, prompt_id: str, first: str, second: str) -> float:
        """One labeler's verdict: 1 if `first` is preferred, 0 if `second`, 0.5 for identical texts."""
        labeler = self.pick()
        return prefers_first(
            labeler,
            self.rng,
            first,
            second,
            self.judge.score(prompt_id, first),
            self.judge.score(prompt_id, second),
        )

    def likert(self, prompt_id: str, response: str) -> int:
        return likert(self.pick(), self.rng, self.judge.score(prompt_id, response))
