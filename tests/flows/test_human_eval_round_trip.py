"""`instructflow eval export` -> people rank -> `instructflow eval import`, on a finished run.

The run is built here as the pipeline leaves one (a parent MLflow run, its
evaluation stage's samples as artifacts, its report, a registered challenger
judged against SFT), so the test needs no training.
"""

import csv
import json
import random

import mlflow
import pytest
from mlflow import MlflowClient

from instructflow.flows.cli import main
from instructflow.tasks import promotion, registry, tracking
from instructflow.tasks.stats import mean_with_ci
from tests.human_eval_runs import parent_run_with_responses, write_report
from tests.models.test_lm import save_tiny_checkpoint

POLICIES = ("sft", "ppo", "ppo_ptx")
PROMPTS = 12


@pytest.fixture
def finished_run(prefect_harness, tmp_path, monkeypatch):
    def rows_of(policy: str) -> list[dict]:
        return [
            {
                "prompt_id": f"p{i}",
                "sample": s,
                "prompt": f"prompt {i}",
                "response": f"{policy} {i}",
            }
            for i in range(PROMPTS)
            for s in range(3)
        ]

    with parent_run_with_responses(tmp_path, monkeypatch, rows_of, POLICIES) as run_id:
        with tracking.stage_run("registry", run_id):
            policy_dir = save_tiny_checkpoint("gpt2", tmp_path / "policy")
            version = registry.register(str(policy_dir), "instructflow-policy-smoke", "policy", {})
    gate = {
        "model_name": "instructflow-policy-smoke",
        "policy_version": version,
        "candidate": "ppo_ptx",
        "auto_promote": True,
        "public_suite_margin": 0.02,
        "incumbent": "sft",
        "note": None,
        "evidence": "held-out labelers",
        "prompts": PROMPTS,
        "win_rate": {"mean": 0.5, "ci95": [0.4, 0.6]},
        "public_suite": {"challenger": 0.5, "incumbent": 0.5},
        "promote": False,
        "promoted": False,
        "reason": "win rate vs sft 0.500 has 95% CI lower end 0.400 <= 0.5",
    }
    write_report(tmp_path, run_id, gate)
    return tmp_path, run_id


def _rank_like_a_person(csv_path, seed):
    """Fill the CSV: ppo_ptx's answers are usually preferred (read from the text, as a person would)."""
    rng = random.Random(seed)
    rows = list(csv.DictReader(csv_path.open()))
    by_item: dict[str, list[dict]] = {}
    for row in rows:
        by_item.setdefault(row["item_id"], []).append(row)
    for item_rows in by_item.values():
        score = {
            r["label"]: rng.random() + (0.8 if r["response"].startswith("ppo_ptx") else 0)
            for r in item_rows
        }
        order = sorted(score, key=score.__getitem__, reverse=True)
        for r in item_rows:
            r["rank"] = order.index(r["label"]) + 1
            r["likert"] = 7 - order.index(r["label"]) * 2
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def test_export_rank_import(finished_run, capsys):
    root, run_id = finished_run
    # when the run's samples are exported for labelling
    assert main(["eval", "export", "latest", "--n", "10"]) == 0
    folder = root / "reports" / run_id / "human_eval"
    assert len((folder / "labeling.jsonl").read_text().splitlines()) == 10
    # and people rank them (here: a seeded stand-in that prefers ppo_ptx's answers)
    rows = _rank_like_a_person(folder / "labeling.csv", seed=3)
    assert main(["eval", "import", run_id, str(folder / "labeling.csv")]) == 0

    # then the imported win rates and Likert means are the ones computed here from the same ranks
    expected_wins = {p: [] for p in POLICIES}
    likert = {p: [] for p in POLICIES}
    items: dict[str, dict[str, dict]] = {}
    for row in rows:
        policy = row["response"].split(" ")[0]
        items.setdefault(row["item_id"], {})[policy] = row
        likert[policy].append(row["likert"])
    for by_policy in sorted(items.items()):
        for policy in ("ppo", "ppo_ptx"):
            expected_wins[policy].append(
                float(by_policy[1][policy]["rank"] < by_policy[1]["sft"]["rank"])
            )
    report = json.loads((root / "reports" / "latest" / "report.json").read_text())
    human = report["human_eval"]["policies"]
    for policy in ("ppo", "ppo_ptx"):
        assert human[policy]["win_rate_vs_sft"] == mean_with_ci(expected_wins[policy])
    for policy in POLICIES:
        assert human[policy]["likert"]["mean"] == pytest.approx(
            sum(likert[policy]) / len(likert[policy])
        )
    # and the run's MLflow metrics hold them
    metrics = MlflowClient().get_run(run_id).data.metrics
    assert metrics["human/ppo_ptx/win_rate_vs_sft"] == human["ppo_ptx"]["win_rate_vs_sft"]["mean"]
    # and the gate decided again on the human evidence, and says so
    gate = report["gate"]
    assert gate["evidence"] == "human" and gate["prompts"] == 10
    assert gate["automatic"]["evidence"] == "held-out labelers"
    assert gate["win_rate"] == human["ppo_ptx"]["win_rate_vs_sft"]
    tags = (
        MlflowClient().get_model_version("instructflow-policy-smoke", gate["policy_version"]).tags
    )
    assert tags["gate_evidence"] == "human"
    assert tags["gate_promote"] == str(gate["promote"])
    card = (
        MlflowClient()
        .get_model_version("instructflow-policy-smoke", gate["policy_version"])
        .description
    )
    assert "## People's rankings\n\n- played: sft (human, 10 prompts)\n" in card
    assert f"{gate['reason']}\n" in card.split("## People's rankings")[1]
    assert (
        registry.champion_version(MlflowClient(), "instructflow-policy-smoke") is not None
    ) == gate["promote"]
    # and the registered model's status says where champion is now
    status = MlflowClient().get_registered_model("instructflow-policy-smoke").description
    assert (f"**Champion: v{gate['policy_version']}**" in status) == gate["promote"]
    # and the command said where champion is now
    said = capsys.readouterr().out.strip().splitlines()[-1]
    version = gate["policy_version"]
    if gate["promote"]:
        assert said == f"instructflow-policy-smoke v{version} is champion"
    else:
        assert said.startswith(f"instructflow-policy-smoke v{version} is not champion (champion: ")


