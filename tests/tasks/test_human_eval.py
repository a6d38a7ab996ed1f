"""The human evaluation's files and arithmetic, checked against hand-worked examples."""

import csv
import json
from pathlib import Path

import pytest

from instructflow.tasks.human_eval import (
    EMPTY_RESPONSE,
    blinded_items,
    human_results,
    pairwise_wins,
    write_labeling_files,
)
from instructflow.tasks.human_labels import read_labels
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


def test_an_empty_response_is_shown_as_such_and_its_labels_read_back(tmp_path):
    # given a policy that wrote nothing for the first prompt
    responses = _responses(policies=("sft", "ppo"), prompts=2)
    responses["ppo"][0]["response"] = ""
    items, key = blinded_items(responses, n=2, seed=0)
    # then labelers read a marker there, never a blank cell
    first = {key["item-0000"][r["label"]]: r["text"] for r in items[0]["responses"]}
    assert first == {"sft": "sft-0-0", "ppo": EMPTY_RESPONSE}
    paths = write_labeling_files(items, key, tmp_path)
    with paths["csv"].open(newline="") as handle:
        shown = [row["response"] for row in csv.DictReader(handle)]
    assert EMPTY_RESPONSE in shown and "" not in shown
    # and the filled file, marker included, reads back against this export
    rows = []
    for item in items:
        for rank, response in enumerate(item["responses"], start=1):
            rows.append({"item_id": item["item_id"], "prompt": item["prompt"],
                         "label": response["label"], "response": response["text"],
                         "rank": rank, "likert": 4})  # fmt: skip
    _write_csv(tmp_path / "filled.csv", rows)
    exported = json.loads(paths["exported"].read_text())
    labels = read_labels(tmp_path / "filled.csv", key, exported=exported)
    assert set(labels) == {"item-0000", "item-0001"}


def test_a_response_cut_inside_a_character_is_exported_as_the_evaluation_scored_it(tmp_path):
    # given a byte-level BPE tokenizer (trained here on ASCII, so a 4-byte character stays 4
    # byte tokens) and a sample that stopped after the first two: sampling decodes it so
    from instructflow.models.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(["a plain answer, in ascii only"] * 4, vocab_size=300)
    ids = tokenizer.encode("ok \U0001f642", add_special_tokens=False)
    scored = tokenizer.decode(ids[:-2], skip_special_tokens=True)
    assert scored.startswith("ok ") and "\ufffd" in scored
    responses = _responses(policies=("sft", "ppo"), prompts=1)
    responses["ppo"][0]["response"] = scored
    # when it is exported
    items, key = blinded_items(responses, n=1, seed=0)
    paths = write_labeling_files(items, key, tmp_path)
    # then people read the text every automatic judge scored, replacement character
    # included (README, Human evaluation: a fragment is the model's, not the export's)
    shown = {key["item-0000"][r["label"]]: r["text"] for r in items[0]["responses"]}
    assert shown["ppo"] == scored
    with paths["csv"].open(newline="", encoding="utf-8") as handle:
        assert scored in [row["response"] for row in csv.DictReader(handle)]


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
    _write_csv(path, _filled_rows())
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
    assert f"{path} row 3 field 'rank': item-0000: rank 1 is row 2's too" in message
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


