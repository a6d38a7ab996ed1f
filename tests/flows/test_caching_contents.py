"""Keys from contents (issue 16 item 1): an input edited in place and an edited module each re-run
exactly the stages that depend on them.

Three runs in a copy of the project the session's first run left (reduced
smoke sizes): the first adds human comparisons from a file; then that file is
edited in place (same path, still valid); then a module is edited.

The module edit is made in a copy of the project's packages: every stage's
code key is recomputed there with import_closure_digest, and the pipeline
runs with those keys (as a new process with the edited file would compute
them). Editing the checkout itself would change the code other tests run.
"""

import shutil
from pathlib import Path

import pytest

from instructflow.tasks import (
    base_model,
    comparisons,
    data,
    evaluation,
    judge,
    ppo,
    registry,
    reward_model,
    sft,
)
from instructflow.tasks.code_closure import PACKAGES, ROOT, import_closure_digest
from tests.bad_inputs.conftest import human_rows, read_rows, write_rows
from tests.flows.stages import STAGES
from tests.flows.test_caching import Project, ran

pytestmark = pytest.mark.slow

# (module object, attribute of its task, modules whose closure is its code key)
STAGE_TASKS = [
    (data, "validate_data_task", ["instructflow.tasks.data"]),
    (base_model, "base_model_task", ["instructflow.tasks.base_model"]),
    (sft, "sft_task", ["instructflow.tasks.sft"]),
    (comparisons, "comparisons_task", ["instructflow.tasks.comparisons"]),
    (reward_model, "reward_model_task", ["instructflow.tasks.reward_model"]),
    (judge, "judge_task", ["instructflow.tasks.judge"]),
    (ppo, "ppo_task", ["instructflow.tasks.ppo"]),
    (evaluation, "evaluation_task", ["instructflow.tasks.evaluation"]),
    (
        registry,
        "register_and_gate_task",
        ["instructflow.tasks.registry", "instructflow.tasks.serving.reward_model"],
    ),
]
FROM_COMPARISONS = {
    "comparisons",
    "judge",
    "reward_model",
    "ppo",
    "ppo_ptx",
    "evaluation",
    "registry",
}
# The held-out judge is a reward model too: it imports the ranking loss.
FROM_RANKING_LOSS = {"reward_model", "judge", "ppo", "ppo_ptx", "evaluation", "registry"}


def edited_copy(tmp: Path, rel: str) -> Path:
    """The project's packages copied to `tmp`, with a comment appended to `rel`."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp / package, ignore=shutil.ignore_patterns("__pycache__"))
    with (tmp / rel).open("a") as file:
        file.write("\n# edited by the caching test\n")
    return tmp


@pytest.fixture(scope="module")
def runs(copy_of_first_run, fast_smoke, tmp_path_factory):
    with pytest.MonkeyPatch.context() as monkeypatch:
        # the project the session's first run left (no human comparisons there)
        project = Project(copy_of_first_run(), monkeypatch)
        human = tmp_path_factory.mktemp("human") / "comparisons.jsonl"
        write_rows(human, human_rows(project.root / "data" / "smoke"))
        params = fast_smoke(comparisons={"human_comparisons": str(human)})
        out = {"first": project.run(params)}

        # the same file, edited in place: every ranking reversed (still valid)
        rows = read_rows(human)
        write_rows(human, [r | {"ranking": r["ranking"][::-1]} for r in rows])
        out["input_edited"] = project.run(params)

        # models/ranking_loss.py edited (the RM's and the judge's loss)
        tree = edited_copy(tmp_path_factory.mktemp("tree"), "models/ranking_loss.py")
        out["changed_code"] = set()
        for module, name, roots in STAGE_TASKS:
            task = getattr(module, name)
            version = import_closure_digest(*roots, root=tree)
            if version != task.version:
                out["changed_code"].add(name)
            edited = task.with_options()  # a copy (with_options takes no version)
            edited.version = version
            monkeypatch.setattr(module, name, edited)
        out["module_edited"] = project.run(params)
        yield out


def test_adding_human_comparisons_reruns_what_reads_them(runs):
    # given a project whose first run had none, human comparisons are added
    first = runs["first"]
    # then comparisons and everything after them ran; the rest came from the cache
    assert set(first.stages) == STAGES
    assert ran(first) == FROM_COMPARISONS


def test_an_input_edited_in_place_reruns_what_reads_it(runs):
    # given the human comparisons file changed at the same path
    edited = runs["input_edited"]
    # then comparisons and everything after them ran; the rest came from the cache
    assert set(edited.stages) == STAGES
    assert ran(edited) == FROM_COMPARISONS
    assert {s for s, cached in edited.stages.items() if cached} == STAGES - FROM_COMPARISONS


def test_an_edited_module_reruns_the_stages_that_import_it_and_what_follows(runs):
    # given models/ranking_loss.py edited: instructflow.tasks.reward_model and instructflow.tasks.judge import it, and the
    # evaluation and registry stages import instructflow.tasks.reward_model (to score with the RM): their
    # code keys changed, no other stage's
    assert runs["changed_code"] == {
        "reward_model_task",
        "judge_task",
        "evaluation_task",
        "register_and_gate_task",
    }
    edited = runs["module_edited"]
    # then those two and what reads their outputs ran; the rest came from the cache
    assert set(edited.stages) == STAGES
    assert ran(edited) == FROM_RANKING_LOSS