def test_people_decide_a_dataset_runs_gate_which_has_no_public_suite(finished_run):
    root, run_id = finished_run

    # given a dataset run's gate: the held-out judge's evidence, no public suite (no field)
    def as_dataset_gate(gate: dict) -> None:
        del gate["public_suite"], gate["public_suite_margin"]
        gate["evidence"] = "held-out judge"

    # when people rank the run's samples and they are imported
    gate = _gate_after_people_prefer_the_candidate(root, run_id, as_dataset_gate)
    # then the gate decided again on their rankings alone, naming no public suite
    assert gate["evidence"] == "human" and gate["automatic"]["evidence"] == "held-out judge"
    assert "public suite" not in gate["reason"]


def test_people_who_prefer_a_candidate_holding_sfts_weights_do_not_make_it_champion(
    finished_run,
):
    root, run_id = finished_run

    # given a run whose candidate is SFT's own weights (PPO kept them), from a report made
    # before the gate recorded its digest verdict: only the candidate_note says so
    def kept_sfts_weights(gate: dict) -> None:
        gate["candidate_note"] = "ppo_ptx kept its starting weights (SFT's): ..."

    # when people rank its samples first every time and that is imported
    gate = _gate_after_people_prefer_the_candidate(root, run_id, kept_sfts_weights)
    # then the gate refuses all the same: SFT's weights cannot beat SFT
    assert not gate["promote"] and not gate["promoted"]
    assert gate["reason"].startswith("the candidate holds sft's own weights")
    assert gate["candidate_holds_incumbent_weights"] is True


def test_the_gates_digest_verdict_not_its_note_decides_whether_the_candidate_is_sfts_weights(
    finished_run,
):
    root, run_id = finished_run

    # given a gate that found by digest that the candidate holds SFT's weights, with no note
    def found_sfts_weights(gate: dict) -> None:
        gate["candidate_holds_incumbent_weights"] = True

    # when people rank the candidate first every time and that is imported
    gate = _gate_after_people_prefer_the_candidate(root, run_id, found_sfts_weights)
    # then it is refused: SFT's weights cannot beat SFT, whatever the note says
    assert not gate["promote"] and not gate["promoted"]
    assert gate["reason"].startswith("the candidate holds sft's own weights")