def test_a_long_jsonl_ranking_is_quoted_cut_in_its_refusal(tmp_path):
    # given a ranking that is a long list (a whole column pasted into one item's field)
    path = tmp_path / "filled.jsonl"
    long = [f"label-{i}" for i in range(500)]
    rows = [
        {"item_id": "item-0000", "ranking": long, "likert": {}},
        {"item_id": "item-0001", "ranking": ["B", "A", "C"], "likert": {}},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(TableError) as refused:
        read_labels(path, _key())
    # then its refusal names file, row and field, and quotes a short excerpt, not the list
    (line,) = [line for line in str(refused.value).splitlines() if "is not an order" in line]
    assert f"{path} row 1 field 'ranking': item-0000: a list of 500: ['label-0', " in line
    assert "label-499" not in line and len(line) < len(str(path)) + 200


def _filled_rows():
    """A correctly filled CSV's rows for `_key()` (spreadsheet rows 2-7)."""
    return [
        {"item_id": "item-0000", "label": "A", "rank": 2, "likert": 4},
        {"item_id": "item-0000", "label": "B", "rank": 3, "likert": 2},
        {"item_id": "item-0000", "label": "C", "rank": 1, "likert": 7},
        {"item_id": "item-0001", "label": "A", "rank": 2, "likert": 6},
        {"item_id": "item-0001", "label": "B", "rank": 1, "likert": 5},
        {"item_id": "item-0001", "label": "C", "rank": 3, "likert": 3},
    ]


def _problems(path) -> list[str]:
    with pytest.raises(TableError) as error:
        read_labels(path, _key())
    return [str(problem) for problem in error.value.problems]


def test_an_unknown_csv_label_is_named_at_its_own_row(tmp_path):
    # given a filled CSV whose sixth row (item-0001's second) has a label the item lacks
    path = tmp_path / "filled.csv"
    rows = _filled_rows()
    rows[4]["label"] = "D"
    _write_csv(path, rows)
    # then that row's label is the problem, not the item's first row; and the label that row
    # should have had is missing from the item, which has no row to name for it
    assert _problems(path) == [
        f"{path} field 'label': item-0001 has no row for label 'B' (its rows: 5, 6, 7)",
        f"{path} row 6 field 'label': item-0001 has no label 'D' (its labels: A, B, C)",
    ]


def test_a_repeated_csv_rank_is_named_at_the_row_that_repeats_it(tmp_path):
    path = tmp_path / "filled.csv"
    rows = _filled_rows()
    rows[5]["rank"] = 1  # item-0001: B (row 6) is already 1
    _write_csv(path, rows)
    assert _problems(path) == [
        f"{path} row 7 field 'rank': item-0001: rank 1 is row 6's too; "
        "its 3 responses take ranks 1-3 once each"
    ]


@pytest.mark.parametrize(
    "rank, likert, said",
    [(3, 2, ""), (1, 2, ", with other values: keep one of them")],
    ids=["exact", "conflicting"],
)
def test_a_duplicated_csv_row_is_refused_naming_both_rows(tmp_path, rank, likert, said):
    # given a filled CSV with item-0000's B row (row 3) again at the end (row 8)
    path = tmp_path / "filled.csv"
    rows = _filled_rows()
    _write_csv(
        path, [*rows, {"item_id": "item-0000", "label": "B", "rank": rank, "likert": likert}]
    )
    # then the repeat is the one problem, naming both rows (a conflicting one does not win)
    (problem,) = _problems(path)
    assert problem == f"{path} row 8 field 'label': item-0000 B is also row 3{said}"


def test_a_duplicated_jsonl_item_is_refused_naming_both_rows(tmp_path):
    path = tmp_path / "filled.jsonl"
    rows = [
        {"item_id": "item-0000", "ranking": ["C", "A", "B"], "likert": {}},
        {"item_id": "item-0001", "ranking": ["B", "A", "C"], "likert": {}},
        {"item_id": "item-0000", "ranking": ["A", "B", "C"], "likert": {}},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (problem,) = _problems(path)
    assert problem == (
        f"{path} row 3 field 'item_id': item-0000 is also row 1, with other values: keep one of them"
    )


def test_a_jsonl_likert_score_for_a_label_the_item_lacks_is_refused(tmp_path):
    path = tmp_path / "filled.jsonl"
    rows = [
        {"item_id": "item-0000", "ranking": ["C", "A", "B"], "likert": {"A": 4, "D": 6}},
        {"item_id": "item-0001", "ranking": ["B", "A", "C"], "likert": {}},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (problem,) = _problems(path)
    assert problem == (
        f"{path} row 1 field 'likert': item-0000 has no label 'D' (its labels: A, B, C)"
    )


def test_texts_a_spreadsheet_saved_with_crlf_line_ends_match_the_export():
    from instructflow.tasks.human_eval import text_digest

    prompt = "system: be nice\n\nuser: name an animal"
    assert text_digest(prompt.replace("\n", "\r\n"), "A cat.\r\n") == text_digest(
        prompt, "A cat.\n"
    )
    assert text_digest(prompt, "A cat.") != text_digest(prompt, "A dog.")


def _excel_text(path, delimiter: str) -> str:
    """The CSV `_write_csv` writes, as Excel saves it: a BOM, CRLF and `delimiter` between cells."""
    _write_csv(path, _filled_rows())
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    lines = [delimiter.join(row) for row in rows]
    return "\ufeff" + "\r\n".join(lines) + "\r\n"


@pytest.mark.parametrize("delimiter", [",", ";"])
def test_a_csv_saved_by_excel_reads_back_as_rankings(tmp_path, delimiter):
    # given the filled file saved by Excel as "CSV UTF-8": a byte-order mark before the
    # header, CRLF line ends, and (in locales with a decimal comma) ';' between cells
    path = tmp_path / "filled.csv"
    path.write_bytes(_excel_text(path, delimiter).encode("utf-8"))
    # then it reads as the file written without them
    labels = read_labels(path, _key())
    assert labels["item-0000"]["ranking"] == ["C", "A", "B"]
    assert labels["item-0001"]["likert"] == {"A": 6, "B": 5, "C": 3}


def test_a_csv_without_the_columns_or_not_utf8_is_one_problem_naming_the_file(tmp_path):
    # given a file saved in a legacy code page (not UTF-8), and one whose header lacks item_id
    legacy = tmp_path / "legacy.csv"
    text = _excel_text(legacy, ",").lstrip("\ufeff").replace(",r,", ",r\u00e9,")
    legacy.write_bytes(text.encode("cp1252"))
    assert _problems(legacy) == [
        f"{legacy} field '<file>': not UTF-8 text (byte 0xe9 at offset 58): save it as UTF-8"
    ]
    renamed = tmp_path / "renamed.csv"
    renamed.write_text(_excel_text(renamed, ",").replace("item_id", "Item"), encoding="utf-8")
    assert _problems(renamed) == [
        f"{renamed} row 1 field 'item_id': no such column (the header has: Item, prompt,"
        " label, response, rank, likert)"
    ]


def test_a_jsonl_saved_with_a_bom_and_raw_unicode_line_separators_reads_back(tmp_path):
    # given the filled JSONL re-saved by an editor: a byte-order mark first, and non-ASCII
    # written raw, a response holding U+2028 and U+0085 (which str.splitlines splits at)
    path = tmp_path / "filled.jsonl"
    rows = [
        {"item_id": "item-0000", "ranking": ["C", "A", "B"], "likert": {}, "note": "a\u2028b"},
        {"item_id": "item-0001", "ranking": ["B", "A", "C"], "likert": {}, "note": "c\x85d"},
    ]
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    path.write_bytes(("\ufeff" + text).encode("utf-8"))
    # then it reads as the file the export wrote
    labels = read_labels(path, _key())
    assert labels["item-0000"]["ranking"] == ["C", "A", "B"]
    assert labels["item-0001"]["ranking"] == ["B", "A", "C"]


def test_a_missing_file_or_one_of_another_kind_is_one_problem_naming_it(tmp_path):
    # given no file at the path given (a typo), and a filled file saved as .txt
    missing, text = tmp_path / "filld.csv", tmp_path / "filled.txt"
    _write_csv(text, _filled_rows())
    # then each is one problem naming the file (the first ended in a traceback, the second
    # was read as JSONL: a malformed-JSON problem on every line)
    assert _problems(missing) == [f"{missing} field '<file>': file not found"]
    assert _problems(text) == [
        f"{text} field '<file>': expected a .csv or .jsonl file, as `eval export` writes them"
    ]
    # and a CSV whose suffix a Windows tool wrote in capitals reads as CSV
    upper = tmp_path / "FILLED.CSV"
    _write_csv(upper, _filled_rows())
    assert read_labels(upper, _key())["item-0000"]["ranking"] == ["C", "A", "B"]


def test_formula_like_texts_are_exported_as_text_and_read_back_either_way(tmp_path):
    # given samples a spreadsheet would compute ("=", "-", "+", "@" first)
    responses = _responses(prompts=1)
    for policy, first in zip(responses, ("=SUM(1,2)", "-3 + 4", "@home"), strict=True):
        responses[policy][0]["response"] = first
    items, key = blinded_items(responses, n=1, seed=0)
    paths = write_labeling_files(items, key, tmp_path)
    exported = json.loads(paths["exported"].read_text())
    # then each such cell of labeling.csv starts with the apostrophe that makes it text
    with paths["csv"].open(newline="") as handle:
        cells = sorted(row["response"] for row in csv.DictReader(handle))
    assert cells == ["'-3 + 4", "'=SUM(1,2)", "'@home"]

    # and the file filled as it is, or as a spreadsheet saves it (apostrophes dropped),
    # reads back as this export's texts
    def filled(drop_apostrophes: bool) -> Path:
        with paths["csv"].open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        for rank, row in enumerate(rows, start=1):
            row |= {"rank": rank, "likert": 4}
            if drop_apostrophes:
                row["response"] = row["response"].removeprefix("'")
        path = tmp_path / f"filled-{drop_apostrophes}.csv"
        _write_csv(path, rows)
        return path

    for drop in (False, True):
        labels = read_labels(filled(drop), key, exported)
        assert len(labels[items[0]["item_id"]]["ranking"]) == 3


def test_a_jsonl_value_of_the_wrong_type_is_its_rows_problem_not_an_unlabelled_item(tmp_path):
    # given both items labelled, one with a ranking that is no list, one with neither field
    # of the right type
    path = tmp_path / "filled.jsonl"
    rows = [
        {"item_id": "item-0000", "ranking": 5, "likert": {}},
        {"item_id": "item-0001", "ranking": "BAC", "likert": "x"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(TableError) as refused:
        read_labels(path, _key())
    # then each is named at its row and field, and no item is called "not labelled"
    assert [(p.row, p.field, p.message) for p in refused.value.problems] == [
        (1, "ranking", "expected a list of labels"),
        (2, "likert", "expected {label: 1-7}"),
        (2, "ranking", "expected a list of labels"),
    ]


LONG_CELL = "pasted paragraph " * 300  # where a short value belongs: a number, an id, a label


@pytest.mark.parametrize(
    "field, said",
    [
        ("rank", "expected a whole number, got "),
        ("likert", "expected a whole number, got "),
        ("item_id", "unknown item "),
        ("label", "item-0000 has no label "),
    ],
)
def test_an_oversized_bad_csv_cell_is_quoted_cut_naming_file_row_and_field(tmp_path, field, said):
    from instructflow.tasks.tables import show_value

    # given a filled CSV whose row 2 holds a long paragraph in `field`
    path = tmp_path / "filled.csv"
    rows = _filled_rows()
    rows[0][field] = LONG_CELL
    _write_csv(path, rows)
    problems = _problems(path)
    # then its problem names file, row and field, and quotes the cell cut, as the dataset
    # checks quote theirs (tables.show_value); no problem quotes it whole
    quoted = show_value(LONG_CELL)
    assert len(quoted) < len(LONG_CELL) and quoted.endswith("...")
    assert any(p.startswith(f"{path} row 2 field '{field}': {said}{quoted}") for p in problems)
    assert not any(LONG_CELL in p for p in problems)
