"""The sweep driver's world patch: what-ifs change the world's constants, nothing else."""

import random

import pytest

import instructflow.world.families
import instructflow.world.gold
from instructflow.world.profiles import PROFILES
from tests.scripts import load_script


@pytest.fixture
def restored_world(monkeypatch):
    """Every constant a test patches is put back afterwards (setattr to itself records it)."""
    for module, name in [
        (instructflow.world.families, "ADD_MAX"),
        (instructflow.world.families, "WORD_LIST_LENGTHS"),
        (instructflow.world.gold, "FILLER_FOR_ZERO_CONCISION"),
    ]:
        monkeypatch.setattr(module, name, getattr(module, name))
    monkeypatch.setitem(PROFILES, "tiny", PROFILES["tiny"])


def test_patch_sets_constants_merges_dicts_and_resizes_tiny(restored_world):
    sweep = load_script("stage_sweep")
    lengths_before = dict(instructflow.world.families.WORD_LIST_LENGTHS)
    # given a patch of a number, one entry of a dict, a gold constant and a profile size
    sweep.apply_world_patch(
        {
            "families": {"ADD_MAX": 3, "WORD_LIST_LENGTHS": {"sort": [2, 2]}},
            "gold": {"FILLER_FOR_ZERO_CONCISION": 9},
            "profile": {"sft_prompts": 17},
        }
    )
    # then drawn tasks follow the patched difficulty
    rng = random.Random(0)
    for _ in range(50):
        add = instructflow.world.families.draw_task("add", rng, {}, [])
        assert int(add.slots["a"]) <= 3 and int(add.slots["b"]) <= 3
        assert len(instructflow.world.families.draw_task("sort", rng, {}, []).answer.split()) == 2
    # and the dict's other entries are kept
    assert instructflow.world.families.WORD_LIST_LENGTHS["reverse"] == lengths_before["reverse"]
    # and grading and sizes changed as asked: one filler word now costs 1/9 of concision
    assert instructflow.world.gold.score("number", "4", "Sure! 4").concise == pytest.approx(
        1 - 1 / 9
    )
    assert PROFILES["tiny"].sft_prompts == 17


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"build": {"X": 1}}, "cannot patch instructflow.world.build"),
        (
            {"families": {"NO_SUCH_CONSTANT": 1}},
            "instructflow.world.families has no NO_SUCH_CONSTANT",
        ),
    ],
)
def test_patch_refuses_what_it_cannot_set(patch, message, restored_world):
    with pytest.raises(ValueError, match=message):
        load_script("stage_sweep").apply_world_patch(patch)
