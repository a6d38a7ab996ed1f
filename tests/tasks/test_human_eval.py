"""The human evaluation's files and arithmetic, checked against hand-worked examples."""

import csv
import json

import pytest

from instructflow.tasks.human_eval import (
    blinded_items,
    human_results,
    pairwise_wins,
    read_labels,
    write_labeling_files,
)
from instructflow.tasks.tables import TableError


def _responses(policies=("sft", "ppo", "ppo_ptx"), prompts=4):
    return {
        policy: [
            {
                "prompt_id": f"p{i}",
                "sample": s,
                "prompt": f"prompt {i}",
                "response": f"{policy}-{i}-{s}",
            }
            for i in range(prompts)
            for s in range(2)
        ]
        for policy in policies
    }


def test_items_hide_the_policy_names_and_the_key_restores_them(tmp_path):
    # given three policies' samples for four prompts
    items, key = blinded_items(_responses(), n=3, seed=0)
    # then three items, each with every policy's first sample under a letter
    assert [item["item_id"] for item in items] == ["item-0000", "item-0001", "item-0002"]
    for item in items:
        texts = {r["text"] for r in item["responses"]}
        assert all("-" in t and t.endswith("-0") for t in texts)
        assert {r["label"] for r in item["responses"]} == {"A", "B", "C"}
        # and the key maps every label back to the policy that wrote it
        for response in item["responses"]:
            assert response["text"].startswith(key[item["item_id"]][response["label"]] + "-")
    # and the files a labeler gets never name a policy
    paths = write_labeling_files(items, key, tmp_path)
    for name in ("jsonl", "csv"):
        text = paths[name].read_text()
        assert "sft-" in text  # the responses are there
        assert '"sft"' not in text and ",sft," not in text


def test_shuffling_differs_between_items():
    items, key = blinded_items(_responses(prompts=8), n=8, seed=1)
    assert len({tuple(sorted(k.items())) for k in key.values()}) > 1


def _key():
    return {
        "item-0000": {"A": "sft", "B": "ppo", "C": "ppo_ptx"},
        "item-0001": {"A": "ppo", "B": "ppo_ptx", "C": "sft"},
    }


def test_win_rates_and_likert_by_hand(tmp_path):
    # given two items ranked by hand: ppo beats sft once of twice, ppo_ptx twice
    labels = {
        "item-0000": {"ranking": ["C", "A", "B"], "likert": {"A": 4, "B": 2, "C": 7}},
        "item-0001": {"ranking": ["B", "A", "C"], "likert": {"A": 6, "B": 5, "C": 3}},
    }
    key = _key()
    # then the win rates and Likert means are the hand counts
    assert pairwise_wins(labels, key, "ppo", "sft") == [0.0, 1.0]
    assert pairwise_wins(labels, key, "ppo_ptx", "sft") == [1.0, 1.0]
    results = human_results(labels, key)
    assert results["ppo"]["win_rate_vs_sft"]["mean"] == 0.5
    assert results["ppo_ptx"]["win_rate_vs_sft"]["mean"] == 1.0
    assert results["ppo"]["likert"]["mean"] == (2 + 6) / 2
    assert results["sft"]["likert"]["mean"] == (4 + 3) / 2
    assert "win_rate_vs_sft" not in results["sft"]


def _write_csv(path, rows):
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(
            handle, fieldnames=["item_id", "prompt", "label", "response", "rank", "likert"]
        )
        writer.writeheader()
        for row in rows:
            writer.writerow({"prompt": "p", "response": "r"} | row)


def test_a_filled_csv_reads_back_as_rankings(tmp_path):
    path = tmp_path / "filled.csv"
    _write_csv(
        path,
        [
            {"item_id": "item-0000", "label": "A", "rank": 2, "likert": 4},
            {"item_id": "item-0000", "label": "B", "rank": 3, "likert": 2},
            {"item_id": "item-0000", "label": "C", "rank": 1, "likert": 7},
            {"item_id": "item-0001", "label": "A", "rank": 2, "likert": 6},
            {"item_id": "item-0001", "label": "B", "rank": 1, "likert": 5},
            {"item_id": "item-0001", "label": "C", "rank": 3, "likert": 3},
        ],
    )
    labels = read_labels(path, _key())
    assert labels["item-0000"]["ranking"] == ["C", "A", "B"]
    assert labels["item-0001"]["likert"] == {"A": 6, "B": 5, "C": 3}


def test_bad_labels_are_refused_naming_file_row_and_field(tmp_path):
    path = tmp_path / "filled.csv"
    _write_csv(
        path,
        [
            {"item_id": "item-0000", "label": "A", "rank": 1, "likert": 4},
            {"item_id": "item-0000", "label": "B", "rank": 1, "likert": 9},
            {"item_id": "item-0000", "label": "C", "rank": 2, "likert": 7},
            {"item_id": "item-9999", "label": "A", "rank": 1, "likert": 1},
        ],
    )
    with pytest.raises(TableError) as error:
        read_labels(path, _key())
    message = str(error.value)
    assert f"{path} row 3 field 'likert': 9 is not in 1-7" in message
    assert f"{path} row 2 field 'rank'" in message  # ranks 1, 1, 2 are not 1..3
    assert f"{path} row 5 field 'item_id': unknown item 'item-9999'" in message
    assert "1 items not labelled, e.g. item-0001" in message


def test_a_jsonl_ranking_must_order_every_label(tmp_path):
    path = tmp_path / "filled.jsonl"
    rows = [
        {"item_id": "item-0000", "ranking": ["A", "B"], "likert": {}},
        {"item_id": "item-0001", "ranking": ["B", "A", "C"], "likert": {"A": 3}},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(
        TableError, match=r"row 1 field 'ranking': item-0000: \['A', 'B'\] is not an order"
    ):
        read_labels(path, _key())