def test_a_note_on_a_candidate_the_gate_found_other_than_sft_does_not_refuse_it(finished_run):
    root, run_id = finished_run

    # given a gate with a candidate_note, whose digest comparison found weights other than SFT's
    def noted_but_different(gate: dict) -> None:
        gate["candidate_note"] = "ppo_ptx: a note for people, set for some other reason"
        gate["candidate_holds_incumbent_weights"] = False

    # when people rank the candidate first every time and that is imported
    gate = _gate_after_people_prefer_the_candidate(root, run_id, noted_but_different)
    # then people's rankings decide: it is promoted
    assert gate["promote"] and gate["promoted"]
    assert gate["candidate_holds_incumbent_weights"] is False


def test_a_bad_label_file_is_refused_in_one_message(finished_run, capsys):
    root, run_id = finished_run
    main(["eval", "export", run_id, "--n", "4"])
    filled = root / "reports" / run_id / "human_eval" / "labeling.csv"
    rows = list(csv.DictReader(filled.open()))
    for row in rows:
        row["rank"], row["likert"] = 1, 4  # every response ranked first: not a ranking
    with filled.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    code = main(["eval", "import", run_id, str(filled)])
    assert code != 0
    err = capsys.readouterr().err
    assert f"{filled} row 3 field 'rank': item-0000: rank 1 is row 2's too" in err
    assert "Traceback" not in err


def test_repeated_rows_are_refused_one_line_each_naming_both_rows(finished_run, capsys):
    root, run_id = finished_run
    assert main(["eval", "export", run_id, "--n", "4"]) == 0
    filled = root / "reports" / run_id / "human_eval" / "labeling.csv"
    _rank_first(filled, "ppo_ptx")
    rows = list(csv.DictReader(filled.open()))
    # given a correctly filled file with its row 2 again, and its row 3 again ranked otherwise
    again = [dict(rows[0]), dict(rows[1], rank=int(rows[1]["rank"]) % 3 + 1)]
    with filled.open("a", newline="") as handle:
        csv.DictWriter(handle, fieldnames=list(rows[0])).writerows(again)
    capsys.readouterr()
    # when it is imported
    code = main(["eval", "import", run_id, str(filled)])
    # then it is refused: one line per repeat, each naming the row it repeats
    err = capsys.readouterr().err.strip().splitlines()
    last = len(rows) + 1  # the header is row 1
    first, second = (f"{r['item_id']} {r['label']}" for r in rows[:2])
    assert code == 2
    assert err == [
        "instructflow: 2 problems found:",
        f"{filled} row {last + 1} field 'label': {first} is also row 2",
        f"{filled} row {last + 2} field 'label': {second} is also row 3, with other values: "
        "keep one of them",
    ]


def _gate_after_people_prefer_the_candidate(root, run_id: str, edit) -> dict:
    """`edit(gate)` on the run's report, then people's rankings with the candidate (ppo_ptx)
    first in every item exported and imported: the report's gate block after."""
    _edit_gate(root, run_id, edit)
    assert main(["eval", "export", run_id, "--n", "6"]) == 0
    filled = root / "reports" / run_id / "human_eval" / "labeling.csv"
    _rank_first(filled, "ppo_ptx")
    assert main(["eval", "import", run_id, str(filled)]) == 0
    return json.loads((root / "reports" / run_id / "report.json").read_text())["gate"]


def _edit_gate(root, run_id: str, edit) -> None:
    """`edit(gate)` on the run's report, in its own folder and in reports/latest."""
    for folder in (root / "reports" / run_id, root / "reports" / "latest"):
        path = folder / "report.json"
        report = json.loads(path.read_text())
        edit(report["gate"])
        path.write_text(json.dumps(report))


