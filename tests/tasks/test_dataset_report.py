"""The Dataset section of a dataset run's report.md (tasks/dataset_report.py)."""

import json

from instructflow.tasks.dataset import load_dataset
from instructflow.tasks.dataset_report import dataset_markdown
from tests.own_data import dataset_run_result, write_kwise_dataset


def test_the_dataset_section_reads_the_same_from_report_json_as_from_the_run(tmp_path):
    # given a K-wise dataset run's result, as the pipeline holds it (K counts keyed by int)
    summary = load_dataset(write_kwise_dataset(tmp_path / "mine")).summary
    result = dataset_run_result(summary, "held-out judge")
    saved = json.loads(json.dumps(result))  # report.json: every key a string
    assert saved["dataset"]["k_counts"] != summary["k_counts"]
    # when the section is rendered from each (the pipeline's, then eval import's report.md)
    # then both say the same, K counts as the pipeline has always written them
    assert dataset_markdown(saved) == dataset_markdown(result)
    counts = ", ".join(f"{k}: {n}" for k, n in summary["k_counts"].items())
    assert f", K counts {{{counts}}}, " in dataset_markdown(result)