def _rank_first(csv_path, policy: str) -> None:
    """Fill the CSV with `policy`'s answer first in every item, the others after it."""
    rows = list(csv.DictReader(csv_path.open()))
    for row in rows:
        first = row["response"].startswith(policy + " ")
        row["rank"] = 1 if first else 2 + sorted(r["label"] for r in rows).index(row["label"]) % 2
        row["likert"] = 7 if first else 3
    by_item: dict[str, list[dict]] = {}
    for row in rows:
        by_item.setdefault(row["item_id"], []).append(row)
    for item_rows in by_item.values():  # a permutation: the favourite, then by label
        rest = sorted((r for r in item_rows if r["rank"] != 1), key=lambda r: r["label"])
        for place, row in enumerate(rest, start=2):
            row["rank"] = place
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_people_rankings_of_an_older_run_do_not_move_a_champion_chosen_since(
    finished_run, tmp_path, capsys
):
    root, run_id = finished_run
    client = MlflowClient()
    # given a run whose gate left no champion, then a later version made champion by hand
    with mlflow.start_run(run_name="later"):
        later_dir = save_tiny_checkpoint("gpt2", tmp_path / "later" / "model", seed=1)
        later = registry.register(str(later_dir), "instructflow-policy-smoke", "policy", {})
    promotion.promote_manually(str(later), "chosen since", "instructflow-policy-smoke")
    # when people rank the older run's candidate first in every item and that is imported
    assert main(["eval", "export", run_id, "--n", "10"]) == 0
    filled = root / "reports" / run_id / "human_eval" / "labeling.csv"
    _rank_first(filled, "ppo_ptx")
    assert main(["eval", "import", run_id, str(filled)]) == 0
    # then the verdict is recorded, but champion stays where it was put, and the report says why
    gate = json.loads((root / "reports" / run_id / "report.json").read_text())["gate"]
    assert gate["promote"] and not gate["promoted"]
    assert f"champion moved since this run's gate (none -> v{later})" in gate["reason"]
    assert registry.champion_version(client, "instructflow-policy-smoke") == str(later)
    tags = client.get_model_version("instructflow-policy-smoke", gate["policy_version"]).tags
    assert tags["gate_evidence"] == "human" and "promoted_by" not in tags


def test_a_file_filled_from_another_export_is_refused_in_one_line(finished_run, capsys):
    root, run_id = finished_run
    # given a labeling file filled from one export, then a new export of the same run
    assert main(["eval", "export", run_id, "--n", "10"]) == 0
    folder = root / "reports" / run_id / "human_eval"
    filled = folder.parent / "filled.csv"
    filled.write_text((folder / "labeling.csv").read_text())
    _rank_first(filled, "ppo_ptx")
    assert main(["eval", "export", run_id, "--n", "10", "--seed", "5"]) == 0
    capsys.readouterr()
    # when the first file is imported (its item ids and labels are the new export's too)
    code = main(["eval", "import", run_id, str(filled)])
    # then it is refused in one line saying why, and nothing was decided
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "responses are not the texts this run's export wrote" in err
    report = json.loads((root / "reports" / run_id / "report.json").read_text())
    assert "human_eval" not in report and report["gate"]["evidence"] == "held-out labelers"


@pytest.mark.parametrize(
    "line, field",
    [
        ("{not json", "<line>"),
        ('["a list"]', "<line>"),
        ('{"item_id": "item-0000", "likert": "7"}', "likert"),
    ],
    ids=["malformed", "array", "likert-string"],
)
def test_a_broken_jsonl_labeling_file_is_refused_naming_the_row(finished_run, capsys, line, field):
    root, run_id = finished_run
    assert main(["eval", "export", run_id, "--n", "4"]) == 0
    filled = root / "reports" / run_id / "human_eval" / "labeling.jsonl"
    rows = filled.read_text().splitlines()
    filled.write_text("\n".join([line, *rows[1:]]) + "\n")
    capsys.readouterr()
    code = main(["eval", "import", run_id, str(filled)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"{filled} row 1 field '{field}'" in err


def test_importing_into_a_run_never_exported_says_which_command_exports(finished_run):
    _, run_id = finished_run
    with pytest.raises(SystemExit) as stop:
        main(["eval", "import", run_id, "labels.csv"])
    assert f"run {run_id} has no labeling files: `instructflow eval export {run_id}`" in str(
        stop.value.code
    )


def test_people_who_rank_the_candidate_below_sft_withdraw_its_approval_request(finished_run):
    root, run_id = finished_run
    # given a run whose automatic gate passed with approval required: it awaits a person
    _edit_gate(
        root,
        run_id,
        lambda gate: gate.update(promote=True, require_approval=True, awaiting_approval=True),
    )
    # when people rank SFT's answer first in every item
    assert main(["eval", "export", run_id, "--n", "10"]) == 0
    filled = root / "reports" / run_id / "human_eval" / "labeling.csv"
    _rank_first(filled, "sft")
    assert main(["eval", "import", run_id, str(filled)]) == 0
    # then the report no longer asks anyone to approve it
    gate = json.loads((root / "reports" / run_id / "report.json").read_text())["gate"]
    assert not gate["promote"] and not gate["promoted"]
    assert gate["awaiting_approval"] is False


def _promoted_with_no_champion_before(root, run_id) -> str:
    """The run's gate made its candidate champion, there being none before it."""
    version = json.loads((root / "reports" / run_id / "report.json").read_text())["gate"]
    version = version["policy_version"]
    promotion.promote_manually(str(version), "the run's gate", "instructflow-policy-smoke")
    _edit_gate(
        root, run_id, lambda gate: gate.update(promote=True, promoted=True, champion=version)
    )
    return version


def _rank_alternately(csv_path, first: str, then: str) -> None:
    """`first`'s answer first and `then`'s second in every other item, the other way round in
    the rest (the remaining answers after them): a tie between the two."""
    rows = list(csv.DictReader(csv_path.open()))
    items = sorted({r["item_id"] for r in rows})
    for row in rows:
        pair = (first, then) if items.index(row["item_id"]) % 2 == 0 else (then, first)
        policy = row["response"].split(" ")[0]
        others = sorted(
            r["label"] for r in rows if r["item_id"] == row["item_id"] and
            r["response"].split(" ")[0] not in pair
        )  # fmt: skip
        row["rank"] = pair.index(policy) + 1 if policy in pair else 3 + others.index(row["label"])
        row["likert"] = 4
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_people_who_cannot_tell_keep_the_only_champion_there_is(finished_run, capsys):
    root, run_id = finished_run
    version = _promoted_with_no_champion_before(root, run_id)
    # when people prefer the candidate in half the items and SFT in the other half
    assert main(["eval", "export", run_id, "--n", "10"]) == 0
    filled = root / "reports" / run_id / "human_eval" / "labeling.csv"
    _rank_alternately(filled, "ppo_ptx", "sft")
    assert main(["eval", "import", run_id, str(filled)]) == 0
    # then their verdict is not shown better, but the champion stays: taking it off would
    # leave none (models:/...@champion would stop loading), and it was not ranked worse
    gate = json.loads((root / "reports" / run_id / "report.json").read_text())["gate"]
    assert gate["win_rate"]["mean"] == 0.5 and not gate["promote"]
    assert "it stays champion: there was none before it" in gate["reason"]
    assert registry.champion_version(MlflowClient(), "instructflow-policy-smoke") == version
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith(f"v{version} is champion")


def test_people_who_rank_it_worse_take_off_the_champion_the_gate_made(finished_run, capsys):
    root, run_id = finished_run
    version = _promoted_with_no_champion_before(root, run_id)
    # when people rank SFT's answer first in every item
    assert main(["eval", "export", run_id, "--n", "10"]) == 0
    filled = root / "reports" / run_id / "human_eval" / "labeling.csv"
    _rank_first(filled, "sft")
    assert main(["eval", "import", run_id, str(filled)]) == 0
    # then `champion` goes back where the gate found it (none), and the command says it moved
    assert registry.champion_version(MlflowClient(), "instructflow-policy-smoke") is None
    said = capsys.readouterr().out
    assert (
        f"instructflow-policy-smoke: champion moved v{version} -> none on people's rankings" in said
    )


def _as_dataset_run(root, run_id: str, data_dir) -> None:
    """The run's report as a dataset run's: its Dataset summary, a held-out judge, no labelers."""
    from instructflow.tasks.dataset import load_dataset
    from instructflow.tasks.gate_config import GateConfig
    from instructflow.tasks.judge_trust import report_block

    metrics = {
        "judge/training_rows": 30.0,
        "judge/training_pairs": 30.0,
        "judge/test_pairs": 40.0,
        "judge/accuracy_heldout_pairs": 0.8,
    }
    for folder in (root / "reports" / run_id, root / "reports" / "latest"):
        path = folder / "report.json"
        report = json.loads(path.read_text())
        report.pop("labelers")
        report["dataset"] = load_dataset(data_dir).summary
        report["skipped"] = {}
        report["judge"] = report_block(metrics, None, floor=GateConfig().judge_accuracy_floor)
        report["gate"]["evidence"] = "held-out judge"
        path.write_text(json.dumps(report))


def test_eval_import_keeps_a_dataset_runs_dataset_section_in_report_md(finished_run, tmp_path):
    from instructflow.tasks.dataset_report import dataset_markdown
    from tests.own_data import write_hh_dataset

    root, run_id = finished_run
    # given a run on a user's dataset, whose report.md ends with its Dataset section
    _as_dataset_run(root, run_id, write_hh_dataset(tmp_path / "mine"))
    # when people's rankings are imported, and report.md is rewritten
    assert main(["eval", "export", run_id, "--n", "6"]) == 0
    filled = root / "reports" / run_id / "human_eval" / "labeling.csv"
    _rank_first(filled, "ppo_ptx")
    assert main(["eval", "import", run_id, str(filled)]) == 0
    # then both report.md files still end with the Dataset section, as the pipeline renders it
    # from the report as it is now (its gate line says people decided)
    for folder in (root / "reports" / run_id, root / "reports" / "latest"):
        report = json.loads((folder / "report.json").read_text())
        section = dataset_markdown(report)
        assert "\n## Dataset\n" in section and "- gate (human): " in section
        assert (folder / "report.md").read_text().endswith(section)


def test_eval_import_keeps_the_mlflow_run_link_in_report_md(finished_run):
    from instructflow.tasks import env

    root, run_id = finished_run
    # given a finished run, whose report.md the pipeline opens with a link to its MLflow run
    # when people's rankings are imported, and report.md is rewritten
    assert main(["eval", "export", run_id, "--n", "6"]) == 0
    filled = root / "reports" / run_id / "human_eval" / "labeling.csv"
    _rank_first(filled, "ppo_ptx")
    assert main(["eval", "import", run_id, str(filled)]) == 0
    # then both report.md files still link the run, as the pipeline's report.md does
    experiment = MlflowClient().get_run(run_id).info.experiment_id
    url = env.mlflow_run_url(experiment, run_id)
    for folder in (root / "reports" / run_id, root / "reports" / "latest"):
        assert f"\nMLflow run: [{url}]({url})\n" in (folder / "report.md").read_text()


def test_eval_import_updates_the_mlflow_runs_report_and_overview(finished_run):
    from instructflow.tasks import env
    from instructflow.tasks.report import run_summary

    root, run_id = finished_run
    # given a finished run, whose report the pipeline also left in its MLflow run
    client = MlflowClient()
    before = root / "reports" / run_id / "report.json"
    client.log_artifact(run_id, str(before), artifact_path="report")
    client.set_tag(run_id, "mlflow.note.content", run_summary(json.loads(before.read_text())))
    # when people's rankings (the candidate first) are imported
    assert main(["eval", "export", run_id, "--n", "6"]) == 0
    filled = root / "reports" / run_id / "human_eval" / "labeling.csv"
    _rank_first(filled, "ppo_ptx")
    assert main(["eval", "import", run_id, str(filled)]) == 0
    # then the MLflow run's report/ is the report as it is now, with people's verdict
    local = json.loads((root / "reports" / run_id / "report.json").read_text())
    assert local["gate"]["evidence"] == "human"
    logged = mlflow.artifacts.load_dict(f"runs:/{run_id}/report/report.json")
    assert logged == local
    markdown = mlflow.artifacts.load_text(f"runs:/{run_id}/report/report.md")
    assert "## Human evaluation (6 prompts" in markdown and "- played: sft (human, " in markdown
    url = env.mlflow_run_url(client.get_run(run_id).info.experiment_id, run_id)
    assert f"\nMLflow run: [{url}]({url})\n" in markdown
    # and its Overview says the gate's decision on people's evidence
    overview = client.get_run(run_id).data.tags["mlflow.note.content"]
    assert overview == run_summary(local) and "(human, " in overview


def _latest_artifact(flow_run_id, key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterId,
    )
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            sort=ArtifactSort.CREATED_DESC,
        )


def test_eval_import_gives_the_flow_runs_prefect_artifacts_peoples_verdict(finished_run, capsys):
    from prefect import flow
    from prefect.artifacts import create_markdown_artifact, create_table_artifact
    from prefect.runtime import flow_run

    from instructflow.tasks.report_table import table_rows

    root, run_id = finished_run

    @flow
    def pipeline_publishes() -> str:  # as flows/publish.py does at the end of a run
        create_markdown_artifact(markdown="the automatic verdict", key="rlhf-report")
        create_table_artifact(table=[{"policy": "sft"}], key="rlhf-policies")
        return flow_run.id

    # given a finished run whose flow run published the automatic gate's report
    flow_run_id = pipeline_publishes()
    _name_flow_run(root, run_id, flow_run_id)
    # when people's rankings (the candidate first) are imported
    _import_candidate_first(root, run_id)
    # then the flow run's newest rlhf-report is the report with people's verdict
    local = json.loads((root / "reports" / run_id / "report.json").read_text())
    markdown = mlflow.artifacts.load_text(f"runs:/{run_id}/report/report.md")
    newest = _latest_artifact(flow_run_id, "rlhf-report")
    assert len(newest) == 2 and newest[0].data == markdown
    assert "## Human evaluation (6 prompts" in newest[0].data
    # and its newest rlhf-policies is the table of the report as it is now
    policies = _latest_artifact(flow_run_id, "rlhf-policies")
    assert len(policies) == 2 and json.loads(policies[0].data) == table_rows(local)
    assert "still show the automatic verdict" not in capsys.readouterr().out


@pytest.mark.parametrize("flow_run_id", [None, "6a1a7b0e-0000-4000-8000-000000000000"])
def test_eval_import_says_when_prefect_artifacts_keep_the_automatic_verdict(
    finished_run, capsys, flow_run_id
):
    root, run_id = finished_run
    # given a finished run whose report names no Prefect flow run (made before it did), or
    # one that is not on this Prefect server
    if flow_run_id:
        _name_flow_run(root, run_id, flow_run_id)
    # when people's rankings are imported, then one line says so, and where the report is
    _import_candidate_first(root, run_id)
    lines = [line for line in capsys.readouterr().out.splitlines() if "automatic verdict" in line]
    assert len(lines) == 1
    assert "rlhf-report and rlhf-policies still show the automatic verdict" in lines[0]
    assert str(root / "reports" / run_id / "report.md") in lines[0]
    why = f"flow run {flow_run_id} is not on this Prefect server" if flow_run_id else "names no"
    assert why in lines[0]


def _name_flow_run(root, run_id: str, flow_run_id: str) -> None:
    """The run's report.json (and latest's) naming `flow_run_id` as its Prefect flow run."""
    for folder in (root / "reports" / run_id, root / "reports" / "latest"):
        report = json.loads((folder / "report.json").read_text())
        report["run"]["prefect_flow_run_id"] = flow_run_id
        (folder / "report.json").write_text(json.dumps(report))


def _import_candidate_first(root, run_id: str) -> None:
    """`eval export` 6 prompts, people rank the candidate first, `eval import`."""
    assert main(["eval", "export", run_id, "--n", "6"]) == 0
    filled = root / "reports" / run_id / "human_eval" / "labeling.csv"
    _rank_first(filled, "ppo_ptx")
    assert main(["eval", "import", run_id, str(filled)]) == 0


def test_eval_import_cut_short_while_writing_report_md_leaves_the_old_one_whole(
    finished_run, monkeypatch
):
    import errno
    from pathlib import Path

    root, run_id = finished_run
    folders = (root / "reports" / run_id, root / "reports" / "latest")
    for folder in folders:
        (folder / "report.md").write_text("# the report as the pipeline left it\n")
    assert main(["eval", "export", run_id, "--n", "6"]) == 0
    filled = root / "reports" / run_id / "human_eval" / "labeling.csv"
    _rank_first(filled, "ppo_ptx")
    # given a disk that fills up halfway through writing report.md (or its temporary file)
    write_text = Path.write_text

    def full_halfway(path, text, *args, **kwargs):
        if "report.md" not in path.name:
            return write_text(path, text, *args, **kwargs)
        write_text(path, text[: len(text) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full_halfway)
    # when people's rankings are imported, the import fails
    assert main(["eval", "import", run_id, str(filled)]) != 0
    # then report.md is the one the pipeline left, whole, and no temporary file is left
    for folder in folders:
        assert (folder / "report.md").read_text() == "# the report as the pipeline left it\n"
        assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
